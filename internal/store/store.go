// Package store owns Flotilla's PostgreSQL access: the pgx pool, creating the
// dev database, the embedded migrations (sql/migrations, goose), and a
// hand-written facade over the sqlc queries of package dbsqlc. Generated
// types stop here: callers see [schedule.Schedule] and the sentinels of
// errors.go. It does not know about NATS or Redis.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flotilla/flotilla/internal/store/dbsqlc"
)

// Store runs Flotilla's queries on a pool. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	q    *dbsqlc.Queries

	// ListenErrorFunc, when set, receives every connection error of
	// [Store.ScheduleListen] before it reconnects (for example to log it).
	// It is called from ScheduleListen's goroutine.
	ListenErrorFunc func(err error)
}

// New returns a store on pool; the caller keeps owning (and closes) pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, q: dbsqlc.New()}
}

// InTx runs fn in a transaction: committed when fn returns nil, rolled back
// otherwise (the rollback error joined to fn's).
func (s *Store) InTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		if rerr := tx.Rollback(context.WithoutCancel(ctx)); rerr != nil && !errors.Is(rerr, pgx.ErrTxClosed) {
			return errors.Join(err, fmt.Errorf("rollback: %w", rerr))
		}
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", interpretError(err))
	}
	return nil
}

const startHint = "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start, or set FLOTILLA_DATABASE_URL"

// Dial returns a pool for the database at rawURL without connecting: it
// connects on first use and after every outage by itself, each attempt
// bounded by 2 s, so a role can start (and answer 503) while PostgreSQL is
// down. Errors name the address, never the password.
func Dial(rawURL string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("database.url: %v", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > 2*time.Second {
		cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("postgresql at %s: %v", where(cfg.ConnConfig.Config), err)
	}
	return pool, nil
}

// Open is [Dial] that also pings the database. Errors name the address
// (never the password) and how to start PostgreSQL.
func Open(ctx context.Context, rawURL string) (*pgxpool.Pool, error) {
	pool, err := Dial(rawURL)
	if err != nil {
		return nil, err
	}
	cfg := pool.Config()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgresql at %s is not reachable (%v); %s", where(cfg.ConnConfig.Config), err, startHint)
	}
	return pool, nil
}

// EnsureDatabase creates the database named in rawURL if it does not exist,
// connecting to the server's "postgres" database to do so (dev only).
func EnsureDatabase(ctx context.Context, rawURL string) (created bool, err error) {
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		return false, fmt.Errorf("database.url: %v", err)
	}
	name := cfg.Database
	if name == "" || name == "postgres" {
		return false, nil
	}
	admin := cfg.Copy()
	admin.Database = "postgres"
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(pctx, admin)
	if err != nil {
		return false, fmt.Errorf("postgresql at %s is not reachable (%v); %s", where(cfg.Config), err, startHint)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(pctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return false, fmt.Errorf("check database %s: %w", name, err)
	}
	if exists {
		return false, nil
	}
	_, err = conn.Exec(pctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	// Created concurrently: 42P04 (duplicate_database), or 23505 when two
	// CREATE DATABASE race on pg_database's unique index.
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == codeUniqueViolation) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create database %s: %w", name, err)
	}
	return true, nil
}

func where(c pgconn.Config) string {
	return fmt.Sprintf("%s:%d/%s", c.Host, c.Port, c.Database)
}
