package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/outbox"
	"github.com/flotilla/flotilla/internal/wire"
)

// The benchmarks measure one fixed workload each, whatever b.N is: run
// them once, e.g.
//
//	go test -run '^$' -bench . -benchtime 1x ./internal/outbox/
//
// They use an in-process NATS server, the local PostgreSQL (a schema of
// their own) and Redis, as the tests do; producers, relay, NATS and the
// databases share the machine.
const (
	benchRate     = 1000             // tasks/s of the latency runs
	benchDuration = 10 * time.Second // of the latency runs
	benchTasks    = 100_000          // of the throughput runs
	benchTxRows   = 100              // tasks per transaction (throughput)
	benchWriters  = 16               // committing goroutines (throughput)
)

// arrivals records when each task reached TASKS, seen by a consumer that
// acks them (a worker that does nothing).
type arrivals struct {
	mu   sync.Mutex
	at   map[string]time.Time
	n    atomic.Int64
	done chan struct{}
	want int64
}

func (b *bundle) watch(tb testing.TB, want int) *arrivals {
	tb.Helper()
	a := &arrivals{at: make(map[string]time.Time, want), done: make(chan struct{}), want: int64(want)}
	cons, err := b.js.CreateConsumer(tb.Context(), wire.StreamTasks, jetstream.ConsumerConfig{
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1, InactiveThreshold: time.Minute})
	require.NoError(tb, err)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		id := m.Headers().Get(wire.HeaderID)
		_ = m.Ack()
		a.mu.Lock()
		a.at[id] = now
		a.mu.Unlock()
		if a.n.Add(1) == a.want {
			close(a.done)
		}
	}, jetstream.PullMaxMessages(2048))
	require.NoError(tb, err)
	tb.Cleanup(cc.Stop)
	return a
}

func (a *arrivals) wait(tb testing.TB) {
	tb.Helper()
	select {
	case <-a.done:
	case <-time.After(5 * time.Minute):
		tb.Fatalf("%d of %d tasks arrived", a.n.Load(), a.want)
	}
}

// latencies returns the time from start[id] to each task's arrival.
func (a *arrivals) latencies(start map[string]time.Time) []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]time.Duration, 0, len(start))
	for id, t := range start {
		out = append(out, max(0, a.at[id].Sub(t)))
	}
	slices.Sort(out)
	return out
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

func reportLatency(b *testing.B, ds []time.Duration) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pct(ds, 0.50)), "p50-ms")
	b.ReportMetric(ms(pct(ds, 0.99)), "p99-ms")
	b.ReportMetric(ms(ds[len(ds)-1]), "max-ms")
	b.ReportMetric(0, "ns/op")
}

