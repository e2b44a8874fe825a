package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// Servers, connections, stores and subscriptions are all closed in cleanups.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type bundle struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	rdb    *redis.Client
	prefix string
	store  *results.Store
	client *client.Client
}

type opts struct {
	topology jet.TopologyParams
	cfg      client.Config
	noStore  bool
	queues   []string
}

func setup(t *testing.T, o opts) *bundle {
	t.Helper()
	ns := jettest.Server(t)
	nc, js, err := jet.Connect(t.Context(), ns.ClientURL(), "client-test", "")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	top, err := jet.LoadTopology(o.topology)
	require.NoError(t, err)
	require.NoError(t, jet.ApplyStreams(t.Context(), js, top))
	if o.queues == nil {
		o.queues = []string{task.DefaultQueue}
	}
	require.NoError(t, jet.ApplyQueues(t.Context(), js, top, o.queues))

	b := &bundle{nc: nc, js: js}
	if !o.noStore {
		b.rdb, b.prefix = resultstest.Client(t)
		b.store = results.New(b.rdb, results.Config{Prefix: b.prefix, TTL: time.Hour})
		t.Cleanup(b.store.Close)
	}
	b.client = client.New(nc, js, b.store, o.cfg)
	return b
}

func (b *bundle) streamMsgs(t *testing.T, stream string) uint64 {
	t.Helper()
	s, err := b.js.Stream(t.Context(), stream)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	return info.State.Msgs
}

func (b *bundle) lastMsg(t *testing.T, stream, subject string) (*jetstream.RawStreamMsg, error) {
	t.Helper()
	s, err := b.js.Stream(t.Context(), stream)
	require.NoError(t, err)
	return s.GetLastMsgForSubject(t.Context(), subject)
}

// taskKeys counts the task states recorded under the bundle's prefix.
func (b *bundle) taskKeys(t *testing.T) int {
	t.Helper()
	keys, err := b.rdb.Keys(t.Context(), b.prefix+":task:*").Result()
	require.NoError(t, err)
	return len(keys)
}

func intp(n int) *int { return &n }

