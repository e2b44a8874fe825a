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
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/wire"
)

// Store is what beat needs from PostgreSQL (implemented by [store.Store]).
type Store interface {
	// ScheduleList returns every schedule.
	ScheduleList(ctx context.Context) ([]schedule.Schedule, error)
	// ScheduleGet returns one schedule, or an error matching store.ErrNotFound.
	ScheduleGet(ctx context.Context, name string) (schedule.Schedule, error)
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
	// Resync is the period of the full reload safety net. Default 30s.
	Resync time.Duration
	// Flush is the period of bookkeeping writes. Default 1s.
	Flush time.Duration
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

	notify chan string

	// mu guards the heap and the bookkeeping; it is never held across
	// network I/O.
	mu      sync.Mutex
	entries map[string]*entry
	h       fireHeap
	runs    map[string]*schedule.Run // pending bookkeeping
	dbDown  bool

	pipe chan pending
}

type entry struct {
	c     *schedule.Compiled
	runs  int64     // run count known (db or local)
	last  time.Time // last fire known (db or local)
	next  time.Time
	index int // in heap; -1 when not queued
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
	if cfg.Flush <= 0 {
		cfg.Flush = time.Second
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
		notify:  make(chan string, 1024),
		entries: map[string]*entry{},
		runs:    map[string]*schedule.Run{},
		pipe:    make(chan pending, cfg.MaxPending),
	}
	s.el = NewElector(js, cfg.Elector, m, log)
	s.rep = newReporter(s)
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
	g.Go(func() error {
		return s.store.ScheduleListen(gctx, func(name string) {
			select {
			case s.notify <- name:
			default: // full: a resync picks everything up
				select {
				case s.notify <- "":
				default:
				}
			}
		})
	})
	g.Go(func() error { s.collect(gctx); return nil })
	g.Go(func() error { s.rep.run(gctx); return nil })
	g.Go(func() error { return s.loop(gctx) })
	return g.Wait()
}

