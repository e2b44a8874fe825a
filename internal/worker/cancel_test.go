package worker_test

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/revoke"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

func (b *bundle) canceller() *revoke.Canceller {
	return revoke.New(b.js, b.store, jet.NewEvents(b.nc, wire.EventsAll))
}

func (b *bundle) ran(id string) int64 {
	if v, ok := b.runs.Load(id); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// TestCancelByNameWhileWorkersDown: 1,000 pending tasks of one name and
// some delayed ones are cancelled while no worker runs; when workers come
// back none of them runs, and the other tasks do.
func TestCancelByNameWhileWorkersDown(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	const n = 1000
	var cancelled, kept []string
	for i := range n {
		cancelled = append(cancelled, b.enqueue(t, client.Request{Task: "test.count", Args: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}))
	}
	delayed := b.enqueue(t, client.Request{Task: "test.count", Countdown: time.Second})
	for range 10 {
		kept = append(kept, b.enqueue(t, client.Request{Task: "sys.echo"}))
	}
	cn := b.canceller()
	got, err := cn.CancelMatching(t.Context(), revoke.Filter{Task: "test.count"}, "tester")
	require.NoError(t, err)
	require.Equal(t, n+1, got, "every pending and delayed test.count")
	got, err = cn.CancelMatching(t.Context(), revoke.Filter{Task: "test.count", Queue: "default"}, "tester")
	require.NoError(t, err)
	require.Zero(t, got, "nothing left to cancel")
	_, err = cn.CancelMatching(t.Context(), revoke.Filter{}, "tester")
	require.ErrorIs(t, err, revoke.ErrNoFilter)

	st, err := b.store.Get(t.Context(), cancelled[0])
	require.NoError(t, err)
	require.Equal(t, task.StateCancelled, st.State, "CANCELLED at once, before any worker saw it")
	require.Equal(t, "cancelled by tester", st.Error)

	time.Sleep(1500 * time.Millisecond) // the delayed one falls due (and was purged)
	b.start(t, b.cfg())
	for _, id := range kept {
		require.Equal(t, task.StateSuccess, b.waitFinal(t, id).State)
	}
	for _, id := range append(cancelled, delayed) {
		st, err := b.store.Get(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, task.StateCancelled, st.State, id)
		require.Zero(t, b.ran(id), "cancelled task %s ran", id)
	}
	require.Zero(t, streamMsgs(t, b.js, wire.StreamTasks))
	require.Zero(t, streamMsgs(t, b.js, wire.StreamDelayed))
}

// TestCancelOneWhileWorkersDown: a cancel by id issued while every worker
// is down holds when they come back (the message is still queued; the
// worker drops it).
func TestCancelOneWhileWorkersDown(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	id := b.enqueue(t, client.Request{Task: "test.count"})
	other := b.enqueue(t, client.Request{Task: "test.count"})
	out, err := b.canceller().Cancel(t.Context(), id, "ada")
	require.NoError(t, err)
	require.False(t, out.Running)
	require.Equal(t, task.StateCancelled, out.State.State)

	b.start(t, b.cfg())
	require.Equal(t, task.StateSuccess, b.waitFinal(t, other).State)
	require.Eventually(t, func() bool { return streamMsgs(t, b.js, wire.StreamTasks) == 0 }, 5*time.Second, 10*time.Millisecond)
	require.Zero(t, b.ran(id))
	st, err := b.store.Get(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, task.StateCancelled, st.State)

	// Finished and unknown tasks.
	_, err = b.canceller().Cancel(t.Context(), other, "ada")
	require.ErrorIs(t, err, revoke.ErrFinished)
	_, err = b.canceller().Cancel(t.Context(), id, "ada")
	require.ErrorIs(t, err, revoke.ErrFinished, "cancelled is final too")
	_, err = b.canceller().Cancel(t.Context(), "nope", "ada")
	require.ErrorIs(t, err, results.ErrNotFound)
}

// TestCancelRunning: a running sys.sleep of 60 s, and a handler that
// ignores its context, end CANCELLED within a second of the cancel, are not
// retried, and the worker goes on.
func TestCancelRunning(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.start(t, b.cfg())
	for _, r := range []struct{ name, args string }{
		{"sys.sleep", `{"ms":60000}`},
		{"test.hang", `{"ms":3000}`}, // abandoned after attempt.CancelGrace
	} {
		args := r.name + " " + r.args
		id := b.enqueue(t, client.Request{Task: r.name, Args: json.RawMessage(r.args), MaxRetries: intp(3)})
		require.Eventually(t, func() bool {
			st, err := b.store.Get(t.Context(), id)
			return err == nil && st.State == task.StateStarted
		}, 10*time.Second, 5*time.Millisecond)
		start := time.Now()
		out, err := b.canceller().Cancel(t.Context(), id, "ada")
		require.NoError(t, err)
		require.True(t, out.Running)
		st := b.waitFinal(t, id)
		took := time.Since(start)
		require.Equal(t, task.StateCancelled, st.State, args)
		require.Less(t, took, time.Second, "%s: cancelled after %s", args, took)
		require.Equal(t, 1, st.Attempts)
		t.Logf("%s: CANCELLED %s after the cancel", args, took.Round(time.Millisecond))
	}
	require.Zero(t, streamMsgs(t, b.js, wire.StreamDead))
	require.Eventually(t, func() bool { return streamMsgs(t, b.js, wire.StreamTasks) == 0 }, 5*time.Second, 10*time.Millisecond)
	// The worker still works (the abandoned slot was replaced).
	require.Equal(t, task.StateSuccess, b.waitFinal(t, b.enqueue(t, client.Request{Task: "sys.echo"})).State)
	require.Eventually(t, func() bool { return b.hangsDone.Load() == 1 }, 10*time.Second, 10*time.Millisecond, "the abandoned handler returns at last")
}
