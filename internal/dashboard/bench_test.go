package dashboard_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/app"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// benchWeb runs the web role (auth off) in this process against a fresh
// NATS server, a schema of the local PostgreSQL and a Redis prefix, with
// nQueues queues applied, and returns its base URL and the environment.
type benchEnv struct {
	url    string
	nats   string
	dbURL  string
	prefix string
}

func benchWeb(b *testing.B, nQueues int) benchEnv {
	b.Helper()
	ns := jettest.Server(b)
	_, prefix := resultstest.Client(b)
	dbURL := storetest.SchemaURL(b)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	addr := l.Addr().String()
	require.NoError(b, l.Close())
	cfg, err := config.Load(config.RoleWeb, config.LoadOptions{Environ: []string{
		"FLOTILLA_NATS_URL=" + ns.ClientURL(), "FLOTILLA_REDIS_URL=" + resultstest.URL(), "FLOTILLA_REDIS_PREFIX=" + prefix,
		"FLOTILLA_DATABASE_URL=" + dbURL, "FLOTILLA_WEB_ADDR=" + addr, "FLOTILLA_WEB_AUTH=none", "FLOTILLA_LOG_LEVEL=warn",
	}})
	require.NoError(b, err)
	c, err := app.Open(b.Context(), cfg, app.Needs{Redis: true, Postgres: true})
	require.NoError(b, err)
	b.Cleanup(c.Close)
	require.NoError(b, store.Migrate(b.Context(), c.Pool))
	var qs []string
	for i := range nQueues {
		qs = append(qs, fmt.Sprintf("q%02d", i))
	}
	qs[0] = "default"
	require.NoError(b, jet.ApplyStreams(b.Context(), c.JS, c.Topology))
	require.NoError(b, jet.ApplyQueues(b.Context(), c.JS, c.Topology, qs))
	reg := task.NewRegistry()
	systasks.Register(reg)
	ctx, cancel := context.WithCancel(context.WithoutCancel(b.Context()))
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, app.Options{Registry: reg, Stdout: io.Discard}) }()
	b.Cleanup(func() { cancel(); <-done })
	base := "http://" + addr
	require.Eventually(b, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond)
	return benchEnv{url: base, nats: ns.ClientURL(), dbURL: dbURL, prefix: prefix}
}

// BenchmarkPages times the overview and queues pages with 50 queues,
// 100,000 schedules and 1,000,000 retained results (FLOTILLA_BENCH_RESULTS
// to change), and reports p50 and p99 per page in ms.
//
//	go test -run '^$' -bench BenchmarkPages -benchtime 200x -timeout 20m ./internal/dashboard/
func BenchmarkPages(b *testing.B) {
	env := benchWeb(b, 50)
	ctx := b.Context()
	pool, err := pgxpool.New(ctx, env.dbURL)
	require.NoError(b, err)
	defer pool.Close()
	_, err = pool.Exec(ctx, `INSERT INTO schedules (name, task, "interval", spread)
		SELECT 'bench-' || g, 'sys.ping', interval '1 minute', interval '60 seconds' FROM generate_series(1, 100000) g`)
	require.NoError(b, err)
	n := 1_000_000
	if v := os.Getenv("FLOTILLA_BENCH_RESULTS"); v != "" {
		n, err = strconv.Atoi(v)
		require.NoError(b, err)
	}
	rdb, _ := resultstest.Client(b)
	rs := results.New(rdb, results.Config{Prefix: env.prefix, TTL: 24 * time.Hour})
	defer rs.Close()
	start := time.Now()
	ids := make([]string, 0, 2000)
	ups := make([]results.Update, 0, 2000)
	for i := range n {
		ids = append(ids, fmt.Sprintf("R%08d", i))
		ups = append(ups, results.Update{Task: fmt.Sprintf("monitor.check_%02d", i%20), Queue: fmt.Sprintf("q%02d", i%50),
			State: task.StateSuccess, EnqueuedAt: start.Add(-time.Duration(n-i) * time.Millisecond)})
		if len(ids) == cap(ids) || i == n-1 {
			require.NoError(b, rs.SetMany(ctx, ids, ups))
			ids, ups = ids[:0], ups[:0]
		}
	}
	b.Logf("100,000 schedules and %d results stored in %s", n, time.Since(start).Round(time.Second))
	// The hub's first snapshot of the 50 queues.
	require.Eventually(b, func() bool { return strings.Contains(get(b, env.url+"/queues"), "q49") }, 20*time.Second, 100*time.Millisecond)

	lat := map[string][]time.Duration{}
	pages := []string{"/", "/queues"}
	b.ResetTimer()
	for b.Loop() {
		for _, p := range pages {
			t0 := time.Now()
			body := get(b, env.url+p)
			lat[p] = append(lat[p], time.Since(t0))
			if !strings.Contains(body, "</html>") {
				b.Fatalf("%s: incomplete page", p)
			}
		}
	}
	b.StopTimer()
	for _, p := range pages {
		xs := lat[p]
		slices.Sort(xs)
		p50, p99 := xs[len(xs)/2], xs[len(xs)*99/100]
		name := strings.Trim(strings.ReplaceAll(p, "/", "_"), "_")
		if name == "" {
			name = "overview"
		}
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99_ms_"+name)
		b.Logf("%-8s p50 %.2f ms  p99 %.2f ms", p, float64(p50.Microseconds())/1000, float64(p99.Microseconds())/1000)
	}
}

