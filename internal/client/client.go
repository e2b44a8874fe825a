// Package client enqueues tasks and reads their states: the one producer path
// used by web, api, the CLI, beat's manual runs, the public Go package and the
// benchmark. It validates requests, records PENDING, publishes to TASKS (or
// schedules a delayed message) and can wait for a task's final state.
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
	"github.com/oklog/ulid/v2"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/task"
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
	// Events publishes a "sent" event per task.
	Events bool
	// IdempotencyTTL is how long an idempotency key stays bound to its task;
	// it should match TASKS' duplicate window. Default 5m.
	IdempotencyTTL time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Client enqueues tasks. It is safe for concurrent use.
type Client struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	store *results.Store // nil: results off
	cfg   Config

	muxOnce   sync.Once
	muxErr    error
	muxPrefix string
	mu        sync.Mutex
	waiters   map[string]chan results.State
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
	return &Client{nc: nc, js: js, store: store, cfg: cfg, waiters: make(map[string]chan results.State)}
}

// Request is one task to enqueue.
type Request struct {
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
	// IdempotencyKey makes repeated enqueues within the dedup window run once.
	IdempotencyKey string
	Origin         string
	Traceparent    string
}

// Result says what an enqueue did.
type Result struct {
	ID    string `json:"id"`
	State string `json:"state"`
	// Duplicate is true when the idempotency key was already used; ID is then
	// the first task's id (when results are on).
	Duplicate bool `json:"duplicate,omitempty"`
}

type prepared struct {
	env     *task.Envelope
	subject string
	runAt   time.Time
	msgID   string
	noRes   bool
}

func (c *Client) prepare(r Request) (*prepared, error) {
	if err := task.ValidateName(r.Task); err != nil {
		return nil, fieldErr("task", "%v", err)
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
		return nil, fieldErr("queue", "%v", err)
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
		return nil, fieldErr("args", "must be a JSON object")
	}
	now := c.cfg.Now()
	if r.Countdown < 0 {
		return nil, fieldErr("countdown", "must not be negative, got %s", r.Countdown)
	}
	if r.Countdown > 0 && !r.ETA.IsZero() {
		return nil, fieldErr("eta", "give countdown or eta, not both")
	}
	runAt := r.ETA
	if r.Countdown > 0 {
		runAt = now.Add(r.Countdown)
	}
	if !r.Expires.IsZero() && !r.Expires.After(now) {
		return nil, fieldErr("expires", "%s is not in the future", r.Expires.UTC().Format(time.RFC3339))
	}
	if !runAt.IsZero() && !r.Expires.IsZero() && !r.Expires.After(runAt) {
		return nil, fieldErr("expires", "the task would expire before it runs")
	}
	if r.MaxRetries != nil && *r.MaxRetries < 0 {
		return nil, fieldErr("max_retries", "must not be negative, got %d", *r.MaxRetries)
	}
	if r.Timeout < 0 {
		return nil, fieldErr("timeout", "must not be negative, got %s", r.Timeout)
	}
	if len(r.IdempotencyKey) > 256 || strings.ContainsAny(r.IdempotencyKey, "\r\n") {
		return nil, fieldErr("idempotency_key", "must be at most 256 characters on one line")
	}
	env := &task.Envelope{
		ID: ulid.Make().String(), Name: r.Task, Queue: q, Args: args,
		MaxRetries: -1, Timeout: r.Timeout, EnqueuedAt: now, Expires: r.Expires,
		Origin: r.Origin, Traceparent: r.Traceparent,
	}
	if r.MaxRetries != nil {
		env.MaxRetries = *r.MaxRetries
	}
	p := &prepared{env: env, subject: jet.TaskSubject(q, r.Task), msgID: r.IdempotencyKey}
	if !runAt.IsZero() && runAt.After(now) {
		p.runAt = runAt
	}
	if def != nil && def.Options.NoResult {
		p.noRes = true
	}
	return p, nil
}

