package outbox_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/outbox"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// wait bounds every wait of these tests: generous, they never rely on
// timing for what they check.
const wait = 30 * time.Second

type bundle struct {
	natsURL string
	nc      *nats.Conn
	js      jetstream.JetStream
	top     jet.Topology
	dbURL   string
	pool    *pgxpool.Pool
	rdb     *redis.Client
	prefix  string
	results *results.Store
	client  *client.Client
}

func setup(t testing.TB) *bundle {
	t.Helper()
	b := &bundle{natsURL: jettest.Server(t).ClientURL()}
	var err error
	b.nc, b.js, err = jet.Connect(t.Context(), b.natsURL, "outbox-test", "")
	require.NoError(t, err)
	t.Cleanup(b.nc.Close)
	b.top, err = jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)
	// Streams only: no queue consumer takes the tasks, so TASKS keeps
	// every message the relay stored.
	require.NoError(t, jet.ApplyStreams(t.Context(), b.js, b.top))
	b.dbURL = storetest.SchemaURL(t)
	b.pool, err = pgxpool.New(t.Context(), b.dbURL)
	require.NoError(t, err)
	t.Cleanup(b.pool.Close)
	b.rdb, b.prefix = resultstest.Client(t)
	b.results = results.New(b.rdb, results.Config{Prefix: b.prefix, TTL: time.Hour})
	t.Cleanup(b.results.Close)
	b.client = client.New(b.nc, b.js, b.results, client.Config{Events: wire.EventsAll})
	return b
}

func (b *bundle) relay(t testing.TB, cfg outbox.Config) *outbox.Relay {
	t.Helper()
	return b.relayOn(t, b.pool, cfg)
}

func (b *bundle) relayOn(t testing.TB, pool *pgxpool.Pool, cfg outbox.Config) *outbox.Relay {
	t.Helper()
	return outbox.New(cfg, pool, b.js, b.client, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
}

// run runs r until the test ends and checks that it stopped cleanly.
func run(t testing.TB, r *outbox.Relay) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(wait):
			t.Error("Run did not return after cancel")
		}
	})
}

// insert writes n tasks into the outbox in tx, exactly as
// flotilla.Client.EnqueueTx does, and returns their ids.
func (b *bundle) insert(t *testing.T, tx pgx.Tx, n int, r client.Request) []string {
	t.Helper()
	ids, err := b.insertErr(t.Context(), tx, n, r)
	require.NoError(t, err)
	return ids
}

func (b *bundle) insertErr(ctx context.Context, tx pgx.Tx, n int, r client.Request) ([]string, error) {
	if r.Task == "" {
		r.Task = "test.work"
	}
	ids := make([]string, n)
	for i := range n {
		r.Args = fmt.Appendf(nil, `{"i":%d}`, i)
		p, err := b.client.Prepare(r)
		if err != nil {
			return nil, err
		}
		m := b.client.StoredMsg(p)
		ids[i] = m.Header.Get(wire.HeaderID)
		err = store.OutboxInsert(ctx, tx, store.OutboxMsg{TaskID: ids[i], Subject: m.Subject, Header: m.Header, Data: m.Data})
		if err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// insertManyErr writes n tasks with one statement, as
// flotilla.Client.EnqueueManyTx does.
func (b *bundle) insertManyErr(ctx context.Context, tx pgx.Tx, n int) ([]string, error) {
	ids := make([]string, n)
	ms := make([]store.OutboxMsg, n)
	for i := range n {
		p, err := b.client.Prepare(client.Request{Task: "test.work", Args: fmt.Appendf(nil, `{"i":%d}`, i)})
		if err != nil {
			return nil, err
		}
		m := b.client.StoredMsg(p)
		ids[i] = m.Header.Get(wire.HeaderID)
		ms[i] = store.OutboxMsg{TaskID: ids[i], Subject: m.Subject, Header: m.Header, Data: m.Data}
	}
	return ids, store.OutboxInsertMany(ctx, tx, ms)
}

// commit inserts n tasks in one committed transaction.
func (b *bundle) commit(t *testing.T, n int) []string {
	t.Helper()
	ids, err := b.commitErr(t.Context(), n)
	require.NoError(t, err)
	return ids
}

func (b *bundle) commitErr(ctx context.Context, n int) ([]string, error) {
	var ids []string
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		var err error
		ids, err = b.insertErr(ctx, tx, n, client.Request{})
		return err
	})
	return ids, err
}

