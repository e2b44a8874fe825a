// Package beat is the periodic scheduler: it syncs schedules declared in
// code into PostgreSQL, keeps every enabled schedule in a heap of next fire
// times, and — only while it holds the lease in the flotilla_beat bucket —
// enqueues each due tick through the one producer path (package client:
// PENDING state, "sent" event, size checks) with Nats-Msg-Id
// beat:<schedule>:<unix>, identical on every replica, so overlapping leaders
// cannot fire a tick twice within the stream's duplicate window.
// Bookkeeping (last run, run count) is written to PostgreSQL in batches and
// survives a database outage in memory. The leader also puts a small report
// ([wire.BeatStats]: its terms, fires and fire lag) into the lease bucket
// every few seconds, for roles that cannot scrape its metrics; [Stats]
// reads it.
package beat

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/wire"
)

// Store is what beat needs from PostgreSQL (implemented by [store.Store]).
type Store interface {
	// ScheduleListPage returns up to limit schedules whose names sort
	// after after, in name order.
	ScheduleListPage(ctx context.Context, after string, limit int) ([]schedule.Schedule, error)
	// ScheduleListChanged returns up to limit schedules whose definition
	// changed at or after since and whose names sort after after, in name
	// order.
	ScheduleListChanged(ctx context.Context, since time.Time, after string, limit int) ([]schedule.Schedule, error)
	// ScheduleListVersions returns up to limit enabled schedules' names
	// and definition times whose names sort after after, in name order.
	ScheduleListVersions(ctx context.Context, after string, limit int) ([]schedule.Version, error)
	// ScheduleListNamed returns those of the named schedules that exist.
	ScheduleListNamed(ctx context.Context, names []string) ([]schedule.Schedule, error)
	// ScheduleSyncCode upserts the schedules declared in code.
	ScheduleSyncCode(ctx context.Context, scs []schedule.Schedule) error
	// ScheduleRecordRuns moves last_run_at and run_count forward to the
	// runs' values (never back; one-offs disable).
	ScheduleRecordRuns(ctx context.Context, runs []schedule.Run) error
	// ScheduleListen calls fn(name) for each change notification, fn("")
	// after a reconnect; it blocks until ctx ends.
	ScheduleListen(ctx context.Context, fn func(name string)) error
}

// Producer is what beat needs from the client: validate a fire and send a
// batch of them asynchronously (see [client.Client.Send]).
type Producer interface {
	Prepare(r client.Request) (*client.Prepared, error)
	Send(ctx context.Context, ps []*client.Prepared) ([]*client.Future, error)
}

// Publish modes.
const (
	PublishInline = "inline"
	PublishAsync  = "async"
)

// Config configures a [Scheduler].
type Config struct {
	Elector ElectorConfig
	// Grace: ticks at most this old count as on time and are all fired
	// (covers a failover); older missed ticks follow the misfire policy.
	// Default 3×lease TTL.
	Grace time.Duration
	// Resync is the period of the re-read of the schedules whose
	// definition changed lately (the safety net behind LISTEN/NOTIFY).
	// Default 30s.
	Resync time.Duration
	// FullResync is the period of the check of every schedule held: a
	// paged read of the enabled schedules' names and definition times
	// (at most a third of the loader's time, beside the firing), which
	// finds schedules deleted, disabled or changed without a notification
	// and reads those again. Default 10m.
	FullResync time.Duration
	// PageSize is how many schedules one read of a full load fetches.
	// Default 5000.
	PageSize int
	// Flush is the period of bookkeeping writes. Default 1s.
	Flush time.Duration
	// Batch is the shortest time between two publishes of due fires:
	// ticks that fall due within it go out together (one Redis round trip
	// and one flush for all), none before its time. Default 2ms.
	Batch time.Duration
	// PublishMode is inline or async (default): a bounded async pipeline.
	PublishMode string
	// MaxPending bounds the async pipeline. Default 4096.
	MaxPending int
	// Code holds the schedules declared in code.
	Code []schedule.Schedule
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Observe, when set, is called for every fire once the server acked it
	// (or failed), with its due time; the benchmark measures lag with it.
	Observe func(name string, due, acked time.Time, err error)
	// Loaded, when set, is called after each full read of the schedules
	// with its kind ("load", "catch-up" or "check"), start, end and the
	// number of schedules read, and after each re-read of changed ones
	// that found some ("changed"); the benchmark reports it.
	Loaded func(kind string, start, end time.Time, n int)
	// Metrics registers beat's metrics; nil = a private registry.
	Metrics prometheus.Registerer
}

