package flotilla

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/wire"
)

// Errors of [Client.Enqueue]; match them with errors.Is.
var (
	// ErrInvalid: a field of the request is wrong (the message names it).
	ErrInvalid = client.ErrInvalid
	// ErrUnknownTask: the task name has no handler in this binary.
	ErrUnknownTask = client.ErrUnknownTask
	// ErrQueueFull: TASKS reached its limits and refused the task; retry later.
	ErrQueueFull = client.ErrQueueFull
	// ErrTooLarge: the args exceed the size limit.
	ErrTooLarge = client.ErrTooLarge
	// ErrNotFound: no state is recorded for that task id.
	ErrNotFound = results.ErrNotFound
	// ErrUnavailable: NATS JetStream could not take the task (no server,
	// stream or leader answered); nothing was stored, retry later.
	ErrUnavailable = client.ErrUnavailable
	// ErrUnconfirmed: the task was sent but not acknowledged in time; it may
	// be stored. Enqueue it again with EnqueueOptions.ID set to the id the
	// error carries (errors.As an *UnconfirmedError): it runs at most once.
	ErrUnconfirmed = client.ErrUnconfirmed
)

// UnconfirmedError carries the id of a task whose publish went unconfirmed.
type UnconfirmedError = client.UnconfirmedError

// ClientOptions configure [Dial].
type ClientOptions struct {
	// NATSURL lists NATS servers, comma-separated. Default nats://127.0.0.1:4222.
	NATSURL string
	// RedisURL is where task states live; empty turns result recording off
	// (Get and Wait then fail). Default redis://127.0.0.1:6379/0.
	RedisURL string
	// RedisPrefix of the keys. Default "flotilla".
	RedisPrefix string
	// ResultTTL of recorded states. Default 24h.
	ResultTTL time.Duration
	// NoResults disables recording PENDING states in Redis.
	NoResults bool
	// InboxPrefix receives replies and final states instead of _INBOX; on
	// a server with per-role users, the prefix your user may subscribe to
	// (deploy/nats/accounts.conf gives the client user _INBOX_client).
	// Default _INBOX_client.
	InboxPrefix string
}

// Client enqueues tasks from any Go program and reads their states. It is
// safe for concurrent use; Close it when done.
type Client struct {
	nc    *nats.Conn
	rdb   *redis.Client
	store *results.Store
	c     *client.Client
}

// State is a task's recorded state: id, task, queue, state (PENDING,
// STARTED, RETRY, SUCCESS, FAILURE, EXPIRED), result, error, attempts, times
// and worker.
type State = results.State

// EnqueueOptions are the optional fields of an enqueue.
type EnqueueOptions struct {
	// ID, when set, is the task id (1-64 of A-Z a-z 0-9 _ -) and its
	// deduplication id: enqueues repeated with one ID within the dedup
	// window (5 min) run once.
	ID             string
	Queue          string
	Countdown      time.Duration
	ETA            time.Time
	Expires        time.Time
	MaxRetries     *int
	Timeout        time.Duration
	IdempotencyKey string
}

// Dial connects a client to NATS (and Redis unless results are off).
func Dial(ctx context.Context, o ClientOptions) (*Client, error) {
	if o.NATSURL == "" {
		o.NATSURL = nats.DefaultURL
	}
	if o.RedisURL == "" && !o.NoResults {
		o.RedisURL = "redis://127.0.0.1:6379/0"
	}
	if o.RedisPrefix == "" {
		o.RedisPrefix = "flotilla"
	}
	if o.InboxPrefix == "" {
		o.InboxPrefix = "_INBOX_client"
	}
	nc, js, err := jet.Connect(ctx, o.NATSURL, "flotilla-client", o.InboxPrefix)
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc}
	if !o.NoResults {
		c.rdb, err = results.Open(ctx, o.RedisURL)
		if err != nil {
			nc.Close()
			return nil, err
		}
		c.store = results.New(c.rdb, results.Config{Prefix: o.RedisPrefix, TTL: o.ResultTTL})
	}
	window := 5 * time.Minute
	if s, err := js.Stream(ctx, wire.StreamTasks); err == nil {
		window = s.CachedInfo().Config.Duplicates
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		c.Close()
		return nil, fmt.Errorf("flotilla: %w", err)
	}
	// A client has no registry: the workers decide whether a task exists.
	c.c = client.New(nc, js, c.store, client.Config{IdempotencyTTL: window, NotifyPrefix: wire.NotifyPrefix(o.InboxPrefix)})
	return c, nil
}

