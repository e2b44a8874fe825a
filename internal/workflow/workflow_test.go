package workflow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/worker"
	"github.com/flotilla/flotilla/internal/workflow"
)

// env is a NATS server, a Redis prefix, a registry with the test tasks, a
// client and an engine; workers are started with start.
type env struct {
	url   string
	js    jetstream.JetStream
	store *results.Store
	reg   *task.Registry
	eng   *workflow.Engine
	// callbacks counts the runs of wf.collect per task id.
	callbacks sync.Map
}

func setup(t *testing.T, ackWait time.Duration) *env {
	t.Helper()
	e := &env{url: jettest.Server(t).ClientURL()}
	nc, js := jettest.Connect(t, e.url)
	e.js = js
	topo, err := jet.LoadTopology(jet.TopologyParams{AckWait: ackWait})
	require.NoError(t, err)
	require.NoError(t, jet.ApplyStreams(t.Context(), js, topo))
	require.NoError(t, jet.ApplyQueues(t.Context(), js, topo, []string{"default"}))
	rdb, prefix := resultstest.Client(t)
	e.store = results.New(rdb, results.Config{Prefix: prefix, TTL: time.Hour})
	t.Cleanup(e.store.Close)
	e.reg = task.NewRegistry()
	systasks.Register(e.reg)
	// wf.inc returns {"n": n+1}, n from its args or from the step before.
	e.reg.Handle("wf.inc", func(_ context.Context, env *task.Envelope) (any, error) {
		var a struct {
			N        int `json:"n"`
			MS       int `json:"ms"`
			Previous *struct {
				N int `json:"n"`
			} `json:"previous"`
		}
		if err := json.Unmarshal(env.Args, &a); err != nil {
			return nil, task.Permanent(err)
		}
		if a.Previous != nil {
			a.N = a.Previous.N
		}
		time.Sleep(time.Duration(a.MS) * time.Millisecond)
		return map[string]int{"n": a.N + 1}, nil
	})
	// wf.collect is a chord callback: it counts its runs and returns the
	// sum of the members' n.
	e.reg.Handle("wf.collect", func(_ context.Context, env *task.Envelope) (any, error) {
		v, _ := e.callbacks.LoadOrStore(env.ID, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		var a struct {
			Results []struct {
				N int `json:"n"`
			} `json:"results"`
			Errors []workflow.MemberError `json:"errors"`
		}
		if err := json.Unmarshal(env.Args, &a); err != nil {
			return nil, task.Permanent(err)
		}
		sum := 0
		order := true
		for i, r := range a.Results {
			sum += r.N
			order = order && (r.N == 0 || r.N == i+1)
		}
		return map[string]any{"sum": sum, "count": len(a.Results), "in_order": order, "errors": len(a.Errors)}, nil
	})
	cl := client.New(nc, js, e.store, client.Config{Registry: e.reg, CheckRegistered: true})
	e.eng = workflow.New(e.store, cl, nil)
	return e
}

// start runs a worker with its own connection and engine; stop ends it.
func (e *env) start(t *testing.T, name string, concurrency int) (stop func(), nc *nats.Conn) {
	t.Helper()
	nc, js := jettest.Connect(t, e.url)
	eng := workflow.New(e.store, client.New(nc, js, e.store, client.Config{Registry: e.reg}), nil)
	cfg := worker.Config{
		Queues: []string{"default"}, Concurrency: concurrency, Name: name, MaxRetries: 3,
		Backoff: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		AckWait: 2 * time.Second, Events: wire.EventsAll, ShutdownTimeout: 10 * time.Second,
		Workflows: eng, Middleware: []task.Middleware{workflow.Middleware(eng)},
	}
	w := worker.New(nc, js, e.reg, e.store, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel), cfg)
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("worker did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop, nc
}

func (e *env) run(t *testing.T, def string) string {
	t.Helper()
	d, err := workflow.Parse([]byte(def))
	require.NoError(t, err)
	id, err := e.eng.Start(t.Context(), d, workflow.StartOptions{Origin: "test"})
	require.NoError(t, err)
	return id
}

// wait waits for workflow id to end and returns it.
func (e *env) wait(t *testing.T, id string, within time.Duration) workflow.State {
	t.Helper()
	var st workflow.State
	require.Eventually(t, func() bool {
		var err error
		st, err = e.eng.Get(t.Context(), id)
		require.NoError(t, err)
		return st.State != workflow.StateRunning
	}, within, 10*time.Millisecond, "workflow %s still running", id)
	return st
}

func TestChainPassesResults(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second)
	e.start(t, "w1", 4)
	id := e.run(t, `{"chain": [
		{"task": "wf.inc", "args": {"n": 1}},
		{"task": "wf.inc", "pass_result": true},
		{"task": "wf.inc", "args": {"n": 100}, "pass_result": true}]}`)
	st := e.wait(t, id, 10*time.Second)
	require.Equal(t, task.StateSuccess, st.State, st.Error)
	require.JSONEq(t, `{"n": 4}`, string(st.Result))
	require.Len(t, st.Root.Steps, 3)
	for i, s := range st.Root.Steps {
		require.Equal(t, task.StateSuccess, s.State)
		require.Equal(t, fmt.Sprintf("%s-%d", id, i), s.ID)
		require.JSONEq(t, fmt.Sprintf(`{"n": %d}`, i+2), string(s.Result))
	}
}

