package results

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flotilla/flotilla/internal/wire"
)

// The task index (unless Config.NoIndex) lives beside the states: sorted sets of
// task ids scored by enqueue time (Unix ms) —
//
//	<prefix>:idx:all          every task
//	<prefix>:idx:s:<STATE>    by current state
//	<prefix>:idx:t:<task>     by task name
//	<prefix>:idx:q:<queue>    by queue
//
// plus <prefix>:idx:keys, the set of the name and queue keys (for
// trimming); a task's attempt history is the fields h.<finish time> of its
// hash. Every state write of the batching writer updates the sets in the
// same transaction, with plain commands batched per set (indexedSet); the
// rare conditional writes (an enqueue with its own id, a cancel) use a
// script that reads the old state first. A task's score is its enqueue
// time, kept in its hash (field t). Entries older than the result TTL are
// trimmed by [Store.Trim]; ids whose state expired earlier, or that left a
// state, are skipped (and expired ones dropped) when a search meets them.

// Attempt is one ended attempt in a task's history.
type Attempt struct {
	Attempt    int       `json:"attempt"`
	Worker     string    `json:"worker"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// Outcome is success, retry, dead, failure, expired or cancelled.
	Outcome   string `json:"outcome"`
	Error     string `json:"error,omitempty"`
	ErrorType string `json:"error_type,omitempty"`
	// Traceback is the goroutine stack of a handler that panicked (at
	// most MaxTraceback bytes).
	Traceback string `json:"traceback,omitempty"`
}

// appendJSON appends a's JSON encoding (the bytes encoding/json writes)
// without reflection: every finished attempt writes one.
func (a *Attempt) appendJSON(b []byte) []byte {
	b = append(b, `{"attempt":`...)
	b = strconv.AppendInt(b, int64(a.Attempt), 10)
	b = append(b, `,"worker":`...)
	b = wire.AppendJSONString(b, a.Worker)
	b = append(b, `,"started_at":"`...)
	b = a.StartedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","finished_at":"`...)
	b = a.FinishedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","outcome":`...)
	b = wire.AppendJSONString(b, a.Outcome)
	for _, f := range [...]struct{ k, v string }{
		{`,"error":`, a.Error}, {`,"error_type":`, a.ErrorType}, {`,"traceback":`, a.Traceback},
	} {
		if f.v != "" {
			b = append(b, f.k...)
			b = wire.AppendJSONString(b, f.v)
		}
	}
	return append(b, '}')
}

// historyField is the hash field of an attempt that finished at t:
// h.<Unix ns, 20 digits>, so that the fields sort by time.
func historyField(t time.Time) string {
	var b [22]byte
	b[0], b[1] = 'h', '.'
	n := t.UnixNano()
	for i := 21; i >= 2; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[:])
}

// MaxTraceback bounds [Attempt.Traceback].
const MaxTraceback = 8 << 10

// Write modes of the index script.
const (
	modeAbsent      = "absent"       // only when the task has no state
	modeUnlessFinal = "unless_final" // only when it has one that is not final
)

// indexScript writes a batch of task states and keeps the index: KEYS are
// the task hashes; ARGV is ttl, index prefix, then per key: mode, id,
// task, queue, new state, score (Unix ms), the number of field/value
// strings and those.
var indexScript = redis.NewScript(`local ttl, p = ARGV[1], ARGV[2]
local a = 3
for i = 1, #KEYS do
  local key = KEYS[i]
  local mode, id, tname, q, st, score = ARGV[a], ARGV[a+1], ARGV[a+2], ARGV[a+3], ARGV[a+4], ARGV[a+5]
  local nf = tonumber(ARGV[a+6])
  local fs = a + 7
  a = fs + nf
  local old = redis.call("HMGET", key, "state", "t", "task", "queue")
  local skip = false
  if mode == "absent" then
    skip = redis.call("EXISTS", key) == 1
  elseif mode == "unless_final" then
    local s = old[1]
    skip = not s or s == "SUCCESS" or s == "FAILURE" or s == "EXPIRED" or s == "CANCELLED"
  end
  if not skip then
    local t = old[2]
    local f = {}
    for k = fs, fs + nf - 1 do f[#f + 1] = ARGV[k] end
    if not t then t = score; f[#f + 1] = "t"; f[#f + 1] = t end
    redis.call("HSET", key, unpack(f))
    redis.call("EXPIRE", key, ttl)
    if not old[2] then
      redis.call("ZADD", p .. "all", t, id)
      local tn = (tname ~= "" and tname) or old[3]
      local qn = (q ~= "" and q) or old[4]
      if tn then local k = p .. "t:" .. tn; redis.call("ZADD", k, t, id); redis.call("SADD", p .. "keys", k) end
      if qn then local k = p .. "q:" .. qn; redis.call("ZADD", k, t, id); redis.call("SADD", p .. "keys", k) end
    end
    if st ~= "" and st ~= old[1] then
      if old[1] then redis.call("ZREM", p .. "s:" .. old[1], id) end
      redis.call("ZADD", p .. "s:" .. st, t, id)
    end
  end
end
return 1`)

