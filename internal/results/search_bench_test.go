package results_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/results"
)

// BenchmarkSearch fills the index with FLOTILLA_BENCH_SEARCH_N tasks
// (default 1,000,000: 20 task names, 4 queues, 90 % SUCCESS, 5 % PENDING,
// 2 % RETRY, 2 % STARTED, 1 % FAILURE, enqueued over the last 23 h), then
// times pages of 50 for typical filters and reports p50 and p99 per filter
// in ms. Run it alone:
//
//	go test -run '^$' -bench BenchmarkSearch -benchtime 200x ./internal/results/
func BenchmarkSearch(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("FLOTILLA_BENCH_SEARCH_N"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(b, err)
	}
	bd := setup(b, results.Config{TTL: 24 * time.Hour})
	ctx := b.Context()
	states := func(i int) string {
		switch p := i % 100; {
		case p < 90:
			return "SUCCESS"
		case p < 95:
			return "PENDING"
		case p < 97:
			return "RETRY"
		case p < 99:
			return "STARTED"
		default:
			return "FAILURE"
		}
	}
	start := time.Now()
	now := time.Now()
	const batch = 2000
	ids := make([]string, 0, batch)
	ups := make([]results.Update, 0, batch)
	for i := range n {
		ids = append(ids, fmt.Sprintf("T%08d", i))
		ups = append(ups, results.Update{
			Task: fmt.Sprintf("monitor.check_%02d", i%20), Queue: []string{"default", "action", "bulk", "metrics"}[i%4],
			State: states(i), EnqueuedAt: now.Add(-23 * time.Hour).Add(time.Duration(float64(i) / float64(n) * float64(23*time.Hour))),
		})
		if len(ids) == batch || i == n-1 {
			require.NoError(b, bd.store.SetMany(ctx, ids, ups))
			ids, ups = ids[:0], ups[:0]
		}
	}
	mem, _ := bd.rdb.MemoryUsage(ctx, bd.prefix+":idx:all").Result()
	info, _ := bd.rdb.Info(ctx, "memory").Result()
	used := ""
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory_human:"); ok {
			used = v
		}
	}
	b.Logf("indexed %d tasks in %s; Redis used_memory %s (the all set alone %d MiB)", n, time.Since(start).Round(time.Second), used, mem>>20)

	queries := []struct {
		name string
		q    results.Query
	}{
		{"all", results.Query{}},
		{"state=FAILURE", results.Query{State: "FAILURE"}},
		{"task", results.Query{Task: "monitor.check_07"}},
		{"state=SUCCESS,queue", results.Query{State: "SUCCESS", Queue: "bulk"}},
		{"state=FAILURE,task", results.Query{State: "FAILURE", Task: "monitor.check_19"}},
		{"task,since=1h", results.Query{Task: "monitor.check_07", Since: now.Add(-time.Hour)}},
		{"state=PENDING,page3", results.Query{State: "PENDING"}},
	}
	lat := make([][]time.Duration, len(queries))
	b.ResetTimer()
	for b.Loop() {
		for i, qq := range queries {
			q := qq.q
			q.Limit = 50
			t0 := time.Now()
			p, err := bd.store.Search(ctx, q)
			if err == nil && qq.name == "state=PENDING,page3" {
				for range 2 {
					q.Cursor = p.Next
					p, err = bd.store.Search(ctx, q)
				}
			}
			lat[i] = append(lat[i], time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			if len(p.Items) == 0 {
				b.Fatalf("%s: %d items", qq.name, len(p.Items))
			}
		}
	}
	b.StopTimer()
	var worst time.Duration
	for i, qq := range queries {
		slices.Sort(lat[i])
		p50, p99 := lat[i][len(lat[i])/2], lat[i][len(lat[i])*99/100]
		worst = max(worst, p99)
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99_ms_"+qq.name)
		b.Logf("%-22s p50 %6.2f ms  p99 %6.2f ms", qq.name, float64(p50.Microseconds())/1000, float64(p99.Microseconds())/1000)
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "p99_ms_worst")
}
