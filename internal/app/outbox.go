package app

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/outbox"
	"github.com/flotilla/flotilla/internal/task"
)

// outboxRelay returns the outbox relay role runs (outbox.relay), or nil.
// Dev runs web and worker in one process: its worker runs the one relay.
func outboxRelay(role string, cfg config.Config, c *Conns, reg *task.Registry, metrics prometheus.Registerer, log zerolog.Logger) *outbox.Relay {
	if !cfg.Outbox.Relay || c.Pool == nil || (role == config.RoleWeb && cfg.Role == config.RoleDev) {
		return nil
	}
	return outbox.New(outbox.Config{Metrics: metrics}, c.Pool, c.JS, NewClient(cfg, c, reg), log)
}

// withRelay runs relay beside run, when there is one: an error of either
// (the relay's: a duplicate window shorter than its retry horizon) stops
// both.
func withRelay(run func(context.Context) error, relay *outbox.Relay) func(context.Context) error {
	if relay == nil {
		return run
	}
	return func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return run(gctx) })
		g.Go(func() error { return relay.Run(gctx) })
		return g.Wait()
	}
}