var scriptsLoaded atomic.Bool

func (s *Store) idx() string { return s.prefix + ":idx:" }

// states are the task states (task.States), the index's state sets;
// unfinished those a task leaves.
var (
	states     = []string{"PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "EXPIRED", "CANCELLED"}
	unfinished = []string{"PENDING", "STARTED", "RETRY"}
)

// indexedSet queues, on a transaction pipe, the writes of ops with the
// index changes they make, as plain commands batched per index set (no
// script: this is every task's path). An op that sets the enqueue time
// puts the id in the all, task and queue sets; an op with a state puts it
// in that state's set and, unless the state is PENDING (a new task), takes
// it out of the other unfinished states' sets — finished states are not
// left (a requeued dead letter stays in FAILURE's set; [Store.Search]
// checks every candidate's state, so such a leftover is skipped).
func (s *Store) indexedSet(ctx context.Context, pipe redis.Pipeliner, ops []*op) {
	p := s.idx()
	all := p + "all"
	// The set keys, built once a batch for each name (not once a task).
	tkeys, qkeys, skeys := keyCache{prefix: p + "t:"}, keyCache{prefix: p + "q:"}, keyCache{prefix: p + "s:"}
	now := float64(time.Now().UnixMilli())
	adds := map[string][]redis.Z{}
	rems := map[string][]any{}
	var named []any
	for _, o := range ops {
		fields := o.fields
		score := now
		if o.score != 0 {
			score = float64(o.score)
		}
		z := redis.Z{Score: score, Member: o.id}
		if o.create {
			fields = append(fields, "t", o.score)
			adds[all] = append(adds[all], z)
			for _, key := range [2]string{tkeys.key(o.task), qkeys.key(o.queue)} {
				if key == "" {
					continue
				}
				if _, seen := adds[key]; !seen {
					named = append(named, key)
				}
				adds[key] = append(adds[key], z)
			}
		}
		pipe.HSet(ctx, o.key, fields...)
		if o.stateNX {
			pipe.HSetNX(ctx, o.key, "state", o.state)
		}
		pipe.Expire(ctx, o.key, s.ttl)
		if o.state != "" {
			key := skeys.key(o.state)
			adds[key] = append(adds[key], z)
			if o.state != "PENDING" {
				for _, st := range unfinished {
					if st != o.state {
						key := skeys.key(st)
						rems[key] = append(rems[key], o.id)
					}
				}
			}
		}
	}
	for k, ms := range rems {
		pipe.ZRem(ctx, k, ms...)
	}
	for k, zs := range adds {
		pipe.ZAdd(ctx, k, zs...)
	}
	if len(named) > 0 {
		pipe.SAdd(ctx, p+"keys", named...)
	}
}

// keyCache builds the keys prefix+name of one kind of index set, each once.
type keyCache struct {
	prefix string
	keys   map[string]string
}

// key is prefix+name, or "" for no name.
func (c *keyCache) key(name string) string {
	if name == "" {
		return ""
	}
	if k, ok := c.keys[name]; ok {
		return k
	}
	if c.keys == nil {
		c.keys = make(map[string]string, 4)
	}
	k := c.prefix + name
	c.keys[name] = k
	return k
}

// indexedWrite queues the conditional writes of ops (mode absent or
// unless_final) on pipe: one script call per up to MaxBatch tasks.
func (s *Store) indexedWrite(ctx context.Context, pipe redis.Pipeliner, ops []*op, mode string) {
	now := time.Now().UnixMilli()
	for start := 0; start < len(ops); start += s.max {
		chunk := ops[start:min(start+s.max, len(ops))]
		keys := make([]string, len(chunk))
		args := make([]any, 0, 2+len(chunk)*24)
		args = append(args, int64(s.ttl/time.Second), s.idx())
		for i, o := range chunk {
			keys[i] = o.key
			score := o.score
			if score == 0 {
				score = now
			}
			args = append(args, mode, o.id, o.task, o.queue, o.state, score, len(o.fields))
			args = append(args, o.fields...)
		}
		indexScript.EvalSha(ctx, pipe, keys, args...)
	}
}

// exec runs fill's pipeline; with the index it loads the script first
// and, when Redis lost it (a restart), loads it again and retries once.
func (s *Store) exec(ctx context.Context, fill func(redis.Pipeliner)) error {
	run := func() error {
		pipe := s.rdb.Pipeline()
		fill(pipe)
		_, err := pipe.Exec(ctx)
		if errors.Is(err, redis.Nil) {
			return nil
		}
		return err
	}
	if !s.index {
		return run()
	}
	if !scriptsLoaded.Load() {
		if err := indexScript.Load(ctx, s.rdb).Err(); err != nil {
			return err
		}
		scriptsLoaded.Store(true)
	}
	err := run()
	if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
		if lerr := indexScript.Load(ctx, s.rdb).Err(); lerr != nil {
			return lerr
		}
		err = run()
	}
	return err
}

