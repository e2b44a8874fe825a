// Package storetest gives tests a PostgreSQL schema of their own: one
// database per test binary (flotilla_test_<package>, created if missing),
// then a fresh schema t_<random> per test with the embedded migrations
// applied, dropped when the test ends — so tests run with t.Parallel()
// (river's riverdbtest). Tests fail, never skip, when PostgreSQL is down.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flotilla/flotilla/internal/store"
)

// DefaultURL is the server tests use unless FLOTILLA_TEST_DATABASE_URL is set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

const startHint = "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start, or point FLOTILLA_TEST_DATABASE_URL at a server"

// URL is the test server's administrative URL: FLOTILLA_TEST_DATABASE_URL or
// [DefaultURL]. Its user must be allowed to create databases.
func URL() string {
	if u := os.Getenv("FLOTILLA_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Database is the name of this test binary's database, e.g.
// flotilla_test_store for store.test.
func Database() string {
	name := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	name = strings.ToLower(name)
	name = regexp.MustCompile(`[^a-z0-9_]+`).ReplaceAllString(name, "_")
	return "flotilla_test_" + name
}

var (
	dbOnce sync.Once
	dbErr  error
)

// SchemaURL creates a schema t_<random> in this binary's database, applies
// every migration to it, and returns a URL whose connections use it
// (search_path=t_<random>). The schema is dropped when t ends. Use it to
// configure a command or role under test; most tests want [Pool].
func SchemaURL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u, err := url.Parse(URL())
	if err != nil {
		t.Fatalf("storetest: FLOTILLA_TEST_DATABASE_URL: %v", err)
	}
	dbOnce.Do(func() {
		dbu := *u
		dbu.Path = "/" + Database()
		_, dbErr = store.EnsureDatabase(ctx, dbu.String())
	})
	if dbErr != nil {
		t.Fatalf("storetest: %v (tests use FLOTILLA_TEST_DATABASE_URL, default %s)", dbErr, DefaultURL)
	}
	u.Path = "/" + Database()
	admin, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatalf("storetest: PostgreSQL at %s is not reachable: %v; %s", u.Host, err, startHint)
	}
	defer admin.Close(context.Background())

	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "t_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("storetest: create schema %s: %v", schema, err)
	}
	adminURL := u.String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Errorf("storetest: drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("storetest: drop schema %s: %v", schema, err)
		}
	})

	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	schemaURL := u.String()

	pool, err := pgxpool.New(ctx, schemaURL)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatalf("storetest: schema %s: %v", schema, err)
	}
	return schemaURL
}

// Pool returns a pool on a fresh, migrated schema of its own (see
// [SchemaURL]); the pool is closed and the schema dropped when t ends.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	u := SchemaURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		t.Fatalf("storetest: %v", fmt.Errorf("ping: %w", err))
	}
	t.Cleanup(pool.Close)
	return pool
}
