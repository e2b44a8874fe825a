// Package outbox relays the transactional outbox: task messages that
// flotilla.Client.EnqueueTx wrote into PostgreSQL's outbox table inside a
// caller's transaction are published to JetStream once that transaction
// commits, then deleted. It owns the relay loop (wake-ups, fallback poll,
// backoff) and the check of the streams' duplicate windows; the SQL lives
// in package store, the message and the bookkeeping around a publish in
// package client.
//
// Guarantees: a rolled-back transaction leaves no row, so it never
// publishes. A committed row is published with Nats-Msg-Id = its task id
// (or idempotency key) and deleted in the transaction that claimed it;
// when the relay dies between the two, the transaction aborts, the row is
// claimable again within the relay's retry horizon ([Relay.Horizon]) and
// the server drops the repeated publish as a duplicate, provided it comes
// within the stream's duplicate window — hence the check at start. Relays
// on several processes claim disjoint rows (FOR UPDATE SKIP LOCKED).
package outbox

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/logging"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/wire"
)

// Config configures a [Relay]; zero fields take their defaults.
type Config struct {
	// Batch is the most rows one transaction claims and publishes. Default 1000.
	Batch int
	// TxTimeout bounds each relay transaction, on the relay and on the
	// server (see store.OutboxDrainParams): a claimed row is claimable
	// again at most 3 × TxTimeout after its transaction began, however the
	// relay failed. Default 10s.
	TxTimeout time.Duration
	// Poll is how often the relay looks for rows without being woken (the
	// safety net behind LISTEN/NOTIFY). Default 2s.
	Poll time.Duration
	// Drainers is how many drain transactions one relay runs at once: a
	// commit that arrives while one drain finishes (its delete, its
	// commit) is claimed by another at once. Default 2.
	Drainers int
	// BackoffMin and BackoffMax bound the wait after a failed drain
	// (jittered, doubling). Defaults 100ms and 10s.
	BackoffMin, BackoffMax time.Duration
	// Streams whose duplicate windows must be at least the relay's retry
	// horizon. Default TASKS and DELAYED (where delayed tasks go).
	Streams []string
	// Metrics, when set, registers the relay's counters.
	Metrics prometheus.Registerer
}

func (c *Config) defaults() {
	if c.Batch <= 0 {
		c.Batch = 1000
	}
	if c.TxTimeout <= 0 {
		c.TxTimeout = 10 * time.Second
	}
	if c.Poll <= 0 {
		c.Poll = 2 * time.Second
	}
	if c.Drainers <= 0 {
		c.Drainers = 2
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 100 * time.Millisecond
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(10*time.Second, c.BackoffMin)
	}
	if c.Streams == nil {
		c.Streams = []string{wire.StreamTasks, wire.StreamDelayed}
	}
}

// ErrWindowTooShort is returned by [Relay.Run] and [Relay.CheckWindows]
// when a stream's duplicate window is shorter than the relay's retry
// horizon: a row republished after a relay died could then run twice.
var ErrWindowTooShort = errors.New("duplicate window shorter than the outbox relay's retry horizon")

// Relay publishes committed outbox rows. Run one or more per database, in
// any processes.
type Relay struct {
	st  *store.Store
	js  jetstream.JetStream
	cl  *client.Client
	cfg Config
	log zerolog.Logger
	m   *metrics
	// failed logs failed drains, refused the rows the server refuses and
	// unrecorded failed state writes: each at most once in a while (an
	// outage may last).
	failed, refused, unrecorded zerolog.Logger

	// afterPublish, when set (tests), runs after the publishes of a claim
	// were acknowledged and before its rows are deleted.
	afterPublish func(ctx context.Context)
}

// New returns a relay that claims rows through pool, publishes them with
// js and records their states and events through cl (the client of the
// process: it knows which tasks keep no result).
func New(cfg Config, pool *pgxpool.Pool, js jetstream.JetStream, cl *client.Client, log zerolog.Logger) *Relay {
	cfg.defaults()
	st := store.New(pool)
	r := &Relay{st: st, js: js, cl: cl, cfg: cfg, m: newMetrics(cfg.Metrics, st),
		log: log.With().Str(logging.Component, "outbox").Logger()}
	sampled := r.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Minute})
	r.refused = r.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Minute})
	r.failed = r.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: 30 * time.Second})
	r.unrecorded = r.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Minute})
	r.st.ListenErrorFunc = func(err error) {
		sampled.Warn().Err(err).Msg("outbox relay: LISTEN connection lost; polling every " + cfg.Poll.String() + " until it is back")
	}
	return r
}

// Horizon is the relay's retry horizon: the longest a row can take, from
// its publish, to be claimable again when its relay died or hangs after
// publishing — 3 × TxTimeout (store.OutboxDrainParams explains the bound).
// Every stream the relay publishes to must keep duplicates longer.
func (r *Relay) Horizon() time.Duration { return 3 * r.cfg.TxTimeout }

