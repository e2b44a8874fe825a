// Package client enqueues tasks and reads their states: the one producer path
// used by web, api, the CLI, beat (its ticks and manual runs), the public Go
// package and the benchmark. It validates requests, records PENDING with
// enqueued_at, publishes to TASKS (or schedules a delayed message),
// publishes the "sent" event, and can wait for a task's final state.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/oklog/ulid/v2"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// headerRoom is what task headers may take of a message.
const headerRoom = 1024

// Config configures a [Client].
type Config struct {
	// Registry, with CheckRegistered, rejects task names it has no handler for.
	Registry        *task.Registry
	CheckRegistered bool
	// MaxArgsBytes limits the encoded args. Default 1 MiB.
	MaxArgsBytes int64
	// Events is the event level: at standard and all a "sent" event goes
	// out per task. Empty = none.
	Events wire.EventLevel
	// IdempotencyTTL is how long an idempotency key stays bound to its task;
	// it should match TASKS' duplicate window. Default 5m.
	IdempotencyTTL time.Duration
	// StateErrors, when set, makes recording PENDING best effort for
	// [Client.Send]: a failed write is reported here and the tasks are
	// published anyway (beat fires its ticks through a Redis outage; the
	// worker records their states when it runs them). When nil a failed
	// write fails the enqueue.
	StateErrors func(err error, n int)
	// NotifyPrefix is where EnqueueAndWait receives final states (see
	// wire.NotifyPrefix). Default flotilla.notify.default.
	NotifyPrefix string
	// Limits bound what a request may ask for; zero fields take the
	// defaults of [Limits].
	Limits Limits
	// Queues, when not nil, makes an enqueue to a queue that no consumer
	// (q-<queue>) serves and Queues does not name an ErrUnknownQueue:
	// such a task would wait forever. The check asks JetStream for the
	// consumer once and remembers the answer for a while.
	Queues []string
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Limits are the caps of an enqueue request (config tasks.*_max).
type Limits struct {
	// MaxRetries caps max_retries. Default 100.
	MaxRetries int
	// Timeout caps the per-attempt timeout. Default 24h.
	Timeout time.Duration
	// Delay caps countdown and how far in the future eta may be. Default 30 days.
	Delay time.Duration
	// Expires caps how far in the future expires may be. Default 30 days.
	Expires time.Duration
}

func (l *Limits) defaults() {
	if l.MaxRetries <= 0 {
		l.MaxRetries = 100
	}
	if l.Timeout <= 0 {
		l.Timeout = 24 * time.Hour
	}
	if l.Delay <= 0 {
		l.Delay = 30 * 24 * time.Hour
	}
	if l.Expires <= 0 {
		l.Expires = 30 * 24 * time.Hour
	}
}

// Client enqueues tasks. It is safe for concurrent use.
type Client struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	store  *results.Store // nil: results off
	events *jet.Events
	cfg    Config

	queues *queueCache

	muxOnce   sync.Once
	muxErr    error
	muxPrefix string
	mu        sync.Mutex
	waiters   map[string]chan results.State

	waits waits
}

// New returns a client. store may be nil when results are off.
func New(nc *nats.Conn, js jetstream.JetStream, store *results.Store, cfg Config) *Client {
	if cfg.MaxArgsBytes <= 0 {
		cfg.MaxArgsBytes = 1 << 20
	}
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NotifyPrefix == "" {
		cfg.NotifyPrefix = wire.NotifyPrefix("")
	}
	cfg.Limits.defaults()
	c := &Client{nc: nc, js: js, store: store, events: jet.NewEvents(nc, cfg.Events), cfg: cfg,
		waiters: make(map[string]chan results.State)}
	if cfg.Queues != nil {
		c.queues = newQueueCache(js, cfg.Queues)
	}
	return c
}

// Request is one task to enqueue.
type Request struct {
	// ID, when set, is the task id (1-64 of A-Z a-z 0-9 _ -) and its
	// deduplication id: an enqueue repeated with the same ID within the
	// duplicate window runs once (retry an unconfirmed publish this way).
	// Default: a new ULID.
	ID    string
	Task  string
	Queue string // default: the task's registered queue, else "default"
	Args  json.RawMessage
	// Countdown delays the task; ETA runs it at a time. At most one of them.
	Countdown time.Duration
	ETA       time.Time
	// Expires: a worker that receives the task later records EXPIRED.
	Expires    time.Time
	MaxRetries *int
	Timeout    time.Duration
	// IdempotencyKey makes repeated enqueues within the dedup window run
	// once; MsgID (beat's beat:<schedule>:<unix>) does the same through the
	// server's deduplication only.
	IdempotencyKey string
	MsgID          string
	Origin         string
	Traceparent    string
	// Workflow and Step place the task in a workflow (package workflow).
	Workflow, Step string
}

