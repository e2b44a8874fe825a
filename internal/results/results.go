// Package results keeps task states and results in Redis under
// <prefix>:task:<id> (a hash with a TTL), plus idempotency keys. Writes from
// workers go through one batching pipeline so that many concurrent tasks
// cost one round trip. It does not talk to NATS.
package results

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotFound is returned by [Store.Get] for an unknown or expired task id.
var ErrNotFound = errors.New("task not found")

// ErrUnavailable matches every error of a Redis command that failed (Redis
// down, paused, unreachable, or slower than the caller's deadline): the
// answer is "retry later", never "no such task".
var ErrUnavailable = errors.New("task state store (Redis) unavailable")

// unavailable wraps a failed Redis command's error for op.
func unavailable(op string, err error) error {
	return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}

// State is a task's recorded state, as the HTTP API shows it.
type State struct {
	ID         string          `json:"id"`
	Task       string          `json:"task"`
	Queue      string          `json:"queue"`
	State      string          `json:"state"`
	Args       json.RawMessage `json:"args,omitempty"`
	Result     json.RawMessage `json:"result"`
	Error      string          `json:"error"`
	Attempts   int             `json:"attempts"`
	EnqueuedAt *time.Time      `json:"enqueued_at"`
	StartedAt  *time.Time      `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at"`
	Worker     string          `json:"worker"`
	// History lists the attempts that ended, oldest first (unless
	// Config.NoIndex).
	History []Attempt `json:"history,omitempty"`
	// Unconfirmed marks a task whose publish was not acknowledged: an
	// enqueue retried with its idempotency key publishes it again.
	Unconfirmed bool `json:"-"`
}

// Update is a partial state change; zero fields are left as they are.
type Update struct {
	Task, Queue string
	State       string
	// Args are the task's args, kept for its detail page when at most
	// MaxArgsKept bytes; larger args are replaced by a note of their size.
	Args       json.RawMessage
	Result     json.RawMessage
	Error      string
	Attempts   int
	EnqueuedAt time.Time
	StartedAt  time.Time
	FinishedAt time.Time
	Worker     string
	// ClearError removes a previous attempt's error.
	ClearError bool
	// Attempt, when set, appends an ended attempt to the task's history
	// (unless Config.NoIndex).
	Attempt *Attempt
	// IndexTime is the task's enqueue time for the index when the update
	// does not set EnqueuedAt (a worker's state changes); not stored.
	IndexTime time.Time
	// StateIfNew writes State only when the task has none yet (HSETNX):
	// a PENDING written while the task may already run (an atomic batch
	// records its states alongside its publish) never hides the state a
	// worker wrote. Its index entry may then linger in the PENDING set,
	// which Search skips.
	StateIfNew bool
}

func (u Update) fields(id string) []any {
	f := make([]any, 0, 20)
	f = append(f, "id", id)
	add := func(k, v string) {
		if v != "" {
			f = append(f, k, v)
		}
	}
	add("task", u.Task)
	add("queue", u.Queue)
	if !u.StateIfNew {
		add("state", u.State)
	}
	if len(u.Args) > 0 {
		if len(u.Args) <= MaxArgsKept {
			f = append(f, "args", string(u.Args))
		} else {
			f = append(f, "args", fmt.Sprintf(`{"_folded":"%d bytes of args are not kept; see the dead letter or the producer"}`, len(u.Args)))
		}
	}
	if len(u.Result) > 0 {
		f = append(f, "result", string(u.Result))
	}
	add("error", u.Error)
	if u.ClearError && u.Error == "" {
		f = append(f, "error", "")
	}
	if u.Attempts > 0 {
		f = append(f, "attempts", strconv.Itoa(u.Attempts))
	}
	addT := func(k string, t time.Time) {
		if !t.IsZero() {
			f = append(f, k, t.UTC().Format(time.RFC3339Nano))
		}
	}
	addT("enqueued_at", u.EnqueuedAt)
	addT("started_at", u.StartedAt)
	addT("finished_at", u.FinishedAt)
	add("worker", u.Worker)
	return f
}

// MaxArgsKept is the largest args a state keeps (16 KiB).
const MaxArgsKept = 16 << 10

// Config configures a [Store].
type Config struct {
	// Prefix of every key, e.g. "flotilla".
	Prefix string
	// TTL of a task's state after its last write.
	TTL time.Duration
	// MaxBatch bounds one write pipeline. Default 512.
	MaxBatch int
	// ErrorFunc, when set, hears about failed writes that nobody waits for
	// (SetAsync): n is how many of them the failed pipeline held.
	ErrorFunc func(err error, n int)
	// NoIndex turns off the task index that [Store.Search] reads and each
	// task's attempt history (tasks.index=false). The index needs one
	// Redis (not a cluster): writes are a script that touches the index
	// keys too.
	NoIndex bool
}