func (b *bundle) outboxRows(t testing.TB) int64 {
	t.Helper()
	n, _, err := store.New(b.pool).OutboxStats(t.Context())
	require.NoError(t, err)
	return n
}

func (b *bundle) streamMsgs(t testing.TB, stream string) uint64 {
	t.Helper()
	s, err := b.js.Stream(t.Context(), stream)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	return info.State.Msgs
}

// stored reads every message of stream (no worker consumes them in these
// tests) and returns how often each Nats-Msg-Id occurs, checking that it
// equals the message's task id. TASKS is a work queue, which allows no
// ordered (ack-less) consumer: an ephemeral pull consumer reads it without
// acking, and is deleted after.
func (b *bundle) stored(t *testing.T, stream string) map[string]int {
	t.Helper()
	ctx := t.Context()
	n := int(b.streamMsgs(t, stream))
	cons, err := b.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour, MaxAckPending: -1, InactiveThreshold: time.Minute})
	require.NoError(t, err)
	defer func() { _ = b.js.DeleteConsumer(context.WithoutCancel(ctx), stream, cons.CachedInfo().Name) }()
	got := make(map[string]int, n)
	for read := 0; read < n; {
		batch, err := cons.Fetch(min(1000, n-read), jetstream.FetchMaxWait(wait))
		require.NoError(t, err)
		for m := range batch.Messages() {
			h := m.Headers()
			require.Equal(t, h.Get(wire.HeaderID), h.Get(wire.HeaderMsgID), "Nats-Msg-Id is the task id")
			got[h.Get(wire.HeaderMsgID)]++
			read++
		}
		require.NoError(t, batch.Error())
	}
	return got
}

// requireOnce checks that stream holds each of ids exactly once and
// nothing else.
func (b *bundle) requireOnce(t *testing.T, stream string, ids []string) {
	t.Helper()
	got := b.stored(t, stream)
	require.Len(t, got, len(ids), "distinct tasks in %s", stream)
	for _, id := range ids {
		require.Equal(t, 1, got[id], "task %s in %s", id, stream)
	}
}

// sentEvents counts the "sent" events of the tests' client connection.
func (b *bundle) sentEvents(t *testing.T) func() map[string]int {
	t.Helper()
	sub, err := b.nc.SubscribeSync("events.sent.>")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, b.nc.Flush())
	got := map[string]int{}
	return func() map[string]int {
		// The events go out on this connection: after a flush every one
		// published before it has come back.
		require.NoError(t, b.nc.Flush())
		for {
			m, err := sub.NextMsg(0)
			if errors.Is(err, nats.ErrTimeout) {
				return got
			}
			require.NoError(t, err)
			ev, err := wire.DecodeEvent(m.Data)
			require.NoError(t, err)
			got[ev.ID]++
		}
	}
}

func TestRollbackPublishesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	b.insert(t, tx, 3, client.Request{})
	require.NoError(t, tx.Rollback(ctx))

	n, err := b.relay(t, outbox.Config{}).Drain(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Zero(t, b.streamMsgs(t, wire.StreamTasks))
	require.Zero(t, b.outboxRows(t))
}

func TestCommitPublishesOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	sent := b.sentEvents(t)
	// No fallback poll: after the first row, only NOTIFY wakes the relay.
	run(t, b.relay(t, outbox.Config{Poll: time.Hour}))

	first := b.commit(t, 1)
	require.Eventually(t, func() bool { return b.streamMsgs(t, wire.StreamTasks) == 1 }, wait, 5*time.Millisecond)
	second := b.commit(t, 2)
	require.Eventually(t, func() bool { return b.streamMsgs(t, wire.StreamTasks) == 3 }, wait, 5*time.Millisecond,
		"woken by the commit's NOTIFY")
	require.Eventually(t, func() bool { return b.outboxRows(t) == 0 }, wait, 5*time.Millisecond)
	ids := append(first, second...)
	b.requireOnce(t, wire.StreamTasks, ids)

	for _, id := range ids {
		st, err := b.results.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, task.StatePending, st.State)
		require.Equal(t, "test.work", st.Task)
		require.Equal(t, task.DefaultQueue, st.Queue)
		require.NotNil(t, st.EnqueuedAt)
	}
	// Draining again publishes nothing more.
	n, err := b.relay(t, outbox.Config{}).Drain(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.EqualValues(t, 3, b.streamMsgs(t, wire.StreamTasks))
	got := sent()
	require.Len(t, got, 3)
	for _, id := range ids {
		require.Equal(t, 1, got[id], "one sent event for %s", id)
	}
}

func TestDelayedAndIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	sent := b.sentEvents(t)
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	delayed := b.insert(t, tx, 1, client.Request{Countdown: time.Hour})
	keyed := b.insert(t, tx, 2, client.Request{IdempotencyKey: "order-42"})
	require.NoError(t, tx.Commit(ctx))

	n, err := b.relay(t, outbox.Config{}).Drain(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	// The delayed task waits in DELAYED as a server schedule, as after
	// Enqueue; the second task with the key was dropped by the server.
	require.EqualValues(t, 1, b.streamMsgs(t, wire.StreamDelayed))
	s, err := b.js.Stream(ctx, wire.StreamDelayed)
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(ctx, wire.DelayedSubject(task.DefaultQueue, delayed[0]))
	require.NoError(t, err)
	require.Equal(t, delayed[0], m.Header.Get(wire.HeaderMsgID))
	require.NotEmpty(t, m.Header.Get(jetstream.ScheduleHeader))
	require.Equal(t, wire.DueSubject(task.DefaultQueue, delayed[0]), m.Header.Get(jetstream.ScheduleTargetHeader))

	require.EqualValues(t, 1, b.streamMsgs(t, wire.StreamTasks))
	s, err = b.js.Stream(ctx, wire.StreamTasks)
	require.NoError(t, err)
	m, err = s.GetMsg(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, "order-42", m.Header.Get(wire.HeaderMsgID))
	require.Equal(t, keyed[0], m.Header.Get(wire.HeaderID))

	st, err := b.results.Get(ctx, delayed[0])
	require.NoError(t, err)
	require.Equal(t, task.StatePending, st.State)
	_, err = b.results.Get(ctx, keyed[1])
	require.ErrorIs(t, err, results.ErrNotFound, "the dropped duplicate has no state")
	got := sent()
	require.Equal(t, map[string]int{delayed[0]: 1, keyed[0]: 1}, got)
	require.Zero(t, b.outboxRows(t))
}

