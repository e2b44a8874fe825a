package app

import (
	"errors"
	"fmt"

	"github.com/flotilla/flotilla/internal/beat"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/task"
)

// BeatConfig derives the scheduler's settings from cfg.
func BeatConfig(cfg config.Config, code []schedule.Schedule) beat.Config {
	return beat.Config{
		Elector: beat.ElectorConfig{
			ID: cfg.Worker.Name, TTL: cfg.Beat.LeaseTTL, Replicas: cfg.NATS.Replicas, CreateBucket: cfg.NATS.ApplyStreams,
		},
		Grace: cfg.Beat.Grace, Resync: cfg.Beat.Resync, FullResync: cfg.Beat.FullResync,
		PublishMode: cfg.Beat.PublishMode, MaxPending: cfg.Beat.MaxPending, Code: code,
	}
}

// CodeSchedules prepares the schedules declared in code: source code, the
// task's registered queue when none is given, defaults filled, validated
// (each error names the schedule).
func CodeSchedules(reg *task.Registry, scs []schedule.Schedule) ([]schedule.Schedule, error) {
	out := make([]schedule.Schedule, 0, len(scs))
	var errs []error
	for _, sc := range scs {
		sc.Source = schedule.SourceCode
		if sc.Queue == "" && reg != nil {
			if def, err := reg.Lookup(sc.Task); err == nil {
				sc.Queue = def.Options.Queue
			}
		}
		sc.Normalize()
		if err := sc.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("schedule %q declared in code: %w", sc.Name, err))
			continue
		}
		out = append(out, sc)
	}
	return out, errors.Join(errs...)
}
