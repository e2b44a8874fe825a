// Package limits enforces per-task rate and concurrency limits across
// every worker, in Redis, one round trip per start: the rate is a GCRA
// (each start reserves the next slot of the task's schedule, Redis's own
// clock decides), the concurrency a sorted set of leases that expire on
// their own if a worker dies. A task over its limit is held by its worker
// or deferred — never failed, and a deferral does not count as an
// attempt: the limiter keeps a per-task count of deferrals that the
// worker subtracts from the delivery count.
package limits

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flotilla/flotilla/internal/task"
)

// ErrUnavailable matches errors of a limiter that cannot reach Redis.
var ErrUnavailable = errors.New("limiter (Redis) unavailable")

// Limiter checks and records the starts of limited tasks.
type Limiter struct {
	rdb    redis.UniversalClient
	prefix string
}

// New returns a limiter keeping its keys under prefix.
func New(rdb redis.UniversalClient, prefix string) *Limiter {
	return &Limiter{rdb: rdb, prefix: prefix}
}

func (l *Limiter) rateKey(name string) string  { return l.prefix + ":limit:rate:" + name }
func (l *Limiter) leaseKey(name string) string { return l.prefix + ":limit:conc:" + name }
func (l *Limiter) deferKey(id string) string   { return l.prefix + ":limit:defer:" + id }

// acquire: KEYS rate, leases, deferrals of the task id; ARGV interval µs
// (0 = no rate), concurrency (0 = none), lease member, lease µs, longest
// wait µs a start may reserve. Returns {granted, wait µs, deferrals, full}.
var acquire = redis.NewScript(`local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local deferrals = tonumber(redis.call("GET", KEYS[3]) or "0")
local limit = tonumber(ARGV[2])
if limit > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now)
  if not redis.call("ZSCORE", KEYS[2], ARGV[3]) and redis.call("ZCARD", KEYS[2]) >= limit then
    return {0, 0, deferrals, 1}
  end
end
local iv = tonumber(ARGV[1])
local wait = 0
if iv > 0 then
  local tat = tonumber(redis.call("GET", KEYS[1]) or "0")
  if tat < now then tat = now end
  wait = tat - now
  if wait > tonumber(ARGV[5]) then return {0, wait, deferrals, 0} end
  redis.call("SET", KEYS[1], string.format("%d", tat + iv), "PX", math.floor((tat + iv - now) / 1000) + 1000)
end
if limit > 0 then
  local until_ = now + wait + tonumber(ARGV[4])
  redis.call("ZADD", KEYS[2], string.format("%d", until_), ARGV[3])
  redis.call("PEXPIRE", KEYS[2], math.floor((until_ - now) / 1000) + 1000)
end
return {1, wait, deferrals, 0}`)

// Decision is the answer of [Limiter.Acquire].
type Decision struct {
	// Granted: the task may start after Wait (its reserved slot); a
	// concurrency lease is held until [Lease.Release].
	Granted bool
	Wait    time.Duration
	// Full: denied because Concurrency attempts run already. Otherwise a
	// denial means the rate's next slot is further than the longest wait
	// asked for; Wait says how far.
	Full bool
	// Deferrals is how often this task was deferred so far: deliveries
	// that were not attempts.
	Deferrals int
	// Lease, when Granted with a concurrency limit, is released when the
	// attempt ends.
	Lease *Lease
}

// Lease is a held concurrency slot.
type Lease struct {
	l          *Limiter
	key, owner string
}

// Release frees the slot (best effort: it expires anyway).
func (s *Lease) Release(ctx context.Context) {
	if s == nil {
		return
	}
	_ = s.l.rdb.ZRem(ctx, s.key, s.owner).Err()
}

// Acquire asks whether an attempt of def (task id) may start: granted
// after at most maxWait, or denied. lease is how long a concurrency slot
// is held at most (the attempt's timeout and grace): a worker that dies
// frees it then.
func (l *Limiter) Acquire(ctx context.Context, def *task.Definition, id string, maxWait, lease time.Duration) (Decision, error) {
	o := def.Options
	var iv int64
	if !o.RateLimit.IsZero() {
		iv = o.RateLimit.Interval().Microseconds()
	}
	keys := []string{l.rateKey(def.Name), l.leaseKey(def.Name), l.deferKey(id)}
	res, err := acquire.Run(ctx, l.rdb, keys, iv, o.Concurrency, id, lease.Microseconds(), maxWait.Microseconds()).Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	d := Decision{Granted: res[0] == 1, Wait: time.Duration(res[1]) * time.Microsecond, Deferrals: int(res[2]), Full: res[3] == 1}
	if d.Granted && o.Concurrency > 0 {
		d.Lease = &Lease{l: l, key: keys[1], owner: id}
	}
	return d, nil
}

// Defer counts a deferral of task id (kept for ttl): the worker is about to
// hand the task back without an attempt.
func (l *Limiter) Defer(ctx context.Context, id string, ttl time.Duration) error {
	pipe := l.rdb.TxPipeline()
	pipe.Incr(ctx, l.deferKey(id))
	pipe.Expire(ctx, l.deferKey(id), ttl)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}
