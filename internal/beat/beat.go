// Package beat is the periodic scheduler: it syncs schedules declared in
// code into PostgreSQL, keeps every enabled schedule in a heap of next fire
// times, and — only while it holds the lease in the flotilla_beat bucket —
// publishes each due tick to TASKS with Nats-Msg-Id beat:<schedule>:<unix>,
// identical on every replica, so overlapping leaders cannot fire a tick twice
// within the stream's duplicate window. Bookkeeping (last run, run count) is
// written to PostgreSQL in batches and survives a database outage in memory.
package beat

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/task"
)

// Run is the bookkeeping of one schedule: its latest fire and its absolute
// run count (counted on from the value loaded from the database), so that
// writing it twice — after a lost commit acknowledgement — changes nothing.
type Run struct {
	Name    string
	FiredAt time.Time
	Count   int64
}

// Store is what beat needs from PostgreSQL.
type Store interface {
	// List returns every schedule.
	List(ctx context.Context) ([]schedule.Schedule, error)
	// Get returns one schedule; found is false when it does not exist.
	Get(ctx context.Context, name string) (s schedule.Schedule, found bool, err error)
	// SyncCode upserts the schedules declared in code.
	SyncCode(ctx context.Context, scs []schedule.Schedule) error
	// RecordRuns moves last_run_at and run_count forward to the runs' values
	// (never back; one-offs disable).
	RecordRuns(ctx context.Context, runs []Run) error
	// Listen calls fn(name) for each change notification, fn("") after a
	// reconnect; it blocks until ctx ends.
	Listen(ctx context.Context, fn func(name string)) error
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
}

// Scheduler is the beat role's engine.
type Scheduler struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	store Store
	cfg   Config
	log   zerolog.Logger
	el    *Elector

	notify chan string

	mu      sync.Mutex
	entries map[string]*entry
	h       fireHeap
	runs    map[string]*Run // pending bookkeeping
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

type pending struct {
	fut  jetstream.PubAckFuture
	name string
	at   time.Time
}

// New returns a scheduler.
func New(nc *nats.Conn, js jetstream.JetStream, store Store, cfg Config, log zerolog.Logger) *Scheduler {
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
	s := &Scheduler{
		nc: nc, js: js, store: store, cfg: cfg, log: log,
		notify:  make(chan string, 1024),
		entries: map[string]*entry{},
		runs:    map[string]*Run{},
		pipe:    make(chan pending, cfg.MaxPending),
	}
	s.el = NewElector(js, cfg.Elector, log)
	return s
}

// IsLeader reports whether this replica currently leads.
func (s *Scheduler) IsLeader() bool { return s.el.IsLeader() }

// CheckDedupWindow refuses to lead when TASKS' duplicate window does not
// exceed the lease TTL plus grace: overlapping leaders could then double-fire.
func CheckDedupWindow(ctx context.Context, js jetstream.JetStream, ttl, grace time.Duration) error {
	st, err := js.Stream(ctx, jet.StreamTasks)
	if err != nil {
		return fmt.Errorf("beat: stream %s: %w", jet.StreamTasks, err)
	}
	w := st.CachedInfo().Config.Duplicates
	if need := ttl + grace; w <= need {
		return fmt.Errorf("beat: the %s duplicate window (%s) must exceed the lease TTL plus grace (%s + %s); raise duplicate_window in streams/tasks.stream.json or lower the lease TTL — refusing to lead", jet.StreamTasks, w, ttl, grace)
	}
	return nil
}

