package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

func pings(n int) []client.Request {
	rs := make([]client.Request, n)
	for i := range rs {
		rs[i] = client.Request{Task: "sys.ping", Args: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
	}
	return rs
}

// TestEnqueueBatchAllOrNone: a batch whose 1,000th task is invalid stores
// nothing (no message, no state); a valid batch of 1,000 appears in TASKS
// all at once — a reader polling the stream during the publish sees 0
// or 1,000 messages, never a part — with a PENDING state for each id.
func TestEnqueueBatchAllOrNone(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	ctx := t.Context()

	rs := pings(client.MaxBatch)
	rs[999].Queue = "Bad Queue"
	_, err := b.client.EnqueueBatch(ctx, rs)
	var ie *client.ItemError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, 999, ie.Index)
	require.Equal(t, "tasks[999].queue", ie.Field())
	require.ErrorIs(t, err, client.ErrInvalid)
	require.Zero(t, b.streamMsgs(t, wire.StreamTasks))
	keys := scanKeys(t, b, b.prefix+"*")
	require.Empty(t, keys, "an invalid batch records no state")

	// A reader getting the batch's first and last messages during the
	// publish finds both or neither: the server commits the batch in
	// isolation from reads.
	var partial, whole atomic.Int64
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		s, err := b.js.Stream(ctx, wire.StreamTasks)
		if err != nil {
			return
		}
		for !stop.Load() {
			if _, err := s.GetMsg(ctx, 1); err != nil {
				continue
			}
			if _, err := s.GetMsg(ctx, client.MaxBatch); err != nil {
				partial.Add(1)
			} else {
				whole.Add(1)
			}
		}
	}()
	res, err := b.client.EnqueueBatch(ctx, pings(client.MaxBatch))
	time.Sleep(20 * time.Millisecond) // let the reader see the whole batch too
	stop.Store(true)
	<-done
	require.NoError(t, err)
	require.Len(t, res, client.MaxBatch)
	require.EqualValues(t, client.MaxBatch, b.streamMsgs(t, wire.StreamTasks))
	require.Zero(t, partial.Load(), "a reader found the batch's first message without its last")
	require.NotZero(t, whole.Load())
	ids := map[string]bool{}
	for i, r := range res {
		require.False(t, ids[r.ID], "id %s twice", r.ID)
		ids[r.ID] = true
		if i%100 == 0 {
			st, err := b.store.Get(ctx, r.ID)
			require.NoError(t, err)
			require.Equal(t, task.StatePending, st.State)
			require.JSONEq(t, fmt.Sprintf(`{"i":%d}`, i), string(st.Args), "ids are in the order of the requests")
		}
	}
}

// TestEnqueueBatchRefusals: the cases that store nothing.
func TestEnqueueBatchRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	ctx := t.Context()

	_, err := b.client.EnqueueBatch(ctx, nil)
	require.ErrorIs(t, err, client.ErrInvalid)
	_, err = b.client.EnqueueBatch(ctx, pings(client.MaxBatch+1))
	require.ErrorContains(t, err, "holds 1001 tasks; the limit is 1000")

	// The same idempotency key twice in one batch.
	rs := pings(3)
	rs[0].IdempotencyKey, rs[2].IdempotencyKey = "k", "k"
	_, err = b.client.EnqueueBatch(ctx, rs)
	var ie *client.ItemError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, 2, ie.Index)
	require.ErrorContains(t, err, "repeats the key of tasks[0]")

	// Immediate and delayed tasks do not mix.
	rs = pings(2)
	rs[1].Countdown = time.Minute
	_, err = b.client.EnqueueBatch(ctx, rs)
	require.ErrorAs(t, err, &ie)
	require.Equal(t, 1, ie.Index)
	require.Equal(t, "tasks[1].countdown", ie.Field())

	// A task id stored before: the server refuses the whole batch, and
	// the states the batch recorded are taken back.
	first, err := b.client.Enqueue(ctx, client.Request{Task: "sys.ping", ID: "stored-before"})
	require.NoError(t, err)
	rs = pings(3)
	rs[2].ID = first.ID
	_, err = b.client.EnqueueBatch(ctx, rs)
	require.ErrorIs(t, err, client.ErrBatchDuplicate)
	require.EqualValues(t, 1, b.streamMsgs(t, wire.StreamTasks))
	keys := scanKeys(t, b, b.prefix+":task:*")
	require.Len(t, keys, 1, "only the task stored before has a state: %v", keys)
	require.Zero(t, b.streamMsgs(t, wire.StreamDelayed))

	// A batch of delayed tasks goes to DELAYED, atomically too.
	rs = pings(10)
	for i := range rs {
		rs[i].Countdown = time.Hour
	}
	res, err := b.client.EnqueueBatch(ctx, rs)
	require.NoError(t, err)
	require.Len(t, res, 10)
	require.EqualValues(t, 10, b.streamMsgs(t, wire.StreamDelayed))
	require.False(t, errors.Is(err, client.ErrUnconfirmed))
}