// Query selects tasks for [Store.Search]; zero fields select all.
type Query struct {
	State, Task, Queue string
	// Since and Until bound the enqueue time (inclusive).
	Since, Until time.Time
	// Limit is the page size: 1 to 1000, default 50.
	Limit int
	// Cursor continues a previous page (its Next).
	Cursor string
}

// Page is one page of a search, newest first.
type Page struct {
	Items []State `json:"items"`
	// Next continues the search; empty on the last page. A page can hold
	// fewer than Limit items and still have a Next when a scan bound was
	// reached.
	Next string `json:"next,omitempty"`
}

// ErrBadCursor is returned for a cursor that no search produced.
var ErrBadCursor = errors.New("invalid cursor")

// maxScan bounds the ids one search page reads, so that a filter that
// matches few of the candidates answers quickly, with a Next to go on.
const maxScan = 2000

// Search returns the tasks q selects, newest first, keyset-paged. It reads
// the smallest index set among q's filters and checks the others on each
// candidate's state.
func (s *Store) Search(ctx context.Context, q Query) (Page, error) {
	if !s.index {
		return Page{}, errors.New("the task index is off (tasks.index=false)")
	}
	if q.Limit <= 0 {
		q.Limit = 50
	}
	q.Limit = min(q.Limit, 1000)
	key, err := s.candidates(ctx, q)
	if err != nil {
		return Page{}, err
	}
	maxScore, minScore := "+inf", "-inf"
	if !q.Until.IsZero() {
		maxScore = strconv.FormatInt(q.Until.UnixMilli(), 10)
	}
	if !q.Since.IsZero() {
		minScore = strconv.FormatInt(q.Since.UnixMilli(), 10)
	}
	var afterScore int64
	var afterID string
	if q.Cursor != "" {
		if afterScore, afterID, err = decodeCursor(q.Cursor); err != nil {
			return Page{}, err
		}
		maxScore = strconv.FormatInt(afterScore, 10)
	}
	page := Page{Items: []State{}}
	scanned, offset := 0, int64(0)
	batch := int64(max(q.Limit*2, 64))
	var last redis.Z
	for scanned < maxScan {
		zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, key, &redis.ZRangeBy{Max: maxScore, Min: minScore, Offset: offset, Count: batch}).Result()
		if err != nil {
			return Page{}, unavailable("search tasks", err)
		}
		if len(zs) == 0 {
			return page, nil
		}
		offset += int64(len(zs))
		// Skip what the cursor's page already had (same score, id not
		// after it in the reverse order).
		var ids []string
		var kept []redis.Z
		for _, z := range zs {
			id := z.Member.(string)
			if q.Cursor != "" && int64(z.Score) == afterScore && id >= afterID {
				continue
			}
			ids = append(ids, id)
			kept = append(kept, z)
		}
		states, err := s.getMany(ctx, ids)
		if err != nil {
			return Page{}, err
		}
		for i, st := range states {
			scanned++
			last = kept[i]
			if st == nil {
				_ = s.rdb.ZRem(ctx, key, ids[i]).Err() // expired: drop lazily
				continue
			}
			if (q.State == "" || st.State == q.State) && (q.Task == "" || st.Task == q.Task) && (q.Queue == "" || st.Queue == q.Queue) {
				page.Items = append(page.Items, *st)
				if len(page.Items) == q.Limit {
					page.Next = encodeCursor(int64(last.Score), last.Member.(string))
					return page, nil
				}
			}
		}
		if int64(len(zs)) < batch {
			return page, nil
		}
	}
	if last.Member != nil {
		page.Next = encodeCursor(int64(last.Score), last.Member.(string))
	}
	return page, nil
}

