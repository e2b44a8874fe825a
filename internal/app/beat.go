package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/flotilla/flotilla/internal/beat"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
)

// beatStore adapts store.Store to what beat needs.
type beatStore struct{ s *store.Store }

func (b beatStore) List(ctx context.Context) ([]schedule.Schedule, error) {
	return b.s.ScheduleList(ctx)
}

func (b beatStore) Get(ctx context.Context, name string) (schedule.Schedule, bool, error) {
	sc, err := b.s.ScheduleGet(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return sc, false, nil
	}
	return sc, err == nil, err
}

func (b beatStore) SyncCode(ctx context.Context, scs []schedule.Schedule) error {
	return b.s.ScheduleSyncCode(ctx, scs)
}

func (b beatStore) RecordRuns(ctx context.Context, runs []beat.Run) error {
	rs := make([]store.Run, len(runs))
	for i, r := range runs {
		rs[i] = store.Run{Name: r.Name, FiredAt: r.FiredAt, Count: r.Count}
	}
	return b.s.ScheduleRecordRuns(ctx, rs)
}

func (b beatStore) Listen(ctx context.Context, fn func(string)) error {
	return b.s.ScheduleListen(ctx, fn)
}

// BeatStore adapts a store for beat.
func BeatStore(s *store.Store) beat.Store { return beatStore{s} }

// BeatConfig derives the scheduler's settings from cfg.
func BeatConfig(cfg config.Config, code []schedule.Schedule) beat.Config {
	return beat.Config{
		Elector: beat.ElectorConfig{
			ID: cfg.Worker.Name, TTL: cfg.Beat.LeaseTTL, Replicas: cfg.NATS.Replicas,
		},
		Grace: cfg.Beat.Grace, Resync: cfg.Beat.Resync,
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
