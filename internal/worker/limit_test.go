package worker_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/limits"
	"github.com/flotilla/flotilla/internal/task"
)

// TestRateLimitAcrossWorkers: a task limited to 50/s over 3 workers runs
// 500 tasks in 10 s ± 10 %, none failed, each in one attempt.
func TestRateLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	var mu sync.Mutex
	var starts []time.Time
	b.reg.Handle("test.limited", func(context.Context, *task.Envelope) (any, error) {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return nil, nil
	}, task.WithRateLimit(50, time.Second))
	const n = 500
	ids := make([]string, n)
	for i := range n {
		ids[i] = b.enqueue(t, client.Request{Task: "test.limited"})
	}
	for i := range 3 {
		cfg := b.cfg()
		cfg.Name = fmt.Sprintf("w%d", i)
		cfg.Limiter = limits.New(b.rdb, b.prefix)
		b.start(t, cfg)
	}
	for _, id := range ids {
		st := b.waitFinal(t, id)
		require.Equal(t, task.StateSuccess, st.State)
		require.Equal(t, 1, st.Attempts, "waiting for the limit is not an attempt")
	}
	mu.Lock()
	defer mu.Unlock()
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	require.Len(t, starts, n)
	span := starts[n-1].Sub(starts[0])
	t.Logf("500 starts at 50/s over 3 workers took %s (ideal 9.98 s)", span.Round(10*time.Millisecond))
	require.InDelta(t, 10.0, span.Seconds(), 1.0)
	// No second holds more than the rate, plus the one on its edge and a
	// few whose handlers were scheduled late after their grant (the
	// limiter counts grants on Redis's clock; this test sees the handlers
	// start, later by however long the two cores make them wait).
	for i, s := range starts {
		j, _ := slices.BinarySearchFunc(starts, s.Add(time.Second), func(a, b time.Time) int { return a.Compare(b) })
		require.LessOrEqual(t, j-i, 55, "starts in the second after %s", s)
	}
}

// TestConcurrencyLimitAcrossWorkers: at most 2 attempts of a task run at
// once over 2 workers of 8 slots each; the others wait or are deferred,
// and none of that counts as an attempt.
func TestConcurrencyLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{ackWait: 4 * time.Second}) // hold at most 2 s, then defer
	var running, peak atomic.Int64
	b.reg.Handle("test.exclusive", func(ctx context.Context, _ *task.Envelope) (any, error) {
		now := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if now <= p || peak.CompareAndSwap(p, now) {
				break
			}
		}
		time.Sleep(150 * time.Millisecond)
		return nil, nil
	}, task.WithConcurrencyLimit(2))
	var ids []string
	for range 40 {
		ids = append(ids, b.enqueue(t, client.Request{Task: "test.exclusive"}))
	}
	for i := range 2 {
		cfg := b.cfg()
		cfg.Name, cfg.Concurrency, cfg.AckWait = fmt.Sprintf("w%d", i), 8, 4*time.Second
		cfg.Limiter = limits.New(b.rdb, b.prefix)
		b.start(t, cfg)
	}
	for _, id := range ids {
		st := b.waitFinal(t, id)
		require.Equal(t, task.StateSuccess, st.State)
		require.Equal(t, 1, st.Attempts, "held and deferred deliveries are not attempts")
	}
	require.Equal(t, int64(2), peak.Load())
}
