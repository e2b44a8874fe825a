package store

import (
	"errors"
	"fmt"
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
