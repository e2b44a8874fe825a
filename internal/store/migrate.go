package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/flotilla/flotilla/sql/migrations"
)

// MigrationsTable records the applied migrations (goose's version table),
// in the first schema of the search_path.
const MigrationsTable = "flotilla_migrations"

// Migration is one migration file and its state in the database.
type Migration struct {
	// Version is the number the file name starts with.
	Version int64
	// Source is the file name, e.g. 00001_schedules.sql.
	Source string
	// Applied says whether the database has it; AppliedAt is then when.
	Applied   bool
	AppliedAt time.Time
	// Duration is how long applying or rolling back took (Up, Down only).
	Duration time.Duration
}

// Migrate applies every pending migration; see [MigrateUp].
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := MigrateUp(ctx, pool)
	return err
}

// MigrateUp applies every pending migration embedded from sql/migrations to
// the first schema of pool's search_path and returns those it applied.
// Processes that migrate at the same time (replicas starting together)
// queue on an advisory lock of that schema: one applies, the others then
// find nothing to do.
func MigrateUp(ctx context.Context, pool *pgxpool.Pool) ([]Migration, error) {
	var out []Migration
	err := withProvider(ctx, pool, func(p *goose.Provider) error {
		res, err := p.Up(ctx)
		for _, r := range res {
			out = append(out, fromResult(r))
		}
		return err
	})
	if err != nil {
		return out, fmt.Errorf("migrate up: %w", err)
	}
	return out, nil
}

// MigrateDown rolls back the latest applied migration; ok is false when
// none is applied.
func MigrateDown(ctx context.Context, pool *pgxpool.Pool) (m Migration, ok bool, err error) {
	err = withProvider(ctx, pool, func(p *goose.Provider) error {
		r, err := p.Down(ctx)
		if errors.Is(err, goose.ErrNoNextVersion) {
			return nil
		}
		if err != nil {
			return err
		}
		m, ok = fromResult(r), true
		return nil
	})
	if err != nil {
		return m, false, fmt.Errorf("migrate down: %w", err)
	}
	return m, ok, nil
}

// MigrateStatus lists every embedded migration, in version order, and
// whether it is applied.
func MigrateStatus(ctx context.Context, pool *pgxpool.Pool) ([]Migration, error) {
	var out []Migration
	err := withProvider(ctx, pool, func(p *goose.Provider) error {
		st, err := p.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range st {
			out = append(out, Migration{
				Version: s.Source.Version, Source: s.Source.Path,
				Applied: s.State == goose.StateApplied, AppliedAt: s.AppliedAt,
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("migrate status: %w", err)
	}
	return out, nil
}

func fromResult(r *goose.MigrationResult) Migration {
	m := Migration{Duration: r.Duration}
	if r.Source != nil {
		m.Version, m.Source = r.Source.Version, r.Source.Path
	}
	m.Applied = r.Direction == "up"
	return m
}

// withProvider runs fn with a goose provider on connections of their own
// (same settings as pool, so the same search_path), holding the schema's
// migration lock. goose's own session locker polls every 5 s on one global
// key; a blocking lock per schema lets parallel tests, each in its own
// schema, migrate without waiting for each other.
func withProvider(ctx context.Context, pool *pgxpool.Pool, fn func(p *goose.Provider) error) (err error) {
	cc := pool.Config().ConnConfig.Copy()
	lockConn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer lockConn.Close(context.WithoutCancel(ctx))
	// Blocks until the lock is free or ctx ends (pgx cancels the query).
	// Closing the connection releases the lock whatever happens.
	if _, err := lockConn.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended('flotilla:migrate:' || coalesce(current_schema(), ''), 0))"); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	db := stdlib.OpenDB(*cc)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS,
		goose.WithTableName(MigrationsTable),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return err
	}
	return fn(p)
}