func (c *Client) recordsResults(p *prepared) bool { return c.store != nil && !p.noRes }

func (c *Client) pending(p *prepared) results.Update {
	return results.Update{Task: p.env.Name, Queue: p.env.Queue, State: task.StatePending, EnqueuedAt: p.env.EnqueuedAt}
}

func (c *Client) msg(p *prepared, notify string) *nats.Msg {
	if p.runAt.IsZero() {
		return jet.NewTaskMsg(p.subject, p.env, p.msgID, notify)
	}
	return jet.NewTaskMsg(jet.DelayedSubject(p.env.ID), p.env, p.msgID, notify)
}

func (c *Client) pubOpts(p *prepared) []jetstream.PublishOpt {
	if p.runAt.IsZero() {
		return nil
	}
	// Server schedules have one-second resolution (RFC 3339 without
	// fractions); round up so that a task never runs before its ETA.
	at := p.runAt.Truncate(time.Second)
	if at.Before(p.runAt) {
		at = at.Add(time.Second)
	}
	return []jetstream.PublishOpt{jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(jet.DueSubject(p.env.ID))}
}

// Enqueue validates r, records the task as PENDING and publishes it. Errors:
// a [FieldError] (matches [ErrInvalid]), [ErrUnknownTask], [ErrTooLarge],
// [ErrQueueFull], or a NATS/Redis error.
func (c *Client) Enqueue(ctx context.Context, r Request) (Result, error) {
	return c.enqueue(ctx, r, "")
}

func (c *Client) enqueue(ctx context.Context, r Request, notify string) (Result, error) {
	p, err := c.prepare(r)
	if err != nil {
		return Result{}, err
	}
	id := p.env.ID
	if p.msgID != "" && c.store != nil {
		bound, err := c.store.ClaimIdempotencyKey(ctx, p.msgID, id, c.cfg.IdempotencyTTL)
		if err != nil {
			return Result{}, err
		}
		if bound != id {
			st, err := c.store.Get(ctx, bound)
			state := st.State
			if err != nil {
				state = task.StatePending
			}
			return Result{ID: bound, State: state, Duplicate: true}, nil
		}
	}
	if c.recordsResults(p) {
		if err := c.store.Set(ctx, id, c.pending(p)); err != nil {
			c.release(ctx, p)
			return Result{}, err
		}
	}
	ack, err := c.js.PublishMsg(ctx, c.msg(p, notify), c.pubOpts(p)...)
	if err != nil {
		c.undo(ctx, p)
		return Result{}, translatePublishErr(p.env.Queue, err)
	}
	if ack.Duplicate {
		// Deduplicated by the server (results off, or the key outlived Redis).
		c.undo(ctx, p)
		return Result{ID: id, State: task.StatePending, Duplicate: true}, nil
	}
	c.sent(p)
	return Result{ID: id, State: task.StatePending}, nil
}

func (c *Client) release(ctx context.Context, p *prepared) {
	if p.msgID != "" && c.store != nil {
		_ = c.store.ReleaseIdempotencyKey(context.WithoutCancel(ctx), p.msgID, p.env.ID)
	}
}

func (c *Client) undo(ctx context.Context, p *prepared) {
	c.release(ctx, p)
	if c.recordsResults(p) {
		_ = c.store.Delete(context.WithoutCancel(ctx), p.env.ID)
	}
}

func (c *Client) sent(p *prepared) {
	if !c.cfg.Events {
		return
	}
	ev, _ := json.Marshal(sentEvent{ID: p.env.ID, Task: p.env.Name, Queue: p.env.Queue, Time: p.env.EnqueuedAt})
	_ = c.nc.Publish(jet.EventSubject(jet.EventSent, p.env.Queue, p.env.Name), ev)
}

type sentEvent struct {
	ID    string    `json:"id"`
	Task  string    `json:"task"`
	Queue string    `json:"queue"`
	Time  time.Time `json:"time"`
}

