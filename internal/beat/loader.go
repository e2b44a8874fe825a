package beat

import (
	"context"
	"sync"
	"time"

	"github.com/flotilla/flotilla/internal/schedule"
)

// changedMargin widens each re-read of changed schedules backwards:
// updated_at is the time its transaction began (PostgreSQL's now()), so a
// transaction that began before the previous read and committed after it
// still falls into the next one, as does a clock a little off the
// database's. (Its NOTIFY, sent at commit, normally brings it first.)
const changedMargin = 5 * time.Second

// maxNamed bounds the notified names waiting to be read; beyond it a full
// load is cheaper than reading them by name.
const maxNamed = 50_000

// namedChunk is how many names one read by name asks for.
const namedChunk = 1000

// loader reads schedules from PostgreSQL beside the firing loop, one read
// at a time, and hands what it read to the loop in the order it read it,
// so a later read always wins: full loads in pages (at start and, with
// catch-up, when the lease is gained), the schedules named by
// notifications (served between the pages of longer reads), every Resync
// the ones whose definition changed lately, and every FullResync (and
// after a LISTEN reconnect) a check of everything held: the names and
// definition times of the enabled schedules, paced to use at most a third
// of the loader's time, after which the loop asks for what differs by
// name and drops what is gone.
type loader struct {
	s     *Scheduler
	pages chan page
	wake  chan struct{}

	mu          sync.Mutex
	names       map[string]struct{} // notified, not read yet
	full        bool                // a full load is asked for
	check       bool                // a check is asked for
	catchUpTerm uint64              // a catch-up load is asked for this term; 0 none

	// since is where the next re-read of changed schedules starts: the
	// start of the last read that saw every change before it. Zero until
	// the first full load ends.
	since time.Time
}

// page is one read's result.
type page struct {
	rows []schedule.Schedule
	// versions is a page of a check: the enabled schedules' names and
	// definition times.
	versions []schedule.Version
	readAt   time.Time // when the read began
	// named is set for a read by name: the names asked for (those
	// missing from rows are gone).
	named []string
	// start is when the full load or check this page belongs to began;
	// end marks its last page (what it did not see is gone).
	start time.Time
	end   bool
	// catchUp pages were read for term: the leader fires their missed
	// ticks as it takes them in.
	catchUp bool
	term    uint64
	// failed: the catch-up load could not read (PostgreSQL down); catch
	// up from memory what is left.
	failed bool
}

func newLoader(s *Scheduler) *loader {
	return &loader{s: s, pages: make(chan page, 1), wake: make(chan struct{}, 1), names: map[string]struct{}{}}
}

// notify takes a change notification: a schedule's name, or "" for "any
// schedule may have changed" (after a reconnect: a full load before the
// first one ended, else a check). It never blocks.
func (l *loader) notify(name string) {
	if name == "" {
		l.mu.Lock()
		l.check = true
		l.mu.Unlock()
		l.signal()
		return
	}
	l.notifyNames([]string{name})
}

// notifyNames asks for the named schedules to be read again.
func (l *loader) notifyNames(names []string) {
	l.mu.Lock()
	for _, name := range names {
		if len(l.names) >= maxNamed {
			l.check = true
			break
		}
		l.names[name] = struct{}{}
	}
	l.mu.Unlock()
	l.signal()
}

// catchUp asks for a full load whose pages the leader of term catches up.
func (l *loader) catchUp(term uint64) {
	l.mu.Lock()
	l.catchUpTerm = term
	l.mu.Unlock()
	l.signal()
}

func (l *loader) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *loader) run(ctx context.Context) {
	resync := time.NewTicker(l.s.cfg.Resync)
	defer resync.Stop()
	full := time.NewTicker(l.s.cfg.FullResync)
	defer full.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case <-resync.C:
			l.changed(ctx)
		case <-full.C:
			l.mu.Lock()
			l.check = true
			l.mu.Unlock()
		}
		l.work(ctx)
	}
}

// work serves what is asked for until nothing is: names first, then a
// catch-up load, a full load, a check.
func (l *loader) work(ctx context.Context) {
	for ctx.Err() == nil {
		if l.named(ctx) {
			continue
		}
		l.mu.Lock()
		term, full, check := l.catchUpTerm, l.full, l.check
		if l.since.IsZero() && check {
			full, check = true, false // nothing held yet to check
		}
		if term == 0 && !full && !check {
			l.mu.Unlock()
			return
		}
		if term != 0 || full {
			// A load covers every request made before it starts.
			l.catchUpTerm, l.full, l.check = 0, false, false
			clear(l.names)
			l.mu.Unlock()
			if !l.load(ctx, term) {
				return // failed: the next tick tries again
			}
			continue
		}
		l.check = false
		l.mu.Unlock()
		if !l.verify(ctx) {
			return
		}
	}
}