func TestValidation(t *testing.T) {
	t.Parallel()
	reg := task.NewRegistry()
	reg.Handle("known.task", func(context.Context, *task.Envelope) (any, error) { return nil, nil })
	b := setup(t, opts{cfg: client.Config{Registry: reg, CheckRegistered: true, MaxArgsBytes: 64}})
	past := time.Now().Add(-time.Minute)

	t.Run("cases", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			req   client.Request
			field string // a FieldError naming this field
			is    error  // or an error matching this sentinel
		}{
			{name: "empty name", req: client.Request{Task: ""}, field: "task"},
			{name: "upper-case name", req: client.Request{Task: "Known.Task"}, field: "task"},
			{name: "name with wildcard", req: client.Request{Task: "known.*"}, field: "task"},
			{name: "name with dash", req: client.Request{Task: "known-task"}, field: "task"},
			{name: "queue with dot", req: client.Request{Task: "known.task", Queue: "a.b"}, field: "queue"},
			{name: "queue with wildcard", req: client.Request{Task: "known.task", Queue: ">"}, field: "queue"},
			{name: "args array", req: client.Request{Task: "known.task", Args: json.RawMessage(`[1]`)}, field: "args"},
			{name: "args string", req: client.Request{Task: "known.task", Args: json.RawMessage(`"x"`)}, field: "args"},
			{name: "args not JSON", req: client.Request{Task: "known.task", Args: json.RawMessage(`{"a":`)}, field: "args"},
			{name: "args over the limit", req: client.Request{Task: "known.task", Args: json.RawMessage(`{"a":"` + strings.Repeat("x", 64) + `"}`)}, is: client.ErrTooLarge},
			{name: "countdown and eta", req: client.Request{Task: "known.task", Countdown: time.Second, ETA: time.Now().Add(time.Hour)}, field: "eta"},
			{name: "negative countdown", req: client.Request{Task: "known.task", Countdown: -time.Second}, field: "countdown"},
			{name: "expires in the past", req: client.Request{Task: "known.task", Expires: past}, field: "expires"},
			{name: "expires before eta", req: client.Request{Task: "known.task", ETA: time.Now().Add(time.Hour), Expires: time.Now().Add(time.Minute)}, field: "expires"},
			{name: "expires before countdown", req: client.Request{Task: "known.task", Countdown: time.Hour, Expires: time.Now().Add(time.Minute)}, field: "expires"},
			{name: "negative max retries", req: client.Request{Task: "known.task", MaxRetries: intp(-1)}, field: "max_retries"},
			{name: "negative timeout", req: client.Request{Task: "known.task", Timeout: -time.Second}, field: "timeout"},
			{name: "idempotency key too long", req: client.Request{Task: "known.task", IdempotencyKey: strings.Repeat("k", 257)}, field: "idempotency_key"},
			{name: "idempotency key with newline", req: client.Request{Task: "known.task", IdempotencyKey: "a\r\nNats-Msg-Id: b"}, field: "idempotency_key"},
			{name: "unregistered task", req: client.Request{Task: "unknown.task"}, is: client.ErrUnknownTask},
			{name: "max retries over the cap", req: client.Request{Task: "known.task", MaxRetries: intp(99999999999)}, field: "max_retries"},
			{name: "timeout over the cap", req: client.Request{Task: "known.task", Timeout: 2562047 * time.Hour}, field: "timeout"},
			{name: "countdown over the cap", req: client.Request{Task: "known.task", Countdown: 2562047 * time.Hour}, field: "countdown"},
			{name: "eta far ahead", req: client.Request{Task: "known.task", ETA: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)}, field: "eta"},
			{name: "expires far ahead", req: client.Request{Task: "known.task", Expires: time.Now().Add(31 * 24 * time.Hour)}, field: "expires"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				for _, enqueue := range []func() error{
					func() error { _, err := b.client.Enqueue(t.Context(), tc.req); return err },
					func() error { _, errs := b.client.EnqueueEach(t.Context(), []client.Request{tc.req}); return errs[0] },
				} {
					err := enqueue()
					require.Error(t, err)
					if tc.field != "" {
						var fe *task.FieldError
						require.ErrorAs(t, err, &fe)
						require.Equal(t, tc.field, fe.Field, err.Error())
						require.ErrorIs(t, err, client.ErrInvalid)
						require.True(t, strings.HasPrefix(err.Error(), tc.field+": "), err.Error())
						continue
					}
					require.ErrorIs(t, err, tc.is)
					require.NotErrorIs(t, err, client.ErrInvalid)
				}
			})
		}
	})
	// Nothing was published or recorded.
	require.Zero(t, b.streamMsgs(t, wire.StreamTasks))
	require.Zero(t, b.streamMsgs(t, wire.StreamDelayed))
	require.Zero(t, b.taskKeys(t))
}

// TestUnknownQueue: with Queues set, a queue that no consumer serves and
// the configuration does not declare is refused; a declared one, or one
// with a consumer, is not.
func TestUnknownQueue(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{cfg: client.Config{Queues: []string{"declared"}}, queues: []string{"default", "served"}})
	for _, q := range []string{"default", "served", "declared"} {
		_, err := b.client.Enqueue(t.Context(), client.Request{Task: "a.b", Queue: q})
		require.NoError(t, err, q)
	}
	_, err := b.client.Enqueue(t.Context(), client.Request{Task: "a.b", Queue: "nobody"})
	require.ErrorIs(t, err, client.ErrUnknownQueue)
	require.ErrorContains(t, err, "flotilla streams apply --queues nobody")
	require.EqualValues(t, 3, b.streamMsgs(t, wire.StreamTasks))
}

func TestUnknownTaskWithoutCheck(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{cfg: client.Config{Registry: task.NewRegistry()}})
	res, err := b.client.Enqueue(t.Context(), client.Request{Task: "not.registered"})
	require.NoError(t, err)
	require.NotEmpty(t, res.ID)
	require.EqualValues(t, 1, b.streamMsgs(t, wire.StreamTasks))
}

