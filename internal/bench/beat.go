package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"
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
	// Warmup is how long to wait after the start-up catch-up before
	// measuring.
	Warmup time.Duration
	// PublishMode: async (default) or inline.
	PublishMode string
	// NoResults and NoEvents turn off the fires' PENDING states in Redis
	// and their "sent" events (both on by default, as in production).
	NoResults, NoEvents bool
	// HeapProfile, when set, is where a heap profile is written at the end
	// of the measurement, while the leader still runs.
	HeapProfile string
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
		for _, name := range []string{wire.StreamTasks, wire.StreamEvents} {
			if s, err := js.Stream(context.WithoutCancel(ctx), name); err == nil {
				_ = s.Purge(context.WithoutCancel(ctx))
			}
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
		scs := make([]schedule.Schedule, 0, chunk)
		for j := i; j < min(i+chunk, cfg.Schedules); j++ {
			scs = append(scs, schedule.Schedule{
				Name: fmt.Sprintf("bench-%07d", j), Task: "sys.ping", Cron: "* * * * *",
				Spread: schedule.Duration(time.Minute), Enabled: true, Source: schedule.SourceRuntime,
			})
		}
		if err := st.ScheduleSyncCode(ctx, scs); err != nil {
			return fmt.Errorf("load schedules: %w", err)
		}
	}
	// The peak RSS is beat's from here on, not the storing's: what the
	// storing left is handed back first.
	debug.FreeOSMemory()
	resetPeakRSS()
	fmt.Fprintf(out, "flotilla bench beat: %d schedules \"* * * * *\" with 1m spread stored in %s; measuring %s, publish %s, server=%s\n",
		cfg.Schedules, time.Since(loadStart).Round(time.Millisecond), cfg.Duration, orDefault(cfg.PublishMode, "async"), serverKind(Config{NATSURL: cfg.NATSURL}))

	var mu sync.Mutex
	lags := make([]time.Duration, 0, int(float64(cfg.Schedules)*(cfg.Duration.Minutes()+0.5)))
	dues := make([]int64, 0, cap(lags)) // due times of lags, Unix ns, for the windows
	var errs int
	var measuring bool
	var from time.Time        // only fires due from then on count: the start-up catch-up does not
	var lastLag time.Duration // of the latest fire acked
	var firstAck time.Time
	var loads []loadFigure
	bcfg := beat.Config{
		Elector:     beat.ElectorConfig{ID: "bench", TTL: 10 * time.Second, CreateBucket: true},
		PublishMode: cfg.PublishMode,
		// A check of every schedule every minute, so that the
		// measurement window holds one (every 10 minutes in production)
		// besides the re-reads of changed schedules every 30 s.
		FullResync: time.Minute,
		Observe: func(_ string, due, acked time.Time, err error) {
			mu.Lock()
			defer mu.Unlock()
			if firstAck.IsZero() {
				firstAck = acked
			}
			lastLag = acked.Sub(due)
			if !measuring || due.Before(from) {
				return
			}
			if err != nil {
				errs++
				return
			}
			lags = append(lags, acked.Sub(due))
			dues = append(dues, due.UnixNano())
		},
		Loaded: func(kind string, start, end time.Time, n int) {
			mu.Lock()
			defer mu.Unlock()
			loads = append(loads, loadFigure{kind: kind, start: start, took: end.Sub(start), n: n, measuring: measuring})
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
	if cfg.NoResults {
		rs = nil
	}
	events := wire.EventsStandard
	if cfg.NoEvents {
		events = wire.EventsOff
	}
	prod := client.New(nc, js, rs, client.Config{Events: events,
		StateErrors: func(error, int) {}})
	s := beat.New(js, st, prod, bcfg, zerolog.Nop())
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	started := time.Now()
	go func() { done <- s.Run(rctx) }()
	defer func() { cancel(); <-done }()
	// The streams keep every fire; purge them as the run goes so that the
	// server's memory stays flat (every second: a purge of ten seconds of
	// fires stalls the server for longer than the lag it measures).
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				purge()
			}
		}
	}()
	for i := 0; !s.IsLeader(); i++ {
		if i > 600 {
			return fmt.Errorf("bench beat: no leadership within 60s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	leading := time.Now()
	// Start-up: the leader reads every schedule (page by page, firing the
	// ticks that fell due since they were stored as it goes); measure once
	// that load has ended and the fires have caught up with the clock.
	caughtUp := time.Time{}
	tell := time.Now().Add(10 * time.Second)
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		ok := len(loads) > 0 && lastLag < 50*time.Millisecond && time.Since(loads[0].start.Add(loads[0].took)) > time.Second
		lag, nl := lastLag, len(loads)
		mu.Unlock()
		if ok {
			caughtUp = time.Now()
			break
		}
		if time.Now().After(tell) {
			fmt.Fprintf(out, "  catching up: %s after the lease, latest fire acked %s after due, full loads done %d\n", ms(time.Since(leading)), ms(lag), nl)
			tell = tell.Add(10 * time.Second)
		}
	}
	if caughtUp.IsZero() {
		return fmt.Errorf("bench beat: the leader did not catch up within 5 minutes of leading")
	}
	mu.Lock()
	startLoad, first := loads[0], firstAck
	mu.Unlock()
	// Measure the steady state: once every schedule has fired since the
	// start (and has its bookkeeping row), a minute for these schedules.
	if cfg.Warmup > 0 {
		fmt.Fprintf(out, "  caught up %s after the lease; warming up for %s\n", ms(caughtUp.Sub(leading)), cfg.Warmup)
		select {
		case <-time.After(cfg.Warmup):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	cpu0 := cpuTime()
	servers := []string{"nats-server", "redis-server", "postgres"}
	srv0 := procCPU(servers...)
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
	windows := lagWindows(t0, 10*time.Second, lags, dues)
	nerr := errs
	var during []loadFigure
	for _, l := range loads {
		if l.measuring {
			during = append(during, l)
		}
	}
	mu.Unlock()
	wall := time.Since(t0)
	cpu := cpuTime() - cpu0
	srv1 := procCPU(servers...)
	if cfg.HeapProfile != "" {
		if err := writeHeapProfile(cfg.HeapProfile); err != nil {
			return err
		}
	}
	sortDurations(got)
	expected := float64(cfg.Schedules) * wall.Minutes()
	row := func(name, value string) { fmt.Fprintf(out, "%-44s %s\n", name, value) }
	row("start-up: lease after start", ms(leading.Sub(started)))
	row("start-up: first fire acked after lease", ms(first.Sub(leading)))
	row("start-up: catch-up load (pages of 5,000)", fmt.Sprintf("%d schedules in %s", startLoad.n, ms(startLoad.took)))
	row("start-up: caught up after lease", ms(caughtUp.Sub(leading)))
	var took []string
	for _, l := range during {
		took = append(took, ms(l.took))
	}
	row("reads of schedules while measuring", fmt.Sprintf("%d (%s)", len(during), strings.Join(took, ", ")))
	for _, l := range during {
		row(fmt.Sprintf("  %s of %d schedules", l.kind, l.n), fmt.Sprintf("from %s to %s", ms(l.start.Sub(t0)), ms(l.start.Add(l.took).Sub(t0))))
	}
	for _, w := range windows {
		row(fmt.Sprintf("  lag p99 of fires due %3.0f-%3.0f s", w.from.Seconds(), w.to.Seconds()), fmt.Sprintf("%s (%d fires)", ms(w.p99), w.n))
	}
	row("fires (expected ≈)", fmt.Sprintf("%d (%.0f), errors %d", len(got), expected, nerr))
	row("fire lag due→acked p50 / p99 / max", fmt.Sprintf("%s / %s / %s", ms(percentile(got, 0.5)), ms(percentile(got, 0.99)), ms(percentile(got, 1))))
	row("process CPU (cores)", fmt.Sprintf("%.2f", cpu.Seconds()/wall.Seconds()))
	var sv []string
	for _, name := range servers {
		if d, ok := srv1[name]; ok {
			sv = append(sv, fmt.Sprintf("%s %.2f", name, (d-srv0[name]).Seconds()/wall.Seconds()))
		}
	}
	row("servers on this machine (cores)", strings.Join(sv, ", "))
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	row("process RSS now / peak since beat started", fmt.Sprintf("%.0f / %.0f MiB (Go heap in use %.0f MiB)", rssMiB(), peakRSSMiB(), float64(mem.HeapInuse)/(1<<20)))
	return nil
}

// loadFigure is one full load of the beat benchmark's leader.
type loadFigure struct {
	kind      string
	start     time.Time
	took      time.Duration
	n         int
	measuring bool
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

// lagWindow is the lag of the fires due in one window of the measurement.
type lagWindow struct {
	from, to time.Duration // since the measurement began
	n        int
	p99      time.Duration
}

// lagWindows cuts the measurement into windows of width by due time.
func lagWindows(t0 time.Time, width time.Duration, lags []time.Duration, dues []int64) []lagWindow {
	byWin := map[int][]time.Duration{}
	last := 0
	for i, d := range dues {
		w := int(time.Duration(d-t0.UnixNano()) / width)
		byWin[w] = append(byWin[w], lags[i])
		last = max(last, w)
	}
	out := make([]lagWindow, 0, last+1)
	for w := 0; w <= last; w++ {
		ls := byWin[w]
		sortDurations(ls)
		out = append(out, lagWindow{from: time.Duration(w) * width, to: time.Duration(w+1) * width, n: len(ls), p99: percentile(ls, 0.99)})
	}
	return out
}
