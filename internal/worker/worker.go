// Package worker runs registered handlers for the durable consumers q-<queue>
// of the TASKS stream: bounded concurrency, result recording, retries with
// exponential backoff and jitter, dead-lettering, expiry, in-progress acks,
// and graceful drain; it also moves due delayed tasks into their queues and
// serves synchronous executions. Attempts themselves (timeouts, middleware,
// outcomes) are package attempt's; this package is the only place where
// outcomes turn into JetStream acks.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/attempt"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/limits"
	"github.com/flotilla/flotilla/internal/logging"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/revoke"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// Config configures a [Worker].
type Config struct {
	// Queues to consume; each needs its consumer q-<queue> on TASKS.
	Queues []string
	// Concurrency is the number of handlers running at once per queue. A
	// task whose handler returned waits for its final state to be recorded
	// without holding one: up to FinishFactor × Concurrency tasks per queue
	// are running or finishing.
	Concurrency int
	// Prefetch is how many tasks per queue a worker pulls ahead, waiting
	// for a handler; waiting ones get in-progress acks. Default
	// max(Concurrency, 256): pulling in large batches is what makes a
	// JetStream consumer fast.
	Prefetch int
	// Name identifies this worker in task states and events.
	Name string
	// Version of the binary, announced with the worker.
	Version string
	// MaxRetries is the default retry budget.
	MaxRetries int
	// Timeout is the default per-attempt timeout; Grace how long a handler
	// whose context ended may take to return (see package attempt).
	Timeout, Grace time.Duration
	// Middleware wraps every handler, outermost first.
	Middleware []task.Middleware
	// Backoff and BackoffMax shape the retry delay: Backoff*2^(attempt-1),
	// capped at BackoffMax, with jitter in [d/2, d).
	Backoff, BackoffMax time.Duration
	// AckWait of the consumers; in-progress acks are sent every AckWait/4.
	AckWait time.Duration
	// Events is the level of the lifecycle events published; empty =
	// none.
	Events wire.EventLevel
	// Sync serves every registered task for synchronous execution through
	// the micro service "flotilla" (subjects flotilla.exec.<task>).
	Sync bool
	// SyncConcurrency is how many sync requests of one task may run at once
	// in this process (instances of the micro service). Default 8.
	SyncConcurrency int
	// ShutdownTimeout is the grace period for in-flight tasks on shutdown.
	ShutdownTimeout time.Duration
	// Metrics registers the task metrics; nil = a private registry.
	Metrics prometheus.Registerer
	// Limiter enforces the tasks' rate and concurrency limits; nil =
	// limits are not enforced.
	Limiter *limits.Limiter
	// Workflows moves on the workflow of a task that ended (the next step
	// of its chain, its group's end, its chord's callback); nil: tasks of
	// workflows end on their own and the workflow stalls.
	Workflows Advancer
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Worker consumes task queues. Create it with [New] and call Run once.
type Worker struct {
	held    prometheus.Gauge
	holdLog zerolog.Logger
	nc      *nats.Conn
	js      jetstream.JetStream
	reg     *task.Registry
	store   *results.Store // nil: results off
	log     zerolog.Logger
	cfg     Config
	events  *jet.Events
	metrics *attempt.Metrics
	runner  *attempt.Runner
	running *running
	// cancels is set by Run before the queues are consumed.
	cancels *revoke.Set
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
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 25 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	log = log.With().Str(logging.Component, "worker").Logger()
	w := &Worker{
		nc: nc, js: js, reg: reg, store: store, cfg: cfg, log: log,
		events:  jet.NewEvents(nc, cfg.Events),
		metrics: attempt.NewMetrics(cfg.Metrics),
		running: newRunning(),
	}
	w.held = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flotilla_tasks_held",
		Help: "Tasks that ran and are held (not acked, kept alive) until Redis records their final state.",
	})
	cfg.Metrics.MustRegister(w.held)
	w.holdLog = log.Sample(&zerolog.BurstSampler{Burst: 1, Period: 5 * time.Second})
	w.runner = attempt.New(attempt.Config{
		Middleware: cfg.Middleware, Timeout: cfg.Timeout, Grace: cfg.Grace, Worker: cfg.Name,
		Store: store, Events: w.events, Metrics: w.metrics, Now: cfg.Now,
	}, log)
	return w
}

