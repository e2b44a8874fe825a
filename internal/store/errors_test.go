package store_test

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/task"
)

func TestInterpretError(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := storetest.Pool(t)
	insert := func(values string) error {
		_, err := pool.Exec(ctx, `INSERT INTO schedules (name, task, cron, "interval") VALUES `+values)
		return err
	}
	require.NoError(t, insert(`('a', 'x.y', NULL, '1 minute')`))

	err := store.InterpretError(insert(`('a', 'x.y', NULL, '1 minute')`))
	require.ErrorIs(t, err, store.ErrConflict)

	err = store.InterpretError(insert(`('b', 'x.y', NULL, NULL)`))
	var fe *task.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "cron", fe.Field)
	require.ErrorIs(t, err, task.ErrInvalid)

	err = store.InterpretError(pool.QueryRow(ctx, "SELECT 1 FROM schedules WHERE name = 'zz'").Scan(new(int)))
	require.ErrorIs(t, err, store.ErrNotFound)

	other := errors.New("other")
	require.Equal(t, other, store.InterpretError(other))
	require.NoError(t, store.InterpretError(nil))
	require.NotErrorIs(t, store.InterpretError(pgx.ErrTxClosed), store.ErrNotFound)
}