// A relay whose PostgreSQL connection dies after it published and before
// it deleted: its transaction aborts, the rows come back, and the next
// relay's publishes are dropped by the server's deduplication.
func TestRelayConnectionKilledAfterPublish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	sent := b.sentEvents(t)
	ids := b.commit(t, 50)

	// The first relay has a pool of its own, named so that the hook can
	// terminate its backend.
	name := "outbox-test-" + randomHex()
	u, err := url.Parse(b.dbURL)
	require.NoError(t, err)
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	pool, err := pgxpool.New(ctx, u.String())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	first := b.relayOn(t, pool, outbox.Config{})
	killed := 0
	outbox.SetAfterPublish(first, func(context.Context) {
		var n int
		// With a timeout, pg_terminate_backend waits until it is gone.
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000))
			FROM pg_stat_activity WHERE application_name = $1`, name).Scan(&n))
		killed += n
	})
	_, err = first.Drain(ctx)
	require.Error(t, err, "the delete fails on the dead connection")
	require.Positive(t, killed)
	require.EqualValues(t, 50, b.streamMsgs(t, wire.StreamTasks), "published before the kill")
	require.EqualValues(t, 50, b.outboxRows(t), "not deleted")
	// A worker ran the first task meanwhile.
	require.NoError(t, b.results.Set(ctx, ids[0], results.Update{State: task.StateSuccess, FinishedAt: time.Now()}))

	second := b.relay(t, outbox.Config{})
	require.Eventually(t, func() bool {
		_, err := second.Drain(ctx)
		require.NoError(t, err)
		return b.outboxRows(t) == 0
	}, wait, 10*time.Millisecond)
	b.requireOnce(t, wire.StreamTasks, ids)
	st, err := b.results.Get(ctx, ids[0])
	require.NoError(t, err)
	require.Equal(t, task.StateSuccess, st.State, "the republish did not reset a task that ran")
	got := sent()
	for _, id := range ids {
		require.Equal(t, 1, got[id], "one sent event for %s: the republish was a duplicate", id)
	}
}

// The same with the relay's process SIGKILLed between publish and delete.
func TestRelaySIGKILLedAfterPublish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	ids := b.commit(t, 50)

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", envChildNATS+"="+b.natsURL, envChildDB+"="+b.dbURL,
		envChildRedis+"="+resultstest.URL(), envChildPrefix+"="+b.prefix)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "child output:\n%s", out)
	require.False(t, exit.Exited(), "the child was killed by a signal, it did not exit (status %d):\n%s", exit.ExitCode(), out)
	require.EqualValues(t, 50, b.streamMsgs(t, wire.StreamTasks), "published before the kill")
	require.EqualValues(t, 50, b.outboxRows(t), "not deleted")

	// PostgreSQL aborts the dead relay's transaction when it sees the
	// connection close; until then its rows are locked and skipped.
	second := b.relay(t, outbox.Config{})
	require.Eventually(t, func() bool {
		_, err := second.Drain(ctx)
		require.NoError(t, err)
		return b.outboxRows(t) == 0
	}, wait, 10*time.Millisecond)
	b.requireOnce(t, wire.StreamTasks, ids)
	for _, id := range ids {
		st, err := b.results.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, task.StatePending, st.State)
	}
}

// Two relays drain the same table at once: each row is published by one
// of them, once.
func TestTwoRelays(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ids []string
	for range 20 {
		ids = append(ids, b.commit(t, 100)...)
	}
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	relays := []*outbox.Relay{
		b.relay(t, outbox.Config{Batch: 50, Metrics: regs[0]}),
		b.relay(t, outbox.Config{Batch: 50, Metrics: regs[1]}),
	}
	st := store.New(b.pool)
	var g errgroup.Group
	for _, r := range relays {
		g.Go(func() error {
			for {
				n, _, err := st.OutboxStats(t.Context())
				if err != nil || n == 0 {
					return err
				}
				if _, err := r.Drain(t.Context()); err != nil {
					return err
				}
			}
		})
	}
	require.NoError(t, g.Wait())
	b.requireOnce(t, wire.StreamTasks, ids)
	var ok, dup, failed float64
	for _, reg := range regs {
		ok += counter(t, reg, "ok")
		dup += counter(t, reg, "duplicate")
		failed += counter(t, reg, "error")
	}
	require.EqualValues(t, len(ids), ok, "every row published once, by one relay")
	require.Zero(t, dup, "no row published twice")
	require.Zero(t, failed)
}

func counter(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "flotilla_outbox_relayed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// 10,000 rows committed in 100 transactions by 10 goroutines while two
// relays run: every task lands in TASKS exactly once.
func TestTenThousandRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	run(t, b.relay(t, outbox.Config{}))
	run(t, b.relay(t, outbox.Config{}))
	var mu sync.Mutex
	var ids []string
	var g errgroup.Group
	for range 10 {
		g.Go(func() error {
			for range 10 {
				got, err := b.commitErr(t.Context(), 100)
				if err != nil {
					return err
				}
				mu.Lock()
				ids = append(ids, got...)
				mu.Unlock()
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	require.Len(t, ids, 10_000)
	require.Eventually(t, func() bool { return b.outboxRows(t) == 0 }, 2*wait, 20*time.Millisecond)
	b.requireOnce(t, wire.StreamTasks, ids)
}

// NATS cannot take the tasks (the stream is gone): the relay backs off and
// retries, and no row is lost; once the stream is back every task is
// published once.
func TestRetriesWhileStreamMissing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	require.NoError(t, b.js.DeleteStream(ctx, wire.StreamTasks))
	ids := b.commit(t, 20)

	reg := prometheus.NewRegistry()
	r := b.relay(t, outbox.Config{Poll: 50 * time.Millisecond, BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		Streams: []string{wire.StreamDelayed}, Metrics: reg})
	run(t, r)
	require.Eventually(t, func() bool { return failures(t, reg) >= 3 }, wait, 10*time.Millisecond)
	require.EqualValues(t, 20, b.outboxRows(t), "nothing lost, nothing deleted")

	require.NoError(t, jet.ApplyStreams(ctx, b.js, b.top))
	require.Eventually(t, func() bool { return b.outboxRows(t) == 0 }, wait, 10*time.Millisecond)
	b.requireOnce(t, wire.StreamTasks, ids)
}

func TestRefusesShortDuplicateWindow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	s, err := b.js.Stream(ctx, wire.StreamTasks)
	require.NoError(t, err)
	sc := s.CachedInfo().Config
	sc.Duplicates = 20 * time.Second
	_, err = b.js.UpdateStream(ctx, sc)
	require.NoError(t, err)
	b.commit(t, 1)

	r := b.relay(t, outbox.Config{TxTimeout: 10 * time.Second})
	require.Equal(t, 30*time.Second, r.Horizon())
	err = r.Run(ctx)
	require.ErrorIs(t, err, outbox.ErrWindowTooShort)
	require.ErrorContains(t, err, "stream TASKS")
	require.ErrorContains(t, err, "duplicate_window is 20s, the retry horizon is 30s")
	require.Zero(t, b.streamMsgs(t, wire.StreamTasks), "nothing published")
	require.EqualValues(t, 1, b.outboxRows(t))

	// A shorter transaction timeout fits the window.
	require.NoError(t, b.relay(t, outbox.Config{TxTimeout: 5 * time.Second}).CheckWindows(ctx))
}

func randomHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Rows the server refuses stay in the outbox without holding up the
// others.
func TestRefusedRowsStay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	var ids []string
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		// No stream takes this subject; this row has no Nats-Msg-Id.
		if err := store.OutboxInsert(ctx, tx, store.OutboxMsg{TaskID: "lost", Subject: "nowhere.at.all",
			Header: map[string][]string{wire.HeaderMsgID: {"lost"}}, Data: []byte(`{}`)}); err != nil {
			return err
		}
		if err := store.OutboxInsert(ctx, tx, store.OutboxMsg{TaskID: "bare", Subject: "tasks.default.test.work", Data: []byte(`{}`)}); err != nil {
			return err
		}
		var err error
		ids, err = b.insertErr(ctx, tx, 5, client.Request{})
		return err
	}))
	n, err := b.relay(t, outbox.Config{}).Drain(ctx)
	require.NoError(t, err, "progress was made: no failure")
	require.Equal(t, 5, n)
	b.requireOnce(t, wire.StreamTasks, ids)
	require.EqualValues(t, 2, b.outboxRows(t))

	// Only refused rows left: the drain fails, and backs off in Run.
	_, err = b.relay(t, outbox.Config{}).Drain(ctx)
	require.ErrorContains(t, err, "task lost (outbox row 1)")
	require.ErrorContains(t, err, "task bare (outbox row 2): no Nats-Msg-Id header")
	require.EqualValues(t, 2, b.outboxRows(t))
}

// PostgreSQL unreachable: drains fail as unavailable and Run keeps
// retrying after its backoff until it is stopped.
func TestPostgresDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg, err := pgxpool.ParseConfig("postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1")
	require.NoError(t, err)
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	reg := prometheus.NewRegistry()
	r := b.relayOn(t, pool, outbox.Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond, Metrics: reg})
	_, err = r.Drain(t.Context())
	require.ErrorIs(t, err, store.ErrUnavailable)

	run(t, r)
	require.Eventually(t, func() bool { return failures(t, reg) >= 3 }, wait, 10*time.Millisecond, "the relay retries")
}

// failures reads flotilla_outbox_drain_failures_total.
func failures(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "flotilla_outbox_drain_failures_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.commit(t, 3)
	reg := prometheus.NewRegistry()
	r := b.relay(t, outbox.Config{Metrics: reg})
	gauge := func(name string) float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatalf("no metric %s", name)
		return 0
	}
	require.EqualValues(t, 3, gauge("flotilla_outbox_rows"))
	require.Positive(t, gauge("flotilla_outbox_oldest_seconds"))
	_, err := r.Drain(t.Context())
	require.NoError(t, err)
	require.Zero(t, gauge("flotilla_outbox_rows"))
	require.Zero(t, gauge("flotilla_outbox_oldest_seconds"))
	require.EqualValues(t, 3, counter(t, reg, "ok"))
}