// Scheduler is the beat role's engine.
type Scheduler struct {
	js      jetstream.JetStream
	store   Store
	prod    Producer
	cfg     Config
	log     zerolog.Logger
	el      *Elector
	metrics *metrics
	stats   fireStats
	rep     *reporter
	ld      *loader

	// mu guards the table and the bookkeeping; it is never held across
	// network I/O.
	mu     sync.Mutex
	t      *table
	runs   map[string]schedule.Run // pending bookkeeping
	dbDown bool
	// term counts the terms begun; the catch-up pages of a full load
	// carry the term that asked for them.
	term uint64

	pipe chan pending
}

// fire is one due tick of a schedule, copied out from under the mutex.
type fire struct {
	name, task, queue string
	args              []byte
	at                time.Time
}

type pending struct {
	fut  *client.Future
	name string
	at   time.Time
}

// New returns a scheduler that enqueues through prod.
func New(js jetstream.JetStream, store Store, prod Producer, cfg Config, log zerolog.Logger) *Scheduler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Elector.Now = cfg.Now
	cfg.Elector.defaults()
	if cfg.Grace <= 0 {
		cfg.Grace = 3 * cfg.Elector.TTL
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.FullResync <= 0 {
		cfg.FullResync = 10 * time.Minute
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 5000
	}
	if cfg.Flush <= 0 {
		cfg.Flush = time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 2 * time.Millisecond
	}
	if cfg.PublishMode == "" {
		cfg.PublishMode = PublishAsync
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 4096
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	m := newMetrics(cfg.Metrics)
	s := &Scheduler{
		js: js, store: store, prod: prod, cfg: cfg, log: log, metrics: m,
		t:    newTable(),
		runs: map[string]schedule.Run{},
		pipe: make(chan pending, cfg.MaxPending),
	}
	s.el = NewElector(js, cfg.Elector, m, log)
	s.rep = newReporter(s)
	s.ld = newLoader(s)
	return s
}

// IsLeader reports whether this replica currently leads.
func (s *Scheduler) IsLeader() bool { return s.el.IsLeader() }

// CheckDedupWindow refuses to lead when TASKS' duplicate window does not
// exceed the lease TTL plus grace: overlapping leaders could then double-fire.
func CheckDedupWindow(ctx context.Context, js jetstream.JetStream, ttl, grace time.Duration) error {
	st, err := js.Stream(ctx, wire.StreamTasks)
	if err != nil {
		return fmt.Errorf("beat: stream %s: %w", wire.StreamTasks, err)
	}
	w := st.CachedInfo().Config.Duplicates
	if need := ttl + grace; w <= need {
		return fmt.Errorf("beat: the %s duplicate window (%s) must exceed the lease TTL plus grace (%s + %s); raise duplicate_window in streams/tasks.stream.json or lower the lease TTL — refusing to lead", wire.StreamTasks, w, ttl, grace)
	}
	return nil
}

// Run schedules until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := CheckDedupWindow(ctx, s.js, s.cfg.Elector.TTL, s.cfg.Grace); err != nil {
		return err
	}
	if len(s.cfg.Code) > 0 {
		if err := s.store.ScheduleSyncCode(ctx, s.cfg.Code); err != nil {
			s.log.Warn().Err(err).Msg("sync code schedules (will retry on resync)")
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.el.Run(gctx) })
	// Listen reports "" as soon as it listens: a full load that fills a
	// standby's memory; gaining the lease loads again, with catch-up.
	g.Go(func() error { return s.store.ScheduleListen(gctx, s.ld.notify) })
	g.Go(func() error { s.ld.run(gctx); return nil })
	g.Go(func() error { s.collect(gctx); return nil })
	g.Go(func() error { s.rep.run(gctx); return nil })
	g.Go(func() error { return s.loop(gctx) })
	return g.Wait()
}

