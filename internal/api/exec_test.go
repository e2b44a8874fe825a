package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/api"
	"github.com/flotilla/flotilla/internal/attempt"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/worker"
)

type execBundle struct {
	url   string
	nc    *nats.Conn
	store *results.Store
	reg   *task.Registry
	srv   *httptest.Server
}

func setupExec(t *testing.T, exec func(b *execBundle) api.Executor) *execBundle {
	t.Helper()
	b := &execBundle{url: jettest.Server(t).ClientURL()}
	nc, jsc := jettest.Connect(t, b.url)
	b.nc = nc
	topo, err := jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)
	require.NoError(t, jet.ApplyStreams(t.Context(), jsc, topo))
	require.NoError(t, jet.ApplyQueues(t.Context(), jsc, topo, []string{"default"}))
	rdb, prefix := resultstest.Client(t)
	b.store = results.New(rdb, results.Config{Prefix: prefix, TTL: time.Hour})
	t.Cleanup(b.store.Close)
	b.reg = task.NewRegistry()
	systasks.Register(b.reg)
	cl := client.New(nc, jsc, b.store, client.Config{Registry: b.reg, CheckRegistered: true})
	s := api.New(api.Config{MaxBodyBytes: 1024, Exec: exec(b), ExecTimeout: 5 * time.Second, ExecTimeoutMax: 30 * time.Second},
		cl, nil, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	b.srv = httptest.NewServer(s.Handler())
	t.Cleanup(b.srv.Close)
	return b
}

func remote(b *execBundle) api.Executor {
	return api.Remote{NC: b.nc, Known: func(n string) bool { _, err := b.reg.Lookup(n); return err == nil }}
}

// startWorker runs a worker serving sync requests on its own connection.
func (b *execBundle) startWorker(t *testing.T, name string) (kill func()) {
	t.Helper()
	nc, js := jettest.Connect(t, b.url)
	w := worker.New(nc, js, b.reg, b.store, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel), worker.Config{
		Queues: []string{"default"}, Concurrency: 4, Name: name, Sync: true, SyncConcurrency: 8, ShutdownTimeout: 5 * time.Second, Events: wire.EventsAll,
	})
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Error("worker did not stop")
			}
		})
	}
	t.Cleanup(stop)
	// Ready once its service answers.
	require.Eventually(t, func() bool {
		m, err := nc.Request("$SRV.PING."+wire.ServiceName, nil, time.Second)
		return err == nil && m != nil
	}, 10*time.Second, 20*time.Millisecond)
	return func() { nc.Close(); stop() }
}

type execReply struct {
	status int
	body   map[string]any
}

func (b *execBundle) call(t *testing.T, path, body string) execReply {
	t.Helper()
	resp, err := http.Post(b.srv.URL+"/api/v1/exec/"+path, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return execReply{resp.StatusCode, m}
}

func TestExecStatuses(t *testing.T) {
	t.Parallel()
	b := setupExec(t, remote)
	// No worker yet: a registered task is 503, an unknown one 404.
	r := b.call(t, "sys.echo", `{"x":1}`)
	require.Equal(t, http.StatusServiceUnavailable, r.status, r.body)
	require.Equal(t, "no_worker", r.body["code"])
	r = b.call(t, "no.such_task", `{}`)
	require.Equal(t, http.StatusNotFound, r.status, r.body)
	require.Contains(t, r.body["error"], `unknown task "no.such_task"`)

	b.startWorker(t, "w1")
	events := b.events(t)
	for _, tc := range []struct {
		name, path, body string
		status           int
		check            func(t *testing.T, m map[string]any)
	}{
		{"ok", "sys.echo", `{"x":1}`, 200, func(t *testing.T, m map[string]any) {
			require.Equal(t, map[string]any{"x": 1.0}, m["result"])
			require.Equal(t, "w1", m["worker"])
			require.NotEmpty(t, m["id"])
			require.Contains(t, m, "runtime_ms")
			require.Contains(t, m, "duration_ms")
		}},
		{"empty body is {}", "sys.echo", ``, 200, nil},
		{"handler error", "sys.fail", `{}`, 422, func(t *testing.T, m map[string]any) {
			require.Equal(t, "handler_error", m["code"])
			require.Equal(t, "error", m["error_type"])
			require.Contains(t, m["error"], "attempt 1 fails")
		}},
		{"permanent error", "sys.sleep", `{"ms":-1}`, 422, func(t *testing.T, m map[string]any) {
			require.Equal(t, "permanent", m["error_type"])
		}},
		{"timeout", "sys.sleep?timeout=300ms", `{"ms":5000}`, 504, func(t *testing.T, m map[string]any) {
			require.Equal(t, "timeout", m["code"])
		}},
		{"malformed json", "sys.echo", `{"x":`, 400, func(t *testing.T, m map[string]any) { require.Equal(t, "body", m["field"]) }},
		{"not an object", "sys.echo", `[1,2]`, 400, func(t *testing.T, m map[string]any) { require.Equal(t, "body", m["field"]) }},
		{"bad timeout", "sys.echo?timeout=soon", `{}`, 400, func(t *testing.T, m map[string]any) { require.Equal(t, "timeout", m["field"]) }},
		{"timeout over max", "sys.echo?timeout=1h", `{}`, 400, nil},
		{"bad task name", "Bad-Name", `{}`, 400, func(t *testing.T, m map[string]any) { require.Equal(t, "task", m["field"]) }},
		{"body over limit", "sys.echo", `{"x":"` + strings.Repeat("a", 2000) + `"}`, 413, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := b.call(t, tc.path, tc.body)
			require.Equal(t, tc.status, r.status, r.body)
			if tc.check != nil {
				tc.check(t, r.body)
			}
			require.Less(t, time.Since(start), 5*time.Second)
		})
	}
	// The result is recorded under the task id too, and the execution's
	// events are published with origin sync.
	r = b.call(t, "sys.echo", `{"rec":true}`)
	require.Equal(t, 200, r.status)
	st := b.requireRecorded(t, r, task.StateSuccess)
	require.JSONEq(t, `{"rec":true}`, string(st.Result))
	require.Equal(t, "w1", st.Worker)
	events.require(t, r.body["id"].(string), wire.EventStarted, wire.EventSucceeded)
	r = b.call(t, "sys.fail", `{}`)
	require.Equal(t, 422, r.status)
	b.requireRecorded(t, r, task.StateFailure)
	events.require(t, r.body["id"].(string), wire.EventStarted, wire.EventFailed)
}