// scanKeys lists the keys matching pattern with SCAN (KEYS would block a
// Redis that other tests share).
func scanKeys(t *testing.T, b *bundle, pattern string) []string {
	t.Helper()
	var keys []string
	it := b.rdb.Scan(t.Context(), 0, pattern, 1000).Iterator()
	for it.Next(t.Context()) {
		keys = append(keys, it.Val())
	}
	require.NoError(t, it.Err())
	return keys
}

// TestEnqueueBatchRedisDown: the batch's messages go to the server while
// Redis records the PENDING states, and the commit waits for Redis. With
// Redis (the test's own) paused, every batch fails as unavailable and
// stores nothing, and each is aborted at once rather than left open for
// the server's 10 s: after 80 such batches within a few seconds (the
// server keeps at most 50 open per stream) a batch through a working
// Redis is stored.
func TestEnqueueBatchRedisDown(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	own, pid := resultstest.Own(t)
	// No retries, a short read timeout: a paused Redis fails fast.
	rdb := redis.NewClient(&redis.Options{Addr: own.Options().Addr, MaxRetries: -1, ReadTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	down := results.New(rdb, results.Config{Prefix: "batchdown", TTL: time.Hour})
	t.Cleanup(down.Close)
	cl := client.New(b.nc, b.js, down, client.Config{})
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))

	for wave := 0; wave < 4; wave++ {
		var wg sync.WaitGroup
		errs := make([]error, 20)
		for i := range errs {
			wg.Go(func() {
				_, errs[i] = cl.EnqueueBatch(t.Context(), pings(10))
			})
		}
		wg.Wait()
		for _, err := range errs {
			require.ErrorIs(t, err, results.ErrUnavailable)
		}
	}
	require.Zero(t, b.streamMsgs(t, wire.StreamTasks), "a batch whose states Redis did not take stores nothing")

	res, err := b.client.EnqueueBatch(t.Context(), pings(10))
	require.NoError(t, err, "the failed batches were left open on the server")
	require.Len(t, res, 10)
	require.EqualValues(t, 10, b.streamMsgs(t, wire.StreamTasks))
}

// TestEnqueueBatchTooManyOpen: when the stream has as many atomic batches
// open as the server allows, a batch is refused as unavailable (a 503 with
// Retry-After over HTTP), not as an unknown failure, and stores nothing.
func TestEnqueueBatchTooManyOpen(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	for range 50 { // the server's default per stream
		bp, err := jetstreamext.NewBatchPublisher(b.js)
		require.NoError(t, err)
		require.NoError(t, bp.AddMsg(nats.NewMsg(wire.TaskSubject(task.DefaultQueue, "sys.ping"))))
	}
	_, err := b.client.EnqueueBatch(t.Context(), pings(3))
	require.ErrorIs(t, err, client.ErrUnavailable)
	require.ErrorContains(t, err, "max_batch_inflight_per_stream")
	require.Zero(t, b.streamMsgs(t, wire.StreamTasks))
	require.Zero(t, b.taskKeys(t), "the refused batch's states are taken back")
}

// TestEnqueueBatchKeepsStates: a task whose id the caller chose keeps the
// state it has when a batch names it again (a retried batch, a workflow
// step published twice); the batch's other tasks get PENDING.
func TestEnqueueBatchKeepsStates(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	ctx := t.Context()
	first, err := b.client.Enqueue(ctx, client.Request{Task: "sys.ping", ID: "ran-before"})
	require.NoError(t, err)
	require.NoError(t, b.store.Set(ctx, first.ID, results.Update{State: task.StateSuccess, Result: json.RawMessage(`"pong"`)}))

	rs := pings(3)
	rs[1].ID = first.ID
	_, err = b.client.EnqueueBatch(ctx, rs)
	require.ErrorIs(t, err, client.ErrBatchDuplicate, "the server refuses the id it stored before")
	st, err := b.store.Get(ctx, first.ID)
	require.NoError(t, err)
	require.Equal(t, task.StateSuccess, st.State, "the batch overwrote the state of a task that ran")
	require.JSONEq(t, `"pong"`, string(st.Result))
}