// Result says what an enqueue did.
type Result struct {
	ID    string `json:"id"`
	State string `json:"state"`
	// Duplicate is true when the idempotency key was already used; ID is then
	// the first task's id (when results are on).
	Duplicate bool `json:"duplicate,omitempty"`
}

// AppendJSON appends r as encoding/json writes it, without reflection: the
// answer to every single enqueue.
func (r Result) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = wire.AppendJSONString(b, r.ID)
	b = append(b, `,"state":`...)
	b = wire.AppendJSONString(b, r.State)
	if r.Duplicate {
		b = append(b, `,"duplicate":true`...)
	}
	return append(b, '}')
}

// Prepared is a validated request, ready to be sent.
type Prepared struct {
	env      *task.Envelope
	subject  string
	runAt    time.Time
	msgID    string
	idem     bool // msgID is an idempotency key bound in Redis
	explicit bool // the caller chose the id: its state may exist already
	noRes    bool
}

// Prepare validates r and gives it a task id. Errors: a [task.FieldError]
// (matches [ErrInvalid]), [ErrUnknownTask] or [ErrTooLarge].
func (c *Client) Prepare(r Request) (*Prepared, error) {
	if err := task.ValidateName(r.Task); err != nil {
		return nil, task.FieldErrorf("task", "%v", err)
	}
	var def *task.Definition
	if c.cfg.Registry != nil {
		d, err := c.cfg.Registry.Lookup(r.Task)
		if err == nil {
			def = d
		} else if c.cfg.CheckRegistered {
			return nil, err
		}
	}
	q := r.Queue
	if q == "" && def != nil {
		q = def.Options.Queue
	}
	if q == "" {
		q = task.DefaultQueue
	}
	if err := task.ValidateQueue(q); err != nil {
		return nil, task.FieldErrorf("queue", "%v", err)
	}
	args := r.Args
	if len(args) == 0 {
		args = json.RawMessage(`{}`)
	}
	if int64(len(args)) > c.cfg.MaxArgsBytes {
		return nil, fmt.Errorf("%w: args are %d bytes, the limit is %d (tasks.max_body_bytes)", ErrTooLarge, len(args), c.cfg.MaxArgsBytes)
	}
	// Headers take up to a few hundred bytes of the server's max_payload.
	if mp := c.nc.MaxPayload(); mp > 0 && int64(len(args))+headerRoom > mp {
		return nil, fmt.Errorf("%w: args are %d bytes, the NATS server's max_payload is %d (raise it on the server)", ErrTooLarge, len(args), mp)
	}
	if !task.IsJSONObject(args) {
		return nil, task.FieldErrorf("args", "must be a JSON object")
	}
	now := c.cfg.Now()
	lim := c.cfg.Limits
	if r.Countdown < 0 {
		return nil, task.FieldErrorf("countdown", "must not be negative, got %s", r.Countdown)
	}
	if r.Countdown > lim.Delay {
		return nil, task.FieldErrorf("countdown", "%s is longer than the limit of %s (tasks.delay_max)", r.Countdown, lim.Delay)
	}
	if !r.ETA.IsZero() && r.ETA.Sub(now) > lim.Delay {
		return nil, task.FieldErrorf("eta", "%s is further ahead than the limit of %s (tasks.delay_max)", r.ETA.UTC().Format(time.RFC3339), lim.Delay)
	}
	if !r.Expires.IsZero() && r.Expires.Sub(now) > lim.Expires {
		return nil, task.FieldErrorf("expires", "%s is further ahead than the limit of %s (tasks.expires_max)", r.Expires.UTC().Format(time.RFC3339), lim.Expires)
	}
	if r.Countdown > 0 && !r.ETA.IsZero() {
		return nil, task.FieldErrorf("eta", "give countdown or eta, not both")
	}
	runAt := r.ETA
	if r.Countdown > 0 {
		runAt = now.Add(r.Countdown)
	}
	if !r.Expires.IsZero() && !r.Expires.After(now) {
		return nil, task.FieldErrorf("expires", "%s is not in the future", r.Expires.UTC().Format(time.RFC3339))
	}
	if !runAt.IsZero() && !r.Expires.IsZero() && !r.Expires.After(runAt) {
		return nil, task.FieldErrorf("expires", "the task would expire before it runs")
	}
	if r.MaxRetries != nil && (*r.MaxRetries < 0 || *r.MaxRetries > lim.MaxRetries) {
		return nil, task.FieldErrorf("max_retries", "must be from 0 to %d (tasks.max_retries_max), got %d", lim.MaxRetries, *r.MaxRetries)
	}
	if r.Timeout < 0 || r.Timeout > lim.Timeout {
		return nil, task.FieldErrorf("timeout", "must be from 0 to %s (tasks.timeout_max), got %s", lim.Timeout, r.Timeout)
	}
	if len(r.IdempotencyKey) > 256 || strings.ContainsAny(r.IdempotencyKey, "\r\n") {
		return nil, task.FieldErrorf("idempotency_key", "must be at most 256 characters on one line")
	}
	id := r.ID
	if id == "" {
		id = ulid.Make().String()
	} else if !validID(id) {
		return nil, task.FieldErrorf("id", "%q is invalid: want 1 to 64 characters of A-Z a-z 0-9 _ -", r.ID)
	}
	env := &task.Envelope{
		ID: id, Name: r.Task, Queue: q, Args: args,
		MaxRetries: -1, Timeout: r.Timeout, EnqueuedAt: now, Expires: r.Expires,
		Origin: r.Origin, Traceparent: r.Traceparent, Workflow: r.Workflow, Step: r.Step,
	}
	if r.MaxRetries != nil {
		env.MaxRetries = *r.MaxRetries
	}
	p := &Prepared{env: env, subject: wire.TaskSubject(q, r.Task), msgID: r.IdempotencyKey, idem: r.IdempotencyKey != "", explicit: r.ID != ""}
	if p.msgID == "" {
		p.msgID = r.MsgID
	}
	if !runAt.IsZero() && runAt.After(now) {
		p.runAt = runAt
	}
	if def != nil && def.Options.NoResult {
		p.noRes = true
	}
	return p, nil
}