func TestEnqueue(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{cfg: client.Config{Events: wire.EventsAll}})
	sent, err := b.nc.SubscribeSync("events.sent.>")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sent.Unsubscribe() })
	require.NoError(t, b.nc.Flush())

	expires := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	before := time.Now()
	res, err := b.client.Enqueue(t.Context(), client.Request{
		Task: "email.send", Args: json.RawMessage(`{"to":"ops@example.com"}`),
		Expires: expires, MaxRetries: intp(2), Timeout: 30 * time.Second,
		Origin: "cli", Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	})
	after := time.Now()
	require.NoError(t, err)
	require.Len(t, res.ID, 26, "a ULID")
	require.Equal(t, task.StatePending, res.State)
	require.False(t, res.Duplicate)

	// PENDING in Redis.
	st, err := b.client.Get(t.Context(), res.ID)
	require.NoError(t, err)
	require.Equal(t, res.ID, st.ID)
	require.Equal(t, "email.send", st.Task)
	require.Equal(t, task.DefaultQueue, st.Queue)
	require.Equal(t, task.StatePending, st.State)
	require.NotNil(t, st.EnqueuedAt)
	require.WithinRange(t, *st.EnqueuedAt, before.Add(-time.Millisecond), after)
	ttl, err := b.rdb.TTL(t.Context(), b.store.Key(res.ID)).Result()
	require.NoError(t, err)
	require.Positive(t, ttl)

	// The message in TASKS.
	require.EqualValues(t, 1, b.streamMsgs(t, wire.StreamTasks))
	raw, err := b.lastMsg(t, wire.StreamTasks, wire.TaskSubject(task.DefaultQueue, "email.send"))
	require.NoError(t, err)
	h := raw.Header
	require.Equal(t, res.ID, h.Get(wire.HeaderMsgID))
	require.Equal(t, res.ID, h.Get(wire.HeaderID))
	require.Equal(t, "email.send", h.Get(wire.HeaderTask))
	require.Equal(t, expires.Format(time.RFC3339Nano), h.Get(wire.HeaderExpires))
	require.Equal(t, "2", h.Get(wire.HeaderMaxRetries))
	require.Equal(t, "30s", h.Get(wire.HeaderTimeout))
	require.Equal(t, "cli", h.Get(wire.HeaderOrigin))
	require.Empty(t, h.Get(wire.HeaderQueue), "the subject names the queue")
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", h.Get(wire.HeaderTraceparent))
	require.Empty(t, h.Get(wire.HeaderNotify))
	require.JSONEq(t, `{"to":"ops@example.com"}`, string(raw.Data))

	env, err := wire.DecodeTask(raw.Subject, raw.Header, raw.Data)
	require.NoError(t, err)
	want := &task.Envelope{
		ID: res.ID, Name: "email.send", Queue: task.DefaultQueue, Args: json.RawMessage(`{"to":"ops@example.com"}`),
		MaxRetries: 2, Timeout: 30 * time.Second, EnqueuedAt: *st.EnqueuedAt, Expires: expires,
		Origin: "cli", Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Fatalf("envelope (-want +got):\n%s", diff)
	}

	// The "sent" event.
	ev, err := sent.NextMsg(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, wire.EventSubject(wire.EventSent, task.DefaultQueue, "email.send"), ev.Subject)
	var body map[string]any
	require.NoError(t, json.Unmarshal(ev.Data, &body))
	require.Equal(t, res.ID, body["id"])
}

func TestEnqueueDefaults(t *testing.T) {
	t.Parallel()
	reg := task.NewRegistry()
	noop := func(context.Context, *task.Envelope) (any, error) { return nil, nil }
	reg.Handle("report.build", noop, task.WithQueue("reports"))
	reg.Handle("metrics.push", noop, task.WithoutResult())
	b := setup(t, opts{cfg: client.Config{Registry: reg, CheckRegistered: true}, queues: []string{"default", "reports"}})

	// The registered queue is the default queue of the task.
	res, err := b.client.Enqueue(t.Context(), client.Request{Task: "report.build"})
	require.NoError(t, err)
	raw, err := b.lastMsg(t, wire.StreamTasks, wire.TaskSubject("reports", "report.build"))
	require.NoError(t, err)
	require.Equal(t, res.ID, raw.Header.Get(wire.HeaderID))
	require.JSONEq(t, `{}`, string(raw.Data), "no args go out as an empty object")
	require.Empty(t, raw.Header.Get(wire.HeaderMaxRetries), "no override: the worker's default applies")
	st, err := b.client.Get(t.Context(), res.ID)
	require.NoError(t, err)
	require.Equal(t, "reports", st.Queue)

	// An explicit queue wins.
	res, err = b.client.Enqueue(t.Context(), client.Request{Task: "report.build", Queue: "default"})
	require.NoError(t, err)
	raw, err = b.lastMsg(t, wire.StreamTasks, wire.TaskSubject("default", "report.build"))
	require.NoError(t, err)
	require.Equal(t, res.ID, raw.Header.Get(wire.HeaderID))

	// A task without results records nothing.
	res, err = b.client.Enqueue(t.Context(), client.Request{Task: "metrics.push"})
	require.NoError(t, err)
	_, err = b.client.Get(t.Context(), res.ID)
	require.ErrorIs(t, err, results.ErrNotFound)
	_, err = b.lastMsg(t, wire.StreamTasks, wire.TaskSubject("default", "metrics.push"))
	require.NoError(t, err)
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		noStore bool
	}{
		{name: "results on: Redis binds the key"},
		{name: "results off: the server deduplicates", noStore: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, opts{noStore: tc.noStore})
			req := client.Request{Task: "order.charge", Args: json.RawMessage(`{"order":42}`), IdempotencyKey: "charge-42"}
			first, err := b.client.Enqueue(t.Context(), req)
			require.NoError(t, err)
			require.False(t, first.Duplicate)

			for range 3 {
				again, err := b.client.Enqueue(t.Context(), req)
				require.NoError(t, err)
				require.True(t, again.Duplicate)
				require.Equal(t, task.StatePending, again.State)
				if !tc.noStore {
					require.Equal(t, first.ID, again.ID, "the first task's id")
				}
			}
			require.EqualValues(t, 1, b.streamMsgs(t, wire.StreamTasks))
			raw, err := b.lastMsg(t, wire.StreamTasks, wire.TaskSubject(task.DefaultQueue, "order.charge"))
			require.NoError(t, err)
			require.Equal(t, "charge-42", raw.Header.Get(wire.HeaderMsgID))
			require.Equal(t, first.ID, raw.Header.Get(wire.HeaderID))
			if !tc.noStore {
				require.Equal(t, 1, b.taskKeys(t), "duplicates leave no state behind")
			}
		})
	}
}

func TestIdempotencyKeyConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	const n = 20
	res := make([]client.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res[i], errs[i] = b.client.Enqueue(t.Context(), client.Request{Task: "order.charge", IdempotencyKey: "same"})
		})
	}
	wg.Wait()
	dups := 0
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, res[0].ID, res[i].ID)
		if res[i].Duplicate {
			dups++
		}
	}
	require.Equal(t, n-1, dups)
	require.EqualValues(t, 1, b.streamMsgs(t, wire.StreamTasks))
}

func TestQueueFull(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{topology: jet.TopologyParams{TaskMaxMsgs: 5}})
	var ids []string
	for i := range 5 {
		res, err := b.client.Enqueue(t.Context(), client.Request{Task: "sys.ping", Args: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		require.NoError(t, err, "enqueue %d", i)
		ids = append(ids, res.ID)
	}

	_, err := b.client.Enqueue(t.Context(), client.Request{Task: "sys.ping", IdempotencyKey: "sixth"})
	require.ErrorIs(t, err, client.ErrQueueFull)
	require.Contains(t, err.Error(), task.DefaultQueue, "the error names the queue")

	// Nothing was dropped to make room, and the refused task left nothing behind.
	require.EqualValues(t, 5, b.streamMsgs(t, wire.StreamTasks))
	s, err := b.js.Stream(t.Context(), wire.StreamTasks)
	require.NoError(t, err)
	for i, id := range ids {
		m, err := s.GetMsg(t.Context(), uint64(i+1))
		require.NoError(t, err)
		require.Equal(t, id, m.Header.Get(wire.HeaderID))
	}
	require.Equal(t, 5, b.taskKeys(t))
	bound, err := b.store.ClaimIdempotencyKey(t.Context(), "sixth", "other", time.Minute)
	require.NoError(t, err)
	require.Equal(t, "other", bound, "the refused task's idempotency key was released")

	// EnqueueEach reports the same error per request.
	_, errs := b.client.EnqueueEach(t.Context(), []client.Request{{Task: "sys.ping"}, {Task: "sys.ping"}})
	for _, err := range errs {
		require.ErrorIs(t, err, client.ErrQueueFull)
	}
	require.EqualValues(t, 5, b.streamMsgs(t, wire.StreamTasks))
	require.Equal(t, 5, b.taskKeys(t))
}

// TestServerSizeLimits: args within the client's own limit but over what
// the server takes are ErrTooLarge too, and leave nothing behind.
func TestServerSizeLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{cfg: client.Config{MaxArgsBytes: 64 << 20}})
	for _, tc := range []struct {
		name string
		size int
		msg  string
	}{
		// jettest's max_payload is 8 MiB: refused before publishing.
		{name: "over max_payload", size: 8 << 20, msg: "max_payload"},
		// TASKS' max_msg_size is 2 MiB: refused by the stream.
		{name: "over the stream's max_msg_size", size: 3 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := json.RawMessage(`{"blob":"` + strings.Repeat("x", tc.size) + `"}`)
			for _, enqueue := range []func() error{
				func() error {
					_, err := b.client.Enqueue(t.Context(), client.Request{Task: "big.task", Args: args})
					return err
				},
				func() error {
					_, errs := b.client.EnqueueEach(t.Context(), []client.Request{{Task: "big.task", Args: args}})
					return errs[0]
				},
			} {
				err := enqueue()
				require.ErrorIs(t, err, client.ErrTooLarge)
				require.Contains(t, err.Error(), tc.msg)
			}
		})
	}
	require.Zero(t, b.streamMsgs(t, wire.StreamTasks))
	require.Zero(t, b.taskKeys(t))
}

