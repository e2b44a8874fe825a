package flotilla_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results/resultstest"
)

// TestClientEnqueueAndWait runs a worker role from a user's App and drives
// it with the public client.
//
// Not parallel: the worker's Redis key prefix comes from the environment.
func TestClientEnqueueAndWait(t *testing.T) {
	url := jettest.Server(t).ClientURL()
	_, prefix := resultstest.Client(t)
	t.Setenv("FLOTILLA_REDIS_PREFIX", prefix)
	t.Setenv("FLOTILLA_OUTBOX_RELAY", "false") // no database here
	app := flotilla.New()
	app.Handle("greet.hello", func(_ context.Context, env *flotilla.Envelope) (any, error) {
		return map[string]string{"hello": string(env.Args)}, nil
	})
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, []string{"worker", "--nats-url", url, "--redis-url", resultstest.URL(),
			"--addr", "127.0.0.1:0", "--log-level", "warn", "--concurrency", "4"})
	}()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	c, err := flotilla.Dial(t.Context(), flotilla.ClientOptions{NATSURL: url, RedisURL: resultstest.URL(), RedisPrefix: prefix})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	wctx, wcancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer wcancel()
	var st flotilla.State
	require.Eventually(t, func() bool {
		st, err = c.EnqueueAndWait(wctx, "greet.hello", map[string]int{"n": 1}, flotilla.EnqueueOptions{})
		return err == nil
	}, 20*time.Second, 100*time.Millisecond, "worker up and answering: %v", err)
	require.Equal(t, "SUCCESS", st.State)
	require.JSONEq(t, `{"hello":"{\"n\":1}"}`, string(st.Result))
	got, err := c.Get(t.Context(), st.ID)
	require.NoError(t, err)
	require.Equal(t, "SUCCESS", got.State)

	_, err = c.Enqueue(t.Context(), "greet.hello", []int{1}, flotilla.EnqueueOptions{})
	require.True(t, errors.Is(err, flotilla.ErrInvalid), "non-object args: %v", err)
	_, err = c.Get(t.Context(), "nope")
	require.ErrorIs(t, err, flotilla.ErrNotFound)

	// A chain through the worker role: each step gets the result before it.
	id, err := c.StartWorkflow(t.Context(), flotilla.Chain(
		flotilla.Call("greet.hello", map[string]int{"n": 1}),
		flotilla.Call("greet.hello", nil, flotilla.CallOptions{PassResult: true}),
	))
	require.NoError(t, err)
	var ws flotilla.WorkflowState
	require.Eventually(t, func() bool {
		ws, err = c.GetWorkflow(t.Context(), id)
		return err == nil && ws.State != "RUNNING"
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, "SUCCESS", ws.State, ws.Error)
	require.JSONEq(t, `{"hello":"{\"previous\":{\"hello\":\"{\\\"n\\\":1}\"}}"}`, string(ws.Result))

	// A batch is all or none.
	ids, err := c.EnqueueMany(t.Context(), []flotilla.Task{{Name: "greet.hello"}, {Name: "greet.hello", Args: map[string]int{"n": 2}}})
	require.NoError(t, err)
	require.Len(t, ids, 2)
	_, err = c.EnqueueMany(t.Context(), []flotilla.Task{{Name: "greet.hello"}, {Name: "greet.hello", Args: []int{1}}})
	var ie *flotilla.ItemError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, 1, ie.Index)
}