// TestExecSpreadsAcrossWorkers: 3 workers in the queue group, 3,000 calls,
// all answered correctly, every worker took a share.
func TestExecSpreadsAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setupExec(t, remote)
	for i := 1; i <= 3; i++ {
		b.startWorker(t, fmt.Sprintf("w%d", i))
	}
	ex := remote(b)
	by := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := 0; i < 3000; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			args := fmt.Sprintf(`{"i":%d}`, i)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			res, err := ex.Exec(ctx, "sys.echo", json.RawMessage(args), wire.ExecMeta{ID: fmt.Sprint(i)})
			if !assertNoErr(t, err) {
				return
			}
			if string(res.Result) != args {
				t.Errorf("call %d got %s", i, res.Result)
			}
			mu.Lock()
			by[res.Worker]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.Len(t, by, 3, "every worker answered: %v", by)
	total := 0
	for w, n := range by {
		require.Greater(t, n, 100, "worker %s took %d", w, n)
		total += n
	}
	require.Equal(t, 3000, total)
}

func assertNoErr(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// TestExecWorkerKilledMidRequest: the caller gets 504 within its timeout,
// never a hang, and the next call succeeds on another worker.
func TestExecWorkerKilledMidRequest(t *testing.T) {
	t.Parallel()
	b := setupExec(t, remote)
	killA := b.startWorker(t, "a")
	done := make(chan execReply, 1)
	start := time.Now()
	go func() { done <- b.call(t, "sys.sleep?timeout=1500ms", `{"ms":1000}`) }()
	// Kill A while it sleeps; B starts after, so the request went to A.
	time.Sleep(300 * time.Millisecond)
	killA()
	b.startWorker(t, "b")
	r := <-done
	require.Contains(t, []int{http.StatusServiceUnavailable, http.StatusGatewayTimeout}, r.status, r.body)
	require.Less(t, time.Since(start), 4*time.Second, "answered soon after its 1.5 s timeout, never a hang")
	r = b.call(t, "sys.echo", `{"after":"kill"}`)
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, "b", r.body["worker"])
}