func TestDelayed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		req  func() client.Request
	}{
		{"countdown", func() client.Request { return client.Request{Task: "email.send", Countdown: time.Second} }},
		{"eta", func() client.Request { return client.Request{Task: "email.send", ETA: time.Now().Add(time.Second)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, opts{})
			req := tc.req()
			req.Args = json.RawMessage(`{"to":"x"}`)
			res, err := b.client.Enqueue(t.Context(), req)
			require.NoError(t, err)
			st, err := b.client.Get(t.Context(), res.ID)
			require.NoError(t, err)
			require.Equal(t, task.StatePending, st.State)

			// The schedule waits in DELAYED; nothing is on TASKS yet.
			at, err := b.lastMsg(t, wire.StreamDelayed, wire.DelayedSubject("default", res.ID))
			if err == nil {
				require.Equal(t, res.ID, at.Header.Get(wire.HeaderID))
				require.Equal(t, wire.DueSubject("default", res.ID), at.Header.Get(jetstream.ScheduleTargetHeader))
				require.True(t, strings.HasPrefix(at.Header.Get(jetstream.ScheduleHeader), "@at "), at.Header.Get(jetstream.ScheduleHeader))
			} else {
				// Only acceptable if it already fired.
				require.ErrorIs(t, err, jetstream.ErrMsgNotFound)
			}
			require.Zero(t, b.streamMsgs(t, wire.StreamTasks))

			// When due, the server puts it on delayed.due.<id> with the task's
			// headers, and removes the schedule.
			var due *jetstream.RawStreamMsg
			require.Eventually(t, func() bool {
				due, err = b.lastMsg(t, wire.StreamDelayed, wire.DueSubject("default", res.ID))
				return err == nil
			}, 5*time.Second, 20*time.Millisecond)
			require.Equal(t, task.DefaultQueue, due.Header.Get(wire.HeaderQueue), "off tasks.<queue>.<task>, the queue travels in a header")
			env, err := wire.DecodeTask(due.Subject, due.Header, due.Data)
			require.NoError(t, err)
			require.Equal(t, res.ID, env.ID)
			require.Equal(t, "email.send", env.Name)
			require.Equal(t, task.DefaultQueue, env.Queue)
			require.JSONEq(t, `{"to":"x"}`, string(env.Args))
			require.Eventually(t, func() bool {
				_, err := b.lastMsg(t, wire.StreamDelayed, wire.DelayedSubject("default", res.ID))
				return errors.Is(err, jetstream.ErrMsgNotFound)
			}, 5*time.Second, 20*time.Millisecond)
			require.Zero(t, b.streamMsgs(t, wire.StreamTasks), "moving it into TASKS is the worker's job")
		})
	}
}

func TestETAInThePastRunsNow(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	res, err := b.client.Enqueue(t.Context(), client.Request{Task: "email.send", ETA: time.Now().Add(-time.Hour)})
	require.NoError(t, err)
	raw, err := b.lastMsg(t, wire.StreamTasks, wire.TaskSubject(task.DefaultQueue, "email.send"))
	require.NoError(t, err)
	require.Equal(t, res.ID, raw.Header.Get(wire.HeaderID))
	require.Zero(t, b.streamMsgs(t, wire.StreamDelayed))
}