// Store reads and writes task states. Close it to stop its writer.
type Store struct {
	errFunc func(error, int)
	rdb     redis.UniversalClient
	prefix  string
	ttl     time.Duration
	max     int
	index   bool

	ops chan *op
	// mu guards closed: senders hold it for reading while they queue, so
	// that once Close has set closed (under the write lock) nothing more is
	// queued and the writer's final drain sees every queued op.
	mu     sync.RWMutex
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

type op struct {
	key                    string
	id, task, queue, state string // for the index; "" = not in this update
	fields                 []any
	score                  int64      // enqueued at, Unix ms; 0 = unknown
	create                 bool       // the update sets the enqueue time: index the task
	stateNX                bool       // state goes in with HSETNX (Update.StateIfNew)
	done                   chan error // nil = fire and forget
}

// newOp is the write of u for task id.
func (s *Store) newOp(id string, u Update, done chan error) *op {
	o := &op{key: s.Key(id), id: id, task: u.Task, queue: u.Queue, state: u.State, fields: u.fields(id), done: done, stateNX: u.StateIfNew}
	switch {
	case !u.EnqueuedAt.IsZero():
		o.score, o.create = u.EnqueuedAt.UnixMilli(), true
	case !u.IndexTime.IsZero():
		o.score = u.IndexTime.UnixMilli()
	}
	if u.Attempt != nil && s.index {
		// History entries are fields h.<finish time> of the hash: no key
		// or command of their own.
		o.fields = append(o.fields, historyField(u.Attempt.FinishedAt), string(u.Attempt.appendJSON(make([]byte, 0, 256))))
	}
	return o
}

// New returns a store using rdb and starts its batching writer.
func New(rdb redis.UniversalClient, cfg Config) *Store {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 512
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 24 * time.Hour
	}
	s := &Store{
		rdb: rdb, prefix: cfg.Prefix, ttl: cfg.TTL, max: cfg.MaxBatch, errFunc: cfg.ErrorFunc, index: !cfg.NoIndex,
		ops: make(chan *op, 4096), stop: make(chan struct{}),
	}
	s.wg.Add(1)
	go s.writer()
	return s
}

