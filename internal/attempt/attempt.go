// Package attempt runs one attempt of a task, the same way for every path
// that runs handlers: queue workers, synchronous execution on workers, and
// in-process execution in the api role (api.exec=local). It owns the
// timeout rule, applies the handler middleware once, puts the task's logger
// and envelope in the handler's context, enforces hard timeouts, classifies
// the outcome, and — for synchronous executions — records the state and
// publishes the lifecycle events. Acks and retries of queued tasks stay in
// package worker.
package attempt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/logging"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// CancelGrace is how long a handler whose task was cancelled (its context's
// cause is task.ErrCancelled) may take to return before its attempt is
// finished without it, when Grace is longer: a cancel takes effect within
// a second.
const CancelGrace = 500 * time.Millisecond

// DefaultGrace is how long a handler whose context ended may take to return
// before its attempt is finished without it (tasks.timeout_grace).
const DefaultGrace = 5 * time.Second

// Config configures a [Runner].
type Config struct {
	// Middleware wraps every handler, outermost first.
	Middleware []task.Middleware
	// Timeout is the default per-attempt timeout (tasks.timeout). Default 5m.
	Timeout time.Duration
	// Grace: once an attempt's context ends (timeout, a caller that stops
	// waiting, shutdown), its handler has this long to return; then the
	// attempt is finished without it. Default [DefaultGrace].
	Grace time.Duration
	// Worker names this process in states, events and replies.
	Worker string
	// Store records the states of synchronous executions; nil = off.
	Store *results.Store
	// Events publishes their lifecycle events; nil = off.
	Events *jet.Events
	// Metrics counts attempts; nil = not counted.
	Metrics *Metrics
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Runner runs attempts. It is safe for concurrent use.
type Runner struct {
	cfg Config
	log zerolog.Logger
	dog *watchdog
}

// New returns a runner; log is the logger of the role that owns it.
func New(cfg Config, log zerolog.Logger) *Runner {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Runner{cfg: cfg, log: log, dog: newWatchdog(cfg.Grace, cfg.Now, cfg.Metrics)}
}

// Logger returns base with the fields of env's attempt.
func Logger(base zerolog.Logger, env *task.Envelope) zerolog.Logger {
	return base.With().Str(logging.TaskID, env.ID).Str(logging.TaskName, env.Name).
		Str(logging.Queue, env.Queue).Int(logging.Attempt, env.Attempt).Logger()
}

// Timeout is the one timeout rule: an attempt of env may run for its own
// timeout (the enqueue's "timeout", header Flotilla-Timeout), else the
// timeout its task was registered with (WithTimeout), else the default
// (tasks.timeout). A context with an earlier deadline — a synchronous
// caller's wait — ends the attempt earlier, as a timeout too.
func (r *Runner) Timeout(def *task.Definition, env *task.Envelope) time.Duration {
	switch {
	case env.Timeout > 0:
		return env.Timeout
	case def != nil && def.Options.Timeout > 0:
		return def.Options.Timeout
	default:
		return r.cfg.Timeout
	}
}

// TimeoutError is the failure of an attempt that outlived its deadline. It
// matches context.DeadlineExceeded.
type TimeoutError struct {
	// After is how long the attempt was allowed to run.
	After time.Duration
	// Abandoned is true when the handler had not returned Grace later: its
	// goroutine was left running (Go cannot stop it).
	Abandoned bool
	Grace     time.Duration
	// Err is what the handler returned, if it returned.
	Err error
}

func (e *TimeoutError) Error() string {
	switch {
	case e.Abandoned:
		return fmt.Sprintf("timed out after %s; the handler ignored its context and was abandoned %s later", e.After, e.Grace)
	case e.Err == nil || errors.Is(e.Err, context.DeadlineExceeded):
		return fmt.Sprintf("timed out after %s", e.After)
	default:
		return fmt.Sprintf("timed out after %s: %v", e.After, e.Err)
	}
}

// Is makes a TimeoutError match context.DeadlineExceeded.
func (e *TimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// Unwrap returns what the handler returned.
func (e *TimeoutError) Unwrap() error { return e.Err }

// Outcome is how one attempt ended.
type Outcome struct {
	// Result is the handler's JSON result; set on success only.
	Result json.RawMessage
	// Err is nil on success.
	Err error
	// ErrorType is one of task.ErrorType*; "" on success.
	ErrorType string
	// Start and End of the attempt as the runner saw them.
	Start, End time.Time
	// Abandoned: the handler did not return within the grace period after
	// its context ended; its goroutine still runs.
	Abandoned bool
}

// Runtime is how long the attempt took.
func (o Outcome) Runtime() time.Duration { return o.End.Sub(o.Start) }

// Attempt states, for the race between a handler returning and its
// abandonment.
const (
	running int32 = iota
	returnedInTime
	abandonedState
)

// Run runs def's handler for env in the calling goroutine, wrapped in the
// middleware, with the attempt's timeout (see [Runner.Timeout]) and log
// (see [Logger]) in its context, and returns the outcome with ok true:
//
//   - the handler returned before its deadline: its result, or its error;
//   - the deadline passed first: a [TimeoutError], even if the handler
//     returns a result later within the grace period — the deadline is the
//     contract;
//   - the task was cancelled (ctx's cause is task.ErrCancelled) and the
//     handler returned an error: that error wrapped with
//     task.ErrCancelled (a handler that finished its work anyway
//     succeeds).
//
// A cancelled handler has [CancelGrace] instead of Grace when that is
// shorter.
// A handler that has not returned Grace after its context ended (deadline,
// caller gone, shutdown) is abandoned: the attempt ends as a
// [TimeoutError] (or the context's error) marked Abandoned, counted in
// flotilla_tasks_abandoned_total and logged with the task id, and
// abandoned is called with that outcome — once, on a goroutine of its own,
// while the handler still runs. The caller's goroutine stays in the
// handler (Go cannot stop it); when the handler returns at last, its result
// is dropped and Run returns ok false. So abandoned must finish the attempt
// and free whatever the caller's goroutine stood for (the worker starts a
// new handler goroutine in its place).
//
// Attempts run inline and one watchdog goroutine per runner checks the
// ones in flight a few times per grace period, so the hot path costs no
// goroutine hand-off and no timer beyond the context's own.
func (r *Runner) Run(ctx context.Context, def *task.Definition, env *task.Envelope, log zerolog.Logger, abandoned func(Outcome)) (Outcome, bool) {
	timeout := r.Timeout(def, env)
	start := r.cfg.Now()
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := hctx.Deadline()
	allowed := timeout
	if left := deadline.Sub(start); left < timeout {
		allowed = left.Round(time.Millisecond) // the caller's wait ends first
	}
	w := r.dog.watch(hctx, env, log, start, deadline, allowed, abandoned)
	res, err := task.Call(task.WithEnvelope(log.WithContext(hctx), env), def.Handler, env, r.cfg.Middleware...)
	o := Outcome{Start: start, End: r.cfg.Now()}
	if !r.dog.unwatch(w) {
		return Outcome{}, false // abandoned meanwhile; the attempt is finished
	}
	if !o.End.Before(deadline) && errors.Is(hctx.Err(), context.DeadlineExceeded) {
		o.Err = &TimeoutError{After: allowed, Err: err}
		o.ErrorType = task.ErrorTypeTimeout
		return o, true
	}
	if err != nil {
		if errors.Is(context.Cause(hctx), task.ErrCancelled) && !errors.Is(err, task.ErrCancelled) {
			err = fmt.Errorf("%w: %w", task.ErrCancelled, err)
		}
		o.Err, o.ErrorType = err, task.ErrorType(err)
		return o, true
	}
	o.Result = res
	return o, true
}

// Exec runs env as a synchronous execution: a started event, the attempt
// (see [Runner.Run]), its final state recorded under env.ID unless the task
// opts out, and a succeeded or failed event — every event with origin sync.
// It returns the reply the caller gets.
func (r *Runner) Exec(ctx context.Context, def *task.Definition, env *task.Envelope) wire.ExecReply {
	log := Logger(r.log, env)
	r.cfg.Events.Emit(&wire.Event{Kind: wire.EventStarted, ID: env.ID, Task: env.Name, Queue: env.Queue,
		Time: r.cfg.Now(), Attempt: env.Attempt, Origin: env.Origin, Worker: r.cfg.Worker})
	// The handler runs on a goroutine of its own so that an abandoned one
	// leaves the caller (a micro service instance, an HTTP request) free.
	outcomes := make(chan Outcome, 1)
	go func() {
		if o, ok := r.Run(ctx, def, env, log, func(o Outcome) { outcomes <- o }); ok {
			outcomes <- o
		}
	}()
	o := <-outcomes
	reply := wire.ExecReply{ID: env.ID, Worker: r.cfg.Worker, Started: o.Start, Finished: o.End, Result: o.Result}
	u := results.Update{Task: env.Name, Queue: env.Queue, Attempts: env.Attempt, EnqueuedAt: env.EnqueuedAt, Args: env.Args,
		StartedAt: o.Start, FinishedAt: o.End, Worker: r.cfg.Worker}
	hist := &results.Attempt{Attempt: env.Attempt, Worker: r.cfg.Worker, StartedAt: o.Start, FinishedAt: o.End, Outcome: OutcomeSuccess}
	ev := wire.Event{ID: env.ID, Task: env.Name, Queue: env.Queue, Time: o.End, Attempt: env.Attempt,
		Origin: env.Origin, Worker: r.cfg.Worker, RuntimeS: o.Runtime().Seconds()}
	if o.Err == nil {
		u.State, u.Result = task.StateSuccess, o.Result
		ev.Kind = wire.EventSucceeded
		r.cfg.Metrics.Observe(env, OutcomeSuccess, o.Runtime())
		log.Debug().Dur("runtime", o.Runtime()).Msg("sync task succeeded")
	} else {
		reply.Code, reply.Error, reply.ErrorType = wire.CodeHandlerError, o.Err.Error(), o.ErrorType
		u.State, u.Error = task.StateFailure, reply.Error
		ev.Kind, ev.Error, ev.ErrorType = wire.EventFailed, reply.Error, o.ErrorType
		outcome := OutcomeFailure
		switch o.ErrorType {
		case task.ErrorTypeTimeout:
			reply.Code = wire.CodeTimeout
		case task.ErrorTypeCancelled:
			reply.Code = wire.CodeCancelled
			u.State, ev.Kind, outcome = task.StateCancelled, wire.EventCancelled, OutcomeCancelled
		}
		r.cfg.Metrics.Observe(env, outcome, o.Runtime())
		hist.Outcome, hist.Error, hist.ErrorType = outcome, reply.Error, o.ErrorType
		LogFailure(log, o).Msg("sync task failed")
	}
	u.Attempt = hist
	if r.cfg.Store != nil && !def.Options.NoResult && env.ID != "" {
		// Queued before the reply goes out; the batching writer stores it
		// within about a millisecond.
		r.cfg.Store.SetAsync(env.ID, u)
	}
	r.cfg.Events.Emit(&ev)
	return reply
}

// LogFailure starts the log line of a failed attempt: a panic's stack at
// error level, other failures at warn.
func LogFailure(log zerolog.Logger, o Outcome) *zerolog.Event {
	var pe *task.PanicError
	if errors.As(o.Err, &pe) {
		return log.Error().Str("panic", fmt.Sprint(pe.Value)).Bytes("stack", pe.Stack)
	}
	return log.Warn().Err(o.Err).Str("error_type", o.ErrorType)
}