// paced calls fn(i) for i in [0, n) at rate per second, from a few
// goroutines so that one slow call does not delay the next ones.
func paced(n, rate int, fn func(i int) error) error {
	start := time.Now()
	next := make(chan int)
	var g errgroup.Group
	for range 8 {
		g.Go(func() error {
			for i := range next {
				time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
				if err := fn(i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	return g.Wait()
}

// BenchmarkCommitToStream: one task per transaction at 1,000 tasks/s for
// 10 s; the time from each commit's return to the task's arrival in TASKS.
func BenchmarkCommitToStream(b *testing.B) {
	for b.Loop() {
		bn := setup(b)
		run(b, bn.relay(b, outbox.Config{}))
		n := benchRate * int(benchDuration/time.Second)
		a := bn.watch(b, n)
		var mu sync.Mutex
		committed := make(map[string]time.Time, n)
		err := paced(n, benchRate, func(int) error {
			ids, err := bn.commitErr(context.Background(), 1)
			now := time.Now()
			mu.Lock()
			for _, id := range ids {
				committed[id] = now
			}
			mu.Unlock()
			return err
		})
		require.NoError(b, err)
		a.wait(b)
		reportLatency(b, a.latencies(committed))
	}
}

// BenchmarkEnqueueToStream: the same load through Client.Enqueue, for
// reference: from each call's start to the task's arrival.
func BenchmarkEnqueueToStream(b *testing.B) {
	for b.Loop() {
		bn := setup(b)
		n := benchRate * int(benchDuration/time.Second)
		a := bn.watch(b, n)
		var mu sync.Mutex
		started := make(map[string]time.Time, n)
		err := paced(n, benchRate, func(i int) error {
			t0 := time.Now()
			res, err := bn.client.Enqueue(context.Background(), client.Request{Task: "test.work", Args: fmt.Appendf(nil, `{"i":%d}`, i)})
			mu.Lock()
			started[res.ID] = t0
			mu.Unlock()
			return err
		})
		require.NoError(b, err)
		a.wait(b)
		reportLatency(b, a.latencies(started))
	}
}

// BenchmarkOutboxThroughput: 100,000 tasks committed in 100-task
// transactions by 16 goroutines while one relay runs; tasks/s from the
// first commit to the last task's arrival in TASKS, and the commit rate
// alone. Rows go in one statement per task (EnqueueTx) or one per
// transaction (EnqueueManyTx).
func BenchmarkOutboxThroughput(b *testing.B) {
	for _, many := range []bool{false, true} {
		name := "insert=each"
		if many {
			name = "insert=many"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				outboxThroughput(b, many)
			}
		})
	}
}

func outboxThroughput(b *testing.B, many bool) {
	bn := setup(b)
	run(b, bn.relay(b, outbox.Config{}))
	a := bn.watch(b, benchTasks)
	start := time.Now()
	var next atomic.Int64
	var g errgroup.Group
	for range benchWriters {
		g.Go(func() error {
			for next.Add(benchTxRows) <= benchTasks {
				err := pgx.BeginFunc(context.Background(), bn.pool, func(tx pgx.Tx) error {
					if many {
						_, err := bn.insertManyErr(context.Background(), tx, benchTxRows)
						return err
					}
					_, err := bn.insertErr(context.Background(), tx, benchTxRows, client.Request{})
					return err
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(b, g.Wait())
	committed := time.Since(start)
	a.wait(b)
	total := time.Since(start)
	b.ReportMetric(benchTasks/total.Seconds(), "tasks/s")
	b.ReportMetric(benchTasks/committed.Seconds(), "commits-tasks/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkEnqueueThroughput: 100,000 tasks published directly from 16
// goroutines, for reference: one Client.Enqueue per task, or
// Client.EnqueueEach per 100 tasks (one Redis pipeline for the states,
// asynchronous publishes).
func BenchmarkEnqueueThroughput(b *testing.B) {
	for _, per := range []int{1, benchTxRows} {
		b.Run(fmt.Sprintf("per-call=%d", per), func(b *testing.B) {
			for b.Loop() {
				enqueueThroughput(b, per)
			}
		})
	}
}

func enqueueThroughput(b *testing.B, per int) {
	bn := setup(b)
	a := bn.watch(b, benchTasks)
	start := time.Now()
	var next atomic.Int64
	var g errgroup.Group
	for range benchWriters {
		g.Go(func() error {
			rs := make([]client.Request, per)
			for i := next.Add(int64(per)); i <= benchTasks; i = next.Add(int64(per)) {
				for j := range rs {
					rs[j] = client.Request{Task: "test.work", Args: fmt.Appendf(nil, `{"i":%d}`, int(i)+j)}
				}
				if per == 1 {
					if _, err := bn.client.Enqueue(context.Background(), rs[0]); err != nil {
						return err
					}
					continue
				}
				_, errs := bn.client.EnqueueEach(context.Background(), rs)
				if err := errors.Join(errs...); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(b, g.Wait())
	a.wait(b)
	b.ReportMetric(benchTasks/time.Since(start).Seconds(), "tasks/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkRelayBacklog: one Relay.Drain of 30,000 committed rows with
// nothing else running, with results (PENDING states in Redis) on and off.
func BenchmarkRelayBacklog(b *testing.B) {
	for _, states := range []bool{true, false} {
		b.Run(fmt.Sprintf("states=%v", states), func(b *testing.B) {
			for b.Loop() {
				bn := setup(b)
				if !states {
					bn.client = client.New(bn.nc, bn.js, nil, client.Config{Events: wire.EventsAll})
				}
				const n = 30_000
				for range n / 1000 {
					require.NoError(b, pgx.BeginFunc(b.Context(), bn.pool, func(tx pgx.Tx) error {
						_, err := bn.insertManyErr(b.Context(), tx, 1000)
						return err
					}))
				}
				start := time.Now()
				got, err := bn.relay(b, outbox.Config{}).Drain(b.Context())
				require.NoError(b, err)
				require.Equal(b, n, got)
				b.ReportMetric(n/time.Since(start).Seconds(), "tasks/s")
				b.ReportMetric(0, "ns/op")
			}
		})
	}
}
