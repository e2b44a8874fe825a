package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/results/resultstest"
)

// fakeClock is a settable clock.
type fakeClock struct{ ns atomic.Int64 }

func (f *fakeClock) now() time.Time      { return time.Unix(0, f.ns.Load()) }
func (f *fakeClock) set(t time.Time)     { f.ns.Store(t.UnixNano()) }
func (f *fakeClock) add(d time.Duration) { f.ns.Add(int64(d)) }

// rlSetup returns an echo whose requests are made by the caller named in
// the X-Test-Caller header, limited by rl.
func rlSetup(rl *rateLimiter) *echo.Echo {
	e := rest.NewEcho(zerolog.Nop())
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if v := c.Request().Header.Get("X-Test-Caller"); v != "" {
				c.Set(auth.CallerKey, v)
			}
			return next(c)
		}
	}, rl.middleware)
	ok := func(c echo.Context) error { return c.String(http.StatusOK, "ok") }
	e.GET("/api/v1/x", ok)
	e.GET("/healthz", ok)
	return e
}

func get(e *echo.Echo, path, caller string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if caller != "" {
		req.Header.Set("X-Test-Caller", caller)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func TestRateLimitFixedWindow(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := resultstest.Client(t)
	const window = 10 * time.Second
	lim := newRateLimiter(rdb, prefix, 3, window, zerolog.Nop())
	var clk fakeClock
	start := time.Now().Truncate(window).Add(window) // the start of a window
	clk.set(start)
	lim.now = clk.now
	e := rlSetup(lim)

	for i := range 3 {
		rec := get(e, "/api/v1/x", "ci")
		require.Equal(t, http.StatusOK, rec.Code, i)
		require.Equal(t, "3", rec.Header().Get(HeaderRateLimitLimit))
		require.Equal(t, strconv.Itoa(2-i), rec.Header().Get(HeaderRateLimitRemaining))
		require.Equal(t, "10", rec.Header().Get(HeaderRateLimitReset))
	}
	rec := get(e, "/api/v1/x", "ci")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, "10", rec.Header().Get("Retry-After"))
	require.Equal(t, "0", rec.Header().Get(HeaderRateLimitRemaining))
	var body rest.Error
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	require.Equal(t, "rate_limited", body.Code)
	require.Contains(t, body.Error, "3 requests per 10s")

	// The key is <prefix>:ratelimit:<caller>:<window index>, with a TTL.
	key := prefix + ":ratelimit:ci:" + strconv.FormatInt(start.UnixMilli()/window.Milliseconds(), 10)
	n, err := rdb.Get(ctx, key).Int()
	require.NoError(t, err)
	require.Equal(t, 4, n)
	ttl, err := rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, window)
	require.LessOrEqual(t, ttl, 2*window)

	// Another caller has its own count; anonymous callers and exempt
	// paths are not limited.
	require.Equal(t, http.StatusOK, get(e, "/api/v1/x", "billing").Code)
	for range 5 {
		rec := get(e, "/api/v1/x", auth.Anonymous)
		require.Equal(t, http.StatusOK, rec.Code)
		require.Empty(t, rec.Header().Get(HeaderRateLimitLimit))
		require.Equal(t, http.StatusOK, get(e, "/api/v1/x", "").Code)
		require.Equal(t, http.StatusOK, get(e, "/healthz", "ci").Code)
	}

	// Retry-After counts down in whole seconds, rounded up, at least 1.
	clk.add(2500 * time.Millisecond)
	require.Equal(t, "8", get(e, "/api/v1/x", "ci").Header().Get("Retry-After"))
	clk.set(start.Add(window - time.Millisecond))
	rec = get(e, "/api/v1/x", "ci")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, "1", rec.Header().Get("Retry-After"))

	// The next window starts afresh.
	clk.set(start.Add(window))
	rec = get(e, "/api/v1/x", "ci")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "2", rec.Header().Get(HeaderRateLimitRemaining))
}

func TestRateLimitConcurrentCallers(t *testing.T) {
	t.Parallel()
	rdb, prefix := resultstest.Client(t)
	lim := newRateLimiter(rdb, prefix, 50, time.Minute, zerolog.Nop())
	var clk fakeClock
	clk.set(time.Now().Truncate(time.Minute).Add(time.Minute))
	lim.now = clk.now
	e := rlSetup(lim)

	var passed, limited atomic.Int64
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			switch get(e, "/api/v1/x", "ci").Code {
			case http.StatusOK:
				passed.Add(1)
			case http.StatusTooManyRequests:
				limited.Add(1)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(50), passed.Load(), "exactly the limit passes")
	require.Equal(t, int64(150), limited.Load())
}

func TestRateLimitOff(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never used
	t.Cleanup(func() { _ = rdb.Close() })
	e := rest.NewEcho(zerolog.Nop())
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error { c.Set(auth.CallerKey, "ci"); return next(c) }
	}, RateLimit(rdb, "x", 0, time.Second, zerolog.Nop()))
	e.GET("/", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
	for range 3 {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		require.Equal(t, http.StatusNoContent, rec.Code)
		require.Empty(t, rec.Header().Get(HeaderRateLimitLimit))
	}
	require.Panics(t, func() { RateLimit(rdb, "x", -1, time.Second, zerolog.Nop()) })
	require.Panics(t, func() { RateLimit(rdb, "x", 1, 0, zerolog.Nop()) })
}

func TestRateLimitFailsOpen(t *testing.T) {
	t.Parallel()
	// A Redis that refuses connections.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	var logs bytes.Buffer
	var mu sync.Mutex
	log := zerolog.New(zerolog.SyncWriter(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	})))
	lim := newRateLimiter(rdb, "x", 1, time.Second, log)
	e := rlSetup(lim)
	start := time.Now()
	for range 5 {
		require.Equal(t, http.StatusOK, get(e, "/api/v1/x", "ci").Code, "let through while Redis is down")
	}
	require.Less(t, time.Since(start), 2*redisTimeout, "Redis is skipped after the first failure")
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	require.Equal(t, 1, strings.Count(out, "\n"), "logged once: %s", out)
	require.Contains(t, out, `"level":"error"`)
	require.Contains(t, out, "rate limiting is off")

	// Recovery (after the cooldown) is logged once too.
	good, prefix := resultstest.Client(t)
	lim.rdb, lim.prefix = good, prefix+":ratelimit:"
	lim.brk.retryAt.Store(0)
	require.Equal(t, http.StatusOK, get(e, "/api/v1/x", "ci").Code)
	require.Equal(t, http.StatusOK, get(e, "/api/v1/x", "other").Code)
	mu.Lock()
	out = logs.String()
	mu.Unlock()
	require.Equal(t, 2, strings.Count(out, "\n"), out)
	require.Contains(t, out, "rate limiting is on again")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