// verify reads the names and definition times of every enabled schedule
// in pages, pausing after each for twice as long as it took (so a check of
// a million schedules never crowds out the firing), serving notified names
// between pages and giving way to a load asked for meanwhile. It reports
// whether it read to the end or gave way.
func (l *loader) verify(ctx context.Context) bool {
	start := time.Now()
	after := ""
	size := 2 * l.s.cfg.PageSize // two columns a row: pages can be larger
	total := 0
	for n := 0; ctx.Err() == nil; n++ {
		if n > 0 && l.between(ctx, true) {
			return true
		}
		readAt := time.Now()
		vs, err := l.s.store.ScheduleListVersions(ctx, after, size)
		if err != nil {
			if ctx.Err() == nil {
				l.s.dbError(err, "check schedules")
				l.mu.Lock()
				l.check = true
				l.mu.Unlock()
			}
			return false
		}
		l.s.dbOK()
		end := len(vs) < size
		total += len(vs)
		if len(vs) > 0 {
			after = vs[len(vs)-1].Name
		}
		took := time.Since(readAt)
		l.send(ctx, page{versions: vs, readAt: readAt, start: start, end: end})
		if end {
			l.loaded("check", start, total)
			return true
		}
		select {
		case <-time.After(2 * took):
		case <-ctx.Done():
		}
	}
	return false
}

// named reads the notified names, if any, and reports whether it did.
func (l *loader) named(ctx context.Context) bool {
	l.mu.Lock()
	if len(l.names) == 0 {
		l.mu.Unlock()
		return false
	}
	names := make([]string, 0, min(len(l.names), namedChunk))
	for n := range l.names {
		names = append(names, n)
		delete(l.names, n)
		if len(names) == namedChunk {
			break
		}
	}
	l.mu.Unlock()
	readAt := time.Now()
	rows, err := l.s.store.ScheduleListNamed(ctx, names)
	if err != nil {
		if ctx.Err() == nil {
			l.s.dbError(err, "load notified schedules")
			// Read them again with the next full load.
			l.mu.Lock()
			l.full = true
			l.mu.Unlock()
		}
		return false
	}
	l.s.dbOK()
	l.send(ctx, page{rows: rows, readAt: readAt, named: names})
	return true
}

// load reads every schedule in pages of PageSize, catching up for term
// when it is not 0. Between pages it serves notified names, and it gives
// way to a catch-up asked for meanwhile (which loads everything again).
// It reports whether it read to the end or gave way.
func (l *loader) load(ctx context.Context, term uint64) bool {
	if len(l.s.cfg.Code) > 0 {
		if err := l.s.store.ScheduleSyncCode(ctx, l.s.cfg.Code); err != nil && ctx.Err() == nil {
			l.s.log.Warn().Err(err).Msg("sync code schedules (will retry on the next full load)")
		}
	}
	start := time.Now()
	after := ""
	n := 0
	for ctx.Err() == nil {
		if n > 0 && l.between(ctx, false) {
			return true
		}
		readAt := time.Now()
		rows, err := l.s.store.ScheduleListPage(ctx, after, l.s.cfg.PageSize)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			l.s.dbError(err, "load schedules")
			l.mu.Lock()
			l.full = true
			l.mu.Unlock()
			if term != 0 {
				l.send(ctx, page{readAt: readAt, catchUp: true, term: term, failed: true})
			}
			return false
		}
		l.s.dbOK()
		end := len(rows) < l.s.cfg.PageSize
		n += len(rows)
		if len(rows) > 0 {
			after = rows[len(rows)-1].Name
		}
		l.send(ctx, page{rows: rows, readAt: readAt, start: start, end: end, catchUp: term != 0, term: term})
		if end {
			if l.since.Before(start) {
				l.since = start
			}
			kind := "load"
			if term != 0 {
				kind = "catch-up"
			}
			l.loaded(kind, start, n)
			return true
		}
	}
	return false
}

// loaded reports a read that ended: a full one, or a re-read of changed
// schedules that found some.
func (l *loader) loaded(kind string, start time.Time, n int) {
	done := time.Now()
	l.s.log.Debug().Str("kind", kind).Int("schedules", n).Dur("took", done.Sub(start)).Msg("read schedules")
	if l.s.cfg.Loaded != nil {
		l.s.cfg.Loaded(kind, start, done, n)
	}
}

// between serves the notified names between two pages of a longer read
// and reports whether a read asked for meanwhile takes over: a catch-up
// load, or with anyLoad any full load.
func (l *loader) between(ctx context.Context, anyLoad bool) bool {
	for l.named(ctx) {
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.catchUpTerm != 0 || anyLoad && l.full
}

// changed re-reads the schedules whose definition changed since the last
// read that covered everything.
func (l *loader) changed(ctx context.Context) {
	if l.since.IsZero() {
		return // the first full load has not ended
	}
	readAt := time.Now()
	// A page at a time, so that a bulk change of every schedule costs a
	// page of memory, not a table, and fires go out between pages (the
	// loop takes a page in at once, under its lock).
	after, n := "", 0
	for {
		rows, err := l.s.store.ScheduleListChanged(ctx, l.since.Add(-changedMargin), after, l.s.cfg.PageSize)
		if err != nil {
			if ctx.Err() == nil {
				l.s.dbError(err, "load changed schedules")
			}
			return // since stays: the next re-read covers this one
		}
		l.s.dbOK()
		if len(rows) > 0 {
			l.send(ctx, page{rows: rows, readAt: readAt})
			after = rows[len(rows)-1].Name
			n += len(rows)
		}
		if len(rows) < l.s.cfg.PageSize || ctx.Err() != nil {
			break
		}
	}
	l.since = readAt
	if n > 0 {
		l.loaded("changed", readAt, n)
	}
}

func (l *loader) send(ctx context.Context, pg page) {
	select {
	case l.pages <- pg:
	case <-ctx.Done():
	}
}