// candidates is the smallest index set of q's filters.
func (s *Store) candidates(ctx context.Context, q Query) (string, error) {
	var keys []string
	if q.State != "" {
		keys = append(keys, s.idx()+"s:"+q.State)
	}
	if q.Task != "" {
		keys = append(keys, s.idx()+"t:"+q.Task)
	}
	if q.Queue != "" {
		keys = append(keys, s.idx()+"q:"+q.Queue)
	}
	switch len(keys) {
	case 0:
		return s.idx() + "all", nil
	case 1:
		return keys[0], nil
	}
	pipe := s.rdb.Pipeline()
	cards := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cards[i] = pipe.ZCard(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return "", unavailable("search tasks", err)
	}
	best := 0
	for i := range keys {
		if cards[i].Val() < cards[best].Val() {
			best = i
		}
	}
	return keys[best], nil
}

// getMany reads the states of ids in one pipeline; nil for those gone.
func (s *Store) getMany(ctx context.Context, ids []string) ([]*State, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, s.Key(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, unavailable("search tasks", err)
	}
	out := make([]*State, len(ids))
	for i, c := range cmds {
		if m := c.Val(); len(m) > 0 {
			st := fromHash(m)
			out[i] = &st
		}
	}
	return out, nil
}

func encodeCursor(score int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(score, 10) + ":" + id))
}

func decodeCursor(c string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", ErrBadCursor
	}
	score, id, ok := strings.Cut(string(b), ":")
	n, err := strconv.ParseInt(score, 10, 64)
	if !ok || err != nil || id == "" {
		return 0, "", ErrBadCursor
	}
	return n, id, nil
}

// Trim removes index entries enqueued longer than the result TTL ago and
// forgets name and queue sets that emptied. Web runs it every minute.
func (s *Store) Trim(ctx context.Context) error {
	if !s.index {
		return nil
	}
	cut := "(" + strconv.FormatInt(time.Now().Add(-s.ttl).UnixMilli(), 10)
	keys, err := s.rdb.SMembers(ctx, s.idx()+"keys").Result()
	if err != nil {
		return unavailable("trim the task index", err)
	}
	keys = append(keys, s.idx()+"all")
	for _, st := range states {
		keys = append(keys, s.idx()+"s:"+st)
	}
	pipe := s.rdb.Pipeline()
	cards := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		pipe.ZRemRangeByScore(ctx, k, "-inf", cut)
		cards[i] = pipe.ZCard(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("trim the task index", err)
	}
	for i, k := range keys {
		if cards[i].Val() == 0 && strings.HasPrefix(k, s.idx()+"t:") || cards[i].Val() == 0 && strings.HasPrefix(k, s.idx()+"q:") {
			_ = s.rdb.SRem(ctx, s.idx()+"keys", k).Err()
		}
	}
	return nil
}

// TrimEvery runs [Store.Trim] every d until ctx ends.
func (s *Store) TrimEvery(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = s.Trim(ctx)
		}
	}
}
