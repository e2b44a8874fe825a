package results

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
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
// trimming), and <prefix>:task:<id>:attempts, the attempt history. One
// script per task write keeps them current: it records the score in the
// hash (field t) the first time and moves the id between state sets when
// the state changes. Entries older than the result TTL are trimmed by
// [Store.Trim]; ids whose state expired earlier are skipped (and dropped)
// when a search meets them.

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
}

// Write modes of the index script.
const (
	modeSet         = "set"
	modeAbsent      = "absent"       // only when the task has no state
	modeUnlessFinal = "unless_final" // only when it has one that is not final
)

var indexScript = redis.NewScript(`local key = KEYS[1]
local mode = ARGV[4]
if mode == "absent" and redis.call("EXISTS", key) == 1 then return 0 end
local old = redis.call("HMGET", key, "state", "t")
if mode == "unless_final" then
  local s = old[1]
  if not s or s == "SUCCESS" or s == "FAILURE" or s == "EXPIRED" or s == "CANCELLED" then return 0 end
end
local n = tonumber(ARGV[5])
if #ARGV >= 6 + n then redis.call("HSET", key, unpack(ARGV, 6 + n)) end
redis.call("EXPIRE", key, ARGV[1])
local cur = redis.call("HMGET", key, "state", "task", "queue", "id")
local p, t, id = ARGV[2], old[2], cur[4]
if id then
  if not t then
    t = ARGV[3]
    redis.call("HSET", key, "t", t)
    redis.call("ZADD", p .. "all", t, id)
    if cur[2] then local k = p .. "t:" .. cur[2]; redis.call("ZADD", k, t, id); redis.call("SADD", p .. "keys", k) end
    if cur[3] then local k = p .. "q:" .. cur[3]; redis.call("ZADD", k, t, id); redis.call("SADD", p .. "keys", k) end
  end
  if cur[1] and cur[1] ~= old[1] then
    if old[1] then redis.call("ZREM", p .. "s:" .. old[1], id) end
    redis.call("ZADD", p .. "s:" .. cur[1], t, id)
  end
end
if n > 0 then
  local h = key .. ":attempts"
  redis.call("RPUSH", h, unpack(ARGV, 6, 5 + n))
  redis.call("EXPIRE", h, ARGV[1])
end
return 1`)

var scriptsLoaded atomic.Bool

func (s *Store) idx() string { return s.prefix + ":idx:" }

// indexedWrite queues the index script for o on pipe.
func (s *Store) indexedWrite(ctx context.Context, pipe redis.Pipeliner, o *op, mode string) {
	score := o.score
	if score == 0 {
		score = time.Now().UnixMilli()
	}
	args := make([]any, 0, 5+len(o.attempts)+len(o.fields))
	args = append(args, int64(s.ttl/time.Second), s.idx(), score, mode, len(o.attempts))
	for _, a := range o.attempts {
		args = append(args, a)
	}
	args = append(args, o.fields...)
	indexScript.EvalSha(ctx, pipe, []string{o.key}, args...)
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
	for _, st := range []string{"PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "EXPIRED", "CANCELLED"} {
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

// history reads task id's attempt history.
func (s *Store) history(ctx context.Context, id string) ([]Attempt, error) {
	raw, err := s.rdb.LRange(ctx, s.Key(id)+":attempts", 0, -1).Result()
	if err != nil {
		return nil, unavailable("get task "+id, err)
	}
	var out []Attempt
	for _, r := range raw {
		var a Attempt
		if err := json.Unmarshal([]byte(r), &a); err == nil {
			out = append(out, a)
		}
	}
	return out, nil
}