// validID reports whether id may be a task id: it is a subject token and
// part of Redis keys.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (c *Client) recordsResults(p *Prepared) bool { return c.store != nil && !p.noRes }

// recordPending writes p's PENDING state; for a caller-chosen id only when
// the task has none yet (a retried enqueue must not reset a task that ran).
func (c *Client) recordPending(ctx context.Context, p *Prepared) error {
	if p.explicit {
		return c.store.SetIfAbsent(ctx, p.env.ID, c.pending(p))
	}
	return c.store.Set(ctx, p.env.ID, c.pending(p))
}

// recordPendingMany writes the PENDING states of the tasks of ps that keep
// results, in one round trip, and says how many it wrote. A task for which
// ifNew is true keeps the state it has (results.Update.StateIfNew), at one
// more Redis command.
func (c *Client) recordPendingMany(ctx context.Context, ps []*Prepared, ifNew func(*Prepared) bool) (int, error) {
	var ids []string
	var ups []results.Update
	for _, p := range ps {
		if c.recordsResults(p) {
			u := c.pending(p)
			u.StateIfNew = ifNew(p)
			ids = append(ids, p.env.ID)
			ups = append(ups, u)
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	return len(ids), c.store.SetMany(ctx, ids, ups)
}

// always, never and chosenID answer recordPendingMany's ifNew: keep a
// task's state for every task, for none, or for those whose id the caller
// chose (a generated id has no state before its first enqueue).
func always(*Prepared) bool     { return true }
func never(*Prepared) bool      { return false }
func chosenID(p *Prepared) bool { return p.explicit }

func (c *Client) pending(p *Prepared) results.Update {
	return results.Update{Task: p.env.Name, Queue: p.env.Queue, State: task.StatePending, EnqueuedAt: p.env.EnqueuedAt, Args: p.env.Args}
}

// msg is the message that carries task p: on tasks.<queue>.<task>, or for
// a delayed task on its delayed subject with the server schedule that
// moves it there when due. Every way into TASKS (enqueue, batches, the
// outbox relay) publishes this message as it is.
func (c *Client) msg(p *Prepared, notify string) *nats.Msg {
	if p.runAt.IsZero() {
		return wire.NewTaskMsg(p.subject, p.env, p.msgID, notify)
	}
	m := wire.NewTaskMsg(wire.DelayedSubject(p.env.Queue, p.env.ID), p.env, p.msgID, notify)
	// Server schedules have one-second resolution (RFC 3339 without
	// fractions); round up so that a task never runs before its ETA. These
	// are the headers jetstream.WithScheduleAt and WithScheduleTarget set.
	at := p.runAt.Truncate(time.Second)
	if at.Before(p.runAt) {
		at = at.Add(time.Second)
	}
	m.Header.Set(jetstream.ScheduleHeader, "@at "+at.UTC().Format(time.RFC3339))
	m.Header.Set(jetstream.ScheduleTargetHeader, wire.DueSubject(p.env.Queue, p.env.ID))
	return m
}

// Enqueue validates r, records the task as PENDING and publishes it. Errors:
// a [task.FieldError] (matches [ErrInvalid]), [ErrUnknownTask],
// [ErrTooLarge], [ErrQueueFull], [ErrUnavailable] (nothing stored), an
// [*UnconfirmedError] (maybe stored: enqueue again with its ID), or an
// error matching results.ErrUnavailable (Redis down; nothing stored).
func (c *Client) Enqueue(ctx context.Context, r Request) (Result, error) {
	return c.enqueue(ctx, r, "")
}

func (c *Client) enqueue(ctx context.Context, r Request, notify string) (Result, error) {
	p, err := c.Prepare(r)
	if err != nil {
		return Result{}, err
	}
	if err := c.queues.check(ctx, p.env.Queue); err != nil {
		return Result{}, err
	}
	id := p.env.ID
	if p.idem && c.store != nil {
		bound, err := c.store.ClaimIdempotencyKey(ctx, p.msgID, id, c.cfg.IdempotencyTTL)
		if err != nil {
			return Result{}, err
		}
		if bound != id {
			return c.again(ctx, p, bound, notify)
		}
	}
	if c.recordsResults(p) {
		if err := c.recordPending(ctx, p); err != nil {
			c.release(ctx, p)
			return Result{}, err
		}
	}
	ack, err := jet.Publish(ctx, c.js, c.msg(p, notify))
	if err != nil {
		err = translatePublishErr(id, p.env.Queue, err)
		if !errors.Is(err, ErrUnconfirmed) {
			c.undo(ctx, p) // nothing stored
		} else if p.idem && c.recordsResults(p) {
			// A retry with the same key publishes it again (see again).
			_ = c.store.MarkUnconfirmed(context.WithoutCancel(ctx), id)
		}
		return Result{}, err
	}
	if ack.Duplicate {
		// Deduplicated by the server: a retry of the same id, or a key
		// that outlived Redis.
		c.undo(ctx, p)
		return Result{ID: id, State: task.StatePending, Duplicate: true}, nil
	}
	c.sent(p)
	return Result{ID: id, State: task.StatePending}, nil
}

// again answers an enqueue whose idempotency key is bound to task bound
// already. When that task's first publish went unconfirmed (it may not
// have reached the stream) it is published again under the same id and
// key — the server drops it if the first one arrived — so that retrying
// with the key never loses the task and never runs it twice.
func (c *Client) again(ctx context.Context, p *Prepared, bound, notify string) (Result, error) {
	st, err := c.store.Get(ctx, bound)
	switch {
	case errors.Is(err, results.ErrNotFound):
		return Result{ID: bound, State: task.StatePending, Duplicate: true}, nil
	case err != nil:
		return Result{}, err
	case st.State != task.StatePending || !st.Unconfirmed:
		return Result{ID: bound, State: st.State, Duplicate: true}, nil
	}
	p.env.ID = bound
	if _, err := jet.Publish(ctx, c.js, c.msg(p, notify)); err != nil {
		return Result{}, translatePublishErr(bound, p.env.Queue, err)
	}
	_ = c.store.ClearUnconfirmed(context.WithoutCancel(ctx), bound)
	return Result{ID: bound, State: task.StatePending, Duplicate: true}, nil
}

func (c *Client) release(ctx context.Context, p *Prepared) {
	if p.idem && c.store != nil {
		_ = c.store.ReleaseIdempotencyKey(context.WithoutCancel(ctx), p.msgID, p.env.ID)
	}
}

// undo takes back what an enqueue that stored nothing recorded: the key's
// binding, and the PENDING state unless the caller chose the id (its state
// may be an earlier enqueue's).
func (c *Client) undo(ctx context.Context, p *Prepared) {
	c.release(ctx, p)
	if c.recordsResults(p) && !p.explicit {
		_ = c.store.Delete(context.WithoutCancel(ctx), p.env.ID)
	}
}

func (c *Client) sent(p *Prepared) {
	c.events.Emit(&wire.Event{Kind: wire.EventSent, ID: p.env.ID, Task: p.env.Name, Queue: p.env.Queue,
		Time: p.env.EnqueuedAt, Origin: p.env.Origin})
}

// Future is a task published asynchronously by [Client.Send].
type Future struct {
	c   *Client
	p   *Prepared
	fut jetstream.PubAckFuture
	err error
}

// Wait waits for the server's acknowledgement. A failed asynchronous
// publish is retried once synchronously with the same Nats-Msg-Id (safe:
// the server deduplicates). On success the "sent" event goes out; on a
// duplicate or an error the PENDING state is removed again.
func (f *Future) Wait(ctx context.Context) (Result, error) {
	p := f.p
	res := Result{ID: p.env.ID, State: task.StatePending}
	var ack *jetstream.PubAck
	err := f.err
	if err == nil {
		select {
		case ack = <-f.fut.Ok():
		case err = <-f.fut.Err():
			var err2 error
			if ack, err2 = jet.Publish(ctx, f.c.js, f.fut.Msg()); err2 == nil {
				err = nil
			} else {
				err = errors.Join(err, err2)
			}
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		err = translatePublishErr(p.env.ID, p.env.Queue, err)
		if !errors.Is(err, ErrUnconfirmed) {
			f.c.undo(ctx, p)
		}
		return res, err
	}
	if ack.Duplicate {
		f.c.undo(ctx, p)
		res.Duplicate = true
		return res, nil
	}
	f.c.sent(p)
	return res, nil
}

// StallWait is how long [Client.Send] waits for room when the server
// acknowledges slower than it publishes (more than the connection's
// PublishAsyncMaxPending are unacknowledged) — the back-pressure of a
// replicated or fsync-always stream — before that task fails with
// [ErrUnavailable].
const StallWait = 5 * time.Second

// Send records every request of ps as PENDING in one Redis round trip, then
// publishes them asynchronously, in order; wait for each with
// [Future.Wait]. Idempotency keys are deduplicated by the server only.
// When the state write fails, Send fails and publishes nothing, unless
// Config.StateErrors is set (see there).
func (c *Client) Send(ctx context.Context, ps []*Prepared) ([]*Future, error) {
	if n, err := c.recordPendingMany(ctx, ps, never); err != nil {
		if c.cfg.StateErrors == nil {
			return nil, err
		}
		c.cfg.StateErrors(err, n)
	}
	futs := make([]*Future, len(ps))
	for i, p := range ps {
		f := &Future{c: c, p: p}
		f.fut, f.err = c.js.PublishMsgAsync(c.msg(p, ""), jetstream.WithStallWait(StallWait))
		futs[i] = f
	}
	return futs, nil
}

// EnqueueEach enqueues rs with one Redis pipeline and asynchronous
// publishes, for throughput. The result slice has one entry per request;
// errs[i] is that request's error: unlike [Client.EnqueueBatch], some may
// be stored and others not.
func (c *Client) EnqueueEach(ctx context.Context, rs []Request) ([]Result, []error) {
	out := make([]Result, len(rs))
	errs := make([]error, len(rs))
	ps := make([]*Prepared, 0, len(rs))
	idx := make([]int, 0, len(rs))
	for i, r := range rs {
		p, err := c.Prepare(r)
		if err != nil {
			errs[i] = err
			continue
		}
		ps = append(ps, p)
		idx = append(idx, i)
	}
	futs, err := c.Send(ctx, ps)
	if err != nil {
		for _, i := range idx {
			errs[i] = err
		}
		return out, errs
	}
	for j, f := range futs {
		out[idx[j]], errs[idx[j]] = f.Wait(ctx)
	}
	return out, errs
}

// Get returns the recorded state of task id: [results.ErrNotFound] if unknown.
func (c *Client) Get(ctx context.Context, id string) (results.State, error) {
	if c.store == nil {
		return results.State{}, errors.New("results are turned off (tasks.results=false)")
	}
	return c.store.Get(ctx, id)
}

// EnqueueAndWait enqueues r and waits for its final state (SUCCESS, FAILURE
// or EXPIRED), notified by the worker over core NATS.
func (c *Client) EnqueueAndWait(ctx context.Context, r Request) (results.State, error) {
	if err := c.startMux(); err != nil {
		return results.State{}, err
	}
	// The id is not known before Prepare; wait on the notify subject keyed by
	// a token instead, and map it back.
	token := nuid.Next()
	ch := make(chan results.State, 1)
	c.mu.Lock()
	c.waiters[token] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, token)
		c.mu.Unlock()
	}()
	res, err := c.enqueue(ctx, r, c.muxPrefix+token)
	if err != nil {
		return results.State{}, err
	}
	if res.Duplicate {
		return c.Wait(ctx, res.ID)
	}
	select {
	case st := <-ch:
		return st, nil
	case <-ctx.Done():
		return results.State{ID: res.ID, State: task.StatePending}, fmt.Errorf("wait for task %s: %w", res.ID, ctx.Err())
	}
}

// Wait polls the state of task id until it is final or ctx ends.
func (c *Client) Wait(ctx context.Context, id string) (results.State, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := c.Get(ctx, id)
		if err == nil && task.Final(st.State) {
			return st, nil
		}
		if err != nil && !errors.Is(err, results.ErrNotFound) {
			return st, err
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("wait for task %s: %w", id, ctx.Err())
		case <-tick.C:
		}
	}
}