// CheckWindows compares the duplicate window of every stream of
// Config.Streams with [Relay.Horizon]: [ErrWindowTooShort] naming both
// values when one is shorter, or the JetStream error that kept it from
// reading a stream's configuration.
func (r *Relay) CheckWindows(ctx context.Context) error {
	for _, name := range r.cfg.Streams {
		s, err := r.js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("outbox relay: stream %s: %w", name, err)
		}
		if w := s.CachedInfo().Config.Duplicates; w < r.Horizon() {
			return fmt.Errorf("outbox relay: stream %s: %w: duplicate_window is %s, the retry horizon is %s (3 × the relay's transaction timeout %s); raise the stream's duplicate_window or lower the timeout",
				name, ErrWindowTooShort, w, r.Horizon(), r.cfg.TxTimeout)
		}
	}
	return nil
}

// Run relays until ctx ends: it checks the duplicate windows (retrying
// while NATS or a stream is not there yet; a window too short is returned
// as an error and nothing is published), then drains the outbox at start,
// on every NOTIFY of a commit, and every Poll, with Drainers transactions
// at most at once. A failed drain (PostgreSQL or NATS down, the stream
// full) is logged and retried after a jittered backoff from BackoffMin
// doubling to BackoffMax; its rows stay in the table. Run returns nil when
// ctx ends.
func (r *Relay) Run(ctx context.Context) error {
	b := r.newBackoff()
	for {
		err := r.CheckWindows(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, ErrWindowTooShort) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		r.failed.Warn().Err(err).Msg("outbox relay: cannot read the streams' duplicate windows yet; retrying (logged at most every 30s)")
		if !b.wait(ctx) {
			return nil
		}
	}

	// One token: a wake-up that comes while every drainer is busy is kept
	// for the first one that finishes.
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default: // a drain is due already
		}
	}
	tick := time.NewTicker(r.cfg.Poll)
	defer tick.Stop()
	var wg sync.WaitGroup
	lctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1 + r.cfg.Drainers)
	go func() {
		defer wg.Done()
		_ = r.st.OutboxListen(lctx, poke)
	}()
	r.log.Info().Dur("horizon", r.Horizon()).Int("batch", r.cfg.Batch).Int("drainers", r.cfg.Drainers).Msg("outbox relay running")
	for range r.cfg.Drainers {
		go func() {
			defer wg.Done()
			r.loop(lctx, wake, tick.C)
		}()
	}
	poke() // drain at start
	wg.Wait()
	return nil
}

// loop is one drainer of Run: it drains on each wake-up or tick until ctx
// ends, backing off after a failure (wake-ups do not cut a backoff short).
func (r *Relay) loop(ctx context.Context, wake <-chan struct{}, tick <-chan time.Time) {
	b := r.newBackoff()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick:
		}
		for {
			_, err := r.Drain(ctx)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				break
			}
			r.m.failures.Inc()
			r.failed.Warn().Err(err).Msg("outbox relay: drain failed; the rows stay in the outbox and are retried (logged at most every 30s)")
			failing = true
			if !b.wait(ctx) {
				return
			}
		}
		if failing {
			r.log.Info().Msg("outbox relay: draining again")
			failing = false
		}
		b.reset()
	}
}

// Drain publishes committed rows until a claim returns fewer than Batch
// rows, ctx ends or a transaction makes no progress, and returns how many
// rows it published (including those the server dropped as duplicates).
// It returns an error when a transaction failed (PostgreSQL unavailable)
// or none of its rows could be published (NATS unavailable, the stream
// full); rows the server refuses while others go through (a message too
// large for the server, a subject no stream takes) stay in the outbox and
// are logged, at most once a minute, without failing the drain. A
// transaction that has begun runs to its end (bounded by TxTimeout) even
// when ctx ends, so that stopping a relay does not leave published rows
// behind to be published again. Safe to call from several goroutines and
// processes at once.
func (r *Relay) Drain(ctx context.Context) (int, error) {
	total := 0
	for ctx.Err() == nil {
		var (
			done int
			perr error
			rec  sync.WaitGroup
		)
		claimed, err := r.st.OutboxDrain(context.WithoutCancel(ctx), store.OutboxDrainParams{Limit: r.cfg.Batch, Timeout: r.cfg.TxTimeout},
			func(tctx context.Context, ms []store.OutboxMsg) ([]int64, error) {
				ids, relayed, err := r.publish(tctx, ms)
				done, perr = len(ids), err
				if len(relayed) > 0 {
					// States and events while the rows are deleted and
					// committed: off the path of the next claim.
					rec.Add(1)
					go func() {
						defer rec.Done()
						r.record(ctx, relayed)
					}()
				}
				return ids, err
			})
		rec.Wait()
		// err is perr itself when the transaction committed.
		if err != nil && (err != perr || done == 0) {
			return total, err
		}
		total += done
		if err != nil {
			r.refused.Warn().Err(err).Msg("outbox relay: the server refused some tasks; they stay in the outbox and are retried with every drain")
		}
		if claimed < r.cfg.Batch {
			break
		}
	}
	return total, nil
}

