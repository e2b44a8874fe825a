package outbox_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/outbox"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/wire"
)

// Environment of the child process of TestRelaySIGKILLedAfterPublish.
const (
	envChild       = "FLOTILLA_OUTBOX_TEST_CHILD"
	envChildNATS   = "FLOTILLA_OUTBOX_TEST_NATS"
	envChildDB     = "FLOTILLA_OUTBOX_TEST_DB"
	envChildRedis  = "FLOTILLA_OUTBOX_TEST_REDIS"
	envChildPrefix = "FLOTILLA_OUTBOX_TEST_PREFIX"
)

// exitNoRows is the child's exit status when it claimed nothing.
const exitNoRows = 3

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(child())
	}
	goleak.VerifyTestMain(m,
		// The embedded nats-server and go-redis keep background goroutines
		// that outlive a single test's cleanup by design.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// child runs one relay drain that SIGKILLs its own process once the
// claimed rows are published and before they are deleted — a relay that
// dies at the worst moment. It returns only when something went wrong.
func child() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, os.Getenv(envChildDB))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Close()
	nc, js, err := jet.Connect(ctx, os.Getenv(envChildNATS), "outbox-test-child", "")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	opt, err := redis.ParseURL(os.Getenv(envChildRedis))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	rs := results.New(rdb, results.Config{Prefix: os.Getenv(envChildPrefix), TTL: time.Hour})
	defer rs.Close()
	cl := client.New(nc, js, rs, client.Config{Events: wire.EventsAll})
	r := outbox.New(outbox.Config{}, pool, js, cl, zerolog.New(os.Stderr))
	outbox.SetAfterPublish(r, func(context.Context) {
		if p, err := os.FindProcess(os.Getpid()); err == nil {
			_ = p.Kill() // SIGKILL
		}
		select {} // the signal is on its way
	})
	n, err := r.Drain(ctx)
	fmt.Fprintf(os.Stderr, "child: drain returned %d, %v\n", n, err)
	return exitNoRows
}