// Close flushes queued writes and stops the writer. It does not close rdb.
// Writes after Close go to Redis directly, one round trip each.
func (s *Store) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// queue hands o to the writer; it reports false when the store is closed.
func (s *Store) queue(ctx context.Context, o *op) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, nil
	}
	select {
	case s.ops <- o:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// Key is the Redis key of task id.
func (s *Store) Key(id string) string { return s.prefix + ":task:" + id }

func (s *Store) idemKey(k string) string { return s.prefix + ":idem:" + k }

// Set writes u for task id and waits until Redis has it.
func (s *Store) Set(ctx context.Context, id string, u Update) error {
	o := s.newOp(id, u, make(chan error, 1))
	queued, err := s.queue(ctx, o)
	if err != nil {
		return err
	}
	if !queued {
		return s.direct(ctx, o)
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetAsync queues u for task id without waiting; writes of one task are
// applied in the order they were queued. After Close it writes directly
// and waits (up to 10s), so a late write is not lost.
func (s *Store) SetAsync(id string, u Update) {
	o := s.newOp(id, u, nil)
	if queued, _ := s.queue(context.Background(), o); !queued {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.direct(ctx, o)
	}
}

// setIfAbsent creates a task's hash with its fields and TTL only when the
// task has none.
var setIfAbsent = redis.NewScript(`if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], unpack(ARGV, 2))
redis.call("EXPIRE", KEYS[1], ARGV[1])
return 1`)

// SetIfAbsent writes u for task id only when no state is recorded for it,
// and waits until Redis has it.
func (s *Store) SetIfAbsent(ctx context.Context, id string, u Update) error {
	if s.index {
		err := s.exec(ctx, func(pipe redis.Pipeliner) { s.indexedWrite(ctx, pipe, []*op{s.newOp(id, u, nil)}, modeAbsent) })
		if err != nil {
			return unavailable("record task state", err)
		}
		return nil
	}
	args := append([]any{int64(s.ttl / time.Second)}, u.fields(id)...)
	if err := setIfAbsent.Run(ctx, s.rdb, []string{s.Key(id)}, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return unavailable("record task state", err)
	}
	return nil
}

// MarkUnconfirmed marks task id as published without acknowledgement.
func (s *Store) MarkUnconfirmed(ctx context.Context, id string) error {
	if err := s.rdb.HSet(ctx, s.Key(id), "unconfirmed", "1").Err(); err != nil {
		return unavailable("mark task "+id, err)
	}
	return nil
}

// ClearUnconfirmed removes the mark of [Store.MarkUnconfirmed].
func (s *Store) ClearUnconfirmed(ctx context.Context, id string) error {
	if err := s.rdb.HDel(ctx, s.Key(id), "unconfirmed").Err(); err != nil {
		return unavailable("unmark task "+id, err)
	}
	return nil
}

// SetMany writes several updates in one pipeline and waits.
func (s *Store) SetMany(ctx context.Context, ids []string, us []Update) error {
	ops := make([]*op, len(ids))
	for i, id := range ids {
		ops[i] = s.newOp(id, us[i], nil)
	}
	return s.write(ctx, ops)
}

func (s *Store) direct(ctx context.Context, o *op) error { return s.write(ctx, []*op{o}) }

// write sends ops in one pipeline: one HSET and one EXPIRE per key. Writes
// of one task in one batch (typically STARTED then SUCCESS of a fast task)
// become one HSET of their fields in order, so later ones win, exactly as
// separate writes would have left the hash.
func (s *Store) write(ctx context.Context, ops []*op) error {
	all := make([]*op, 0, len(ops)) // one op a key, in first-write order
	at := make(map[string]int, len(ops))
	var copied []bool // all[i] is a merge of its own, not a caller's op
	for _, o := range ops {
		i, seen := at[o.key]
		if !seen {
			at[o.key] = len(all)
			all = append(all, o)
			continue
		}
		if copied == nil {
			copied = make([]bool, len(ops))
		}
		m := all[i]
		if !copied[i] {
			c := *m
			c.fields = append(make([]any, 0, len(m.fields)+len(o.fields)), m.fields...)
			m, all[i], copied[i] = &c, &c, true
		}
		for _, kv := range [][2]*string{{&m.task, &o.task}, {&m.queue, &o.queue}, {&m.state, &o.state}} {
			if *kv[1] != "" {
				*kv[0] = *kv[1] // later writes win, as in the hash
			}
		}
		m.fields = append(m.fields, o.fields...)
		if o.score != 0 && (m.score == 0 || o.score < m.score) {
			m.score = o.score
		}
		m.create = m.create || o.create
		if o.state != "" {
			m.stateNX = o.stateNX
		}
	}
	if s.index {
		// One transaction: the states and the index move together.
		pipe := s.rdb.TxPipeline()
		s.indexedSet(ctx, pipe, all)
		if _, err := pipe.Exec(ctx); err != nil {
			return unavailable("record task state", err)
		}
		return nil
	}
	pipe := s.rdb.Pipeline()
	for _, m := range all {
		pipe.HSet(ctx, m.key, m.fields...)
		if m.stateNX {
			pipe.HSetNX(ctx, m.key, "state", m.state)
		}
		pipe.Expire(ctx, m.key, s.ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("record task state", err)
	}
	return nil
}

func (s *Store) writer() {
	defer s.wg.Done()
	batch := make([]*op, 0, s.max)
	for {
		batch = batch[:0]
		select {
		case o := <-s.ops:
			batch = append(batch, o)
		case <-s.stop:
			// Flush what is queued, then stop.
			for {
				select {
				case o := <-s.ops:
					batch = append(batch, o)
					if len(batch) == s.max {
						s.flush(batch)
						batch = batch[:0]
					}
				default:
					if len(batch) > 0 {
						s.flush(batch)
					}
					return
				}
			}
		}
	fill:
		for len(batch) < s.max {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.flush(batch)
	}
}

func (s *Store) flush(batch []*op) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.write(ctx, batch)
	unheard := 0 // failed writes nobody waits for (SetAsync)
	for _, o := range batch {
		if o.done != nil {
			o.done <- err
		} else if err != nil {
			unheard++
		}
	}
	if unheard > 0 && s.errFunc != nil {
		s.errFunc(err, unheard)
	}
}

// Get returns the state of task id, or [ErrNotFound].
func (s *Store) Get(ctx context.Context, id string) (State, error) {
	m, err := s.rdb.HGetAll(ctx, s.Key(id)).Result()
	if err != nil {
		return State{}, unavailable("get task "+id, err)
	}
	if len(m) == 0 {
		return State{}, ErrNotFound
	}
	return fromHash(m), nil
}

// fromHash is the state stored in hash m.
func fromHash(m map[string]string) State {
	st := State{
		ID: m["id"], Task: m["task"], Queue: m["queue"], State: m["state"],
		Error: m["error"], Worker: m["worker"],
	}
	if a := m["args"]; a != "" {
		st.Args = json.RawMessage(a)
	}
	if r := m["result"]; r != "" {
		st.Result = json.RawMessage(r)
	}
	st.Attempts, _ = strconv.Atoi(m["attempts"])
	st.Unconfirmed = m["unconfirmed"] == "1"
	st.EnqueuedAt = ParseTime(m["enqueued_at"])
	st.StartedAt = ParseTime(m["started_at"])
	st.FinishedAt = ParseTime(m["finished_at"])
	var hist []string
	for k := range m {
		if strings.HasPrefix(k, "h.") {
			hist = append(hist, k)
		}
	}
	slices.Sort(hist)
	for _, k := range hist {
		var a Attempt
		if err := json.Unmarshal([]byte(m[k]), &a); err == nil {
			st.History = append(st.History, a)
		}
	}
	return st
}

// ParseTime reads a time the store wrote (RFC 3339 with nanoseconds);
// nil for none or one it cannot read.
func ParseTime(v string) *time.Time {
	if v == "" {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil
	}
	return &t
}

// ClaimIdempotencyKey binds key to id for ttl unless it is already bound; it
// returns the id the key is bound to (id itself when the claim succeeded).
func (s *Store) ClaimIdempotencyKey(ctx context.Context, key, id string, ttl time.Duration) (string, error) {
	prev, err := s.rdb.SetArgs(ctx, s.idemKey(key), id, redis.SetArgs{Mode: "NX", Get: true, TTL: ttl}).Result()
	if errors.Is(err, redis.Nil) {
		return id, nil
	}
	if err != nil {
		return "", unavailable("claim idempotency key", err)
	}
	return prev, nil
}

// ReleaseIdempotencyKey unbinds key if it is still bound to id (used when the
// publish that followed the claim failed).
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, key, id string) error {
	const script = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`
	if err := s.rdb.Eval(ctx, script, []string{s.idemKey(key)}, id).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return unavailable("release idempotency key", err)
	}
	return nil
}

// Reset forgets the outcome of task id's last run (result, error, start,
// finish, worker, attempts) before it runs again; its args and attempt
// history stay.
func (s *Store) Reset(ctx context.Context, id string) error {
	if err := s.rdb.HDel(ctx, s.Key(id), "result", "error", "started_at", "finished_at", "worker", "attempts", "unconfirmed").Err(); err != nil {
		return unavailable("reset task "+id, err)
	}
	return nil
}

// GetMany reads the states of ids in one round trip; nil for an id with
// none (unknown or expired).
func (s *Store) GetMany(ctx context.Context, ids []string) ([]*State, error) {
	return s.getMany(ctx, ids)
}

// Redis is the client the store writes with, Prefix its key prefix and
// TTL how long states live: for packages that keep their own records
// next to the task states (workflows).
func (s *Store) Redis() redis.UniversalClient { return s.rdb }

// Prefix is the key prefix of the store.
func (s *Store) Prefix() string { return s.prefix }

// TTL is how long states are kept.
func (s *Store) TTL() time.Duration { return s.ttl }

// Delete removes the state of task id.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.rdb.Del(ctx, s.Key(id)).Err(); err != nil {
		return unavailable("delete task "+id, err)
	}
	return nil
}

// cancelScript records CANCELLED on a task that has a state and is not
// finished.
var cancelScript = redis.NewScript(`local s = redis.call("HGET", KEYS[1], "state")
if not s or s == "SUCCESS" or s == "FAILURE" or s == "EXPIRED" or s == "CANCELLED" then return 0 end
redis.call("HSET", KEYS[1], "state", "CANCELLED", "error", ARGV[2], "finished_at", ARGV[3])
redis.call("EXPIRE", KEYS[1], ARGV[1])
return 1`)

// Cancel records CANCELLED with reason as error for every task of ids that
// has a state and is not finished, in one pipeline.
func (s *Store) Cancel(ctx context.Context, ids []string, reason string, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	ts := at.UTC().Format(time.RFC3339Nano)
	if s.index {
		u := Update{State: "CANCELLED", Error: reason, FinishedAt: at}
		ops := make([]*op, len(ids))
		for i, id := range ids {
			ops[i] = s.newOp(id, u, nil)
		}
		if err := s.exec(ctx, func(pipe redis.Pipeliner) { s.indexedWrite(ctx, pipe, ops, modeUnlessFinal) }); err != nil {
			return unavailable("cancel tasks", err)
		}
		return nil
	}
	ttl := int64(s.ttl / time.Second)
	// Load the script once so that the pipeline can use EVALSHA.
	if err := cancelScript.Load(ctx, s.rdb).Err(); err != nil {
		return unavailable("cancel tasks", err)
	}
	for start := 0; start < len(ids); start += s.max {
		pipe := s.rdb.Pipeline()
		for _, id := range ids[start:min(start+s.max, len(ids))] {
			cancelScript.EvalSha(ctx, pipe, []string{s.Key(id)}, ttl, reason, ts)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return unavailable("cancel tasks", err)
		}
	}
	return nil
}