// loop is the firing loop: it fires what is due while leading and applies
// what the loader read. Reads and bookkeeping writes take database round
// trips (seconds for a million schedules): they run beside it, so no fire
// waits for them.
func (s *Scheduler) loop(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var side sync.WaitGroup
	sideCtx, stopSide := context.WithCancel(ctx)
	defer func() { stopSide(); side.Wait() }()
	side.Add(1)
	go func() { defer side.Done(); s.flushLoop(sideCtx) }()
	changes := s.el.Changes()
	var fired time.Time // when due fires were last taken
	for {
		wait := time.Hour
		if s.el.IsLeader() {
			now := s.cfg.Now()
			s.mu.Lock()
			if i, ok := s.t.top(); ok {
				wait = max(0, time.Duration(s.t.rows[i].next-now.UnixNano()))
			}
			s.mu.Unlock()
			// With thousands of fires a second, wake once per batch, not
			// once per fire.
			wait = max(wait, fired.Add(s.cfg.Batch).Sub(now))
			// Re-check leadership at least as often as it may lapse.
			wait = min(wait, s.cfg.Elector.Renew)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case leading, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			s.mu.Lock()
			s.term++
			term := s.term
			if leading {
				// Nothing fires from memory until its schedule is read
				// again with its bookkeeping and caught up (page by page:
				// the first pages fire while the rest load).
				s.t.clearHeap()
			}
			s.mu.Unlock()
			if leading {
				// Before the catch-up, so that its fires count in the term.
				s.stats.begin(s.cfg.Now())
				s.rep.now()
				s.ld.catchUp(term)
			} else {
				s.stats.end()
			}
		case pg := <-s.ld.pages:
			s.publish(ctx, s.apply(pg))
		case <-timer.C:
			fired = s.cfg.Now()
			s.publish(ctx, s.due())
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// flushLoop writes the pending bookkeeping every Flush period, and once
// more when ctx ends.
func (s *Scheduler) flushLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Flush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flushRuns(context.WithoutCancel(ctx))
			return
		case <-t.C:
			s.flushRuns(ctx)
		}
	}
}

// apply merges a page the loader read into memory and returns the fires
// its catch-up found (a page read for a term that is still leading).
func (s *Scheduler) apply(pg page) []fire {
	now := s.cfg.Now()
	readAt := pg.readAt.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.t
	catchUp := pg.catchUp && pg.term == s.term && s.el.IsLeader()
	var fires []fire
	if pg.failed {
		// The catch-up read failed (PostgreSQL down): catch up from
		// memory what was not read, as firing must go on.
		if catchUp {
			for i := range t.rows {
				if r := &t.rows[i]; r.used && r.hidx < 0 {
					fires = s.catchUpLocked(int32(i), now, fires)
				}
			}
		}
		s.metrics.schedules.Set(float64(t.len()))
		return fires
	}
	var stale []string
	for _, v := range pg.versions {
		// A check: what is held and current counts as seen; what is
		// missing or older is read again by name.
		i, ok := t.get(v.Name)
		if !ok {
			stale = append(stale, v.Name)
			continue
		}
		r := &t.rows[i]
		r.seen = max(r.seen, readAt)
		if r.updated != v.UpdatedAt.UnixNano() {
			stale = append(stale, v.Name)
		}
	}
	if len(stale) > 0 {
		s.ld.notifyNames(stale)
	}
	for k := range pg.rows {
		i, changed := s.upsertLocked(&pg.rows[k], readAt)
		switch {
		case i < 0:
		case catchUp:
			fires = s.catchUpLocked(i, now, fires)
		case changed:
			s.armLocked(i, now)
		}
	}
	if pg.named != nil {
		// A read by name: the names it did not return are gone.
		for _, name := range pg.named {
			if i, ok := t.get(name); ok && t.rows[i].seen < readAt {
				t.remove(i)
			}
		}
	}
	if pg.end {
		// The end of a full load or check: what it did not see (and
		// nothing read since refreshed) was deleted or disabled.
		start := pg.start.UnixNano()
		for i := range t.rows {
			if r := &t.rows[i]; r.used && r.seen < start {
				t.remove(int32(i))
			}
		}
	}
	s.metrics.schedules.Set(float64(t.len()))
	return fires
}

