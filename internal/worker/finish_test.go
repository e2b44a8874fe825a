package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/worker"
)

// TestFinishingFreesTheHandlerSlot: a task that ran and waits for Redis to
// record its final state gives its handler slot to the next task, so
// handlers do not idle on the round trip — yet no more than Concurrency
// handlers ever run at once, and at most FinishFactor × Concurrency tasks
// wait to be recorded. Redis (the test's own) is stopped with SIGSTOP
// while the worker runs and continued after.
func TestFinishingFreesTheHandlerSlot(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	rdb, pid := resultstest.Own(t)
	b.store = results.New(rdb, results.Config{Prefix: "finish", TTL: time.Hour})
	t.Cleanup(b.store.Close)
	b.cl = client.New(b.nc, b.js, b.store, client.Config{Registry: b.reg, CheckRegistered: true})
	var running, peak, runs atomic.Int64
	b.reg.Handle("test.peak", func(context.Context, *task.Envelope) (any, error) {
		now := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
		}
		runs.Add(1)
		time.Sleep(20 * time.Millisecond)
		return "ok", nil
	})
	const n = 12
	var ids []string
	for i := range n {
		ids = append(ids, b.enqueue(t, client.Request{Task: "test.peak", Args: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}))
	}

	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	cfg := b.cfg()
	cfg.Concurrency = 2
	b.start(t, cfg)
	limit := int64(worker.FinishFactor * cfg.Concurrency)
	require.Eventually(t, func() bool { return runs.Load() == limit }, 10*time.Second, 5*time.Millisecond,
		"with Redis stopped, %d tasks run and wait to be recorded", limit)
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, limit, runs.Load(), "no more tasks run while %d wait for Redis", limit)
	require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))

	for _, id := range ids {
		st := b.waitFinal(t, id)
		require.Equal(t, task.StateSuccess, st.State)
		require.Equal(t, 1, st.Attempts)
	}
	require.EqualValues(t, n, runs.Load(), "every task ran once")
	require.EqualValues(t, cfg.Concurrency, peak.Load(), "never more handlers at once than Concurrency")
}
