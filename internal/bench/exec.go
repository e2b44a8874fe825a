package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/api"
	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/worker"
)

// ExecConfig configures the sync-execution benchmark.
type ExecConfig struct {
	// NATSURL of the server; empty starts an embedded one.
	NATSURL  string
	RedisURL string
	// Calls per sequential phase (default 5,000) and in the concurrent HTTP phase (default 50,000).
	Calls, ConcurrentCalls int
	// Clients is the number of concurrent HTTP callers. Default 64.
	Clients int
}

// RunExec measures synchronous execution of sys.echo with 64-byte args:
// raw core request-reply, the Go executor over NATS, sequential HTTP over a
// keep-alive connection, and concurrent HTTP callers — one worker (results
// recorded in Redis), all in one run.
func RunExec(ctx context.Context, cfg ExecConfig, out io.Writer) error {
	if cfg.Calls <= 0 {
		cfg.Calls = 5000
	}
	if cfg.ConcurrentCalls <= 0 {
		cfg.ConcurrentCalls = 50_000
	}
	if cfg.Clients <= 0 {
		cfg.Clients = 64
	}
	if cfg.RedisURL == "" {
		cfg.RedisURL = "redis://127.0.0.1:6379/0"
	}
	conn, err := connect(ctx, server{url: cfg.NATSURL}, "flotilla-bench-exec", true)
	if err != nil {
		return err
	}
	defer conn.close()
	nc, js := conn.nc, conn.js
	rdb, err := results.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	prefix := fmt.Sprintf("flotilla-bench-exec-%d", time.Now().UnixNano())
	defer cleanRedis(context.WithoutCancel(ctx), rdb, prefix)
	store := results.New(rdb, results.Config{Prefix: prefix, TTL: 10 * time.Minute})
	defer store.Close()
	reg := task.NewRegistry()
	systasks.Register(reg)

	// The worker on a connection of its own, as in production.
	wnc, wjs, err := jet.Connect(ctx, conn.url(), "flotilla-bench-exec-worker", "")
	if err != nil {
		return err
	}
	defer wnc.Close()
	w := worker.New(wnc, wjs, reg, store, zerolog.Nop(), worker.Config{Queues: []string{"default"}, Concurrency: 64, Name: "bench", Sync: true})
	wctx, cancel := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() { cancel(); <-wdone }()
	for i := 0; ; i++ {
		if _, err := nc.Request("$SRV.PING."+wire.ServiceName, nil, time.Second); err == nil {
			break
		} else if i > 100 {
			return fmt.Errorf("bench exec: worker service not up: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	args := makeArgs(64)
	fmt.Fprintf(out, "flotilla bench exec: sys.echo, %dB args, %d sequential calls, %d clients × %d calls, server=%s\n\n",
		len(args), cfg.Calls, cfg.Clients, cfg.ConcurrentCalls, serverKind(Config{NATSURL: cfg.NATSURL}))
	row := func(name, value, note string) { fmt.Fprintf(out, "%-50s %22s  %s\n", name, value, note) }

	// Raw core request-reply: a responder that echoes.
	sub, err := nc.Subscribe("benchraw.exec", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	raw50, raw99, err := sequential(cfg.Calls, func() error {
		_, err := nc.Request("benchraw.exec", args, 5*time.Second)
		return err
	})
	if err != nil {
		return err
	}
	row("raw core NATS request-reply p50 / p99", fmt.Sprintf("%s / %s", ms(raw50), ms(raw99)), "")

	ex := api.Remote{NC: nc}
	g50, g99, err := sequential(cfg.Calls, func() error {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := ex.Exec(c, "sys.echo", args, wire.ExecMeta{ID: "bench"})
		return err
	})
	if err != nil {
		return err
	}
	row("exec via Go executor (NATS only) p50 / p99", fmt.Sprintf("%s / %s", ms(g50), ms(g99)), fmt.Sprintf("%.1fx raw p50", float64(g50)/float64(raw50)))

	cl := client.New(nc, js, store, client.Config{Registry: reg, CheckRegistered: true})
	// As the api role runs in dev: no token auth, sessions and the rate
	// limiter on Redis (anonymous callers are not rate-limited).
	srv := api.New(api.Config{MaxBodyBytes: 1 << 20, Exec: ex, ExecTimeout: 5 * time.Second, ExecTimeoutMax: time.Minute,
		Auth: auth.AuthNone, Redis: rdb, Prefix: prefix, SessionTTL: time.Minute, RateLimit: 1000, RateWindow: time.Second}, cl, nil, zerolog.Nop())
	base, stop, err := serveLoopback(srv.Handler())
	if err != nil {
		return err
	}
	defer stop()
	endpoint := base + "/api/v1/exec/sys.echo"
	hc, closeIdle := httpClient(cfg.Clients)
	defer closeIdle()
	post := func() error {
		resp, err := hc.Post(endpoint, "application/json", bytes.NewReader(args))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("exec answered %s", resp.Status)
		}
		return nil
	}
	h50, h99, err := sequential(cfg.Calls, post)
	if err != nil {
		return err
	}
	row("exec over HTTP, sequential keep-alive p50 / p99", fmt.Sprintf("%s / %s", ms(h50), ms(h99)), fmt.Sprintf("%.1fx raw p50", float64(h50)/float64(raw50)))

	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < cfg.Clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(cfg.ConcurrentCalls) {
				if err := post(); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	row(fmt.Sprintf("exec over HTTP, %d concurrent callers", cfg.Clients), fmt.Sprintf("%.0f calls/s", float64(cfg.ConcurrentCalls)/time.Since(start).Seconds()), "")
	return nil
}

// sequential runs fn n times after a short warm-up and returns p50 and p99.
func sequential(n int, fn func() error) (time.Duration, time.Duration, error) {
	for i := 0; i < min(200, n/10); i++ {
		if err := fn(); err != nil {
			return 0, 0, err
		}
	}
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t := time.Now()
		if err := fn(); err != nil {
			return 0, 0, err
		}
		lat = append(lat, time.Since(t))
	}
	sortDurations(lat)
	return percentile(lat, 0.5), percentile(lat, 0.99), nil
}