func TestEnqueueMany(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	const n = 1000
	rs := make([]client.Request, n)
	for i := range rs {
		rs[i] = client.Request{Task: "bench.noop", Args: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
	}
	out, errs := b.client.EnqueueEach(t.Context(), rs)
	require.Len(t, out, n)
	require.Len(t, errs, n)
	seen := map[string]bool{}
	for i := range n {
		require.NoError(t, errs[i], "request %d", i)
		require.Equal(t, task.StatePending, out[i].State)
		require.False(t, out[i].Duplicate)
		require.False(t, seen[out[i].ID], "ids are unique")
		seen[out[i].ID] = true
	}
	require.EqualValues(t, n, b.streamMsgs(t, wire.StreamTasks))
	require.Equal(t, n, b.taskKeys(t))
	for _, i := range []int{0, 1, n / 2, n - 1} {
		st, err := b.client.Get(t.Context(), out[i].ID)
		require.NoError(t, err)
		require.Equal(t, task.StatePending, st.State)
		require.Equal(t, "bench.noop", st.Task)
	}
}

func TestEnqueueManyMixed(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	out, errs := b.client.EnqueueEach(t.Context(), []client.Request{
		{Task: "a.ok"},
		{Task: "Bad"},
		{Task: "a.ok", IdempotencyKey: "k1"},
		{Task: "a.ok", IdempotencyKey: "k1"}, // deduplicated by the server
		{Task: "a.ok", Countdown: time.Hour},
	})
	require.NoError(t, errs[0])
	var fe *task.FieldError
	require.ErrorAs(t, errs[1], &fe)
	require.Equal(t, "task", fe.Field)
	require.Empty(t, out[1].ID)
	require.NoError(t, errs[2])
	require.NoError(t, errs[3])
	require.False(t, out[2].Duplicate)
	require.True(t, out[3].Duplicate)
	require.NoError(t, errs[4])

	require.EqualValues(t, 2, b.streamMsgs(t, wire.StreamTasks))
	require.EqualValues(t, 1, b.streamMsgs(t, wire.StreamDelayed))
	_, err := b.client.Get(t.Context(), out[3].ID)
	require.ErrorIs(t, err, results.ErrNotFound, "the duplicate's PENDING state is undone")
	require.Equal(t, 3, b.taskKeys(t))
}

func TestGet(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	_, err := b.client.Get(t.Context(), "01UNKNOWN")
	require.ErrorIs(t, err, results.ErrNotFound)

	off := setup(t, opts{noStore: true})
	_, err = off.client.Get(t.Context(), "01UNKNOWN")
	require.ErrorContains(t, err, "results are turned off")
}

func TestWait(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	res, err := b.client.Enqueue(t.Context(), client.Request{Task: "sys.ping"})
	require.NoError(t, err)

	type out struct {
		st  results.State
		err error
	}
	done := make(chan out, 1)
	go func() {
		st, err := b.client.Wait(t.Context(), res.ID)
		done <- out{st, err}
	}()
	require.NoError(t, b.store.Set(t.Context(), res.ID, results.Update{State: task.StateStarted}))
	require.NoError(t, b.store.Set(t.Context(), res.ID, results.Update{State: task.StateSuccess, Result: json.RawMessage(`"pong"`)}))
	select {
	case o := <-done:
		require.NoError(t, o.err)
		require.Equal(t, task.StateSuccess, o.st.State)
		require.Equal(t, `"pong"`, string(o.st.Result))
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the task succeeded")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	other, err := b.client.Enqueue(t.Context(), client.Request{Task: "sys.ping"})
	require.NoError(t, err)
	_, err = b.client.Wait(ctx, other.ID)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, other.ID, "the error names the task")
}

// serveNotify stands in for a worker's reply path over real NATS: it pulls
// tasks from q-default, records SUCCESS, acks, and publishes the final state
// to the task's Flotilla-Notify subject, as the worker does.
func serveNotify(t *testing.T, b *bundle) {
	t.Helper()
	cons, err := b.js.Consumer(t.Context(), wire.StreamTasks, wire.ConsumerName(task.DefaultQueue))
	require.NoError(t, err)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		env, err := wire.DecodeTask(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			_ = m.Term()
			return
		}
		now := time.Now()
		st := results.State{ID: env.ID, Task: env.Name, Queue: env.Queue, State: task.StateSuccess, Result: env.Args, FinishedAt: &now}
		_ = b.store.Set(context.Background(), env.ID, results.Update{State: st.State, Result: st.Result, FinishedAt: now})
		_ = m.Ack()
		if to := m.Headers().Get(wire.HeaderNotify); to != "" {
			data, _ := json.Marshal(st)
			_ = b.nc.Publish(to, data)
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		cc.Drain()
		<-cc.Closed()
	})
}

