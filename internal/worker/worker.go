// Package worker runs registered handlers for the durable consumers q-<queue>
// of the TASKS stream: bounded concurrency, result recording, retries with
// exponential backoff and jitter, dead-lettering, expiry, in-progress acks,
// per-task timeouts, panic recovery and graceful drain. It is the only place
// where handler outcomes turn into JetStream acks.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/logging"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/task"
)

// Config configures a [Worker].
type Config struct {
	// Queues to consume; each needs its consumer q-<queue> on TASKS.
	Queues []string
	// Concurrency is the number of handlers in flight per queue.
	Concurrency int
	// Prefetch is how many tasks per queue a worker pulls ahead, running or
	// waiting for a handler; waiting ones get in-progress acks. Default
	// max(Concurrency, 256): pulling in large batches is what makes a
	// JetStream consumer fast.
	Prefetch int
	// Name identifies this worker in task states and events.
	Name string
	// MaxRetries is the default retry budget.
	MaxRetries int
	// Timeout is the default per-attempt timeout.
	Timeout time.Duration
	// Backoff and BackoffMax shape the retry delay: Backoff*2^(attempt-1),
	// capped at BackoffMax, with jitter in [d/2, d).
	Backoff, BackoffMax time.Duration
	// AckWait of the consumers; in-progress acks are sent every AckWait/4.
	AckWait time.Duration
	// Events publishes lifecycle events.
	Events bool
	// Sync serves every registered task for synchronous execution through
	// the micro service "flotilla" (subjects flotilla.exec.<task>).
	Sync bool
	// SyncConcurrency is how many sync requests of one task may run at once
	// in this process (instances of the micro service). Default 8.
	SyncConcurrency int
	// ShutdownTimeout is the grace period for in-flight tasks on shutdown.
	ShutdownTimeout time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Worker consumes task queues. Create it with [New] and call Run once.
type Worker struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	reg   *task.Registry
	store *results.Store // nil: results off
	log   zerolog.Logger
	cfg   Config
	mw    []task.Middleware

	metrics *metrics
}

// New returns a worker. store may be nil when results are turned off.
func New(nc *nats.Conn, js jetstream.JetStream, reg *task.Registry, store *results.Store, log zerolog.Logger, cfg Config) *Worker {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SyncConcurrency <= 0 {
		cfg.SyncConcurrency = 8
	}
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = max(cfg.Concurrency, 256)
	}
	if cfg.Prefetch < cfg.Concurrency {
		cfg.Prefetch = cfg.Concurrency
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 10 * time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 25 * time.Second
	}
	return &Worker{
		nc: nc, js: js, reg: reg, store: store, cfg: cfg,
		log:     log.With().Str(logging.Component, "worker").Logger(),
		metrics: defaultMetrics(),
	}
}

// Use adds handler middleware, outermost first. Call before Run.
func (w *Worker) Use(mw ...task.Middleware) { w.mw = append(w.mw, mw...) }

