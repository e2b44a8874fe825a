package flotilla_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/outbox"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/wire"
)

type outboxBundle struct {
	c     *flotilla.Client
	js    jetstream.JetStream
	dbURL string
	pool  *pgxpool.Pool
}

// setupOutbox starts a NATS server with the streams, a public client, a
// database schema and a relay running until the test ends (as the worker
// and web roles run it).
func setupOutbox(t *testing.T) *outboxBundle {
	t.Helper()
	ctx := t.Context()
	url := jettest.Server(t).ClientURL()
	nc, js := jettest.Connect(t, url)
	top, err := jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)
	require.NoError(t, jet.ApplyStreams(ctx, js, top))
	rdb, prefix := resultstest.Client(t)
	c, err := flotilla.Dial(ctx, flotilla.ClientOptions{NATSURL: url, RedisURL: resultstest.URL(), RedisPrefix: prefix})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	b := &outboxBundle{c: c, js: js, dbURL: storetest.SchemaURL(t)}
	b.pool, err = pgxpool.New(ctx, b.dbURL)
	require.NoError(t, err)
	t.Cleanup(b.pool.Close)

	rs := results.New(rdb, results.Config{Prefix: prefix, TTL: time.Hour})
	t.Cleanup(rs.Close)
	r := outbox.New(outbox.Config{}, b.pool, js, client.New(nc, js, rs, client.Config{Events: wire.EventsAll}), zerolog.New(zerolog.NewTestWriter(t)))
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	return b
}

func (b *outboxBundle) waitPending(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		require.Eventually(t, func() bool {
			st, err := b.c.Get(t.Context(), id)
			return err == nil && st.State == "PENDING"
		}, 30*time.Second, 5*time.Millisecond, "task %s relayed", id)
	}
}

func (b *outboxBundle) taskMsgs(t *testing.T) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := b.js.Stream(t.Context(), wire.StreamTasks)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