// EnqueueMany enqueues rs with one Redis pipeline and asynchronous publishes,
// for throughput. Idempotency keys are deduplicated by the server only. The
// result slice has one entry per request; errs[i] is that request's error.
func (c *Client) EnqueueMany(ctx context.Context, rs []Request) ([]Result, []error) {
	out := make([]Result, len(rs))
	errs := make([]error, len(rs))
	ps := make([]*prepared, len(rs))
	var ids []string
	var ups []results.Update
	for i, r := range rs {
		p, err := c.prepare(r)
		if err != nil {
			errs[i] = err
			continue
		}
		ps[i] = p
		if c.recordsResults(p) {
			ids = append(ids, p.env.ID)
			ups = append(ups, c.pending(p))
		}
	}
	if len(ids) > 0 {
		if err := c.store.SetMany(ctx, ids, ups); err != nil {
			for i := range errs {
				if errs[i] == nil {
					errs[i] = err
				}
			}
			return out, errs
		}
	}
	futs := make([]jetstream.PubAckFuture, len(rs))
	for i, p := range ps {
		if p == nil {
			continue
		}
		f, err := c.js.PublishMsgAsync(c.msg(p, ""), c.pubOpts(p)...)
		if err != nil {
			errs[i] = translatePublishErr(p.env.Queue, err)
			continue
		}
		futs[i] = f
	}
	for i, f := range futs {
		if f == nil {
			continue
		}
		p := ps[i]
		select {
		case ack := <-f.Ok():
			out[i] = Result{ID: p.env.ID, State: task.StatePending, Duplicate: ack.Duplicate}
			if !ack.Duplicate {
				c.sent(p)
			}
		case err := <-f.Err():
			errs[i] = translatePublishErr(p.env.Queue, err)
		case <-ctx.Done():
			errs[i] = ctx.Err()
		}
		if errs[i] != nil || out[i].Duplicate {
			c.undo(ctx, p)
		}
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
	// The id is not known before prepare; wait on the notify subject keyed by
	// a token instead, and map it back.
	token := nats.NewInbox()[len("_INBOX."):]
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
		c.muxPrefix = nats.NewInbox() + "."
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
	d, err := jet.GetDead(ctx, c.js, seq)
	if err != nil {
		return Result{}, err
	}
	if task.ValidateName(d.Task) != nil || task.ValidateQueue(d.Queue) != nil || d.ID == "" {
		return Result{}, fieldErr("seq", "dead letter %d cannot be requeued: its task name, queue or id is invalid (%s)", seq, d.Error)
	}
	now := c.cfg.Now()
	h := nats.Header{}
	for k, v := range d.Header {
		switch k {
		case task.HeaderError, task.HeaderAttempts, task.HeaderNotify, task.HeaderExpires, task.HeaderMsgID, task.HeaderQueue:
			continue
		}
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		h[k] = v
	}
	h.Set(task.HeaderMsgID, fmt.Sprintf("%s:requeue:%d", d.ID, seq))
	h.Set(task.HeaderEnqueued, now.UTC().Format(time.RFC3339Nano))
	if c.store != nil {
		_ = c.store.Delete(ctx, d.ID)
		if err := c.store.Set(ctx, d.ID, results.Update{Task: d.Task, Queue: d.Queue, State: task.StatePending, EnqueuedAt: now}); err != nil {
			return Result{}, err
		}
	}
	if _, err := c.js.PublishMsg(ctx, &nats.Msg{Subject: jet.TaskSubject(d.Queue, d.Task), Header: h, Data: d.Args}); err != nil {
		return Result{}, translatePublishErr(d.Queue, err)
	}
	if err := jet.DeleteDead(ctx, c.js, seq); err != nil {
		return Result{ID: d.ID, State: task.StatePending}, fmt.Errorf("requeued task %s, but it is still in DEAD: %w", d.ID, err)
	}
	return Result{ID: d.ID, State: task.StatePending}, nil
}