func (c *Client) startMux() error {
	c.muxOnce.Do(func() {
		c.muxPrefix = c.cfg.NotifyPrefix + nuid.Next() + "."
		_, c.muxErr = c.nc.Subscribe(c.muxPrefix+"*", func(m *nats.Msg) {
			token := m.Subject[len(c.muxPrefix):]
			var st results.State
			if err := json.Unmarshal(m.Data, &st); err != nil {
				return
			}
			c.mu.Lock()
			ch := c.waiters[token]
			c.mu.Unlock()
			if ch != nil {
				select {
				case ch <- st:
				default:
				}
			}
		})
	})
	return c.muxErr
}

// Requeue puts the dead letter at DEAD sequence seq back on its queue as a
// fresh attempt (same task id, retry budget from the start, no expiry),
// records it PENDING, and removes it from DEAD once TASKS has it.
func (c *Client) Requeue(ctx context.Context, seq uint64) (Result, error) {
	return c.requeue(ctx, seq)
}

// ErrNotFailed is returned by [Client.Retry] for a task that is not
// FAILURE.
var ErrNotFailed = errors.New("only a task that failed (FAILURE) can be retried")

// Retry sends failed task id back to its queue: its newest dead letter is
// requeued (see [Client.Requeue]). It returns results.ErrNotFound for an
// unknown id, [ErrNotFailed] for a task that did not fail, and
// jet.ErrDeadNotFound when its dead letter is gone (requeued, deleted, or
// older than DEAD keeps).
func (c *Client) Retry(ctx context.Context, id string) (Result, error) {
	st, err := c.Get(ctx, id)
	if err != nil {
		return Result{}, err
	}
	if st.State != task.StateFailure {
		return Result{}, fmt.Errorf("task %s is %s: %w", id, st.State, ErrNotFailed)
	}
	d, err := jet.FindDead(ctx, c.js, st.Queue, st.Task, id)
	if err != nil {
		return Result{}, err
	}
	return c.requeue(ctx, d.Seq)
}

func (c *Client) requeue(ctx context.Context, seq uint64) (Result, error) {
	d, err := jet.GetDead(ctx, c.js, seq)
	if err != nil {
		return Result{}, err
	}
	now := c.cfg.Now()
	m, err := wire.NewRequeueMsg(d, now)
	if err != nil {
		return Result{}, task.FieldErrorf("seq", "%v", err)
	}
	if c.store != nil {
		// A fresh run: the last run's outcome goes, its history stays.
		if err := c.store.Reset(ctx, d.ID); err != nil {
			return Result{}, err
		}
		if err := c.store.Set(ctx, d.ID, results.Update{Task: d.Task, Queue: d.Queue, State: task.StatePending, EnqueuedAt: now, Args: d.Args}); err != nil {
			return Result{}, err
		}
	}
	if _, err := jet.Publish(ctx, c.js, m); err != nil {
		return Result{}, translatePublishErr(d.ID, d.Queue, err)
	}
	if err := jet.DeleteDead(ctx, c.js, seq); err != nil {
		return Result{ID: d.ID, State: task.StatePending}, fmt.Errorf("requeued task %s, but it is still in DEAD: %w", d.ID, err)
	}
	return Result{ID: d.ID, State: task.StatePending}, nil
}