// TestExecConcurrentCallersMatched: 200 concurrent HTTP callers, each reply
// carries its own request's args.
func TestExecConcurrentCallersMatched(t *testing.T) {
	t.Parallel()
	b := setupExec(t, remote)
	b.startWorker(t, "w1")
	b.startWorker(t, "w2")
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"caller":%d}`, i)
			resp, err := http.Post(b.srv.URL+"/api/v1/exec/sys.echo", "application/json", bytes.NewBufferString(body))
			if !assertNoErr(t, err) {
				return
			}
			defer resp.Body.Close()
			var out struct {
				Result json.RawMessage `json:"result"`
			}
			if !assertNoErr(t, json.NewDecoder(resp.Body).Decode(&out)) {
				return
			}
			if resp.StatusCode != 200 || string(out.Result) != body {
				t.Errorf("caller %d: %d %s", i, resp.StatusCode, out.Result)
			}
		}()
	}
	wg.Wait()
}

// TestExecLocal runs handlers in the api process (api.exec=local), through
// the same attempt runner as workers: results recorded, events published.
func TestExecLocal(t *testing.T) {
	t.Parallel()
	b := setupExec(t, func(b *execBundle) api.Executor {
		return api.Local{Registry: b.reg, Runner: attempt.New(attempt.Config{
			Timeout: 5 * time.Second, Worker: "local", Store: b.store, Events: jet.NewEvents(b.nc, wire.EventsAll),
		}, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel))}
	})
	events := b.events(t)
	r := b.call(t, "sys.echo", `{"x":2}`)
	require.Equal(t, 200, r.status, r.body)
	require.Equal(t, "local", r.body["worker"])
	ok := b.requireRecorded(t, r, task.StateSuccess)
	require.JSONEq(t, `{"x":2}`, string(ok.Result))
	events.require(t, r.body["id"].(string), wire.EventStarted, wire.EventSucceeded)

	r = b.call(t, "sys.fail", `{}`)
	require.Equal(t, 422, r.status)
	failed := b.requireRecorded(t, r, task.StateFailure)
	require.Contains(t, failed.Error, "attempt 1 fails")
	events.require(t, r.body["id"].(string), wire.EventStarted, wire.EventFailed)

	require.Equal(t, 404, b.call(t, "no.such_task", `{}`).status)
	r = b.call(t, "sys.sleep?timeout=200ms", `{"ms":3000}`)
	require.Equal(t, 504, r.status)
	b.requireRecorded(t, r, task.StateFailure)
}

// requireRecorded waits for the state of the execution r answered and
// checks it.
func (b *execBundle) requireRecorded(t *testing.T, r execReply, state string) results.State {
	t.Helper()
	id, _ := r.body["id"].(string)
	require.NotEmpty(t, id, r.body)
	var st results.State
	require.Eventually(t, func() bool {
		var err error
		st, err = b.store.Get(t.Context(), id)
		return err == nil && st.State == state
	}, 5*time.Second, 5*time.Millisecond, "state of %s: %+v", id, st)
	require.Equal(t, wire.SyncQueue, st.Queue)
	require.Equal(t, 1, st.Attempts)
	require.NotNil(t, st.EnqueuedAt)
	require.NotNil(t, st.FinishedAt)
	return st
}

// eventLog collects the lifecycle events published on the bundle's server.
type eventLog struct {
	mu sync.Mutex
	by map[string][]wire.Event
}

func (b *execBundle) events(t *testing.T) *eventLog {
	t.Helper()
	l := &eventLog{by: map[string][]wire.Event{}}
	sub, err := b.nc.Subscribe("events.>", func(m *nats.Msg) {
		ev, err := wire.DecodeEvent(m.Data)
		if err != nil || m.Subject != ev.Subject() {
			t.Errorf("event on %s does not decode to its subject: %v %s", m.Subject, err, m.Data)
			return
		}
		l.mu.Lock()
		l.by[ev.ID] = append(l.by[ev.ID], ev)
		l.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, b.nc.Flush())
	return l
}

// require waits until task id has exactly the events of kinds, in order,
// each of a sync execution.
func (l *eventLog) require(t *testing.T, id string, kinds ...string) {
	t.Helper()
	var got []string
	require.Eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		got = got[:0]
		for _, ev := range l.by[id] {
			got = append(got, ev.Kind)
		}
		return len(got) >= len(kinds)
	}, 5*time.Second, 5*time.Millisecond, "events of %s: %v", id, got)
	require.Equal(t, kinds, got)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range l.by[id] {
		require.Equal(t, wire.OriginSync, ev.Origin)
		require.Equal(t, wire.SyncQueue, ev.Queue)
		require.Equal(t, 1, ev.Attempt)
		require.NotEmpty(t, ev.Worker)
	}
}

// TestExecSlowCallsRunConcurrently: one worker runs several sync requests
// of the same task at once (worker.sync_concurrency instances of the
// service). NATS spreads requests over the instances at random, so a burst
// is not perfectly parallel: 8 calls of 1 s on 8 instances take about 2-3 s,
// never the 8 s of one-at-a-time.
func TestExecSlowCallsRunConcurrently(t *testing.T) {
	t.Parallel()
	b := setupExec(t, remote)
	b.startWorker(t, "w1")
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := b.call(t, "sys.sleep?timeout=20s", `{"ms":1000}`)
			if r.status != 200 {
				t.Errorf("status %d: %v", r.status, r.body)
			}
		}()
	}
	wg.Wait()
	require.Less(t, time.Since(start), 6500*time.Millisecond, "8 × 1 s ran concurrently, not one after another")
}
