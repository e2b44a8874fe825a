package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flotilla/flotilla/internal/store/dbsqlc"
)

// OutboxChannel is the NOTIFY channel on which the outbox table's trigger
// announces committed inserts: an empty payload, one per inserting
// statement, delivered when the transaction commits. Channels are per
// database, not per schema.
const OutboxChannel = "flotilla_outbox"

// OutboxListenApplicationName is the application_name of OutboxListen's
// connection, unless the database URL sets one.
const OutboxListenApplicationName = "flotilla-outbox-relay"

// OutboxMsg is one task message in the outbox: what the relay publishes.
type OutboxMsg struct {
	// ID is the row's id (set by OutboxDrain; ignored by the inserts).
	ID     int64
	TaskID string
	// Subject, Header and Data are the message. Header is nil for a row
	// whose headers column does not decode (a row written by hand).
	Subject string
	Header  map[string][]string
	Data    []byte
}

// checkHeader checks that every header value is valid UTF-8 without NUL
// characters: PostgreSQL's jsonb cannot hold others as they are.
func checkHeader(h map[string][]string) error {
	for k, vs := range h {
		for _, v := range vs {
			if !utf8.ValidString(v) || containsNUL(v) {
				return fmt.Errorf("outbox: header %s is not valid UTF-8 text without NUL characters", k)
			}
		}
	}
	return nil
}