func TestEnqueueTx(t *testing.T) {
	t.Parallel()
	b := setupOutbox(t)
	ctx := t.Context()
	_, err := b.pool.Exec(ctx, `CREATE TABLE orders (id bigint PRIMARY KEY)`)
	require.NoError(t, err)
	type email struct {
		To string `json:"to"`
	}

	// Rolled back: never published.
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	rolledBack, err := b.c.EnqueueTx(ctx, tx, "email.send", email{To: "a@example.com"}, flotilla.EnqueueOptions{})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))

	// Committed with the business row; invalid enqueues write nothing and
	// leave the transaction usable.
	var id string
	err = pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders VALUES (1)`); err != nil {
			return err
		}
		_, err := b.c.EnqueueTx(ctx, tx, "Not A Name", nil, flotilla.EnqueueOptions{})
		require.ErrorIs(t, err, flotilla.ErrInvalid)
		_, err = b.c.EnqueueTx(ctx, tx, "email.send", []int{1}, flotilla.EnqueueOptions{})
		require.ErrorIs(t, err, flotilla.ErrInvalid, "args must be an object")
		_, err = b.c.EnqueueTx(ctx, tx, "email.send", nil, flotilla.EnqueueOptions{IdempotencyKey: "a\x00b"})
		require.ErrorIs(t, err, flotilla.ErrInvalid)
		id, err = b.c.EnqueueTx(ctx, tx, "email.send", email{To: "b@example.com"}, flotilla.EnqueueOptions{Queue: "mail"})
		return err
	})
	require.NoError(t, err)
	b.waitPending(t, id)
	msgs := b.taskMsgs(t)
	require.Len(t, msgs, 1, "the rolled-back task was never published")
	m := msgs[0]
	require.Equal(t, "tasks.mail.email.send", m.Subject)
	require.Equal(t, id, m.Header.Get(wire.HeaderMsgID))
	require.Equal(t, id, m.Header.Get(wire.HeaderID))
	require.JSONEq(t, `{"to":"b@example.com"}`, string(m.Data))
	_, err = b.c.Get(ctx, rolledBack)
	require.ErrorIs(t, err, flotilla.ErrNotFound)
	// The relay records states while it deletes and commits: the row goes
	// right after the state appears.
	require.Eventually(t, func() bool {
		var rows int
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&rows))
		return rows == 0
	}, 10*time.Second, 10*time.Millisecond, "the relay deletes the rows it published")
}

// The outbox stores the message Enqueue publishes: same subject, headers
// and body, but for the id and the enqueue time.
func TestEnqueueTxSameMessage(t *testing.T) {
	t.Parallel()
	b := setupOutbox(t)
	ctx := t.Context()
	retries := 2
	o := flotilla.EnqueueOptions{Queue: "mail", MaxRetries: &retries, Timeout: time.Minute, Expires: time.Now().Add(time.Hour)}
	args := json.RawMessage(`{"to": "x@example.com", "n": 1}`)
	o.ID = "direct-1"
	_, err := b.c.Enqueue(ctx, "email.send", args, o)
	require.NoError(t, err)
	o.ID = "outbox-1"
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		_, err := b.c.EnqueueTx(ctx, tx, "email.send", args, o)
		return err
	}))
	b.waitPending(t, "outbox-1")
	msgs := b.taskMsgs(t)
	require.Len(t, msgs, 2)
	direct, stored := msgs[0], msgs[1]
	require.Equal(t, direct.Subject, stored.Subject)
	require.Equal(t, direct.Data, stored.Data)
	for _, h := range []string{wire.HeaderID, wire.HeaderMsgID, wire.HeaderEnqueued} {
		require.NotEqual(t, direct.Header.Get(h), stored.Header.Get(h), h)
		direct.Header.Del(h)
		stored.Header.Del(h)
	}
	for _, h := range []string{"Nats-Sequence", "Nats-Time-Stamp"} { // added by the direct get
		direct.Header.Del(h)
		stored.Header.Del(h)
	}
	require.Equal(t, direct.Header, stored.Header)
}

func TestEnqueueSQLTx(t *testing.T) {
	t.Parallel()
	b := setupOutbox(t)
	ctx := t.Context()
	db, err := sql.Open("pgx", b.dbURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })

	// Rolled back.
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = b.c.EnqueueSQLTx(ctx, tx, "email.send", nil, flotilla.EnqueueOptions{})
	require.NoError(t, err)
	_, err = b.c.EnqueueManySQLTx(ctx, tx, []flotilla.Task{{Name: "email.send"}, {Name: "email.send"}})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())

	// Committed: one alone, two in one statement, one delayed.
	tx, err = db.BeginTx(ctx, nil)
	require.NoError(t, err)
	one, err := b.c.EnqueueSQLTx(ctx, tx, "email.send", map[string]int{"n": 1}, flotilla.EnqueueOptions{})
	require.NoError(t, err)
	_, err = b.c.EnqueueManySQLTx(ctx, tx, []flotilla.Task{{Name: "email.send"}, {Name: "email.send", Args: []int{1}}})
	var ie *flotilla.ItemError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, 1, ie.Index)
	require.ErrorIs(t, err, flotilla.ErrInvalid)
	many, err := b.c.EnqueueManySQLTx(ctx, tx, []flotilla.Task{
		{Name: "email.send", Args: map[string]int{"n": 2}},
		{Name: "email.send", Args: map[string]int{"n": 3}},
		{Name: "email.send", Args: map[string]int{"n": 4}, Options: flotilla.EnqueueOptions{Countdown: time.Hour}},
	})
	require.NoError(t, err)
	require.Len(t, many, 3)
	require.NoError(t, tx.Commit())

	b.waitPending(t, append([]string{one}, many...)...)
	msgs := b.taskMsgs(t)
	require.Len(t, msgs, 3, "the delayed task waits in DELAYED")
	for i, id := range []string{one, many[0], many[1]} {
		require.Equal(t, id, msgs[i].Header.Get(wire.HeaderMsgID))
		require.JSONEq(t, fmt.Sprintf(`{"n":%d}`, i+1), string(msgs[i].Data))
	}
}

func TestEnqueueManyTx(t *testing.T) {
	t.Parallel()
	b := setupOutbox(t)
	ctx := t.Context()
	tasks := make([]flotilla.Task, 500)
	for i := range tasks {
		tasks[i] = flotilla.Task{Name: "email.send", Args: map[string]int{"i": i}}
	}
	tasks[499].Options.Queue = "Bad Queue"
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		_, err := b.c.EnqueueManyTx(ctx, tx, tasks)
		return err
	})
	var ie *flotilla.ItemError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, 499, ie.Index)
	require.Equal(t, "tasks[499].queue", ie.Field())

	tasks[499].Options.Queue = ""
	var ids []string
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		var err error
		ids, err = b.c.EnqueueManyTx(ctx, tx, tasks)
		return err
	}))
	require.Len(t, ids, 500)
	b.waitPending(t, ids...)
	msgs := b.taskMsgs(t)
	require.Len(t, msgs, 500)
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.Header.Get(wire.HeaderMsgID)] = true
	}
	for _, id := range ids {
		require.True(t, seen[id], "task %s stored", id)
	}
	ids, err = b.c.EnqueueManyTx(ctx, nil, nil)
	require.NoError(t, err, "nothing to write")
	require.Empty(t, ids)
}