// upsertLocked merges sc, read at readAt, into the table and returns its
// row: a disabled or broken schedule leaves (-1); a new or redefined one
// takes its timing and target, changed reporting that its next fire must
// be computed again. Bookkeeping only moves forward.
func (s *Scheduler) upsertLocked(sc *schedule.Schedule, readAt int64) (i int32, changed bool) {
	t := s.t
	i, ok := t.get(sc.Name)
	if !sc.Enabled {
		if ok {
			t.remove(i)
		}
		return -1, false
	}
	tm, err := t.timing(sc)
	if err != nil {
		s.log.Error().Err(err).Str("schedule", sc.Name).Msg("schedule does not compile; not firing it")
		if ok {
			t.remove(i)
		}
		return -1, false
	}
	tg := t.target(sc)
	var created int64
	if !sc.CreatedAt.IsZero() {
		created = sc.CreatedAt.UnixNano()
	}
	if !ok {
		i = t.add(sc.Name, tm, tg)
		changed = true
	} else {
		r := &t.rows[i]
		changed = r.timing != tm || r.target != tg || r.created != created
		t.setShared(i, tm, tg)
	}
	r := &t.rows[i]
	r.created = created
	r.updated = sc.UpdatedAt.UnixNano()
	r.offset = int64(t.timings.vals[tm].Offset(sc.Name))
	if sc.LastRunAt != nil {
		r.last = max(r.last, sc.LastRunAt.UnixNano())
	}
	r.runs = max(r.runs, sc.RunCount)
	r.seen = max(r.seen, readAt)
	return i, changed
}

// armLocked queues row i at its next fire after now (or after its last
// fire, if later); a schedule that never fires again leaves. A one-off
// that fired is done: it stays unqueued until it is read disabled.
func (s *Scheduler) armLocked(i int32, now time.Time) {
	r := &s.t.rows[i]
	if r.last != 0 && s.t.timings.vals[r.timing].OneOff() {
		s.t.unqueue(i)
		return
	}
	from := now
	if last := unixTime(r.last); last.After(from) {
		from = last
	}
	s.queueNextLocked(i, from)
}

// queueNextLocked queues row i at its first fire strictly after from.
func (s *Scheduler) queueNextLocked(i int32, from time.Time) {
	t := s.t
	r := &t.rows[i]
	next, more := t.timings.vals[r.timing].Next(from, time.Duration(r.offset))
	if !more {
		t.remove(i)
		return
	}
	r.next = next.UnixNano()
	t.push(i)
}

// catchUpLocked fires row i's ticks since its last recorded fire, per its
// misfire policy, and queues its next fire: what a new leader does for
// each schedule it reads.
func (s *Scheduler) catchUpLocked(i int32, now time.Time, fires []fire) []fire {
	t := s.t
	r := &t.rows[i]
	tm := t.timings.vals[r.timing]
	due := tm.Due(unixTime(r.last), unixTime(r.created), now, s.cfg.Grace, time.Duration(r.offset))
	for _, at := range due {
		fires = append(fires, s.firedLocked(i, at))
	}
	s.armLocked(i, now)
	return fires
}

// due takes the ticks that are due off the heap, as long as the lease
// holds: at most MaxPending at a time, so that a leader that falls behind
// (its servers slower than its schedules) keeps a bounded backlog in
// memory — the rest stay in the heap, and the loop comes back at once.
func (s *Scheduler) due() []fire {
	nowNs := s.cfg.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.t
	var fires []fire
	for len(fires) < s.cfg.MaxPending {
		i, ok := t.top()
		if !ok || t.rows[i].next > nowNs {
			break
		}
		if !s.el.IsLeader() {
			break // a leader that cannot vouch for its lease stops at once
		}
		at := unixTime(t.rows[i].next)
		fires = append(fires, s.firedLocked(i, at))
		if t.timings.vals[t.rows[i].timing].OneOff() {
			t.unqueue(i) // done (see armLocked)
			continue
		}
		s.queueNextLocked(i, at)
	}
	return fires
}

// firedLocked books a fire of row i at at and returns it for publishing.
func (s *Scheduler) firedLocked(i int32, at time.Time) fire {
	t := s.t
	r := &t.rows[i]
	r.last = max(r.last, at.UnixNano())
	r.runs++
	name := t.name(i)
	s.noteRunLocked(schedule.Run{Name: name, FiredAt: at, Count: r.runs, OneOff: t.timings.vals[r.timing].OneOff()})
	tg := t.targets.vals[r.target]
	return fire{name: name, task: tg.task, queue: tg.queue, args: tg.args, at: at}
}