// outboxInsertParams checks m and encodes its headers as JSON.
func outboxInsertParams(m OutboxMsg) (dbsqlc.OutboxInsertParams, error) {
	if err := checkHeader(m.Header); err != nil {
		return dbsqlc.OutboxInsertParams{}, err
	}
	h, err := json.Marshal(m.Header)
	if err != nil {
		return dbsqlc.OutboxInsertParams{}, fmt.Errorf("outbox: encode headers: %w", err)
	}
	data := m.Data
	if data == nil {
		data = []byte{}
	}
	return dbsqlc.OutboxInsertParams{TaskID: m.TaskID, Subject: m.Subject, Headers: h, Data: data}, nil
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// OutboxInsert writes m into the outbox table in tx, the caller's
// transaction: the relay publishes it once tx commits, never if it rolls
// back. Errors are the database's (a missing table means the migrations
// were not applied), translated like every store error.
func OutboxInsert(ctx context.Context, tx pgx.Tx, m OutboxMsg) error {
	p, err := outboxInsertParams(m)
	if err != nil {
		return err
	}
	if err := dbsqlc.New().OutboxInsert(ctx, tx, p); err != nil {
		return fmt.Errorf("outbox insert: %w", interpretError(err))
	}
	return nil
}

// OutboxInsertSQL is [OutboxInsert] for a database/sql transaction (any
// PostgreSQL driver: pgx's stdlib, lib/pq, …).
func OutboxInsertSQL(ctx context.Context, tx *sql.Tx, m OutboxMsg) error {
	p, err := outboxInsertParams(m)
	if err != nil {
		return err
	}
	if err := dbsqlc.New().OutboxInsert(ctx, sqlTx{tx}, p); err != nil {
		return fmt.Errorf("outbox insert: %w", interpretError(err))
	}
	return nil
}

// outboxRow is one element of OutboxInsertMany's rows parameter.
type outboxRow struct {
	TaskID  string              `json:"task_id"`
	Subject string              `json:"subject"`
	Headers map[string][]string `json:"headers"`
	Data    []byte              `json:"data"` // base64, as encoding/json writes []byte
}

// outboxRows checks ms and encodes them as OutboxInsertMany's parameter.
func outboxRows(ms []OutboxMsg) (json.RawMessage, error) {
	rows := make([]outboxRow, len(ms))
	for i, m := range ms {
		if err := checkHeader(m.Header); err != nil {
			return nil, err
		}
		rows[i] = outboxRow{TaskID: m.TaskID, Subject: m.Subject, Headers: m.Header, Data: m.Data}
		if rows[i].Data == nil {
			rows[i].Data = []byte{}
		}
	}
	b, err := json.Marshal(rows)
	if err != nil {
		return nil, fmt.Errorf("outbox: encode rows: %w", err)
	}
	return b, nil
}

// OutboxInsertMany writes ms into the outbox table in tx with one
// statement (rows in the order of ms); see [OutboxInsert].
func OutboxInsertMany(ctx context.Context, tx pgx.Tx, ms []OutboxMsg) error {
	rows, err := outboxRows(ms)
	if err != nil {
		return err
	}
	if err := dbsqlc.New().OutboxInsertMany(ctx, tx, rows); err != nil {
		return fmt.Errorf("outbox insert: %w", interpretError(err))
	}
	return nil
}

// OutboxInsertManySQL is [OutboxInsertMany] for a database/sql transaction.
func OutboxInsertManySQL(ctx context.Context, tx *sql.Tx, ms []OutboxMsg) error {
	rows, err := outboxRows(ms)
	if err != nil {
		return err
	}
	if err := dbsqlc.New().OutboxInsertMany(ctx, sqlTx{tx}, rows); err != nil {
		return fmt.Errorf("outbox insert: %w", interpretError(err))
	}
	return nil
}

// sqlTx runs generated :exec queries on a database/sql transaction, so
// that the SQL text stays in sql/queries. Queries that return rows are
// not supported.
type sqlTx struct{ tx *sql.Tx }

var errSQLTxRows = errors.New("store: only :exec queries run on a database/sql transaction")

func (t sqlTx) Exec(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error) {
	for i, a := range args {
		// jsonb as text: every driver sends a string as it is, while a
		// []byte may go out as bytea.
		if j, ok := a.(json.RawMessage); ok {
			args[i] = string(j)
		}
	}
	_, err := t.tx.ExecContext(ctx, q, args...)
	return pgconn.CommandTag{}, err
}

func (sqlTx) Query(context.Context, string, ...any) (pgx.Rows, error) { return nil, errSQLTxRows }

func (sqlTx) QueryRow(context.Context, string, ...any) pgx.Row { return errRow{} }

func (sqlTx) SendBatch(context.Context, *pgx.Batch) pgx.BatchResults { return errBatch{} }

type errRow struct{}

func (errRow) Scan(...any) error { return errSQLTxRows }

// errBatch fails every read; the embedded interface (nil) only completes
// the method set.
type errBatch struct{ pgx.BatchResults }

func (errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, errSQLTxRows }
func (errBatch) Query() (pgx.Rows, error)         { return nil, errSQLTxRows }
func (errBatch) QueryRow() pgx.Row                { return errRow{} }
func (errBatch) Close() error                     { return nil }

// OutboxDrainParams shape one [Store.OutboxDrain].
type OutboxDrainParams struct {
	// Limit is the most rows claimed. Default 1000.
	Limit int
	// Timeout bounds the transaction: its context ends Timeout after
	// BEGIN, and the server ends it (releasing the rows) when it stays
	// idle, or one statement runs, longer than Timeout — also when the
	// relay died or hangs. So a claimed row is claimable again at most
	// 3 × Timeout after BEGIN. Default 10s.
	Timeout time.Duration
}

// OutboxPublishFunc publishes claimed messages and returns the ids of the
// rows that are stored in JetStream (and may be deleted); err describes
// the others.
type OutboxPublishFunc func(ctx context.Context, ms []OutboxMsg) (done []int64, err error)

// OutboxDrain runs one relay transaction: it claims up to p.Limit of the
// oldest outbox rows that no other transaction holds (FOR UPDATE SKIP
// LOCKED, so relays never publish the same row at the same time), calls
// publish with them, deletes the rows publish reports done and commits
// without waiting for the WAL flush (a delete lost in a server crash only
// makes its rows publish again, which the stream's deduplication drops).
// It returns how many rows it claimed and publish's error as is when the
// transaction committed, else joined with the transaction's error (then
// no row was deleted and every row is claimable again). Errors match
// [ErrUnavailable] when PostgreSQL cannot serve.
func (s *Store) OutboxDrain(ctx context.Context, p OutboxDrainParams, publish OutboxPublishFunc) (claimed int, err error) {
	if p.Limit <= 0 {
		p.Limit = 1000
	}
	if p.Timeout <= 0 {
		p.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("outbox: begin: %w", interpretError(err))
	}
	defer func() {
		// After a commit this is a no-op (ErrTxClosed).
		if rerr := tx.Rollback(context.WithoutCancel(ctx)); rerr != nil && err != nil && !errors.Is(rerr, pgx.ErrTxClosed) {
			err = errors.Join(err, fmt.Errorf("outbox: rollback: %w", rerr))
		}
	}()
	ms := strconv.FormatInt(p.Timeout.Milliseconds(), 10)
	if err := s.q.OutboxBound(ctx, tx, dbsqlc.OutboxBoundParams{IdleMs: ms, StatementMs: ms}); err != nil {
		return 0, fmt.Errorf("outbox: bound transaction: %w", interpretError(err))
	}
	rows, err := s.q.OutboxClaim(ctx, tx, int32(p.Limit))
	if err != nil {
		return 0, fmt.Errorf("outbox: claim: %w", interpretError(err))
	}
	if len(rows) == 0 {
		return 0, nil
	}
	msgs := make([]OutboxMsg, len(rows))
	for i, r := range rows {
		msgs[i] = OutboxMsg{ID: r.ID, TaskID: r.TaskID, Subject: r.Subject, Data: r.Data}
		var h map[string][]string
		if json.Unmarshal(r.Headers, &h) == nil {
			msgs[i].Header = h
		}
	}
	done, perr := publish(ctx, msgs)
	if len(done) > 0 {
		if err := s.q.OutboxDelete(ctx, tx, done); err != nil {
			return len(rows), errors.Join(perr, fmt.Errorf("outbox: delete: %w", interpretError(err)))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return len(rows), errors.Join(perr, fmt.Errorf("outbox: commit: %w", interpretError(err)))
	}
	return len(rows), perr
}

// OutboxListen blocks until ctx ends, calling fn when committed outbox
// rows are announced on [OutboxChannel], and each time LISTEN is
// established (at the start and after every reconnect: rows committed
// while nobody listened were not announced). It works like
// [Store.ScheduleListen]: a dedicated connection outside the pool, named
// [OutboxListenApplicationName]; reconnects with jittered backoff; errors
// go to ListenErrorFunc. It returns nil when ctx ends.
func (s *Store) OutboxListen(ctx context.Context, fn func()) error {
	return s.listen(ctx, OutboxChannel, OutboxListenApplicationName, func(string) { fn() })
}

// OutboxStats returns how many rows wait in the outbox and the age of the
// oldest one (0 when empty).
func (s *Store) OutboxStats(ctx context.Context) (rows int64, oldest time.Duration, err error) {
	r, err := s.q.OutboxStats(ctx, s.pool)
	if err != nil {
		return 0, 0, fmt.Errorf("outbox stats: %w", interpretError(err))
	}
	return r.Rows, time.Duration(r.OldestS * float64(time.Second)), nil
}