func (s *Scheduler) loop(ctx context.Context) error {
	// No load here: Listen reports "" as soon as it listens (a full resync
	// that fills a standby's cache), and gaining the lease reloads anyway.
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// Reading every schedule and writing bookkeeping take database round
	// trips (seconds with 100,000 schedules): they run beside the firing
	// loop, which only applies their results, so no fire waits for them.
	lists := make(chan []schedule.Schedule, 1)
	resyncNow := make(chan struct{}, 1)
	var side sync.WaitGroup
	sideCtx, stopSide := context.WithCancel(ctx)
	defer func() { stopSide(); side.Wait() }()
	side.Add(2)
	go func() { defer side.Done(); s.resyncLoop(sideCtx, lists, resyncNow) }()
	go func() { defer side.Done(); s.flushLoop(sideCtx) }()
	changes := s.el.Changes()
	for {
		wait := time.Hour
		if s.el.IsLeader() {
			s.mu.Lock()
			if len(s.h) > 0 {
				wait = max(0, s.h[0].next.Sub(s.cfg.Now()))
			}
			s.mu.Unlock()
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
			if leading {
				// Before the catch-up, so that its fires count in the term.
				s.stats.begin(s.cfg.Now())
				s.rep.now()
				s.reloadAll(ctx)
				s.publish(ctx, s.catchUp())
			} else {
				s.stats.end()
			}
		case name := <-s.notify:
			if name == "" {
				select {
				case resyncNow <- struct{}{}:
				default:
				}
			} else {
				s.reload(ctx, name)
			}
		case list := <-lists:
			s.apply(list)
		case <-timer.C:
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

// resyncLoop reads every schedule each Resync period (or when asked on
// now) and hands the list to the firing loop on lists.
func (s *Scheduler) resyncLoop(ctx context.Context, lists chan<- []schedule.Schedule, now <-chan struct{}) {
	t := time.NewTicker(s.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-now:
		}
		if len(s.cfg.Code) > 0 {
			_ = s.store.ScheduleSyncCode(ctx, s.cfg.Code)
		}
		list, err := s.store.ScheduleList(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.dbError(err, "load schedules")
			}
			continue
		}
		s.dbOK()
		select {
		case lists <- list:
		case <-ctx.Done():
			return
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

// reloadAll reads every schedule and diffs it into the heap. A database
// error keeps what is loaded.
func (s *Scheduler) reloadAll(ctx context.Context) {
	list, err := s.store.ScheduleList(ctx)
	if err != nil {
		s.dbError(err, "load schedules")
		return
	}
	s.dbOK()
	s.apply(list)
}

// apply diffs a full list of schedules into the heap.
func (s *Scheduler) apply(list []schedule.Schedule) {
	seen := make(map[string]bool, len(list))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sc := range list {
		seen[sc.Name] = true
		s.upsertLocked(sc)
	}
	for name := range s.entries {
		if !seen[name] {
			s.removeLocked(name)
		}
	}
	s.metrics.schedules.Set(float64(len(s.entries)))
}

func (s *Scheduler) reload(ctx context.Context, name string) {
	sc, err := s.store.ScheduleGet(ctx, name)
	found := err == nil
	if errors.Is(err, store.ErrNotFound) {
		err = nil
	}
	if err != nil {
		s.dbError(err, "load schedule "+name)
		return
	}
	s.dbOK()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !found {
		s.removeLocked(name)
	} else {
		s.upsertLocked(sc)
	}
	s.metrics.schedules.Set(float64(len(s.entries)))
}

func (s *Scheduler) upsertLocked(sc schedule.Schedule) {
	if !sc.Enabled {
		s.removeLocked(sc.Name)
		return
	}
	e, ok := s.entries[sc.Name]
	if ok && sameSchedule(e.c.S, sc) {
		// Only bookkeeping moved: keep the compiled schedule and its next fire.
		if sc.LastRunAt != nil && sc.LastRunAt.After(e.last) {
			e.last = *sc.LastRunAt
		}
		e.runs = max(e.runs, sc.RunCount)
		e.c.S.LastRunAt = sc.LastRunAt
		return
	}
	c, err := schedule.Compile(sc)
	if err != nil {
		s.log.Error().Err(err).Str("schedule", sc.Name).Msg("schedule does not compile; not firing it")
		s.removeLocked(sc.Name)
		return
	}
	if !ok {
		e = &entry{index: -1}
		s.entries[sc.Name] = e
	}
	e.c = c
	if sc.LastRunAt != nil && sc.LastRunAt.After(e.last) {
		e.last = *sc.LastRunAt
	}
	e.runs = max(e.runs, sc.RunCount)
	from := s.cfg.Now()
	if e.last.After(from) {
		from = e.last
	}
	next, more := c.Next(from)
	if !more {
		s.removeLocked(sc.Name)
		return
	}
	e.next = next
	if e.index >= 0 {
		heap.Fix(&s.h, e.index)
	} else {
		heap.Push(&s.h, e)
	}
}

// sameSchedule reports whether the timing and target of a and b match, so a
// reload that only moved bookkeeping keeps the queued next fire.
func sameSchedule(a, b schedule.Schedule) bool {
	return a.Task == b.Task && a.Queue == b.Queue && string(a.Args) == string(b.Args) &&
		a.Cron == b.Cron && a.Timezone == b.Timezone && a.Interval == b.Interval &&
		eqTime(a.StartAt, b.StartAt) && eqTime(a.ExpiresAt, b.ExpiresAt) && a.OneOff == b.OneOff &&
		a.Spread == b.Spread && a.Misfire == b.Misfire && a.CatchUpMax == b.CatchUpMax && a.Enabled == b.Enabled
}

func eqTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func (s *Scheduler) removeLocked(name string) {
	e, ok := s.entries[name]
	if !ok {
		return
	}
	if e.index >= 0 {
		heap.Remove(&s.h, e.index)
	}
	delete(s.entries, name)
}

// catchUp runs when this replica becomes leader: every schedule's ticks
// since its last recorded fire are due, per its misfire policy.
func (s *Scheduler) catchUp() []fire {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var fires []fire
	for name, e := range s.entries {
		if !s.el.IsLeader() {
			break
		}
		due := e.c.Due(e.last, now, s.cfg.Grace)
		for _, at := range due {
			fires = append(fires, s.firedLocked(e, at))
		}
		if e.c.S.OneOff && len(due) > 0 {
			s.removeLocked(name)
			continue
		}
		from := now
		if e.last.After(from) {
			from = e.last
		}
		next, more := e.c.Next(from)
		if !more {
			s.removeLocked(name)
			continue
		}
		e.next = next
		heap.Fix(&s.h, e.index)
	}
	return fires
}

// due takes every tick that is due off the heap, as long as the lease holds.
func (s *Scheduler) due() []fire {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var fires []fire
	for len(s.h) > 0 && !s.h[0].next.After(now) {
		if !s.el.IsLeader() {
			break // a leader that cannot vouch for its lease stops at once
		}
		e := s.h[0]
		at := e.next
		fires = append(fires, s.firedLocked(e, at))
		if e.c.S.OneOff {
			s.removeLocked(e.c.S.Name)
			continue
		}
		next, more := e.c.Next(at)
		if !more {
			s.removeLocked(e.c.S.Name)
			continue
		}
		e.next = next
		heap.Fix(&s.h, 0)
	}
	return fires
}

// firedLocked books a fire of e at at and returns it for publishing.
func (s *Scheduler) firedLocked(e *entry, at time.Time) fire {
	if at.After(e.last) {
		e.last = at
	}
	e.runs++
	s.noteRunLocked(schedule.Run{Name: e.c.S.Name, FiredAt: at, Count: e.runs})
	sc := &e.c.S
	return fire{name: sc.Name, task: sc.Task, queue: sc.Queue, args: sc.Args, at: at}
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
	p := s.runs[r.Name]
	if p == nil {
		s.runs[r.Name] = &r
		return
	}
	p.Count = max(p.Count, r.Count)
	if r.FiredAt.After(p.FiredAt) {
		p.FiredAt = r.FiredAt
	}
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
		batch = append(batch, *r)
	}
	s.runs = map[string]*schedule.Run{}
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

// fireHeap orders entries by next fire time.
type fireHeap []*entry

func (h fireHeap) Len() int           { return len(h) }
func (h fireHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h fireHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *fireHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *fireHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*h = old[:len(old)-1]
	return e
}