// Close releases the connections.
func (c *Client) Close() {
	if c.store != nil {
		c.store.Close()
	}
	if c.rdb != nil {
		_ = c.rdb.Close()
	}
	_ = c.nc.Drain()
}

func (c *Client) request(taskName string, args any, o EnqueueOptions) (client.Request, error) {
	var raw json.RawMessage
	switch a := args.(type) {
	case nil:
	case json.RawMessage:
		raw = a
	case []byte:
		raw = a
	default:
		b, err := json.Marshal(a)
		if err != nil {
			return client.Request{}, fmt.Errorf("%w: args: %v", ErrInvalid, err)
		}
		raw = b
	}
	return client.Request{
		ID: o.ID, Task: taskName, Queue: o.Queue, Args: raw, Countdown: o.Countdown, ETA: o.ETA, Expires: o.Expires,
		MaxRetries: o.MaxRetries, Timeout: o.Timeout, IdempotencyKey: o.IdempotencyKey, Origin: wire.OriginClient,
	}, nil
}

// Enqueue sends taskName with args (a value that encodes as a JSON object,
// or json.RawMessage) and returns the task id.
func (c *Client) Enqueue(ctx context.Context, taskName string, args any, o EnqueueOptions) (string, error) {
	r, err := c.request(taskName, args, o)
	if err != nil {
		return "", err
	}
	res, err := c.c.Enqueue(ctx, r)
	return res.ID, err
}

// Task is one task of [Client.EnqueueMany]: its name, args and options.
type Task struct {
	Name    string
	Args    any
	Options EnqueueOptions
}

// ErrBatchDuplicate: a task of an EnqueueMany batch repeats an ID or
// IdempotencyKey stored within the dedup window; nothing was stored.
var ErrBatchDuplicate = client.ErrBatchDuplicate

// ItemError names the task of an EnqueueMany batch at fault (Index); the
// error it wraps says why. Nothing of the batch was stored.
type ItemError = client.ItemError

// EnqueueMany enqueues up to 1,000 tasks atomically (a JetStream atomic
// batch): every one is stored or none is. The ids are in the order of
// tasks. An invalid task fails the batch with an [*ItemError]. The tasks
// all run now, or are all delayed (Countdown or ETA): one batch cannot mix
// the two.
func (c *Client) EnqueueMany(ctx context.Context, tasks []Task) ([]string, error) {
	rs := make([]client.Request, len(tasks))
	for i, t := range tasks {
		r, err := c.request(t.Name, t.Args, t.Options)
		if err != nil {
			return nil, &ItemError{Index: i, Err: err}
		}
		rs[i] = r
	}
	res, err := c.c.EnqueueBatch(ctx, rs)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(res))
	for i, r := range res {
		ids[i] = r.ID
	}
	return ids, nil
}

// EnqueueAndWait enqueues and waits for the final state (bound it with ctx).
func (c *Client) EnqueueAndWait(ctx context.Context, taskName string, args any, o EnqueueOptions) (State, error) {
	r, err := c.request(taskName, args, o)
	if err != nil {
		return State{}, err
	}
	return c.c.EnqueueAndWait(ctx, r)
}

// Get returns the recorded state of task id, or [ErrNotFound].
func (c *Client) Get(ctx context.Context, id string) (State, error) { return c.c.Get(ctx, id) }