// unixTime is the UTC time of Unix nanoseconds ns; zero for 0.
func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// publish enqueues fires through the producer: one Redis round trip for
// their PENDING states, then asynchronous publishes whose acknowledgements
// collect checks (PublishInline waits for each instead). It runs without
// the mutex.
func (s *Scheduler) publish(ctx context.Context, fires []fire) {
	if len(fires) == 0 {
		return
	}
	ps := make([]*client.Prepared, 0, len(fires))
	ok := fires[:0:0]
	now := s.cfg.Now()
	s.stats.record(now, fires)
	for _, f := range fires {
		s.metrics.lag.Observe(now.Sub(f.at).Seconds())
		p, err := s.prod.Prepare(client.Request{
			Task: f.task, Queue: f.queue, Args: f.args,
			MsgID: wire.BeatMsgID(f.name, f.at), Origin: wire.OriginBeat(f.name),
		})
		if err != nil {
			s.done(f.name, f.at, false, err)
			continue
		}
		ps = append(ps, p)
		ok = append(ok, f)
	}
	futs, err := s.prod.Send(ctx, ps)
	if err != nil {
		for _, f := range ok {
			s.done(f.name, f.at, false, err)
		}
		return
	}
	for i, fut := range futs {
		p := pending{fut: fut, name: ok[i].name, at: ok[i].at}
		if s.cfg.PublishMode == PublishInline {
			res, err := fut.Wait(ctx)
			s.done(p.name, p.at, res.Duplicate, err)
			continue
		}
		select {
		case s.pipe <- p:
		case <-ctx.Done():
			return
		}
	}
}

// noteRunLocked merges r into the bookkeeping waiting for the next flush;
// both fields only move forward.
func (s *Scheduler) noteRunLocked(r schedule.Run) {
	p, ok := s.runs[r.Name]
	if !ok {
		s.runs[r.Name] = r
		return
	}
	p.Count = max(p.Count, r.Count)
	if r.FiredAt.After(p.FiredAt) {
		p.FiredAt = r.FiredAt
	}
	p.OneOff = p.OneOff || r.OneOff
	s.runs[r.Name] = p
}

// collect waits for the acknowledgements of asynchronous fires, in order.
func (s *Scheduler) collect(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-s.pipe:
			res, err := p.fut.Wait(ctx)
			if ctx.Err() != nil {
				return
			}
			s.done(p.name, p.at, res.Duplicate, err)
		}
	}
}

func (s *Scheduler) done(name string, at time.Time, duplicate bool, err error) {
	if s.cfg.Observe != nil {
		s.cfg.Observe(name, at, s.cfg.Now(), err)
	}
	switch {
	case err != nil:
		s.metrics.fires.WithLabelValues("error").Inc()
		s.stats.failed()
		s.log.Error().Err(err).Str("schedule", name).Time("fire_at", at).Msg("publish fire")
	case duplicate:
		s.metrics.fires.WithLabelValues("duplicate").Inc()
	default:
		s.metrics.fires.WithLabelValues("ok").Inc()
	}
}

func (s *Scheduler) flushRuns(ctx context.Context) {
	s.mu.Lock()
	if len(s.runs) == 0 {
		s.mu.Unlock()
		return
	}
	batch := make([]schedule.Run, 0, len(s.runs))
	for _, r := range s.runs {
		batch = append(batch, r)
	}
	s.runs = make(map[string]schedule.Run, len(batch))
	s.mu.Unlock()
	if err := s.store.ScheduleRecordRuns(ctx, batch); err != nil {
		s.dbError(err, "record runs")
		// Keep them for the next flush, merged with newer fires.
		s.mu.Lock()
		for _, r := range batch {
			s.noteRunLocked(r)
		}
		s.mu.Unlock()
		return
	}
	s.dbOK()
}

// dbError logs the first database error of an outage; firing goes on.
func (s *Scheduler) dbError(err error, op string) {
	s.mu.Lock()
	first := !s.dbDown
	s.dbDown = true
	s.mu.Unlock()
	if first {
		s.log.Error().Err(err).Str("op", op).Msg("PostgreSQL unavailable: firing from memory, bookkeeping deferred")
	}
}

func (s *Scheduler) dbOK() {
	s.mu.Lock()
	was := s.dbDown
	s.dbDown = false
	s.mu.Unlock()
	if was {
		s.log.Info().Msg("PostgreSQL is back: bookkeeping resumed")
	}
}