// recordTimeout bounds the state writes of one claim.
const recordTimeout = 5 * time.Second

// record writes the PENDING states and "sent" events of relayed, best
// effort (the tasks are queued whatever happens here).
func (r *Relay) record(ctx context.Context, relayed []client.Relayed) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := r.cl.RecordRelayed(ctx, relayed); err != nil {
		r.unrecorded.Warn().Err(err).Msg("outbox relay: task states not recorded in Redis; the tasks are queued anyway (logged at most once a minute)")
	}
}

// publish sends ms asynchronously and waits for every acknowledgement; it
// returns the row ids of the messages stored (or dropped as duplicates)
// and those messages with the server's answers.
func (r *Relay) publish(ctx context.Context, ms []store.OutboxMsg) ([]int64, []client.Relayed, error) {
	futs := make([]jetstream.PubAckFuture, len(ms))
	var errs []error
	fail := func(m store.OutboxMsg, err error) {
		r.m.relayed.WithLabelValues("error").Inc()
		if len(errs) < 3 { // enough to say why; the count says how many
			errs = append(errs, fmt.Errorf("task %s (outbox row %d): %w", m.TaskID, m.ID, err))
		} else {
			errs = append(errs, nil)
		}
	}
	for i, m := range ms {
		h := nats.Header(m.Header)
		if h.Get(wire.HeaderMsgID) == "" {
			// Without a deduplication id a republish could run it twice.
			fail(m, errors.New("no Nats-Msg-Id header: not published; delete the row by hand"))
			continue
		}
		f, err := r.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Header: h, Data: m.Data})
		if err != nil {
			fail(m, err)
			continue
		}
		futs[i] = f
	}
	done := make([]int64, 0, len(ms))
	relayed := make([]client.Relayed, 0, len(ms))
	for i, f := range futs {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			done = append(done, ms[i].ID)
			relayed = append(relayed, client.Relayed{Msg: f.Msg(), Duplicate: ack.Duplicate})
			if ack.Duplicate {
				r.m.relayed.WithLabelValues("duplicate").Inc()
			} else {
				r.m.relayed.WithLabelValues("ok").Inc()
			}
		case err := <-f.Err():
			fail(ms[i], err)
		case <-ctx.Done():
			fail(ms[i], ctx.Err())
		}
	}
	if r.afterPublish != nil {
		r.afterPublish(ctx)
	}
	return done, relayed, joinFailures(errs)
}

// joinFailures joins the first few publish errors and counts the rest
// (nil entries).
func joinFailures(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	var named []error
	for _, e := range errs {
		if e != nil {
			named = append(named, e)
		}
	}
	if more := len(errs) - len(named); more > 0 {
		named = append(named, fmt.Errorf("and %d more", more))
	}
	return fmt.Errorf("publish %d of the claimed tasks: %w", len(errs), errors.Join(named...))
}

// backoff is a jittered, doubling, capped wait.
type backoff struct {
	min, max, cur time.Duration
}

func (r *Relay) newBackoff() *backoff {
	return &backoff{min: r.cfg.BackoffMin, max: r.cfg.BackoffMax, cur: r.cfg.BackoffMin}
}

func (b *backoff) reset() { b.cur = b.min }

// wait sleeps for a random time in [cur/2, cur] and doubles cur up to max;
// it reports false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.cur/2 + rand.N(b.cur/2+1)
	b.cur = min(2*b.cur, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// metrics are the relay's counters.
type metrics struct {
	relayed  *prometheus.CounterVec
	failures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, st *store.Store) *metrics {
	m := &metrics{
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_outbox_relayed_total",
			Help: "Outbox rows published by this process, by result (ok, duplicate: dropped by the server's deduplication, error: left in the outbox).",
		}, []string{"result"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_outbox_drain_failures_total",
			Help: "Relay drains that failed (PostgreSQL or NATS unavailable, a publish refused) and were retried after a backoff.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.relayed, m.failures)
		// The outbox as a whole (every relay sees the same table): what an
		// alert watches, e.g. the oldest row older than a minute.
		stats := func(pick func(rows int64, oldest time.Duration) float64) func() float64 {
			return func() float64 {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				rows, oldest, err := st.OutboxStats(ctx)
				if err != nil {
					return math.NaN()
				}
				return pick(rows, oldest)
			}
		}
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "flotilla_outbox_rows", Help: "Rows waiting in the outbox table (NaN when PostgreSQL does not answer).",
			}, stats(func(rows int64, _ time.Duration) float64 { return float64(rows) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "flotilla_outbox_oldest_seconds", Help: "Age of the oldest row waiting in the outbox table, 0 when empty (NaN when PostgreSQL does not answer).",
			}, stats(func(_ int64, oldest time.Duration) float64 { return oldest.Seconds() })),
		)
	}
	return m
}
