package api

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/rest"
)

// redisTimeout bounds the Redis round trip of [RateLimit] and [Session], so
// that a hanging Redis delays a request by at most this much before the
// middleware gives up (and lets the request through).
const redisTimeout = 500 * time.Millisecond

// Rate limit response headers (IETF draft "RateLimit header fields").
const (
	HeaderRateLimitLimit     = "RateLimit-Limit"
	HeaderRateLimitRemaining = "RateLimit-Remaining"
	HeaderRateLimitReset     = "RateLimit-Reset"
)

// RateLimit allows each caller (the name [Auth] stored, i.e. each API
// token) at most limit requests per window, counted in Redis so that every
// api replica shares the count. It must run after Auth.
//
// The counter is a fixed window: key <prefix>:ratelimit:<caller>:<n>, where
// n is the Unix time in milliseconds divided by the window, incremented and
// given a TTL of two windows in one MULTI/EXEC round trip. A fixed window
// may let up to 2×limit through around a window boundary; in exchange it
// costs one round trip and its Retry-After is exact. Windows follow each
// replica's clock, so replicas should run NTP.
//
// Over the limit, the answer is 429 with code "rate_limited" and a
// Retry-After header: the seconds until the window ends, rounded up, at
// least 1. Every counted response carries RateLimit-Limit,
// RateLimit-Remaining and RateLimit-Reset (seconds).
//
// Not limited: limit 0 (the middleware does nothing), [auth.Exempt] paths, and
// [auth.Anonymous] callers — with api.auth "none" there are no tokens to
// limit, and one shared bucket would throttle every client together.
//
// When Redis fails or does not answer within 500 ms, the request is let
// through (fail open): rate limiting protects capacity, and refusing every
// request because the limiter's store is down would turn a Redis outage
// into an API outage. After a failure, requests skip Redis for a second
// (so an outage does not add up to 500 ms to each of them), then one tries
// again. The first failure is logged at error level, and recovery at info
// level; failures in between are not logged.
//
// RateLimit panics if limit is negative or window is shorter than 1 ms.
func RateLimit(rdb redis.UniversalClient, prefix string, limit int, window time.Duration, log zerolog.Logger) echo.MiddlewareFunc {
	if limit == 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	if limit < 0 || window < time.Millisecond {
		panic("api: RateLimit needs limit >= 0 and window >= 1ms")
	}
	return newRateLimiter(rdb, prefix, limit, window, log).middleware
}

func newRateLimiter(rdb redis.UniversalClient, prefix string, limit int, window time.Duration, log zerolog.Logger) *rateLimiter {
	rl := &rateLimiter{rdb: rdb, prefix: prefix + ":ratelimit:", limit: int64(limit), window: window, now: time.Now}
	rl.brk = breaker{log: log, off: "rate limiting is off: Redis failed, requests pass unlimited until it answers again",
		on: "rate limiting is on again: Redis answers"}
	return rl
}

type rateLimiter struct {
	rdb    redis.UniversalClient
	prefix string // <prefix>:ratelimit:
	limit  int64
	window time.Duration
	now    func() time.Time
	brk    breaker
}

func (rl *rateLimiter) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	limit := strconv.FormatInt(rl.limit, 10)
	return func(c echo.Context) error {
		caller := auth.Caller(c)
		if caller == "" || caller == auth.Anonymous || auth.Exempt(c.Request().URL.Path) {
			return next(c)
		}
		now := rl.now()
		w := rl.window.Milliseconds()
		n := now.UnixMilli() / w
		reset := time.Duration((n+1)*w-now.UnixMilli()) * time.Millisecond

		if rl.brk.open() {
			return next(c)
		}
		count, err := rl.incr(c.Request().Context(), rl.prefix+caller+":"+strconv.FormatInt(n, 10))
		if err != nil {
			rl.brk.fail(c.Request().Context(), err)
			return next(c)
		}
		rl.brk.ok()

		h := c.Response().Header()
		h.Set(HeaderRateLimitLimit, limit)
		h.Set(HeaderRateLimitRemaining, strconv.FormatInt(max(rl.limit-count, 0), 10))
		h.Set(HeaderRateLimitReset, strconv.FormatInt(ceilSeconds(reset), 10))
		if count > rl.limit {
			e := rest.NewError(http.StatusTooManyRequests, "rate_limited", "",
				"rate limit of "+limit+" requests per "+rl.window.String()+" exceeded; retry after the Retry-After seconds")
			e.RetryAfter = time.Duration(ceilSeconds(reset)) * time.Second
			return e
		}
		return next(c)
	}
}

// incr counts one request in key and returns the count.
func (rl *rateLimiter) incr(ctx context.Context, key string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	var incr *redis.IntCmd
	_, err := rl.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		incr = p.Incr(ctx, key)
		p.PExpire(ctx, key, 2*rl.window)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return incr.Val(), nil
}

// breakerCooldown is how long the fail-open middleware skips a failed
// Redis before trying it again.
const breakerCooldown = time.Second

// breaker remembers that Redis failed, so that [RateLimit] and [Session]
// skip it for breakerCooldown instead of waiting on it in every request,
// and logs only the transitions (off, then on again).
type breaker struct {
	log     zerolog.Logger
	off, on string       // messages of the transitions
	failing atomic.Bool  // the latest attempt failed
	retryAt atomic.Int64 // Unix ns before which Redis is skipped
}

// open reports whether Redis should be skipped now.
func (b *breaker) open() bool {
	return b.failing.Load() && time.Now().UnixNano() < b.retryAt.Load()
}

// fail records a failed attempt made for a request with context ctx. A
// request whose client went away does not count: Redis is not to blame.
func (b *breaker) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	b.retryAt.Store(time.Now().Add(breakerCooldown).UnixNano())
	if b.failing.CompareAndSwap(false, true) {
		b.log.Error().Err(err).Msg(b.off)
	}
}

// ok records a successful attempt.
func (b *breaker) ok() {
	if b.failing.Load() && b.failing.CompareAndSwap(true, false) {
		b.log.Info().Msg(b.on)
	}
}

// ceilSeconds rounds d up to whole seconds, at least 1.
func ceilSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