// Run consumes until ctx is done, then drains: it stops pulling, NAKs
// buffered tasks, lets in-flight tasks finish within ShutdownTimeout, then
// cancels their contexts and waits for them.
func (w *Worker) Run(ctx context.Context) error {
	var consumers []jetstream.Consumer
	for _, q := range w.cfg.Queues {
		c, err := w.js.Consumer(ctx, jet.StreamTasks, jet.ConsumerName(q))
		if err != nil {
			return fmt.Errorf("consumer %s of queue %s: %w (run `flotilla streams apply` or start the worker with streams applied)", jet.ConsumerName(q), q, err)
		}
		consumers = append(consumers, c)
	}

	// Handler contexts come from a work context that outlives ctx so that
	// SIGTERM lets in-flight tasks finish.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopping := make(chan struct{})

	var handlers sync.WaitGroup
	var ccs []jetstream.ConsumeContext
	var inboxes []*inbox
	stopAll := func() {
		close(stopping)
		for _, in := range inboxes {
			for _, m := range in.drain() {
				_ = m.Nak()
			}
			in.close()
		}
		for _, cc := range ccs {
			cc.Drain()
		}
	}
	for i, c := range consumers {
		in := newInbox(w.cfg.Prefetch)
		inboxes = append(inboxes, in)
		for n := 0; n < w.cfg.Concurrency; n++ {
			handlers.Add(1)
			go func() {
				defer handlers.Done()
				for {
					m, ok := in.get()
					if !ok {
						return
					}
					w.process(workCtx, m)
				}
			}()
		}
		cc, err := c.Consume(func(m jetstream.Msg) {
			select {
			case <-stopping:
				_ = m.Nak()
				return
			default:
			}
			if !in.put(m) {
				_ = m.Nak()
			}
		}, jetstream.PullMaxMessages(w.cfg.Prefetch), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) && !errors.Is(err, nats.ErrConnectionClosed) {
				w.log.Warn().Err(err).Str(logging.Queue, w.cfg.Queues[i]).Msg("consume")
			}
		}))
		if err != nil {
			stopAll()
			handlers.Wait()
			return fmt.Errorf("consume queue %s: %w", w.cfg.Queues[i], err)
		}
		ccs = append(ccs, cc)
	}
	mover, err := w.startMover(ctx)
	if err != nil {
		stopAll()
		handlers.Wait()
		return err
	}
	defer mover.Stop()

	var svcs []micro.Service
	if w.cfg.Sync {
		if svcs, err = w.serve(workCtx); err != nil {
			stopAll()
			handlers.Wait()
			return err
		}
	}

	// Tasks waiting in an inbox get in-progress acks, like running ones.
	keeperDone := make(chan struct{})
	go func() {
		defer close(keeperDone)
		t := time.NewTicker(w.cfg.AckWait / 4)
		defer t.Stop()
		for {
			select {
			case <-stopping:
				return
			case <-t.C:
				for _, in := range inboxes {
					in.keepAlive()
				}
			}
		}
	}()
	w.log.Info().Strs("queues", w.cfg.Queues).Int("concurrency", w.cfg.Concurrency).Int("prefetch", w.cfg.Prefetch).Str(logging.Worker, w.cfg.Name).Msg("worker started")

	<-ctx.Done()
	w.log.Info().Msg("worker draining: no new tasks, finishing in-flight ones")
	// Sync requests first: stop taking them; Stop drains, so the ones
	// already received are answered.
	for _, svc := range svcs {
		if err := svc.Stop(); err != nil {
			w.log.Warn().Err(err).Msg("stop sync service")
		}
	}
	stopAll()
	<-keeperDone
	done := make(chan struct{})
	go func() { handlers.Wait(); close(done) }()
	grace := time.NewTimer(w.cfg.ShutdownTimeout)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		w.log.Warn().Dur("grace", w.cfg.ShutdownTimeout).Msg("grace period over: cancelling in-flight tasks")
		cancelWork()
		<-done
	}
	for _, cc := range ccs {
		select {
		case <-cc.Closed():
		case <-time.After(5 * time.Second):
		}
	}
	w.log.Info().Msg("worker stopped")
	return nil
}

// PoisonSlack is how many deliveries beyond MaxRetries+1 a task may have
// before it is dead-lettered unrun (see process).
const PoisonSlack = 3

// outcome of one attempt, for metrics and logs.
const (
	outSuccess = "success"
	outRetry   = "retry"
	outDead    = "dead"
	outExpired = "expired"
)

type attempt struct {
	msg    jetstream.Msg
	env    *task.Envelope
	def    *task.Definition
	record bool
	notify string
	start  time.Time
	log    zerolog.Logger
}

func (w *Worker) process(ctx context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	n := 1
	if err == nil {
		n = int(meta.NumDelivered)
	}
	h := m.Headers()
	env, err := jet.DecodeTask(m.Subject(), h, m.Data())
	env.Attempt = n
	a := &attempt{msg: m, env: env, notify: h.Get(task.HeaderNotify), start: w.cfg.Now()}
	a.log = w.log.With().Str(logging.TaskID, env.ID).Str(logging.TaskName, env.Name).
		Str(logging.Queue, env.Queue).Int(logging.Attempt, n).Logger()
	if err != nil {
		w.dead(ctx, a, err.Error())
		return
	}
	def, err := w.reg.Lookup(env.Name)
	if err != nil {
		w.dead(ctx, a, err.Error())
		return
	}
	a.def = def
	a.record = w.store != nil && !def.Options.NoResult
	if env.MaxRetries < 0 {
		env.MaxRetries = w.cfg.MaxRetries
		if def.Options.MaxRetries != nil {
			env.MaxRetries = *def.Options.MaxRetries
		}
	}
	if !env.Expires.IsZero() && a.start.After(env.Expires) {
		w.expire(ctx, a)
		return
	}
	// Deliveries also count NAKs of tasks a stopping worker had buffered but
	// never ran, so a poison task is one delivered PoisonSlack times more
	// than its budget allows.
	if n > env.MaxRetries+1+PoisonSlack {
		w.dead(ctx, a, fmt.Sprintf("delivered %d times, over its budget of %d retries (a worker may have died while running it)", n, env.MaxRetries))
		return
	}
	timeout := env.Timeout
	if timeout <= 0 {
		timeout = def.Options.Timeout
	}
	if timeout <= 0 {
		timeout = w.cfg.Timeout
	}
	if a.record {
		w.store.SetAsync(env.ID, results.Update{
			Task: env.Name, Queue: env.Queue, State: task.StateStarted, StartedAt: a.start,
			Attempts: n, Worker: w.cfg.Name,
		})
	}
	w.event(jet.EventStarted, a, "")
	a.log.Debug().Msg("task started")

	hctx, cancel := context.WithTimeout(a.log.WithContext(ctx), timeout)
	progress := w.keepAlive(m)
	res, herr := task.Call(hctx, def.Handler, env, w.mw...)
	progress.Stop()
	cancel()
	if herr == nil {
		w.succeed(ctx, a, res)
		return
	}
	if errors.Is(herr, context.DeadlineExceeded) && hctx.Err() != nil && ctx.Err() == nil {
		herr = fmt.Errorf("timed out after %s: %w", timeout, herr)
	}
	w.fail(ctx, a, herr)
}