func get(b *testing.B, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: %d %s", url, resp.StatusCode, body)
	}
	return string(body)
}

// BenchmarkLiveFanout keeps 20 dashboards open (Server-Sent Events) on one
// web process while 5,000 task events per second flow for
// FLOTILLA_BENCH_FANOUT (default 2m), and reports the process's heap in
// use at the start and the end and its peak, and the updates each
// dashboard received per second.
//
//	go test -run '^$' -bench BenchmarkLiveFanout -benchtime 1x -timeout 10m ./internal/dashboard/
func BenchmarkLiveFanout(b *testing.B) {
	dur := 2 * time.Minute
	if v := os.Getenv("FLOTILLA_BENCH_FANOUT"); v != "" {
		var err error
		dur, err = time.ParseDuration(v)
		require.NoError(b, err)
	}
	env := benchWeb(b, 5)
	nc, _ := jettest.Connect(b, env.nats)
	ctx, cancel := context.WithTimeout(b.Context(), dur+30*time.Second)
	defer cancel()

	const dashboards = 20
	var updates atomic.Int64
	var wg sync.WaitGroup
	for range dashboards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, env.url+"/ui/live", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "data: ") {
					updates.Add(1)
				}
			}
		}()
	}
	// 5,000 events per second, in bursts of 50 every 10 ms, of the kinds
	// a busy system publishes.
	var published atomic.Int64
	stopPub := make(chan struct{})
	go func() {
		kinds := []string{wire.EventSent, wire.EventStarted, wire.EventSucceeded, wire.EventSucceeded, wire.EventFailed}
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		i := 0
		for {
			select {
			case <-stopPub:
				return
			case <-t.C:
				for range 50 {
					i++
					k := kinds[i%len(kinds)]
					ev := wire.Event{Kind: k, ID: fmt.Sprintf("E%09d", i), Task: "sys.echo", Queue: "default", Time: time.Now()}
					_ = nc.Publish(ev.Subject(), ev.AppendJSON(nil))
				}
				published.Add(50)
			}
		}
	}()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	time.Sleep(5 * time.Second) // warm up: connections open, buffers sized
	startHeap, peak := heap(), uint64(0)
	startUpdates, t0 := updates.Load(), time.Now()
	b.ResetTimer()
	for time.Since(t0) < dur {
		time.Sleep(10 * time.Second)
		peak = max(peak, heap())
	}
	b.StopTimer()
	endHeap := heap()
	close(stopPub)
	elapsed := time.Since(t0)
	perDash := float64(updates.Load()-startUpdates) / dashboards / elapsed.Seconds()
	b.ReportMetric(float64(startHeap)/(1<<20), "heap_start_MiB")
	b.ReportMetric(float64(endHeap)/(1<<20), "heap_end_MiB")
	b.ReportMetric(float64(peak)/(1<<20), "heap_peak_MiB")
	b.ReportMetric(perDash, "updates/s/dashboard")
	b.ReportMetric(float64(published.Load())/time.Since(t0).Seconds(), "events/s")
	b.Logf("%d dashboards for %s at %.0f events/s: heap %.1f → %.1f MiB (peak %.1f), %.2f updates/s per dashboard",
		dashboards, elapsed.Round(time.Second), float64(published.Load())/elapsed.Seconds(), float64(startHeap)/(1<<20), float64(endHeap)/(1<<20), float64(peak)/(1<<20), perDash)
	cancel()
	wg.Wait()
}
