package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/app"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/web"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/worker"
)

// TestEndToEndOverHTTP enqueues 1,000 sys.echo tasks over HTTP, runs them
// with a worker, and checks every result and that TASKS is empty after.
func TestEndToEndOverHTTP(t *testing.T) {
	t.Parallel()
	ns := jettest.Server(t)
	_, prefix := resultstest.Client(t)
	cfg := config.Default(config.RoleDev)
	cfg.NATS.URL = ns.ClientURL()
	cfg.Redis.URL = resultstest.URL()
	cfg.Redis.Prefix = prefix
	cfg.Worker.Concurrency = 32

	c, err := app.Open(t.Context(), cfg, app.Needs{Redis: true})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.NoError(t, jet.ApplyQueues(t.Context(), c.JS, c.Topology, cfg.Worker.Queues))
	reg := task.NewRegistry()
	systasks.Register(reg)

	srv := httptest.NewServer(web.New(web.Config{MaxBodyBytes: cfg.Tasks.MaxBodyBytes}, app.NewClient(cfg, c, reg), nil, zerolog.Nop()).Handler())
	t.Cleanup(srv.Close)

	w := worker.New(c.NC, c.JS, reg, c.Results, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), app.WorkerConfig(cfg))
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	const n = 1000
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			body := fmt.Sprintf(`{"task":"sys.echo","args":{"i":%d}}`, i)
			resp, err := http.Post(srv.URL+"/api/v1/tasks", "application/json", bytes.NewBufferString(body))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var out struct{ ID, State string }
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
				errs <- err
				return
			}
			if resp.StatusCode != http.StatusAccepted || out.State != task.StatePending {
				errs <- fmt.Errorf("enqueue %d: %s %+v", i, resp.Status, out)
				return
			}
			ids[i] = out.ID
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for i, id := range ids {
		var st results.State
		require.Eventually(t, func() bool {
			resp, err := http.Get(srv.URL + "/api/v1/tasks/" + id)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
			st = results.State{}
			return json.NewDecoder(resp.Body).Decode(&st) == nil && st.State == task.StateSuccess
		}, 60*time.Second, 20*time.Millisecond, "task %d (%s) state %q", i, id, st.State)
		require.JSONEq(t, fmt.Sprintf(`{"i":%d}`, i), string(st.Result))
		require.Equal(t, "sys.echo", st.Task)
		require.Equal(t, "default", st.Queue)
		require.Equal(t, 1, st.Attempts)
		require.NotNil(t, st.EnqueuedAt)
		require.NotNil(t, st.StartedAt)
		require.NotNil(t, st.FinishedAt)
		require.NotEmpty(t, st.Worker)
	}
	s, err := c.JS.Stream(t.Context(), wire.StreamTasks)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := s.Info(t.Context())
		return err == nil && info.State.Msgs == 0
	}, 10*time.Second, 10*time.Millisecond, "TASKS is empty after the run")
}
