package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flotilla/flotilla/internal/task"
)

// Sentinels of the store; web maps them to HTTP statuses.
var (
	// ErrNotFound means no row has the given key.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a row with the same key exists already.
	ErrConflict = errors.New("already exists")
	// ErrFromCode means the schedule is declared in code: it can be
	// disabled and enabled at runtime, but not deleted or redefined.
	ErrFromCode = errors.New("declared in code: it can be disabled but not deleted or changed")
	// ErrUnavailable means PostgreSQL could not be reached or answered
	// that it cannot serve now (down, restarting, out of connections,
	// slower than the caller's deadline): retry later.
	ErrUnavailable = errors.New("database (PostgreSQL) unavailable")
)

// PostgreSQL error codes the store translates.
const (
	codeUniqueViolation = "23505"
	codeCheckViolation  = "23514"
)

// interpretError translates driver errors into the store's sentinels, once,
// at the boundary (river's interpretError): no rows → [ErrNotFound], a
// unique violation → [ErrConflict], a violated schedules_<field>_check →
// a [task.FieldError] naming the field. Other errors pass through.
func interpretError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if unreachable(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case codeUniqueViolation:
			return fmt.Errorf("%w: %s", ErrConflict, pgErr.Detail)
		case codeCheckViolation:
			field := strings.TrimSuffix(strings.TrimPrefix(pgErr.ConstraintName, "schedules_"), "_check")
			return &task.FieldError{Field: field, Msg: "rejected by the database (constraint " + pgErr.ConstraintName + ")"}
		}
	}
	return err
}

// unreachable reports whether err says the database cannot serve now
// rather than that a statement is wrong: a connection that failed or timed
// out, a closed pool, or a server error of the classes connection
// exception (08), insufficient resources (53), operator intervention (57)
// or system error (58).
func unreachable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", "53", "57", "58":
			return true
		}
		return false
	}
	var netErr net.Error
	var connErr *pgconn.ConnectError
	return errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.Timeout(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(err.Error(), "closed pool") || strings.Contains(err.Error(), "conn closed")
}
