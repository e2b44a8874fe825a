package flotilla

import (
	"context"
	"database/sql"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// EnqueueTx enqueues taskName with args as part of tx, a transaction on the
// PostgreSQL database Flotilla uses (its migrations create the outbox
// table): the task's message is written into the outbox table inside tx,
// and the outbox relay (run by the web and worker roles, outbox.relay)
// publishes it once tx commits. If tx rolls back, nothing is published.
// It returns the task id at once; the task has a state (Get) only once
// the relay has published it, normally within milliseconds of the commit.
//
// The message is exactly the one [Client.Enqueue] would publish
// (Nats-Msg-Id = the task id, or o.IdempotencyKey), and it is validated
// the same way: [ErrInvalid], [ErrUnknownTask] and [ErrTooLarge] come back
// before anything is written, so tx stays usable. An idempotency key is
// enforced by the server's deduplication only: a second task with the same
// key within the duplicate window gets its own id, which never runs. Other
// errors are the database's (tx is then aborted, as after any failed
// statement).
func (c *Client) EnqueueTx(ctx context.Context, tx pgx.Tx, taskName string, args any, o EnqueueOptions) (string, error) {
	m, err := c.outboxMsg(taskName, args, o)
	if err != nil {
		return "", err
	}
	if err := store.OutboxInsert(ctx, tx, m); err != nil {
		return "", err
	}
	return m.TaskID, nil
}

// EnqueueSQLTx is [Client.EnqueueTx] for a database/sql transaction (any
// PostgreSQL driver, e.g. github.com/jackc/pgx/v5/stdlib or lib/pq).
func (c *Client) EnqueueSQLTx(ctx context.Context, tx *sql.Tx, taskName string, args any, o EnqueueOptions) (string, error) {
	m, err := c.outboxMsg(taskName, args, o)
	if err != nil {
		return "", err
	}
	if err := store.OutboxInsertSQL(ctx, tx, m); err != nil {
		return "", err
	}
	return m.TaskID, nil
}

// EnqueueManyTx is [Client.EnqueueTx] for several tasks, written with one
// statement: faster than as many EnqueueTx calls. The ids are in the order
// of tasks. An invalid task is an [*ItemError] naming its index, and then
// nothing is written. Unlike EnqueueMany, the tasks may mix delays.
func (c *Client) EnqueueManyTx(ctx context.Context, tx pgx.Tx, tasks []Task) ([]string, error) {
	ms, err := c.outboxMsgs(tasks)
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	if err := store.OutboxInsertMany(ctx, tx, ms); err != nil {
		return nil, err
	}
	return taskIDs(ms), nil
}

// EnqueueManySQLTx is [Client.EnqueueManyTx] for a database/sql
// transaction.
func (c *Client) EnqueueManySQLTx(ctx context.Context, tx *sql.Tx, tasks []Task) ([]string, error) {
	ms, err := c.outboxMsgs(tasks)
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	if err := store.OutboxInsertManySQL(ctx, tx, ms); err != nil {
		return nil, err
	}
	return taskIDs(ms), nil
}

func (c *Client) outboxMsgs(tasks []Task) ([]store.OutboxMsg, error) {
	ms := make([]store.OutboxMsg, len(tasks))
	for i, t := range tasks {
		m, err := c.outboxMsg(t.Name, t.Args, t.Options)
		if err != nil {
			return nil, &ItemError{Index: i, Err: err}
		}
		ms[i] = m
	}
	return ms, nil
}

func taskIDs(ms []store.OutboxMsg) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.TaskID
	}
	return ids
}

// outboxMsg validates an enqueue and returns the message Enqueue would
// publish for it, as an outbox row.
func (c *Client) outboxMsg(taskName string, args any, o EnqueueOptions) (store.OutboxMsg, error) {
	// The outbox keeps headers as jsonb, which holds neither NUL nor
	// invalid UTF-8; other header values are validated by Prepare.
	if k := o.IdempotencyKey; !utf8.ValidString(k) || strings.ContainsRune(k, 0) {
		return store.OutboxMsg{}, task.FieldErrorf("idempotency_key", "must be UTF-8 text without NUL characters")
	}
	r, err := c.request(taskName, args, o)
	if err != nil {
		return store.OutboxMsg{}, err
	}
	p, err := c.c.Prepare(r)
	if err != nil {
		return store.OutboxMsg{}, err
	}
	msg := c.c.StoredMsg(p)
	return store.OutboxMsg{TaskID: msg.Header.Get(wire.HeaderID), Subject: msg.Subject, Header: msg.Header, Data: msg.Data}, nil
}