func TestEnqueueAndWait(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	serveNotify(t, b)

	var wg sync.WaitGroup
	const n = 20
	sts := make([]results.State, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			sts[i], errs[i] = b.client.EnqueueAndWait(ctx, client.Request{Task: "sys.echo", Args: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, task.StateSuccess, sts[i].State)
		require.JSONEq(t, fmt.Sprintf(`{"i":%d}`, i), string(sts[i].Result), "each caller gets its own task's result")
	}

	// A duplicate waits on the first task's recorded state.
	first, err := b.client.EnqueueAndWait(t.Context(), client.Request{Task: "sys.echo", IdempotencyKey: "once", Args: json.RawMessage(`{"n":1}`)})
	require.NoError(t, err)
	again, err := b.client.EnqueueAndWait(t.Context(), client.Request{Task: "sys.echo", IdempotencyKey: "once", Args: json.RawMessage(`{"n":2}`)})
	require.NoError(t, err)
	require.Equal(t, first.ID, again.ID)
	require.JSONEq(t, `{"n":1}`, string(again.Result))
}

func TestEnqueueAndWaitTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{}) // no worker
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	st, err := b.client.EnqueueAndWait(ctx, client.Request{Task: "sys.ping"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotEmpty(t, st.ID, "the error still names the task")
	require.Equal(t, task.StatePending, st.State)
}

// TestRetryWithID: an enqueue repeated with the id of the first (what a
// client does after publish_unconfirmed) stores the task once and never
// resets a state that moved on.
func TestRetryWithID(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	r := client.Request{ID: "order-42-charge", Task: "order.charge"}
	first, err := b.client.Enqueue(t.Context(), r)
	require.NoError(t, err)
	require.Equal(t, "order-42-charge", first.ID)
	require.False(t, first.Duplicate)
	require.NoError(t, b.store.Set(t.Context(), first.ID, results.Update{State: task.StateSuccess}))

	again, err := b.client.Enqueue(t.Context(), r)
	require.NoError(t, err)
	require.Equal(t, first.ID, again.ID)
	require.True(t, again.Duplicate)
	require.EqualValues(t, 1, b.streamMsgs(t, wire.StreamTasks))
	st, err := b.store.Get(t.Context(), first.ID)
	require.NoError(t, err)
	require.Equal(t, task.StateSuccess, st.State, "a retry does not reset the state")

	for _, bad := range []string{"a.b", "a b", "x>", strings.Repeat("a", 65)} {
		_, err := b.client.Enqueue(t.Context(), client.Request{ID: bad, Task: "order.charge"})
		var fe *task.FieldError
		require.ErrorAs(t, err, &fe, bad)
		require.Equal(t, "id", fe.Field)
	}
}

// TestRetryWithKeyAfterUnconfirmed: a key whose task's publish went
// unconfirmed (and never reached the stream) is published again by the
// retry under the same id — once.
func TestRetryWithKeyAfterUnconfirmed(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	// The state an unconfirmed first enqueue leaves: key bound, PENDING,
	// marked — but nothing in the stream.
	const id = "01JUNCONFIRMED00000000000A"
	bound, err := b.store.ClaimIdempotencyKey(t.Context(), "k-1", id, time.Minute)
	require.NoError(t, err)
	require.Equal(t, id, bound)
	require.NoError(t, b.store.Set(t.Context(), id, results.Update{Task: "order.charge", Queue: "default", State: task.StatePending}))
	require.NoError(t, b.store.MarkUnconfirmed(t.Context(), id))

	for range 3 {
		res, err := b.client.Enqueue(t.Context(), client.Request{Task: "order.charge", IdempotencyKey: "k-1"})
		require.NoError(t, err)
		require.Equal(t, id, res.ID)
		require.True(t, res.Duplicate)
	}
	require.EqualValues(t, 1, b.streamMsgs(t, wire.StreamTasks), "published again once")
	m, err := b.lastMsg(t, wire.StreamTasks, wire.TaskSubject("default", "order.charge"))
	require.NoError(t, err)
	require.Equal(t, id, m.Header.Get(wire.HeaderID))
	require.Equal(t, "k-1", m.Header.Get(wire.HeaderMsgID))
	st, err := b.store.Get(t.Context(), id)
	require.NoError(t, err)
	require.False(t, st.Unconfirmed)
}