// queueRunner consumes one queue: its durable consumer feeds an inbox that
// FinishFactor×Concurrency slot goroutines take tasks from. A slot takes
// one of Concurrency handler tokens before it takes a task, and gives it
// back when the handler returned and its outcome is to be recorded in
// Redis, before that round trip and the ack: a slot waiting for a token
// holds no task.
type queueRunner struct {
	queue    string
	consumer jetstream.Consumer
	in       *inbox
	cc       jetstream.ConsumeContext
	tokens   chan struct{} // a free handler slot each; Concurrency of them
}

// FinishFactor is how many tasks per handler slot a queue may hold at
// once: running, or ran and waiting for their final state to be recorded
// and acked. Recording waits for a Redis round trip (group-committed with
// other tasks' writes); a slot that waited for it with its token would
// leave handlers idle for that time.
const FinishFactor = 4

// token is a slot's claim on one of its queue's handler tokens.
type token struct {
	q    *queueRunner
	held atomic.Bool
}

// take waits for a handler token unless the slot holds one already.
func (t *token) take() {
	if !t.held.Load() {
		t.q.tokens <- struct{}{}
		t.held.Store(true)
	}
}

// give hands the token back if the slot holds it; the abandonment of a
// hung handler calls it from a goroutine of its own.
func (t *token) give() {
	if t.held.CompareAndSwap(true, false) {
		<-t.q.tokens
	}
}

// slot starts one handler goroutine (tracked by handlers) taking tasks from
// the inbox until it closes. A goroutine whose handler is abandoned stops
// being a slot: the abandonment starts a new slot in its place and releases
// the old one's count, so shutdown does not wait for a hung handler. A
// slot keeps its token from one task to the next unless it gave it back
// to wait for Redis: handing it over costs a goroutine switch.
func (q *queueRunner) slot(w *Worker, workCtx context.Context, handlers *sync.WaitGroup) {
	handlers.Add(1)
	go func() {
		tok := &token{q: q}
		for {
			tok.take()
			m, ok := q.in.get()
			if !ok {
				tok.give()
				handlers.Done()
				return
			}
			replaced := func() {
				q.slot(w, workCtx, handlers) // Add before Done: the count never touches zero
				handlers.Done()
			}
			if !w.process(workCtx, m, tok.give, replaced) {
				return // abandoned: replaced took over this slot's count
			}
		}
	}()
}

// PullExpiry bounds each pull request of a queue: a queue resumed through
// the consumer pause API delivers when the next pull is issued
// (nats-server 2.15 does not wake the pulls waiting on a paused consumer),
// so it delivers at most this long after the resume — instead of ~13 s with
// nats.go's default of 30 s. An idle worker issues one pull per queue this
// often.
const PullExpiry = 3 * time.Second

// start launches the handlers (tracked by handlers) and the consumer.
// Tasks that arrive once stopping is closed are NAKed at once.
func (q *queueRunner) start(w *Worker, workCtx context.Context, stopping <-chan struct{}, handlers *sync.WaitGroup) error {
	for range FinishFactor * w.cfg.Concurrency {
		q.slot(w, workCtx, handlers)
	}
	cc, err := q.consumer.Consume(func(m jetstream.Msg) {
		select {
		case <-stopping:
			_ = m.Nak()
			return
		default:
		}
		if !q.in.put(m) {
			_ = m.Nak()
		}
	}, jetstream.PullMaxMessages(w.cfg.Prefetch), jetstream.PullExpiry(PullExpiry), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if !errors.Is(err, jetstream.ErrNoHeartbeat) && !errors.Is(err, nats.ErrConnectionClosed) {
			w.log.Warn().Err(err).Str(logging.Queue, q.queue).Msg("consume")
		}
	}))
	if err != nil {
		return fmt.Errorf("consume queue %s: %w", q.queue, err)
	}
	q.cc = cc
	return nil
}