func TestChainStopsAtFailedStep(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second)
	e.start(t, "w1", 4)
	id := e.run(t, `{"chain": [
		{"task": "wf.inc", "args": {"n": 1}},
		{"task": "sys.fail", "args": {"times": 5}, "max_retries": 1},
		{"task": "wf.inc", "pass_result": true}]}`)
	st := e.wait(t, id, 10*time.Second)
	require.Equal(t, task.StateFailure, st.State)
	require.Contains(t, st.Error, "step 1 (sys.fail) failed")
	require.Equal(t, task.StateSuccess, st.Root.Steps[0].State)
	require.Equal(t, task.StateFailure, st.Root.Steps[1].State)
	require.Equal(t, workflow.StateWaiting, st.Root.Steps[2].State, "the step after the failed one never runs")
	_, err := e.store.Get(t.Context(), st.Root.Steps[2].ID)
	require.ErrorIs(t, err, results.ErrNotFound)
}

func TestGroupOf100(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second)
	e.start(t, "w1", 16)
	var members []string
	for i := range 100 {
		members = append(members, fmt.Sprintf(`{"task": "wf.inc", "args": {"n": %d}}`, i))
	}
	id := e.run(t, `{"group": [`+strings.Join(members, ",")+`]}`)
	st := e.wait(t, id, 20*time.Second)
	require.Equal(t, task.StateSuccess, st.State, st.Error)
	g, err := e.eng.Group(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, 100, g.Size)
	require.Equal(t, 100, g.Succeeded)
	require.Equal(t, 100, g.Finished)
	for i, r := range g.Results {
		require.JSONEq(t, fmt.Sprintf(`{"n": %d}`, i+1), string(r), "results are in the members' order")
	}
}

// TestChainFansOutAndIn: a chain whose middle step is a group gets the
// group's results, in order, in the next step.
func TestChainFansOutAndIn(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second)
	e.start(t, "w1", 8)
	id := e.run(t, `{"chain": [
		{"task": "wf.inc", "args": {"n": 0}},
		{"group": [{"task": "wf.inc", "args": {"n": 0}}, {"task": "wf.inc", "args": {"n": 1}}, {"task": "wf.inc", "args": {"n": 2}}]},
		{"task": "wf.collect", "pass_result": true}]}`)
	st := e.wait(t, id, 10*time.Second)
	require.Equal(t, task.StateSuccess, st.State, st.Error)
	require.Equal(t, "group", st.Root.Steps[1].Kind)
	g, err := e.eng.Group(t.Context(), id+"-1")
	require.NoError(t, err)
	require.Equal(t, 3, g.Succeeded)
	// wf.collect reads "results"; pass_result gives it "previous".
	require.JSONEq(t, `{"n": 1}`, string(st.Root.Steps[0].Result))
}