// keepAlive sends in-progress acks every AckWait/4 while a handler runs.
type progressTimer struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (p *progressTimer) Stop() {
	p.mu.Lock()
	p.stopped = true
	p.t.Stop()
	p.mu.Unlock()
}

func (w *Worker) keepAlive(m jetstream.Msg) *progressTimer {
	p := &progressTimer{}
	every := w.cfg.AckWait / 4
	var fire func()
	fire = func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.stopped {
			return
		}
		_ = m.InProgress()
		p.t = time.AfterFunc(every, fire)
	}
	p.mu.Lock()
	p.t = time.AfterFunc(every, fire)
	p.mu.Unlock()
	return p
}

func (w *Worker) succeed(ctx context.Context, a *attempt, raw json.RawMessage) {
	now := w.cfg.Now()
	if a.record {
		if err := w.store.Set(ctx, a.env.ID, results.Update{State: task.StateSuccess, Result: raw, FinishedAt: now, ClearError: true}); err != nil {
			// Not recorded: do not ack, so the task is not lost; it runs again.
			a.log.Error().Err(err).Msg("result not recorded; task will be redelivered")
			_ = a.msg.NakWithDelay(time.Second)
			w.metrics.observe(a.env, outRetry, now.Sub(a.start))
			return
		}
	}
	if err := a.msg.Ack(); err != nil {
		a.log.Warn().Err(err).Msg("ack")
	}
	w.metrics.observe(a.env, outSuccess, now.Sub(a.start))
	w.event(jet.EventSucceeded, a, "")
	w.notify(a, task.StateSuccess, raw, "", now)
	a.log.Debug().Dur("runtime", now.Sub(a.start)).Msg("task succeeded")
}

func (w *Worker) fail(ctx context.Context, a *attempt, herr error) {
	msg := herr.Error()
	var pe *task.PanicError
	if errors.As(herr, &pe) {
		a.log.Error().Str("panic", fmt.Sprint(pe.Value)).Bytes("stack", pe.Stack).Msg("handler panicked")
	}
	w.event(jet.EventFailed, a, msg)
	if task.IsPermanent(herr) {
		w.dead(ctx, a, msg)
		return
	}
	if a.env.Attempt > a.env.MaxRetries {
		w.dead(ctx, a, msg)
		return
	}
	delay := w.backoff(a.env.Attempt)
	var re *task.RetryError
	if errors.As(herr, &re) && re.Delay > 0 {
		delay = re.Delay
	}
	now := w.cfg.Now()
	if a.record {
		w.store.SetAsync(a.env.ID, results.Update{State: task.StateRetry, Error: msg, Attempts: a.env.Attempt})
	}
	if err := a.msg.NakWithDelay(delay); err != nil {
		a.log.Warn().Err(err).Msg("nak")
	}
	w.metrics.observe(a.env, outRetry, now.Sub(a.start))
	w.event(jet.EventRetried, a, msg)
	a.log.Warn().Err(herr).Dur("retry_in", delay).Msg("task failed; will retry")
}

// backoff is Backoff*2^(attempt-1) capped at BackoffMax, jittered into [d/2, d).
func (w *Worker) backoff(attempt int) time.Duration {
	d := w.cfg.Backoff
	for i := 1; i < attempt && d < w.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, w.cfg.BackoffMax)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half)
}