// stop NAKs what is buffered, releases the handlers and stops pulling.
func (q *queueRunner) stop() {
	for _, m := range q.in.drain() {
		_ = m.Nak()
	}
	q.in.close()
	if q.cc != nil {
		q.cc.Drain()
	}
}

// closed waits (up to 5 s) for the consumer to finish draining.
func (q *queueRunner) closed() {
	if q.cc == nil {
		return
	}
	select {
	case <-q.cc.Closed():
	case <-time.After(5 * time.Second):
	}
}

// Run consumes until ctx is done, then drains: it stops pulling, NAKs
// buffered tasks, lets in-flight tasks finish within ShutdownTimeout, then
// cancels their contexts and waits for them (a handler that ignores its
// context is abandoned after the attempt grace).
func (w *Worker) Run(ctx context.Context) error {
	queues := make([]*queueRunner, 0, len(w.cfg.Queues))
	for _, q := range w.cfg.Queues {
		c, err := w.js.Consumer(ctx, wire.StreamTasks, wire.ConsumerName(q))
		if err != nil {
			return fmt.Errorf("consumer %s of queue %s: %w (run `flotilla streams apply` or start the worker with streams applied)", wire.ConsumerName(q), q, err)
		}
		queues = append(queues, &queueRunner{queue: q, consumer: c, in: newInbox(w.cfg.Prefetch), tokens: make(chan struct{}, w.cfg.Concurrency)})
	}

	// Handler contexts come from a work context that outlives ctx so that
	// SIGTERM lets in-flight tasks finish.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	// Every cancellation is known before the first task arrives.
	cancels, err := revoke.Watch(workCtx, w.js, w.log, func(id string) { w.running.cancel(id) })
	if err != nil {
		return err
	}
	w.cancels = cancels
	ann, err := w.announce(workCtx)
	if err != nil {
		return err
	}
	defer ann.close()
	stopping := make(chan struct{})
	var handlers sync.WaitGroup
	stopAll := func() {
		close(stopping)
		for _, q := range queues {
			q.stop()
		}
	}
	fail := func(err error) error {
		stopAll()
		handlers.Wait()
		return err
	}
	for _, q := range queues {
		if err := q.start(w, workCtx, stopping, &handlers); err != nil {
			return fail(err)
		}
	}
	mover, err := w.startMover(ctx)
	if err != nil {
		return fail(err)
	}
	defer mover.Stop()
	var svcs []micro.Service
	if w.cfg.Sync {
		if svcs, err = w.serve(workCtx); err != nil {
			return fail(err)
		}
	}
	keeperDone := make(chan struct{})
	go func() {
		defer close(keeperDone)
		w.keepBuffered(queues, stopping)
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
	for _, q := range queues {
		q.closed()
	}
	w.log.Info().Msg("worker stopped")
	return nil
}

// keepBuffered sends in-progress acks for tasks waiting in an inbox every
// AckWait/4, like the running ones get, until stopping is closed.
func (w *Worker) keepBuffered(queues []*queueRunner, stopping <-chan struct{}) {
	t := time.NewTicker(w.cfg.AckWait / 4)
	defer t.Stop()
	for {
		select {
		case <-stopping:
			return
		case <-t.C:
			for _, q := range queues {
				q.in.keepAlive()
			}
		}
	}
}

// PoisonSlack is how many deliveries beyond MaxRetries+1 a task may have
// before it is dead-lettered unrun (see process).
const PoisonSlack = 3

// delivery is one delivery of a task message being processed.
type delivery struct {
	msg    jetstream.Msg
	env    *task.Envelope
	def    *task.Definition
	record bool
	notify string
	start  time.Time
	log    zerolog.Logger
	// ran is the attempt that led to a dead letter, when one ran.
	ran *attempt.Outcome
}

// process handles one delivery, holding a handler token that release
// gives back: it does so when the handler was abandoned, and when it
// returned and the final state is to be recorded in Redis — before that
// round trip and the ack. It returns
// false when the handler was abandoned (see attempt.Runner.Run): the
// attempt was then finished and replaced called from the abandonment, and
// the calling goroutine, back at last, must stop.
func (w *Worker) process(ctx context.Context, m jetstream.Msg, release, replaced func()) bool {
	n := 1
	if meta, err := m.Metadata(); err == nil {
		n = int(meta.NumDelivered)
	}
	h := m.Headers()
	env, err := wire.DecodeTask(m.Subject(), h, m.Data())
	env.Attempt = n
	d := &delivery{msg: m, env: env, start: w.cfg.Now()}
	d.log = attempt.Logger(w.log, env)
	if notify := h.Get(wire.HeaderNotify); notify != "" {
		if wire.ValidNotify(notify) {
			d.notify = notify
		} else {
			// Only flotilla.notify.<who>. subjects: a producer cannot make a
			// worker publish into an inbox or onto another stream.
			w.holdLog.Warn().Str(logging.TaskID, env.ID).Str("notify", notify).Msg("ignoring Flotilla-Notify: not a flotilla.notify.<who>.<token> subject")
		}
	}
	// In-progress acks flow from here until the delivery is acked, NAKed or
	// terminated: while the handler runs, and while a final state waits
	// for Redis.
	progress := w.keepAlive(m)
	defer progress.Stop()
	if err != nil {
		w.dead(ctx, d, err.Error())
		return true
	}
	def, err := w.reg.Lookup(env.Name)
	if err != nil {
		w.dead(ctx, d, err.Error())
		return true
	}
	d.def = def
	d.record = w.store != nil && !def.Options.NoResult
	if env.MaxRetries < 0 {
		env.MaxRetries = w.cfg.MaxRetries
		if def.Options.MaxRetries != nil {
			env.MaxRetries = *def.Options.MaxRetries
		}
	}
	if !env.Expires.IsZero() && d.start.After(env.Expires) {
		w.expire(ctx, d)
		return true
	}
	if def.Options.Limited() && w.cfg.Limiter != nil {
		lease, ok := w.limit(ctx, d)
		if !ok {
			return true
		}
		defer lease.Release(context.WithoutCancel(ctx))
		n = env.Attempt // deferrals were not attempts
		d.start = w.cfg.Now()
	}
	// Deliveries also count NAKs of tasks a stopping worker had buffered but
	// never ran, so a poison task is one delivered PoisonSlack times more
	// than its budget allows.
	if n > env.MaxRetries+1+PoisonSlack {
		w.dead(ctx, d, fmt.Sprintf("delivered %d times, over its budget of %d retries (a worker may have died while running it)", n, env.MaxRetries))
		return true
	}
	if w.cancels.Has(env.ID) {
		release()
		w.cancelled(ctx, d, attempt.Outcome{})
		return true
	}
	if d.record {
		w.store.SetAsync(env.ID, results.Update{IndexTime: d.env.EnqueuedAt,
			Task: env.Name, Queue: env.Queue, State: task.StateStarted, StartedAt: d.start,
			Attempts: n, Worker: w.cfg.Name,
		})
	}
	w.event(d, wire.EventStarted, nil)
	d.log.Debug().Msg("task started")

	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rn := w.running.add(env, d.start, cancel)
	if w.cancels.Has(env.ID) {
		cancel(task.ErrCancelled) // cancelled between the check above and add
	}
	o, ok := w.runner.Run(rctx, def, env, d.log, func(o attempt.Outcome) {
		w.running.remove(rn, true)
		release() // the hung handler no longer counts
		w.fail(ctx, d, o)
		progress.Stop()
		replaced()
	})
	if !ok {
		return false
	}
	if d.record {
		release()
	}
	w.running.remove(rn, o.Err != nil)
	if o.Err == nil {
		w.succeed(ctx, d, o)
	} else {
		w.fail(ctx, d, o)
	}
	return true
}

// progressTimer sends in-progress acks every AckWait/4 while a handler runs.
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

// Advancer moves workflows on (workflow.Engine).
type Advancer interface {
	Advance(ctx context.Context, env *task.Envelope, state string, result json.RawMessage, errMsg string) error
}

// advance moves on the workflow of d's task, which ended in state, before
// the task is acked: a worker that dies in between leaves the task to be
// delivered again, and its workflow is moved on then (every step of that
// is idempotent). Failures (Redis or NATS down) are retried with backoff
// while ctx lives, the task held by in-progress acks; false when ctx ended
// first.
func (w *Worker) advance(ctx context.Context, d *delivery, state string, result json.RawMessage, errMsg string) bool {
	if d.env.Workflow == "" || w.cfg.Workflows == nil {
		return true
	}
	wait := 100 * time.Millisecond
	for {
		err := w.cfg.Workflows.Advance(ctx, d.env, state, result, errMsg)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		w.holdLog.Warn().Err(err).Str(logging.TaskID, d.env.ID).Str("workflow", d.env.Workflow).
			Msg("workflow not moved on; holding the task and retrying (logged at most every 5 s)")
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// record writes a final state of d's task and waits until Redis has it. A
// task whose handler ran is held while Redis is unavailable — in-progress
// acks keep it, the write is retried with backoff up to 5 s — so that an
// outage neither runs it again nor counts deliveries towards dead-lettering
// it; its state is written as soon as Redis is back. Only when ctx ends
// (the worker's shutdown grace is over) does record give up and report
// false.
func (w *Worker) record(ctx context.Context, d *delivery, u results.Update) bool {
	wait := 100 * time.Millisecond
	held := false
	defer func() {
		if held {
			w.held.Dec()
		}
	}()
	for {
		err := w.store.Set(ctx, d.env.ID, u)
		if err == nil {
			if held {
				d.log.Info().Msg("final state recorded after Redis came back")
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if !held {
			held = true
			w.held.Inc()
		}
		w.holdLog.Warn().Err(err).Str(logging.TaskID, d.env.ID).Msg("final state not recorded: Redis unavailable; holding the task and retrying (logged at most every 5 s)")
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// history is the entry of attempt o of d in its task's history.
func (w *Worker) history(d *delivery, o attempt.Outcome, outcome string) *results.Attempt {
	a := &results.Attempt{Attempt: d.env.Attempt, Worker: w.cfg.Name, StartedAt: o.Start, FinishedAt: o.End, Outcome: outcome, ErrorType: o.ErrorType}
	if o.Err != nil {
		a.Error = o.Err.Error()
	}
	var pe *task.PanicError
	if errors.As(o.Err, &pe) {
		a.Traceback = string(pe.Stack[:min(len(pe.Stack), results.MaxTraceback)])
	}
	return a
}

func (w *Worker) succeed(ctx context.Context, d *delivery, o attempt.Outcome) {
	if d.record && !w.record(ctx, d, results.Update{IndexTime: d.env.EnqueuedAt, State: task.StateSuccess, Result: o.Result, FinishedAt: o.End, ClearError: true,
		Attempt: w.history(d, o, attempt.OutcomeSuccess)}) {
		// Shutting down without the result recorded: the task runs again.
		d.log.Error().Msg("result not recorded before shutdown; task will be redelivered")
		_ = d.msg.NakWithDelay(time.Second)
		w.metrics.Observe(d.env, attempt.OutcomeRetry, o.Runtime())
		return
	}
	if !w.advance(ctx, d, task.StateSuccess, o.Result, "") {
		d.log.Error().Msg("workflow not moved on before shutdown; task will be redelivered")
		_ = d.msg.NakWithDelay(time.Second)
		return
	}
	if err := d.msg.Ack(); err != nil {
		d.log.Warn().Err(err).Msg("ack")
	}
	w.metrics.Observe(d.env, attempt.OutcomeSuccess, o.Runtime())
	w.event(d, wire.EventSucceeded, &o)
	w.notify(d, task.StateSuccess, o.Result, "", o.End)
	d.log.Debug().Dur("runtime", o.Runtime()).Msg("task succeeded")
}

func (w *Worker) fail(ctx context.Context, d *delivery, o attempt.Outcome) {
	if o.ErrorType == task.ErrorTypeCancelled {
		w.cancelled(ctx, d, o)
		return
	}
	msg := o.Err.Error()
	w.event(d, wire.EventFailed, &o)
	if task.IsPermanent(o.Err) || d.env.Attempt > d.env.MaxRetries {
		attempt.LogFailure(d.log, o).Msg("task failed")
		d.ran = &o
		w.dead(ctx, d, msg)
		return
	}
	delay := w.backoff(d.env.Attempt)
	var re *task.RetryError
	if errors.As(o.Err, &re) && re.Delay > 0 {
		delay = re.Delay
	}
	if d.record {
		w.store.SetAsync(d.env.ID, results.Update{IndexTime: d.env.EnqueuedAt, State: task.StateRetry, Error: msg, Attempts: d.env.Attempt,
			Attempt: w.history(d, o, attempt.OutcomeRetry)})
	}
	if err := d.msg.NakWithDelay(delay); err != nil {
		d.log.Warn().Err(err).Msg("nak")
	}
	w.metrics.Observe(d.env, attempt.OutcomeRetry, o.Runtime())
	ev := w.newEvent(d, wire.EventRetried, &o)
	ev.RetryInS = delay.Seconds()
	w.events.Emit(&ev)
	attempt.LogFailure(d.log, o).Dur("retry_in", delay).Msg("task failed; will retry")
}

// backoff is Backoff*2^(attempt-1) capped at BackoffMax, jittered into [d/2, d).
func (w *Worker) backoff(n int) time.Duration {
	d := w.cfg.Backoff
	for i := 1; i < n && d < w.cfg.BackoffMax; i++ {
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
func (w *Worker) dead(ctx context.Context, d *delivery, reason string) {
	env := d.env
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := jet.Publish(pctx, w.js, wire.NewDeadMsg(d.msg.Headers(), d.msg.Data(), env.Queue, env.Name, reason, env.Attempt)); err != nil {
		d.log.Error().Err(err).Str("reason", reason).Msg("dead-letter publish failed; task stays queued")
		_ = d.msg.NakWithDelay(5 * time.Second)
		return
	}
	now := w.cfg.Now()
	if w.store != nil && (d.def == nil || !d.def.Options.NoResult) && env.ID != "" {
		u := results.Update{IndexTime: d.env.EnqueuedAt, Task: env.Name, Queue: env.Queue, State: task.StateFailure, Error: reason, Attempts: env.Attempt, FinishedAt: now, Worker: w.cfg.Name}
		if d.ran != nil {
			u.Attempt = w.history(d, *d.ran, attempt.OutcomeDead)
		}
		if !w.record(ctx, d, u) {
			// The dead letter is stored; it is the record of this task.
			d.log.Error().Msg("FAILURE not recorded before shutdown; the dead letter stands")
		}
	}
	if !w.advance(ctx, d, task.StateFailure, nil, reason) {
		d.log.Error().Str("workflow", env.Workflow).Msg("workflow not moved on before shutdown; the dead letter stands and the workflow waits for this step")
	}
	if err := d.msg.TermWithReason("dead-lettered"); err != nil {
		d.log.Warn().Err(err).Msg("term")
	}
	w.metrics.Observe(env, attempt.OutcomeDead, now.Sub(d.start))
	ev := w.newEvent(d, wire.EventDead, nil)
	ev.Error = reason
	w.events.Emit(&ev)
	w.notify(d, task.StateFailure, nil, reason, now)
	d.log.Error().Str("reason", reason).Msg("task dead-lettered")
}

// cancelled ends d's task as CANCELLED: it arrived cancelled (o is zero)
// or its attempt o was cancelled while it ran. The task is terminated,
// never retried.
func (w *Worker) cancelled(ctx context.Context, d *delivery, o attempt.Outcome) {
	env := d.env
	now := w.cfg.Now()
	if d.record {
		u := results.Update{IndexTime: d.env.EnqueuedAt, Task: env.Name, Queue: env.Queue, State: task.StateCancelled, Attempts: env.Attempt, FinishedAt: now, Worker: w.cfg.Name}
		if o.Err != nil {
			u.Error = o.Err.Error()
			u.Attempt = w.history(d, o, attempt.OutcomeCancelled)
		}
		if !w.record(ctx, d, u) {
			d.log.Error().Msg("cancelled state not recorded before shutdown; task will be redelivered (and dropped then)")
			_ = d.msg.NakWithDelay(time.Second)
			return
		}
	}
	errMsg := "cancelled"
	if o.Err != nil {
		errMsg = o.Err.Error()
	}
	if !w.advance(ctx, d, task.StateCancelled, nil, errMsg) {
		_ = d.msg.NakWithDelay(time.Second)
		return
	}
	_ = d.msg.TermWithReason("cancelled")
	w.metrics.Observe(env, attempt.OutcomeCancelled, o.Runtime())
	var ev wire.Event
	if o.Err != nil {
		ev = w.newEvent(d, wire.EventCancelled, &o)
	} else {
		ev = w.newEvent(d, wire.EventCancelled, nil)
	}
	w.events.Emit(&ev)
	w.notify(d, task.StateCancelled, nil, "cancelled", now)
	if o.Err != nil {
		d.log.Info().Dur("runtime", o.Runtime()).Bool("abandoned", o.Abandoned).Msg("task cancelled while it ran; not retried")
	} else {
		d.log.Info().Msg("task cancelled; not run")
	}
}

func (w *Worker) expire(ctx context.Context, d *delivery) {
	env := d.env
	now := w.cfg.Now()
	reason := "expired at " + env.Expires.UTC().Format(time.RFC3339Nano)
	if d.record {
		u := results.Update{IndexTime: d.env.EnqueuedAt, Task: env.Name, Queue: env.Queue, State: task.StateExpired, Error: reason, Attempts: env.Attempt, FinishedAt: now, Worker: w.cfg.Name}
		if !w.record(ctx, d, u) {
			d.log.Error().Msg("expired state not recorded before shutdown; task will be redelivered")
			_ = d.msg.NakWithDelay(time.Second)
			return
		}
	}
	if !w.advance(ctx, d, task.StateExpired, nil, reason) {
		_ = d.msg.NakWithDelay(time.Second)
		return
	}
	_ = d.msg.TermWithReason("expired")
	w.metrics.Observe(env, attempt.OutcomeExpired, 0)
	ev := w.newEvent(d, wire.EventExpired, nil)
	ev.Error = reason
	w.events.Emit(&ev)
	w.notify(d, task.StateExpired, nil, reason, now)
	d.log.Info().Msg("task expired; not run")
}

// newEvent is the event of kind about d; o, when set, adds the attempt's
// run time and error.
func (w *Worker) newEvent(d *delivery, kind string, o *attempt.Outcome) wire.Event {
	ev := wire.Event{Kind: kind, ID: d.env.ID, Task: d.env.Name, Queue: d.env.Queue, Time: w.cfg.Now(),
		Attempt: d.env.Attempt, Origin: d.env.Origin, Worker: w.cfg.Name}
	if o != nil {
		ev.RuntimeS = o.Runtime().Seconds()
		if o.Err != nil {
			ev.Error, ev.ErrorType = o.Err.Error(), o.ErrorType
		}
	}
	return ev
}

func (w *Worker) event(d *delivery, kind string, o *attempt.Outcome) {
	if w.events == nil {
		return
	}
	ev := w.newEvent(d, kind, o)
	w.events.Emit(&ev)
}

// notify tells a waiting caller the final state over core NATS.
func (w *Worker) notify(d *delivery, state string, res json.RawMessage, errMsg string, now time.Time) {
	if d.notify == "" {
		return
	}
	st := results.State{
		ID: d.env.ID, Task: d.env.Name, Queue: d.env.Queue, State: state, Result: res, Error: errMsg,
		Attempts: d.env.Attempt, StartedAt: &d.start, FinishedAt: &now, Worker: w.cfg.Name,
	}
	if !d.env.EnqueuedAt.IsZero() {
		st.EnqueuedAt = &d.env.EnqueuedAt
	}
	b, _ := json.Marshal(st)
	_ = w.nc.Publish(d.notify, b)
}
