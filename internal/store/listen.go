package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// ScheduleChannel is the NOTIFY channel on which the schedules table's
// triggers announce the name of every inserted, deleted or redefined
// schedule (an empty payload after TRUNCATE: reload everything). Channels
// are per database, not per schema.
const ScheduleChannel = "flotilla_schedules"

// ListenApplicationName is the application_name of ScheduleListen's
// connection, unless the database URL sets one.
const ListenApplicationName = "flotilla-schedules-listener"

// Timing of ScheduleListen: reconnect backoff, and how often an idle
// connection is pinged (and how long the ping may take).
const (
	listenBackoffMin  = 100 * time.Millisecond
	listenBackoffMax  = 5 * time.Second
	listenPing        = 30 * time.Second
	listenPingTimeout = 5 * time.Second
)

// ScheduleListen blocks until ctx ends, calling fn(name) for every schedule
// change notification (made by this store, the CLI, web or plain SQL;
// bookkeeping updates send none). It LISTENs on a dedicated connection
// opened with the pool's settings, outside the pool.
//
// fn("") means "reload everything": it is called each time LISTEN is
// established — at the start and after every reconnect — because changes
// made while no connection listened are lost. A lost connection is retried
// with jittered exponential backoff (100 ms to 5 s); each error goes to
// [Store.ListenErrorFunc] when set. fn runs on ScheduleListen's goroutine
// and should not block for long. ScheduleListen returns nil when ctx ends.
func (s *Store) ScheduleListen(ctx context.Context, fn func(name string)) error {
	return s.listen(ctx, ScheduleChannel, ListenApplicationName, fn)
}

// listen LISTENs on channel until ctx ends, as ScheduleListen describes:
// fn("") when LISTEN is established, fn(payload) per notification,
// reconnecting with jittered backoff. appName is the connection's
// application_name unless the database URL sets one.
func (s *Store) listen(ctx context.Context, channel, appName string, fn func(payload string)) error {
	backoff := listenBackoffMin
	for {
		listened, err := s.listenOnce(ctx, channel, appName, fn)
		if ctx.Err() != nil {
			return nil
		}
		if listened {
			backoff = listenBackoffMin
		}
		if s.ListenErrorFunc != nil && err != nil {
			s.ListenErrorFunc(err)
		}
		// Full jitter keeps many replicas from reconnecting in lockstep.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, listenBackoffMax)
	}
}

// listenOnce connects, listens and delivers notifications until the
// connection fails or ctx ends; listened says whether LISTEN succeeded.
func (s *Store) listenOnce(ctx context.Context, channel, appName string, fn func(payload string)) (listened bool, err error) {
	cc := s.pool.Config().ConnConfig.Copy()
	if cc.RuntimeParams["application_name"] == "" {
		// Lets operators (and tests) find the listener in pg_stat_activity.
		cc.RuntimeParams["application_name"] = appName
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return false, fmt.Errorf("listen %s: connect: %w", channel, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return false, fmt.Errorf("listen %s: %w", channel, err)
	}
	fn("")
	for {
		// Wait in slices and ping in between, so that a connection that
		// died silently (no RST) is noticed within about listenPing.
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			fn(n.Payload)
		case ctx.Err() != nil:
			return true, nil
		case errors.Is(err, context.DeadlineExceeded):
			pctx, cancel := context.WithTimeout(ctx, listenPingTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				return true, fmt.Errorf("listen %s: ping: %w", channel, err)
			}
		default:
			return true, fmt.Errorf("listen %s: %w", channel, err)
		}
	}
}
