// Package app assembles roles from configuration: it opens the connections a
// process Needs (shared between roles in dev), builds each role with its own
// logger and runs them under one errgroup, so the first failing role stops
// the others.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla/flotilla/internal/api"
	"github.com/flotilla/flotilla/internal/attempt"
	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/beat"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/dashboard"
	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/limits"
	"github.com/flotilla/flotilla/internal/logging"
	"github.com/flotilla/flotilla/internal/queues"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/revoke"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/web"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/worker"
	"github.com/flotilla/flotilla/internal/workflow"
)

// Options are what a process adds to its configuration.
type Options struct {
	// Registry holds the handlers of this binary.
	Registry *task.Registry
	// Stdout receives console logs and the dev banner. Default os.Stdout.
	Stdout io.Writer
	// Schedules are the periodic tasks declared in code; beat syncs them
	// into PostgreSQL at start.
	Schedules []schedule.Schedule
	// Middleware wraps every handler, outermost first, wherever it runs
	// (queue workers, sync execution, api.exec=local).
	Middleware []task.Middleware
	// Version of the binary, shown in the workers list.
	Version string
}

// Run runs role ("web", "api", "worker" or "dev") until ctx is done.
func Run(ctx context.Context, cfg config.Config, opts Options) error {
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	var roles []string
	n := Needs{Redis: true}
	switch cfg.Role {
	case config.RoleDev:
		roles = []string{config.RoleWeb, config.RoleAPI, config.RoleWorker, config.RoleBeat}
		n.Postgres, n.Embed = true, true
	case config.RoleWeb, config.RoleAPI:
		roles = []string{cfg.Role}
		n.Postgres = true
	case config.RoleWorker:
		roles = []string{cfg.Role}
		n.Postgres = cfg.Outbox.Relay // the outbox relay's
	case config.RoleBeat:
		roles = []string{cfg.Role}
		// Beat records the PENDING state of its fires best effort (it keeps
		// firing through a Redis outage, see BeatClient).
		n = Needs{Postgres: true, Redis: true}
	default:
		return fmt.Errorf("role %q cannot run here (want web, api, worker, beat or dev)", cfg.Role)
	}
	// Loggers first, so that connection errors can be logged per role.
	loggers := map[string]zerolog.Logger{}
	for _, r := range roles {
		l, closer, err := logging.New(cfg.Log, r, opts.Stdout)
		if err != nil {
			return err
		}
		defer closer.Close()
		loggers[r] = l
	}
	// Workers write most states: their log hears about lost writes.
	rootLog, ok := loggers[config.RoleWorker]
	if !ok {
		rootLog = loggers[roles[0]]
	}
	// Roles start while Redis or PostgreSQL is down and become ready when
	// it is back; dev migrates at start and needs PostgreSQL then.
	n.Lazy, n.Log = cfg.Role != config.RoleDev, rootLog
	n.ResultErrors = func(err error, lost int) {
		rootLog.Error().Err(err).Int("writes", lost).Msg("task states not recorded in Redis")
	}
	if cfg.Role == config.RoleDev {
		unlock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	// Bind every listener before connecting and printing anything, so that
	// a taken address is the error, at once.
	lns := map[string]net.Listener{}
	defer func() {
		for _, ln := range lns {
			_ = ln.Close() // after Serve closed it, a no-op
		}
	}()
	for _, r := range roles {
		ln, err := rest.Listen(roleAddr(cfg, r))
		if err != nil {
			return fmt.Errorf("%s: %w", r, err)
		}
		lns[r] = ln
	}
	c, err := Open(ctx, cfg, n)
	if err != nil {
		return err
	}
	defer c.Close()
	if cfg.Role == config.RoleDev {
		urlFile := filepath.Join(cfg.DataDir, DevURLFile)
		if err := os.WriteFile(urlFile, []byte(c.NATSURL+"\n"), 0o644); err != nil {
			return fmt.Errorf("record dev NATS URL: %w", err)
		}
		defer os.Remove(urlFile)
		printBanner(opts.Stdout, cfg, c)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range roles {
		run, err := build(gctx, r, cfg, c, opts, lns[r], loggers[r])
		if err != nil {
			return err
		}
		g.Go(func() error {
			if err := run(gctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s: %w", r, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// NewClient builds the producer client for cfg on c.
func NewClient(cfg config.Config, c *Conns, reg *task.Registry) *client.Client {
	return client.New(c.NC, c.JS, c.Results, client.Config{
		Registry: reg, CheckRegistered: cfg.Tasks.CheckRegistered, MaxArgsBytes: cfg.Tasks.MaxBodyBytes,
		Events: wire.EventLevel(cfg.Tasks.Events), IdempotencyTTL: dedupWindow(c), NotifyPrefix: wire.NotifyPrefix(cfg.NATS.InboxPrefix),
		Limits: Limits(cfg), Queues: append([]string{}, cfg.Worker.Queues...),
	})
}

// Limits are the caps of an enqueue (tasks.*_max).
func Limits(cfg config.Config) client.Limits {
	return client.Limits{MaxRetries: cfg.Tasks.MaxRetriesMax, Timeout: cfg.Tasks.TimeoutMax,
		Delay: cfg.Tasks.DelayMax, Expires: cfg.Tasks.ExpiresMax}
}

func dedupWindow(c *Conns) time.Duration {
	if sc, ok := c.Topology.Stream(wire.StreamTasks); ok {
		return sc.Duplicates
	}
	return 0
}

// checks are the readiness checks of a role: a round trip to each
// dependency (a PING to NATS, to Redis, to PostgreSQL), bounded by the
// context's deadline, so a paused server fails them as a dead one does.
func checks(c *Conns, postgres bool) []rest.Check {
	cs := []rest.Check{{Name: "nats", Func: func(ctx context.Context) error {
		if !c.NC.IsConnected() {
			return fmt.Errorf("not connected (%s)", c.NC.Status())
		}
		if err := c.NC.FlushWithContext(ctx); err != nil {
			return fmt.Errorf("no answer to PING: %w", err)
		}
		return nil
	}}}
	if c.Redis != nil {
		cs = append(cs, rest.Check{Name: "redis", Func: func(ctx context.Context) error { return c.Redis.Ping(ctx).Err() }})
	}
	if postgres && c.Pool != nil {
		cs = append(cs, rest.Check{Name: "postgres", Func: func(ctx context.Context) error { return c.Pool.Ping(ctx) }})
	}
	return cs
}

// roleAddr is the HTTP address role listens on.
func roleAddr(cfg config.Config, role string) string {
	switch role {
	case config.RoleWeb:
		return cfg.Web.Addr
	case config.RoleAPI:
		return cfg.API.Addr
	case config.RoleWorker:
		return cfg.Worker.Addr
	default:
		return cfg.Beat.Addr
	}
}

func build(ctx context.Context, role string, cfg config.Config, c *Conns, opts Options, ln net.Listener, log zerolog.Logger) (func(context.Context) error, error) {
	reg := opts.Registry
	metrics := rest.NewRegistry()
	switch role {
	case config.RoleWeb:
		wcfg := web.Config{
			Addr: cfg.Web.Addr, MaxBodyBytes: cfg.Tasks.MaxBodyBytes, ShutdownTimeout: cfg.ShutdownTimeout,
			Registry: reg, CheckRegistered: cfg.Tasks.CheckRegistered, Metrics: metrics, RequestTimeout: cfg.RequestTimeout,
			Listener: ln,
		}
		wcfg.Auth, wcfg.Failures = cfg.Web.Auth, failureLimit(cfg, c)
		if c.Pool != nil {
			st := store.New(c.Pool)
			wcfg.Schedules, wcfg.Verify, wcfg.Audit = st, auth.StoreVerifier(st), st
			if cfg.Web.Auth != auth.AuthNone && c.Redis != nil {
				wcfg.Sessions = auth.NewSessions(auth.SessionConfig{
					Redis: c.Redis, Prefix: cfg.Redis.Prefix, Idle: cfg.Web.SessionIdle, Max: cfg.Web.SessionMax,
					Secure: cfg.Web.CookieSecure, Failures: wcfg.Failures,
				}, st, log)
			}
		}
		if cfg.Web.Auth == auth.AuthNone {
			log.Warn().Msg("web.auth=none: AUTHENTICATION IS OFF — anyone who reaches web may do everything (development only; production runs with web.auth=required)")
		}
		wcfg.BeatLeader = func(ctx context.Context) (string, error) { return beat.Leader(ctx, c.JS) }
		cl := NewClient(cfg, c, reg)
		wcfg.Operator = operator{js: c.JS, cl: cl}
		qs := queues.New(c.JS)
		wcfg.Queues, wcfg.Workers = qs, fleet.Reader{JS: c.JS}
		hub := dashboard.NewHub(c.NC, dashboard.Sources{
			Queues:  qs.List,
			Workers: wcfg.Workers.List,
			Beat:    func(ctx context.Context) (dashboard.BeatView, error) { return beatView(ctx, c.JS) },
			Dead:    func(ctx context.Context) (uint64, error) { return jet.DeadCount(ctx, c.JS) },
		}, log)
		dcfg := dashboard.Config{Hub: hub, Tasks: cl, Registry: reg, AuthOff: cfg.Web.Auth == auth.AuthNone, NextRun: web.WithNextRun,
			Dead: func(ctx context.Context, n int) ([]wire.DeadLetter, error) { return jet.ListDead(ctx, c.JS, n) }}
		if c.Pool != nil {
			dcfg.Schedules = store.New(c.Pool)
		}
		wcfg.Dashboard = dashboard.New(dcfg, log)
		if c.Results != nil {
			cn := revoke.New(c.JS, c.Results, jet.NewEvents(c.NC, wire.EventLevel(cfg.Tasks.Events)))
			wcfg.Canceller = cn
			wcfg.Workflows = workflow.New(c.Results, cl, func(ctx context.Context, id, by string) error {
				_, err := cn.Cancel(ctx, id, by)
				return err
			})
		}
		s := web.New(wcfg, cl, checks(c, true), log)
		relay := outboxRelay(role, cfg, c, reg, metrics, log)
		log.Info().Str("addr", cfg.Web.Addr).Msg("web listening")
		return func(ctx context.Context) error {
			go hub.Run(ctx) // its snapshots also sample the queues' rates
			if c.Results != nil {
				go c.Results.TrimEvery(ctx, time.Minute)
			}
			return withRelay(s.Run, relay)(ctx)
		}, nil
	case config.RoleAPI:
		acfg := api.Config{Addr: cfg.API.Addr, MaxBodyBytes: cfg.Tasks.MaxBodyBytes, ShutdownTimeout: cfg.ShutdownTimeout,
			Exec: Executor(cfg, c, reg, opts.Middleware, metrics, log), ExecTimeout: cfg.API.ExecTimeout, ExecTimeoutMax: cfg.API.ExecTimeoutMax,
			Auth: cfg.API.Auth, Redis: c.Redis, Prefix: cfg.Redis.Prefix, SessionTTL: cfg.API.SessionTTL,
			RateLimit: cfg.API.RateLimit, RateWindow: cfg.API.RateWindow, Metrics: metrics, RequestTimeout: cfg.RequestTimeout,
			Listener: ln}
		if c.Pool != nil {
			acfg.Verify = auth.StoreVerifier(store.New(c.Pool))
		}
		acfg.Failures = failureLimit(cfg, c)
		s := api.New(acfg, NewClient(cfg, c, reg), checks(c, true), log)
		log.Info().Str("addr", cfg.API.Addr).Msg("api listening")
		return s.Run, nil
	case config.RoleWorker:
		if cfg.NATS.ApplyStreams {
			if err := jet.ApplyQueues(ctx, c.JS, c.Topology, cfg.Worker.Queues); err != nil {
				return nil, err
			}
		}
		wc := WorkerConfig(cfg)
		wc.Middleware, wc.Metrics, wc.Version = opts.Middleware, metrics, opts.Version
		if c.Redis != nil {
			wc.Limiter = limits.New(c.Redis, cfg.Redis.Prefix)
		}
		ConfigureLimits(cfg, reg, log)
		if c.Results != nil {
			// Moving workflows on publishes their next steps.
			eng := workflow.New(c.Results, NewClient(cfg, c, reg), nil)
			wc.Workflows = eng
			wc.Middleware = append(slices.Clone(wc.Middleware), workflow.Middleware(eng))
		}
		w := worker.New(c.NC, c.JS, reg, c.Results, log, wc)
		run := withRelay(w.Run, outboxRelay(role, cfg, c, reg, metrics, log))
		return withHealth(run, "worker", ln, cfg, checks(c, false), nil, metrics, log), nil
	case config.RoleBeat:
		code, err := CodeSchedules(reg, opts.Schedules)
		if err != nil {
			return nil, err
		}
		bc := BeatConfig(cfg, code)
		bc.Metrics = metrics
		b := beat.New(c.JS, store.New(c.Pool), BeatClient(cfg, c, reg, log), bc, log)
		log.Info().Str("addr", cfg.Beat.Addr).Int("code_schedules", len(code)).Msg("beat starting")
		info := func() map[string]any { return map[string]any{"leader": b.IsLeader()} }
		return withHealth(b.Run, "beat", ln, cfg, checks(c, true), info, metrics, log), nil
	}
	return nil, fmt.Errorf("unknown role %q", role)
}

// withHealth runs run beside an HTTP server on ln with /healthz,
// /readyz and /metrics: the worker and beat roles, which serve no API.
func withHealth(run func(context.Context) error, role string, ln net.Listener, cfg config.Config, cs []rest.Check,
	info func() map[string]any, metrics prometheus.Gatherer, log zerolog.Logger,
) func(context.Context) error {
	e := rest.NewEcho(log)
	rest.MountHealth(e, role, cs, info, metrics)
	return func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return run(gctx) })
		g.Go(func() error { return rest.Serve(gctx, e, ln, cfg.ShutdownTimeout) })
		return g.Wait()
	}
}

// failureLimit is the limit on failed authentication attempts per address
// of web and api, counted in Redis.
func failureLimit(cfg config.Config, c *Conns) auth.FailureLimit {
	l := auth.FailureLimit{Limit: cfg.Auth.FailLimit, Window: cfg.Auth.FailWindow, Prefix: cfg.Redis.Prefix}
	if c.Redis != nil {
		l.Redis = c.Redis
	}
	return l
}

// BeatClient is the producer beat fires through: the client of every role,
// with PENDING states recorded best effort (a failed write is logged at
// most once a minute and the fires go out anyway).
func BeatClient(cfg config.Config, c *Conns, reg *task.Registry, log zerolog.Logger) *client.Client {
	sampled := log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Minute})
	return client.New(c.NC, c.JS, c.Results, client.Config{
		Registry: reg, MaxArgsBytes: cfg.Tasks.MaxBodyBytes, Events: wire.EventLevel(cfg.Tasks.Events), IdempotencyTTL: dedupWindow(c),
		Limits: Limits(cfg),
		StateErrors: func(err error, n int) {
			sampled.Warn().Err(err).Int("tasks", n).Msg("PENDING states of fired tasks not recorded in Redis; firing anyway")
		},
	})
}

// Executor returns the api role's sync executor: workers over NATS
// (api.exec=remote) or handlers in this process (local) through the same
// attempt runner as workers use, counted in metrics.
func Executor(cfg config.Config, c *Conns, reg *task.Registry, mw []task.Middleware, metrics prometheus.Registerer, log zerolog.Logger) api.Executor {
	if cfg.API.Exec == "local" {
		return api.Local{Registry: reg, Runner: attempt.New(attempt.Config{
			Middleware: mw, Timeout: cfg.Tasks.Timeout, Grace: cfg.Tasks.TimeoutGrace, Worker: "api-local:" + cfg.Worker.Name,
			Store: c.Results, Events: jet.NewEvents(c.NC, wire.EventLevel(cfg.Tasks.Events)), Metrics: attempt.NewMetrics(metrics),
		}, log)}
	}
	r := api.Remote{NC: c.NC}
	if cfg.Tasks.CheckRegistered && reg != nil {
		r.Known = func(name string) bool { _, err := reg.Lookup(name); return err == nil }
	}
	return r
}

// ConfigureLimits applies tasks.limits to the registered tasks (a name
// this binary does not register is logged and skipped).
func ConfigureLimits(cfg config.Config, reg *task.Registry, log zerolog.Logger) {
	for _, s := range cfg.Tasks.Limits {
		l, _ := config.ParseTaskLimit(s) // validated
		var opts []task.Option
		if !l.Rate.IsZero() {
			opts = append(opts, task.WithRateLimit(l.Rate.N, l.Rate.Per))
		}
		if l.Concurrency > 0 {
			opts = append(opts, task.WithConcurrencyLimit(l.Concurrency))
		}
		if err := reg.Configure(l.Task, opts...); err != nil {
			log.Warn().Str("task", l.Task).Msg("tasks.limits names a task this binary does not register; ignored")
		}
	}
}

// WorkerConfig derives the worker's settings from cfg.
func WorkerConfig(cfg config.Config) worker.Config {
	return worker.Config{
		Queues: cfg.Worker.Queues, Concurrency: cfg.Worker.Concurrency, Prefetch: cfg.Worker.Prefetch, Name: cfg.Worker.Name,
		MaxRetries: cfg.Tasks.MaxRetries, Timeout: cfg.Tasks.Timeout, Grace: cfg.Tasks.TimeoutGrace,
		Backoff: cfg.Tasks.RetryBackoff, BackoffMax: cfg.Tasks.RetryBackoffMax,
		AckWait: cfg.NATS.AckWait, Events: wire.EventLevel(cfg.Tasks.Events), ShutdownTimeout: cfg.ShutdownTimeout,
		Sync: cfg.Worker.Sync, SyncConcurrency: cfg.Worker.SyncConcurrency,
	}
}

func printBanner(w io.Writer, cfg config.Config, c *Conns) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nFlotilla dev is running (web, api, worker and beat on one embedded NATS server)\n")
	if cfg.Web.Auth == auth.AuthNone || cfg.API.Auth == auth.AuthNone {
		fmt.Fprintf(&b, "  !! AUTHENTICATION IS OFF (web.auth=%s, api.auth=%s): anyone who can reach these ports may do everything.\n", cfg.Web.Auth, cfg.API.Auth)
		fmt.Fprintf(&b, "  !! Fine on a laptop; never expose dev. Create accounts with `flotilla user add NAME --role admin`.\n")
	}
	fmt.Fprintf(&b, "  web     http://%s   (tasks, schedules, queues, dead letters, /healthz, /readyz, /metrics)\n", hostPort(cfg.Web.Addr))
	fmt.Fprintf(&b, "  api     http://%s   (POST /api/v1/exec/{task}: run a task and wait for its result)\n", hostPort(cfg.API.Addr))
	fmt.Fprintf(&b, "  worker  http://%s/healthz   queues=%s concurrency=%d\n", hostPort(cfg.Worker.Addr), strings.Join(cfg.Worker.Queues, ","), cfg.Worker.Concurrency)
	fmt.Fprintf(&b, "  beat    http://%s/healthz   (schedules in PostgreSQL %s)\n", hostPort(cfg.Beat.Addr), dbName(cfg.Database.URL))
	fmt.Fprintf(&b, "  nats    %s   (store %s)\n", c.NATSURL, c.Server.StoreDir())
	fmt.Fprintf(&b, "\nTry (state changes must be JSON: curl --json sets the Content-Type):\n  curl --json '{\"task\":\"sys.echo\",\"args\":{\"x\":1}}' http://%s/api/v1/tasks\n", hostPort(cfg.Web.Addr))
	fmt.Fprintf(&b, "  curl --json '{\"x\":1}' http://%s/api/v1/exec/sys.echo\n", hostPort(cfg.API.Addr))
	fmt.Fprintf(&b, "  curl --json '{\"name\":\"ping\",\"task\":\"sys.ping\",\"interval\":\"10s\"}' http://%s/api/v1/schedules\n", hostPort(cfg.Web.Addr))
	fmt.Fprintf(&b, "  go run ./cmd/flotilla task send sys.echo --args '{\"x\":1}' --wait\n")
	fmt.Fprintf(&b, "  export NATS_URL=%s\n  go tool nats stream ls\n  go tool nats stream view TASKS\n  go tool nats consumer ls TASKS\n  go tool nats micro stats flotilla\n\n", c.NATSURL)
	_, _ = io.WriteString(w, b.String())
}

// dbName is the database of a PostgreSQL URL, for display (no credentials).
func dbName(raw string) string {
	if u, err := url.Parse(raw); err == nil && len(u.Path) > 1 {
		return u.Host + u.Path
	}
	return "(database.url)"
}

func hostPort(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "localhost" + addr
	}
	return addr
}

// beatView is the leader and, when beat publishes them, its figures.
func beatView(ctx context.Context, js jetstream.JetStream) (dashboard.BeatView, error) {
	leader, err := beat.Leader(ctx, js)
	if err != nil {
		return dashboard.BeatView{}, err
	}
	v := dashboard.BeatView{Leader: leader}
	st, err := beat.Stats(ctx, js)
	switch {
	case err == nil:
		v.Stats = &st
	case !errors.Is(err, beat.ErrNoStats):
		return v, err
	}
	return v, nil
}

// operator serves web's queue and dead-letter endpoints.
type operator struct {
	js jetstream.JetStream
	cl *client.Client
}

func (o operator) Dead(ctx context.Context, limit int) ([]wire.DeadLetter, error) {
	return jet.ListDead(ctx, o.js, limit)
}
func (o operator) Requeue(ctx context.Context, seq uint64) (client.Result, error) {
	return o.cl.Requeue(ctx, seq)
}
func (o operator) RetryTask(ctx context.Context, id string) (client.Result, error) {
	return o.cl.Retry(ctx, id)
}
func (o operator) DeleteDead(ctx context.Context, seq uint64) error {
	return jet.DeleteDead(ctx, o.js, seq)
}