// TestChordCallbackOnce: a chord of 100 whose callback runs exactly once,
// 20 times over, with two workers racing on the last members.
func TestChordCallbackOnce(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second)
	e.start(t, "w1", 8)
	e.start(t, "w2", 8)
	var members []string
	for i := range 100 {
		members = append(members, fmt.Sprintf(`{"task": "wf.inc", "args": {"n": %d}}`, i))
	}
	def := `{"chord": {"group": [` + strings.Join(members, ",") + `], "callback": {"task": "wf.collect"}}}`
	var ids []string
	for range 20 {
		ids = append(ids, e.run(t, def))
	}
	for _, id := range ids {
		st := e.wait(t, id, 60*time.Second)
		require.Equal(t, task.StateSuccess, st.State, st.Error)
		require.JSONEq(t, `{"sum": 5050, "count": 100, "in_order": true, "errors": 0}`, string(st.Result))
		v, ok := e.callbacks.Load(id + "-cb")
		require.True(t, ok)
		require.EqualValues(t, 1, v.(*atomic.Int64).Load(), "callback of %s ran more than once", id)
	}
}

// TestChordFailurePolicy: a failed member fails the chord without its
// callback by default; with callback_on_failure "run" the callback runs
// and gets the errors.
func TestChordFailurePolicy(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second)
	e.start(t, "w1", 4)
	members := `[{"task": "wf.inc", "args": {"n": 0}}, {"task": "sys.fail", "max_retries": 0}, {"task": "wf.inc", "args": {"n": 2}}]`
	failID := e.run(t, `{"chord": {"group": `+members+`, "callback": {"task": "wf.collect"}}}`)
	runID := e.run(t, `{"chord": {"group": `+members+`, "callback": {"task": "wf.collect"}, "callback_on_failure": "run"}}`)
	st := e.wait(t, failID, 10*time.Second)
	require.Equal(t, task.StateFailure, st.State)
	require.Contains(t, st.Error, "member 1 (sys.fail)")
	require.Equal(t, workflow.StateWaiting, st.Root.Callback.State)
	_, ran := e.callbacks.Load(failID + "-cb")
	require.False(t, ran)

	st = e.wait(t, runID, 10*time.Second)
	require.Equal(t, task.StateSuccess, st.State, st.Error)
	require.JSONEq(t, `{"sum": 4, "count": 3, "in_order": true, "errors": 1}`, string(st.Result))
}

// TestCancelStopsPendingSteps: cancelling a chain stops it before its next step.
func TestCancelStopsPendingSteps(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second)
	e.start(t, "w1", 4)
	id := e.run(t, `{"chain": [{"task": "wf.inc", "args": {"n": 0, "ms": 300}}, {"task": "wf.inc", "pass_result": true}]}`)
	_, err := e.eng.Cancel(t.Context(), id, "test")
	require.NoError(t, err)
	time.Sleep(600 * time.Millisecond)
	st, err := e.eng.Get(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, task.StateCancelled, st.State)
	require.Equal(t, workflow.StateWaiting, st.Root.Steps[1].State)
	_, err = e.eng.Cancel(t.Context(), id, "test")
	require.ErrorIs(t, err, workflow.ErrFinished)
}

func TestParseErrorsNameTheStep(t *testing.T) {
	t.Parallel()
	for def, want := range map[string]string{
		`{"task": "sys.ping"}`: "a single task is not a workflow",
		`{}`:                   `want {"chain": [...]}`,
		`{"chain": [{"task": "sys.ping"}, {"task": "Bad Name"}]}`: "chain[1].task",
		`{"group": []}`: "group: is empty",
		`{"chord": {"group": [{"task": "sys.ping"}]}}`:                                                   "chord.callback: required",
		`{"chord": {"group": [{"task": "a.b"}], "callback": {"task": "c"}, "callback_on_failure": "x"}}`: "callback_on_failure",
		`{"chain": [{"chain": [{"chain": [{"chain": [{"task": "a"}]}]}]}]}`:                              "nests deeper than 3",
		`{"chain": [{"task": "a", "group": [{"task": "b"}]}]}`:                                           "exactly one of",
		`{"chain": [{"task": "a", "color": "red"}]}`:                                                     "unknown field",
	} {
		_, err := workflow.Parse([]byte(def))
		require.ErrorIs(t, err, task.ErrInvalid, def)
		require.ErrorContains(t, err, want, def)
	}
}