// dead publishes the task to DEAD, waits for the stream's ack, records
// FAILURE and only then terminates the original, so nothing is lost in between.
func (w *Worker) dead(ctx context.Context, a *attempt, reason string) {
	env := a.env
	h := nats.Header{}
	for k, v := range a.msg.Headers() {
		h[k] = v
	}
	h[task.HeaderError] = []string{reason}
	h[task.HeaderAttempts] = []string{strconv.Itoa(env.Attempt)}
	q, name := env.Queue, env.Name
	if task.ValidateQueue(q) != nil {
		q = "_invalid"
	}
	if task.ValidateName(name) != nil {
		name = "_invalid"
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := w.js.PublishMsg(pctx, &nats.Msg{Subject: jet.DeadSubject(q, name), Header: h, Data: a.msg.Data()}); err != nil {
		a.log.Error().Err(err).Str("reason", reason).Msg("dead-letter publish failed; task stays queued")
		_ = a.msg.NakWithDelay(5 * time.Second)
		return
	}
	now := w.cfg.Now()
	if w.store != nil && (a.def == nil || !a.def.Options.NoResult) && env.ID != "" {
		u := results.Update{Task: env.Name, Queue: env.Queue, State: task.StateFailure, Error: reason, Attempts: env.Attempt, FinishedAt: now, Worker: w.cfg.Name}
		if err := w.store.Set(pctx, env.ID, u); err != nil {
			a.log.Warn().Err(err).Msg("record FAILURE")
		}
	}
	if err := a.msg.TermWithReason("dead-lettered"); err != nil {
		a.log.Warn().Err(err).Msg("term")
	}
	w.metrics.observe(env, outDead, now.Sub(a.start))
	w.event(jet.EventDead, a, reason)
	w.notify(a, task.StateFailure, nil, reason, now)
	a.log.Error().Str("reason", reason).Msg("task dead-lettered")
}

func (w *Worker) expire(ctx context.Context, a *attempt) {
	env := a.env
	now := w.cfg.Now()
	reason := "expired at " + env.Expires.UTC().Format(time.RFC3339Nano)
	if a.record {
		u := results.Update{Task: env.Name, Queue: env.Queue, State: task.StateExpired, Error: reason, Attempts: env.Attempt, FinishedAt: now, Worker: w.cfg.Name}
		if err := w.store.Set(ctx, env.ID, u); err != nil {
			a.log.Error().Err(err).Msg("expired state not recorded; task will be redelivered")
			_ = a.msg.NakWithDelay(time.Second)
			return
		}
	}
	_ = a.msg.TermWithReason("expired")
	w.metrics.observe(env, outExpired, 0)
	w.event(jet.EventExpired, a, reason)
	w.notify(a, task.StateExpired, nil, reason, now)
	a.log.Info().Msg("task expired; not run")
}

// event publishes a lifecycle event with core NATS (best effort: events are
// for dashboards, the state of record is in Redis and the streams).
func (w *Worker) event(kind string, a *attempt, errMsg string) {
	if !w.cfg.Events || a.env.ID == "" {
		return
	}
	q, name := a.env.Queue, a.env.Name
	if task.ValidateQueue(q) != nil || task.ValidateName(name) != nil {
		return
	}
	now := w.cfg.Now()
	runtime := 0.0
	if kind != jet.EventStarted {
		runtime = now.Sub(a.start).Seconds()
	}
	_ = w.nc.Publish(jet.EventSubject(kind, q, name), appendEvent(make([]byte, 0, 256), a, w.cfg.Name, now, errMsg, runtime))
}

// appendEvent encodes an event as JSON by hand: it runs twice per task, and
// every field but the error is known to need no escaping (validated names, a
// ULID) — the error and worker name go through encoding/json.
func appendEvent(b []byte, a *attempt, worker string, now time.Time, errMsg string, runtime float64) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, a.env.ID...)
	b = append(b, `","task":"`...)
	b = append(b, a.env.Name...)
	b = append(b, `","queue":"`...)
	b = append(b, a.env.Queue...)
	b = append(b, `","attempt":`...)
	b = strconv.AppendInt(b, int64(a.env.Attempt), 10)
	b = append(b, `,"worker":`...)
	wq, _ := json.Marshal(worker)
	b = append(b, wq...)
	b = append(b, `,"time":"`...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if errMsg != "" {
		eq, _ := json.Marshal(errMsg)
		b = append(b, `,"error":`...)
		b = append(b, eq...)
	}
	if runtime > 0 {
		b = append(b, `,"runtime_s":`...)
		b = strconv.AppendFloat(b, runtime, 'f', -1, 64)
	}
	return append(b, '}')
}

// notify tells a waiting caller the final state over core NATS.
func (w *Worker) notify(a *attempt, state string, res json.RawMessage, errMsg string, now time.Time) {
	if a.notify == "" {
		return
	}
	st := results.State{
		ID: a.env.ID, Task: a.env.Name, Queue: a.env.Queue, State: state, Result: res, Error: errMsg,
		Attempts: a.env.Attempt, StartedAt: &a.start, FinishedAt: &now, Worker: w.cfg.Name,
	}
	if !a.env.EnqueuedAt.IsZero() {
		st.EnqueuedAt = &a.env.EnqueuedAt
	}
	b, _ := json.Marshal(st)
	_ = w.nc.Publish(a.notify, b)
}
