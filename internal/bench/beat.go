package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/beat"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/wire"
)

// BeatConfig configures the beat benchmark.
type BeatConfig struct {
	// NATSURL of the server; empty starts an embedded one (its CPU then
	// counts towards the process).
	NATSURL string
	// DatabaseURL of PostgreSQL; the benchmark works in a schema of its own
	// and drops it afterwards.
	DatabaseURL string
	// RedisURL is where the fires' PENDING states go (under a prefix of
	// the run's own, deleted afterwards). Default redis://127.0.0.1:6379/0.
	RedisURL string
	// Schedules is how many "every minute" schedules with a one-minute spread. Default 100,000.
	Schedules int
	// Duration of the measurement after the leader is up. Default 70s.
	Duration time.Duration
	// PublishMode: async (default) or inline.
	PublishMode string
}

// RunBeat loads cfg.Schedules schedules, runs one leader, and reports the
// lag of every fire (due time → server ack), fires vs expected, the
// process's CPU use and RSS.
func RunBeat(ctx context.Context, cfg BeatConfig, out io.Writer) error {
	if cfg.Schedules <= 0 {
		cfg.Schedules = 100_000
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 70 * time.Second
	}
	if cfg.RedisURL == "" {
		cfg.RedisURL = "redis://127.0.0.1:6379/0"
	}
	conn, err := connect(ctx, server{url: cfg.NATSURL}, "flotilla-bench-beat", false)
	if err != nil {
		return err
	}
	defer conn.close()
	nc, js := conn.nc, conn.js
	purge := func() {
		if s, err := js.Stream(context.WithoutCancel(ctx), wire.StreamTasks); err == nil {
			_ = s.Purge(context.WithoutCancel(ctx))
		}
	}
	purge()
	defer purge()

	pool, drop, err := benchSchema(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer drop()
	defer pool.Close()
	st := store.New(pool)
	loadStart := time.Now()
	const chunk = 5000
	for i := 0; i < cfg.Schedules; i += chunk {
		var scs []schedule.Schedule
		for j := i; j < min(i+chunk, cfg.Schedules); j++ {
			scs = append(scs, schedule.Schedule{
				Name: fmt.Sprintf("bench-%06d", j), Task: "sys.ping", Cron: "* * * * *",
				Spread: schedule.Duration(time.Minute), Enabled: true, Source: schedule.SourceRuntime,
			})
		}
		if err := st.ScheduleSyncCode(ctx, scs); err != nil {
			return fmt.Errorf("load schedules: %w", err)
		}
	}
	fmt.Fprintf(out, "flotilla bench beat: %d schedules \"* * * * *\" with 1m spread loaded in %s; measuring %s, publish %s, server=%s\n",
		cfg.Schedules, time.Since(loadStart).Round(time.Millisecond), cfg.Duration, orDefault(cfg.PublishMode, "async"), serverKind(Config{NATSURL: cfg.NATSURL}))

	var mu sync.Mutex
	lags := make([]time.Duration, 0, cfg.Schedules*2)
	var errs int
	var measuring bool
	var from time.Time // only fires due from then on count: catch-up of ticks missed while loading does not
	bcfg := beat.Config{
		Elector:     beat.ElectorConfig{ID: "bench", TTL: 10 * time.Second, CreateBucket: true},
		PublishMode: cfg.PublishMode,
		Observe: func(_ string, due, acked time.Time, err error) {
			mu.Lock()
			defer mu.Unlock()
			if !measuring || due.Before(from) {
				return
			}
			if err != nil {
				errs++
				return
			}
			lags = append(lags, acked.Sub(due))
		},
	}
	// Fires go through the producer beat uses in production: PENDING states
	// in Redis, events on.
	rdb, err := results.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	prefix := fmt.Sprintf("flotilla-bench-beat-%d", time.Now().UnixNano())
	defer cleanRedis(context.WithoutCancel(ctx), rdb, prefix)
	rs := results.New(rdb, results.Config{Prefix: prefix, TTL: 10 * time.Minute})
	defer rs.Close()
	prod := client.New(nc, js, rs, client.Config{Events: true,
		StateErrors: func(error, int) {}})
	s := beat.New(js, st, prod, bcfg, zerolog.Nop())
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx) }()
	defer func() { cancel(); <-done }()
	for i := 0; !s.IsLeader(); i++ {
		if i > 600 {
			return fmt.Errorf("bench beat: no leadership within 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Let catch-up of the ticks missed while loading drain first.
	time.Sleep(5 * time.Second)
	cpu0 := cpuTime()
	t0 := time.Now()
	mu.Lock()
	measuring, from = true, t0
	mu.Unlock()
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
		return ctx.Err()
	}
	mu.Lock()
	measuring = false
	got := append([]time.Duration(nil), lags...)
	nerr := errs
	mu.Unlock()
	wall := time.Since(t0)
	cpu := cpuTime() - cpu0
	sortDurations(got)
	expected := float64(cfg.Schedules) * wall.Minutes()
	row := func(name, value string) { fmt.Fprintf(out, "%-44s %s\n", name, value) }
	row("fires (expected ≈)", fmt.Sprintf("%d (%.0f), errors %d", len(got), expected, nerr))
	row("fire lag due→acked p50 / p99 / max", fmt.Sprintf("%s / %s / %s", ms(percentile(got, 0.5)), ms(percentile(got, 0.99)), ms(percentile(got, 1))))
	row("process CPU (cores)", fmt.Sprintf("%.2f", cpu.Seconds()/wall.Seconds()))
	row("process RSS", fmt.Sprintf("%.0f MiB", rssMiB()))
	return nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchSchema creates a migrated schema of its own in the database at raw
// and returns a pool using it and a func that drops it.
func benchSchema(ctx context.Context, raw string) (*pgxpool.Pool, func(), error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	schema := "bench_" + hex.EncodeToString(b)
	if _, err := store.EnsureDatabase(ctx, raw); err != nil {
		return nil, nil, err
	}
	admin, err := pgx.Connect(ctx, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("bench beat: PostgreSQL: %w", err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close(ctx)
		return nil, nil, err
	}
	drop := func() {
		c := context.WithoutCancel(ctx)
		_, _ = admin.Exec(c, "DROP SCHEMA "+schema+" CASCADE")
		admin.Close(c)
	}
	u, err := url.Parse(raw)
	if err != nil {
		drop()
		return nil, nil, err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	pool, err := pgxpool.New(ctx, u.String())
	if err == nil {
		err = store.Migrate(ctx, pool)
	}
	if err != nil {
		drop()
		return nil, nil, err
	}
	return pool, drop, nil
}
