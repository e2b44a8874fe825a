package results

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// quietLogger drops go-redis's own log lines (dial retries and the like):
// Flotilla reports Redis errors itself, once, with the address and a hint.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

var quietOnce sync.Once

// Dial returns a client of the Redis at rawURL without talking to it: it
// connects on first use and reconnects by itself.
func Dial(rawURL string) (*redis.Client, error) {
	quietOnce.Do(func() { redis.SetLogger(quietLogger{}) })
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	opt.PoolSize = 128
	// Every command ends by its context's deadline (a paused Redis must not
	// hold a request longer than the request may take), and by these
	// bounds when the context has none.
	opt.ContextTimeoutEnabled = true
	opt.DialTimeout = 2 * time.Second
	opt.ReadTimeout = 2 * time.Second
	opt.WriteTimeout = 2 * time.Second
	opt.PoolTimeout = 2 * time.Second
	// Fail fast while Redis is down: one retry (a pooled connection that
	// went stale with a Redis restart) and one dial per attempt, instead
	// of go-redis' 3 retries × 5 dials (about 2 s per command).
	opt.MaxRetries = 1
	opt.DialerRetries = 1
	return redis.NewClient(opt), nil
}

// Open connects to the Redis at rawURL and pings it. The error names the
// address and how to start a local Redis, never the password.
func Open(ctx context.Context, rawURL string) (*redis.Client, error) {
	rdb, err := Dial(rawURL)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis at %s is not reachable (%v); start one with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no, or set FLOTILLA_REDIS_URL", hostOf(rawURL), err)
	}
	return rdb, nil
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Host
}
