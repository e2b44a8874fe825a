package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
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
)

// bundle is what a worker test needs: a server, a store and a registry.
type bundle struct {
	url   string
	nc    *nats.Conn
	js    jetstream.JetStream
	store *results.Store
	reg   *task.Registry
	cl    *client.Client
	// runs counts handler executions per task id of test.count.
	runs      sync.Map
	hangsDone atomic.Int64
	rdb       *redis.Client
	prefix    string
}

type setupOpts struct {
	ackWait  time.Duration
	url      string // existing server(s); empty = new server
	replicas int
}

func setup(t testing.TB, o setupOpts) *bundle {
	t.Helper()
	if o.ackWait == 0 {
		o.ackWait = 30 * time.Second
	}
	b := &bundle{url: o.url}
	if b.url == "" {
		b.url = jettest.Server(t).ClientURL()
	}
	b.nc, b.js = jettest.Connect(t, b.url)
	topo, err := jet.LoadTopology(jet.TopologyParams{Replicas: o.replicas, AckWait: o.ackWait})
	require.NoError(t, err)
	require.NoError(t, jet.ApplyStreams(t.Context(), b.js, topo))
	require.NoError(t, jet.ApplyQueues(t.Context(), b.js, topo, []string{"default"}))
	rdb, prefix := resultstest.Client(t)
	b.rdb, b.prefix = rdb, prefix
	b.store = results.New(rdb, results.Config{Prefix: prefix, TTL: time.Hour})
	t.Cleanup(b.store.Close)
	b.reg = task.NewRegistry()
	systasks.Register(b.reg)
	b.reg.Handle("test.count", func(ctx context.Context, env *task.Envelope) (any, error) {
		v, _ := b.runs.LoadOrStore(env.ID, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		var a struct {
			MS int `json:"ms"`
		}
		_ = json.Unmarshal(env.Args, &a)
		if a.MS > 0 {
			select {
			case <-time.After(time.Duration(a.MS) * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return map[string]string{"id": env.ID}, nil
	})
	b.reg.Handle("test.panic", func(context.Context, *task.Envelope) (any, error) { panic("boom") })
	// test.hang ignores its context, like a handler stuck in a call without
	// a deadline; hangsDone counts the ones that returned at last.
	b.reg.Handle("test.hang", func(_ context.Context, env *task.Envelope) (any, error) {
		var a struct {
			MS int `json:"ms"`
		}
		_ = json.Unmarshal(env.Args, &a)
		time.Sleep(time.Duration(a.MS) * time.Millisecond)
		b.hangsDone.Add(1)
		return "finally", nil
	})
	b.cl = client.New(b.nc, b.js, b.store, client.Config{Registry: b.reg, CheckRegistered: true})
	return b
}

func (b *bundle) cfg() worker.Config {
	return worker.Config{
		Queues: []string{"default"}, Concurrency: 16, Name: "test", MaxRetries: 3,
		Backoff: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		AckWait: 30 * time.Second, Events: wire.EventsAll, ShutdownTimeout: 10 * time.Second,
	}
}

// start runs a worker on its own connection until the returned stop is called.
func (b *bundle) start(t testing.TB, cfg worker.Config) (stop func(), nc *nats.Conn) {
	t.Helper()
	nc, js := jettest.Connect(t, b.url)
	w := worker.New(nc, js, b.reg, b.store, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), cfg)
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Error("worker did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop, nc
}

func (b *bundle) enqueue(t *testing.T, r client.Request) string {
	t.Helper()
	res, err := b.cl.Enqueue(t.Context(), r)
	require.NoError(t, err)
	return res.ID
}

func (b *bundle) waitFinal(t *testing.T, id string) results.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := b.cl.Wait(ctx, id)
	require.NoError(t, err)
	return st
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), name)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	return info.State.Msgs
}

func (b *bundle) deadLetters(t *testing.T) []jetstream.Msg {
	t.Helper()
	n := streamMsgs(t, b.js, wire.StreamDead)
	if n == 0 {
		return nil
	}
	c, err := b.js.OrderedConsumer(t.Context(), wire.StreamDead, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	batch, err := c.Fetch(int(n), jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	var out []jetstream.Msg
	for m := range batch.Messages() {
		out = append(out, m)
	}
	return out
}

func intp(n int) *int { return &n }

func TestRetryThenSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.start(t, b.cfg())
	id := b.enqueue(t, client.Request{Task: "sys.fail", Args: json.RawMessage(`{"times":2}`), MaxRetries: intp(3)})
	st := b.waitFinal(t, id)
	require.Equal(t, task.StateSuccess, st.State)
	require.Equal(t, 3, st.Attempts)
	require.JSONEq(t, `{"succeeded_on_attempt":3}`, string(st.Result))
	require.Empty(t, st.Error)
	require.Zero(t, streamMsgs(t, b.js, wire.StreamDead))
}

func TestRetryExhaustionDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.start(t, b.cfg())
	id := b.enqueue(t, client.Request{Task: "sys.fail", MaxRetries: intp(2)})
	st := b.waitFinal(t, id)
	require.Equal(t, task.StateFailure, st.State)
	require.Equal(t, 3, st.Attempts)
	require.Contains(t, st.Error, "attempt 3 fails")
	dead := b.deadLetters(t)
	require.Len(t, dead, 1)
	h := dead[0].Headers()
	require.Equal(t, id, h.Get(wire.HeaderID))
	require.Equal(t, "3", h.Get(wire.HeaderAttempts))
	require.Contains(t, h.Get(wire.HeaderError), "attempt 3 fails")
	require.Equal(t, "dead.default.sys.fail", dead[0].Subject())
	require.Eventually(t, func() bool { return streamMsgs(t, b.js, wire.StreamTasks) == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestPermanentAndPanicDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.start(t, b.cfg())
	// sys.sleep with a negative ms is a permanent error: no retries.
	perm := b.enqueue(t, client.Request{Task: "sys.sleep", Args: json.RawMessage(`{"ms":-1}`)})
	st := b.waitFinal(t, perm)
	require.Equal(t, task.StateFailure, st.State)
	require.Equal(t, 1, st.Attempts)
	// A panicking handler is a failure, retried, then dead; the worker lives on.
	pan := b.enqueue(t, client.Request{Task: "test.panic", MaxRetries: intp(1)})
	st = b.waitFinal(t, pan)
	require.Equal(t, task.StateFailure, st.State)
	require.Equal(t, 2, st.Attempts)
	require.Contains(t, st.Error, "panic: boom")
	// Each attempt keeps the handler's stack for the task page.
	require.Len(t, st.History, 2)
	for _, a := range st.History {
		require.Equal(t, task.ErrorTypePanic, a.ErrorType)
		require.Contains(t, a.Traceback, "goroutine")
		require.Contains(t, a.Traceback, "worker_test.go")
	}
	ok := b.enqueue(t, client.Request{Task: "sys.ping"})
	require.Equal(t, task.StateSuccess, b.waitFinal(t, ok).State)
}

func TestUnknownAndMalformedGoToDead(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.start(t, b.cfg())
	pub := func(subject string, h nats.Header, body string) {
		_, err := b.js.PublishMsg(t.Context(), &nats.Msg{Subject: subject, Header: h, Data: []byte(body)})
		require.NoError(t, err)
	}
	env := &task.Envelope{ID: "UNKNOWN1", Name: "no.such_task", EnqueuedAt: time.Now(), MaxRetries: -1}
	pub("tasks.default.no.such_task", wire.NewTaskMsg("x", env, "", "").Header, `{}`)
	env2 := &task.Envelope{ID: "BADBODY1", Name: "sys.echo", EnqueuedAt: time.Now(), MaxRetries: -1}
	pub("tasks.default.sys.echo", wire.NewTaskMsg("x", env2, "", "").Header, `not json`)
	pub("tasks.default.sys.echo", nats.Header{"Nats-Msg-Id": []string{"noheaders"}}, `{}`)
	ok := b.enqueue(t, client.Request{Task: "sys.echo", Args: json.RawMessage(`{"still":"alive"}`)})
	require.JSONEq(t, `{"still":"alive"}`, string(b.waitFinal(t, ok).Result))
	require.Eventually(t, func() bool { return streamMsgs(t, b.js, wire.StreamDead) == 3 }, 10*time.Second, 20*time.Millisecond)
	reasons := map[string]string{}
	for _, m := range b.deadLetters(t) {
		reasons[m.Headers().Get(wire.HeaderID)] = m.Headers().Get(wire.HeaderError)
	}
	require.Contains(t, reasons["UNKNOWN1"], `unknown task "no.such_task"`)
	require.Contains(t, reasons["BADBODY1"], "body is not a JSON object")
	require.Contains(t, reasons[""], "Flotilla-Id is missing")
	st, err := b.store.Get(t.Context(), "UNKNOWN1")
	require.NoError(t, err)
	require.Equal(t, task.StateFailure, st.State)
	require.Eventually(t, func() bool { return streamMsgs(t, b.js, wire.StreamTasks) == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestExpiredTaskIsNotRun(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	id := b.enqueue(t, client.Request{Task: "test.count", Expires: time.Now().Add(100 * time.Millisecond)})
	// The worker starts only after the task expired.
	deadline := time.Now().Add(150 * time.Millisecond)
	for time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	b.start(t, b.cfg())
	st := b.waitFinal(t, id)
	require.Equal(t, task.StateExpired, st.State)
	require.Contains(t, st.Error, "expired at")
	_, ran := b.runs.Load(id)
	require.False(t, ran, "an expired task must not run")
}

func TestIdempotencyKeyRunsOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	r1, err := b.cl.Enqueue(t.Context(), client.Request{Task: "test.count", IdempotencyKey: "order-42"})
	require.NoError(t, err)
	r2, err := b.cl.Enqueue(t.Context(), client.Request{Task: "test.count", IdempotencyKey: "order-42"})
	require.NoError(t, err)
	require.True(t, r2.Duplicate)
	require.Equal(t, r1.ID, r2.ID)
	// Also without Redis: the server's Nats-Msg-Id dedup drops the second.
	bare := client.New(b.nc, b.js, nil, client.Config{Registry: b.reg})
	r3, err := bare.Enqueue(t.Context(), client.Request{Task: "test.count", IdempotencyKey: "order-43"})
	require.NoError(t, err)
	r4, err := bare.Enqueue(t.Context(), client.Request{Task: "test.count", IdempotencyKey: "order-43"})
	require.NoError(t, err)
	require.False(t, r3.Duplicate)
	require.True(t, r4.Duplicate)
	require.EqualValues(t, 2, streamMsgs(t, b.js, wire.StreamTasks))
	b.start(t, b.cfg())
	require.Equal(t, task.StateSuccess, b.waitFinal(t, r1.ID).State)
	require.Eventually(t, func() bool { return streamMsgs(t, b.js, wire.StreamTasks) == 0 }, 10*time.Second, 10*time.Millisecond)
	total := 0
	b.runs.Range(func(_, v any) bool { total += int(v.(*atomic.Int64).Load()); return true })
	require.Equal(t, 2, total, "two distinct keys, two runs")
}

func TestDelayedTaskRunsWhenDue(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.start(t, b.cfg())
	start := time.Now()
	id := b.enqueue(t, client.Request{Task: "sys.echo", Args: json.RawMessage(`{"later":true}`), Countdown: time.Second})
	st := b.waitFinal(t, id)
	require.Equal(t, task.StateSuccess, st.State)
	require.GreaterOrEqual(t, st.StartedAt.Sub(start), 900*time.Millisecond)
	require.Eventually(t, func() bool { return streamMsgs(t, b.js, wire.StreamDelayed) == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestTimeoutCancelsHandler(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.start(t, b.cfg())
	id := b.enqueue(t, client.Request{Task: "sys.sleep", Args: json.RawMessage(`{"ms":5000}`), Timeout: 50 * time.Millisecond, MaxRetries: intp(0)})
	st := b.waitFinal(t, id)
	require.Equal(t, task.StateFailure, st.State)
	require.Contains(t, st.Error, "timed out after 50ms")
}

// TestHardTimeout: a handler that ignores its context (1 s timeout, 300 ms
// grace) is finished as a timeout failure within timeout + grace, retried
// per its budget and dead-lettered when it runs out, counted as abandoned —
// and the worker, with a single handler slot, runs other tasks meanwhile.
func TestHardTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	cfg := b.cfg()
	cfg.Concurrency = 1
	cfg.Grace = 300 * time.Millisecond
	metrics := prometheus.NewRegistry()
	cfg.Metrics = metrics
	b.start(t, cfg)
	start := time.Now()
	hung := b.enqueue(t, client.Request{Task: "test.hang", Args: json.RawMessage(`{"ms":2500}`), Timeout: time.Second, MaxRetries: intp(1)})
	var others []string
	for i := range 10 {
		others = append(others, b.enqueue(t, client.Request{Task: "sys.echo", Args: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}))
	}

	// The first attempt is over (RETRY recorded) within timeout + grace.
	require.Eventually(t, func() bool {
		st, err := b.store.Get(t.Context(), hung)
		return err == nil && st.State == task.StateRetry
	}, 3*time.Second, 5*time.Millisecond)
	require.Less(t, time.Since(start), time.Second+300*time.Millisecond+700*time.Millisecond)

	st := b.waitFinal(t, hung)
	require.Equal(t, task.StateFailure, st.State)
	require.Equal(t, 2, st.Attempts)
	require.Contains(t, st.Error, "timed out after 1s")
	require.Contains(t, st.Error, "abandoned")
	for _, id := range others {
		o := b.waitFinal(t, id)
		require.Equal(t, task.StateSuccess, o.State)
		require.True(t, o.FinishedAt.Before(*st.FinishedAt), "task %s finished while the hung task held its slot", id)
	}
	dead := b.deadLetters(t)
	require.Len(t, dead, 1)
	require.Equal(t, hung, dead[0].Headers().Get(wire.HeaderID))
	require.Contains(t, dead[0].Headers().Get(wire.HeaderError), "timed out after 1s")
	require.Equal(t, 2.0, counterValue(t, metrics, "flotilla_tasks_abandoned_total"))
	// Both abandoned goroutines return eventually (and leak nothing).
	require.Eventually(t, func() bool { return b.hangsDone.Load() == 2 }, 10*time.Second, 10*time.Millisecond)
}

// counterValue sums the series of counter name in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestLongTaskSendsInProgress(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{ackWait: time.Second})
	cfg := b.cfg()
	cfg.AckWait = time.Second
	b.start(t, cfg)
	// Runs for 3 ack-wait periods: without in-progress acks it would be redelivered.
	id := b.enqueue(t, client.Request{Task: "test.count", Args: json.RawMessage(`{"ms":3000}`)})
	st := b.waitFinal(t, id)
	require.Equal(t, task.StateSuccess, st.State)
	require.Equal(t, 1, st.Attempts)
	v, _ := b.runs.Load(id)
	require.EqualValues(t, 1, v.(*atomic.Int64).Load())
}

// TestKilledWorkerLosesNothing kills a worker abruptly (its connection closed,
// no drain) in the middle of 500 tasks; a second worker finishes all of them.
func TestKilledWorkerLosesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{ackWait: time.Second})
	const n = 500
	reqs := make([]client.Request, n)
	for i := range reqs {
		reqs[i] = client.Request{Task: "test.count", Args: json.RawMessage(`{"ms":10}`), MaxRetries: intp(5)}
	}
	res, errs := b.cl.EnqueueEach(t.Context(), reqs)
	for _, err := range errs {
		require.NoError(t, err)
	}
	cfg := b.cfg()
	cfg.AckWait = time.Second
	stop1, nc1 := b.start(t, cfg)
	require.Eventually(t, func() bool { return countRuns(&b.runs) >= 100 }, 30*time.Second, 5*time.Millisecond)
	nc1.Close() // the kill: no acks, no NAKs, no drain
	stop1()
	b.start(t, cfg)
	for _, r := range res {
		st := b.waitFinal(t, r.ID)
		require.Equal(t, task.StateSuccess, st.State, "task %s", r.ID)
	}
	missing := 0
	for _, r := range res {
		if _, ok := b.runs.Load(r.ID); !ok {
			missing++
		}
	}
	require.Zero(t, missing, "every task ran")
	require.Eventually(t, func() bool { return streamMsgs(t, b.js, wire.StreamTasks) == 0 }, 10*time.Second, 10*time.Millisecond)
}

func countRuns(m *sync.Map) int {
	n := 0
	m.Range(func(_, _ any) bool { n++; return true })
	return n
}

// TestGracefulDrainRunsEachOnce stops a worker (SIGTERM-style) with tasks in
// flight: they finish, buffered ones are NAKed, and a second worker runs the
// rest; every task runs exactly once.
func TestGracefulDrainRunsEachOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	const n = 200
	var ids []string
	for i := 0; i < n; i++ {
		ids = append(ids, b.enqueue(t, client.Request{Task: "test.count", Args: json.RawMessage(`{"ms":100}`)}))
	}
	cfg := b.cfg()
	cfg.Concurrency = 20
	stop1, _ := b.start(t, cfg)
	require.Eventually(t, func() bool { return countRuns(&b.runs) >= 30 }, 30*time.Second, 2*time.Millisecond)
	stop1()
	ranOnFirst := countRuns(&b.runs)
	// Everything the first worker started has finished and been recorded.
	for _, id := range ids {
		if _, ok := b.runs.Load(id); ok {
			st, err := b.store.Get(t.Context(), id)
			require.NoError(t, err)
			require.Equal(t, task.StateSuccess, st.State, "in-flight task %s finished during drain", id)
		}
	}
	b.start(t, cfg)
	for _, id := range ids {
		require.Equal(t, task.StateSuccess, b.waitFinal(t, id).State)
	}
	for _, id := range ids {
		v, ok := b.runs.Load(id)
		require.True(t, ok)
		require.EqualValues(t, 1, v.(*atomic.Int64).Load(), "task %s ran more than once", id)
	}
	require.Less(t, ranOnFirst, n, "the drain left work for the second worker")
}

// TestClusterNodeLoss runs 1,000 tasks on a three-node cluster with replicas
// 3 and stops one node in the middle; all complete.
func TestClusterNodeLoss(t *testing.T) {
	t.Parallel()
	c := jettest.NewCluster(t)
	b := setup(t, setupOpts{url: c.URLs(), replicas: 3, ackWait: 2 * time.Second})
	const n = 1000
	reqs := make([]client.Request, n)
	for i := range reqs {
		reqs[i] = client.Request{Task: "test.count", Args: json.RawMessage(`{"ms":2}`), MaxRetries: intp(10)}
	}
	res, errs := b.cl.EnqueueEach(t.Context(), reqs)
	for _, err := range errs {
		require.NoError(t, err)
	}
	cfg := b.cfg()
	cfg.AckWait = 2 * time.Second
	b.start(t, cfg)
	require.Eventually(t, func() bool { return countRuns(&b.runs) >= n/4 }, 60*time.Second, 5*time.Millisecond)
	// Stop the node that leads TASKS: the hardest node to lose.
	s, err := b.js.Stream(t.Context(), wire.StreamTasks)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	require.NotNil(t, info.Cluster)
	leader := -1
	for i, ns := range c.Servers {
		if ns.Name() == info.Cluster.Leader {
			leader = i
		}
	}
	require.NotEqual(t, -1, leader, "leader %q not found", info.Cluster.Leader)
	c.Stop(leader)
	for _, r := range res {
		ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
		st, err := b.cl.Wait(ctx, r.ID)
		cancel()
		require.NoError(t, err)
		require.Equal(t, task.StateSuccess, st.State)
	}
	require.Equal(t, n, countRuns(&b.runs))
}

// TestPoisonTaskDeadLettered: a task whose deliveries exceed its budget (as
// when it kills its worker every time) is dead-lettered without running.
func TestPoisonTaskDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	id := b.enqueue(t, client.Request{Task: "test.count", MaxRetries: intp(0)})
	cons, err := b.js.Consumer(t.Context(), wire.StreamTasks, wire.ConsumerName("default"))
	require.NoError(t, err)
	// Four deliveries that "crash" (NAK without running): 1 + 0 retries + 3 slack.
	for i := 0; i < 1+worker.PoisonSlack; i++ {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		var got int
		for m := range batch.Messages() {
			got++
			require.NoError(t, m.Nak())
		}
		require.Equal(t, 1, got)
	}
	b.start(t, b.cfg())
	st := b.waitFinal(t, id)
	require.Equal(t, task.StateFailure, st.State)
	require.Contains(t, st.Error, "delivered 5 times")
	_, ran := b.runs.Load(id)
	require.False(t, ran)
}

// TestBufferedTasksKeptAlive: tasks prefetched while every handler is busy
// wait longer than ack_wait; in-progress acks keep them from being
// redelivered, so each still runs exactly once.
func TestBufferedTasksKeptAlive(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{ackWait: 2 * time.Second})
	var ids []string
	for i := 0; i < 6; i++ {
		ids = append(ids, b.enqueue(t, client.Request{Task: "test.count", Args: json.RawMessage(`{"ms":800}`)}))
	}
	cfg := b.cfg()
	cfg.AckWait = 2 * time.Second
	cfg.Concurrency = 1
	cfg.Prefetch = 8
	b.start(t, cfg)
	// A second worker would receive any redelivered task at once.
	b.start(t, cfg)
	for _, id := range ids {
		require.Equal(t, task.StateSuccess, b.waitFinal(t, id).State)
	}
	for _, id := range ids {
		v, _ := b.runs.Load(id)
		require.EqualValues(t, 1, v.(*atomic.Int64).Load(), "task %s ran more than once", id)
	}
}