// Run schedules until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := CheckDedupWindow(ctx, s.js, s.cfg.Elector.TTL, s.cfg.Grace); err != nil {
		return err
	}
	if len(s.cfg.Code) > 0 {
		if err := s.store.SyncCode(ctx, s.cfg.Code); err != nil {
			s.log.Warn().Err(err).Msg("sync code schedules (will retry on resync)")
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.el.Run(gctx) })
	g.Go(func() error {
		return s.store.Listen(gctx, func(name string) {
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
	go func() {
		defer side.Done()
		t := time.NewTicker(s.cfg.Resync)
		defer t.Stop()
		for {
			select {
			case <-sideCtx.Done():
				return
			case <-t.C:
			case <-resyncNow:
			}
			if len(s.cfg.Code) > 0 {
				_ = s.store.SyncCode(sideCtx, s.cfg.Code)
			}
			list, err := s.store.List(sideCtx)
			if err != nil {
				if sideCtx.Err() == nil {
					s.dbError(err, "load schedules")
				}
				continue
			}
			s.dbOK()
			select {
			case lists <- list:
			case <-sideCtx.Done():
				return
			}
		}
	}()
	go func() {
		defer side.Done()
		t := time.NewTicker(s.cfg.Flush)
		defer t.Stop()
		for {
			select {
			case <-sideCtx.Done():
				s.flushRuns(context.WithoutCancel(ctx))
				return
			case <-t.C:
				s.flushRuns(sideCtx)
			}
		}
	}()
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
				s.reloadAll(ctx)
				s.catchUp(ctx)
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
			s.fireDue(ctx)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// reloadAll reads every schedule and diffs it into the heap. A database
// error keeps what is loaded.
func (s *Scheduler) reloadAll(ctx context.Context) {
	list, err := s.store.List(ctx)
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
	schedulesGauge.Set(float64(len(s.entries)))
}

func (s *Scheduler) reload(ctx context.Context, name string) {
	sc, found, err := s.store.Get(ctx, name)
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
	schedulesGauge.Set(float64(len(s.entries)))
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
func (s *Scheduler) catchUp(ctx context.Context) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, e := range s.entries {
		due := e.c.Due(e.last, now, s.cfg.Grace)
		for _, at := range due {
			if !s.el.IsLeader() {
				return
			}
			s.publishLocked(ctx, e, at)
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
}

// fireDue publishes every tick that is due, as long as the lease holds.
func (s *Scheduler) fireDue(ctx context.Context) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.h) > 0 && !s.h[0].next.After(now) {
		if !s.el.IsLeader() {
			return // a leader that cannot vouch for its lease stops at once
		}
		e := s.h[0]
		at := e.next
		s.publishLocked(ctx, e, at)
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
}

func (s *Scheduler) publishLocked(ctx context.Context, e *entry, at time.Time) {
	sc := e.c.S
	env := &task.Envelope{
		ID: ulid.Make().String(), Name: sc.Task, Queue: sc.Queue, Args: sc.Args,
		MaxRetries: -1, EnqueuedAt: s.cfg.Now(), Origin: "beat/" + sc.Name,
	}
	msg := jet.NewTaskMsg(jet.TaskSubject(sc.Queue, sc.Task), env, schedule.MsgID(sc.Name, at), "")
	fireLag.Observe(s.cfg.Now().Sub(at).Seconds())
	if s.cfg.PublishMode == PublishInline {
		ack, err := s.js.PublishMsg(ctx, msg)
		s.done(sc.Name, at, ack, err)
	} else {
		fut, err := s.js.PublishMsgAsync(msg)
		if err != nil {
			s.done(sc.Name, at, nil, err)
		} else {
			s.pipe <- pending{fut: fut, name: sc.Name, at: at}
		}
	}
	if at.After(e.last) {
		e.last = at
	}
	e.runs++
	s.noteRunLocked(Run{Name: sc.Name, FiredAt: at, Count: e.runs})
}

// noteRunLocked merges r into the bookkeeping waiting for the next flush;
// both fields only move forward.
func (s *Scheduler) noteRunLocked(r Run) {
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

// collect checks async publish acks.
func (s *Scheduler) collect(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-s.pipe:
			select {
			case ack := <-p.fut.Ok():
				s.done(p.name, p.at, ack, nil)
			case err := <-p.fut.Err():
				// Retry once synchronously with the same Msg-Id: safe, the
				// server deduplicates.
				ack, err2 := s.js.PublishMsg(ctx, p.fut.Msg())
				if err2 != nil {
					err2 = errors.Join(err, err2)
				}
				s.done(p.name, p.at, ack, err2)
			case <-ctx.Done():
				return
			}
		}
	}
}

func (s *Scheduler) done(name string, at time.Time, ack *jetstream.PubAck, err error) {
	if s.cfg.Observe != nil {
		s.cfg.Observe(name, at, s.cfg.Now(), err)
	}
	switch {
	case err != nil:
		fires.WithLabelValues("error").Inc()
		s.log.Error().Err(err).Str("schedule", name).Time("fire_at", at).Msg("publish fire")
	case ack != nil && ack.Duplicate:
		fires.WithLabelValues("duplicate").Inc()
	default:
		fires.WithLabelValues("ok").Inc()
	}
}

func (s *Scheduler) flushRuns(ctx context.Context) {
	s.mu.Lock()
	if len(s.runs) == 0 {
		s.mu.Unlock()
		return
	}
	batch := make([]Run, 0, len(s.runs))
	for _, r := range s.runs {
		batch = append(batch, *r)
	}
	s.runs = map[string]*Run{}
	s.mu.Unlock()
	if err := s.store.RecordRuns(ctx, batch); err != nil {
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
