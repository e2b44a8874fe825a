package beat

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/wire"
)

// lagBoundsMS are the upper bounds of [wire.BeatStats] LagBuckets, in
// milliseconds; an unbounded bucket follows the last.
var lagBoundsMS = [...]float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000}

// lagSample is the lag of one fire.
type lagSample struct {
	at  int64   // when it was published, unix nanoseconds
	lag float64 // milliseconds
}

// fireStats records, for the current term, what the leader reports in
// [wire.BeatStats]. The firing path only appends under mu; the reporter
// copies out every few seconds and does the arithmetic outside the lock.
type fireStats struct {
	mu      sync.Mutex
	term    uint64 // terms this replica began; 0 before the first
	leading bool
	since   time.Time
	fires   int64
	errors  int64
	// ring holds the lags of the term's last wire.BeatLagSamples fires;
	// once full, next is the oldest, overwritten first.
	ring []lagSample
	next int
}

// begin starts a term at now: counters and lag samples start afresh.
func (f *fireStats) begin(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.term++
	f.leading, f.since = true, now
	f.fires, f.errors = 0, 0
	f.ring, f.next = f.ring[:0], 0
}

// end ends the term: the reporter stops putting.
func (f *fireStats) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leading = false
}

// record books fires handed to the producer at now.
func (f *fireStats) record(now time.Time, fires []fire) {
	at := now.UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fires += int64(len(fires))
	if len(fires) > wire.BeatLagSamples {
		fires = fires[len(fires)-wire.BeatLagSamples:] // the rest would be overwritten
	}
	if f.ring == nil {
		f.ring = make([]lagSample, 0, wire.BeatLagSamples)
	}
	for _, fi := range fires {
		s := lagSample{at: at, lag: float64(now.Sub(fi.at)) / float64(time.Millisecond)}
		if len(f.ring) < wire.BeatLagSamples {
			f.ring = append(f.ring, s)
			continue
		}
		f.ring[f.next] = s
		f.next = (f.next + 1) % wire.BeatLagSamples
	}
}

// failed books a fire whose publish failed.
func (f *fireStats) failed() {
	f.mu.Lock()
	f.errors++
	f.mu.Unlock()
}

// statsSnapshot is fireStats copied out at one moment.
type statsSnapshot struct {
	term          uint64
	leading       bool
	since         time.Time
	fires, errors int64
	lags          []float64 // ms, the fires of the lag window
}

func (f *fireStats) snapshot(now time.Time) statsSnapshot {
	from := now.Add(-wire.BeatLagWindow).UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	s := statsSnapshot{term: f.term, leading: f.leading, since: f.since, fires: f.fires, errors: f.errors}
	if !f.leading {
		return s
	}
	s.lags = make([]float64, 0, len(f.ring))
	for _, x := range f.ring {
		if x.at >= from {
			s.lags = append(s.lags, x.lag)
		}
	}
	return s
}

// lagFigures fills the lag fields of st from lags (sorted in place).
func lagFigures(st *wire.BeatStats, lags []float64) {
	st.LagCount = len(lags)
	st.LagBuckets = make([]wire.LagBucket, len(lagBoundsMS)+1)
	for i, le := range lagBoundsMS {
		st.LagBuckets[i].LeMS = le
	}
	if len(lags) == 0 {
		return
	}
	sort.Float64s(lags)
	rank := func(q float64) float64 { return lags[max(int(math.Ceil(q*float64(len(lags))))-1, 0)] }
	st.LagP50MS, st.LagP99MS, st.LagMaxMS = rank(0.5), rank(0.99), lags[len(lags)-1]
	for _, l := range lags {
		// The first bound >= l: lags equal to a bound fall in its bucket.
		st.LagBuckets[sort.SearchFloat64s(lagBoundsMS[:], l)].Count++
	}
}

// reporter puts the leader's [wire.BeatStats] into the lease bucket. It
// never touches the firing path beyond fireStats' mutex: a failed put is
// logged (at most once a minute) and firing goes on.
type reporter struct {
	s     *Scheduler
	every time.Duration
	log   zerolog.Logger
	kick  chan struct{}

	// Owned by the reporter's goroutine.
	term  uint64            // the term terms belong to
	terms []wire.LeaderTerm // newest first, terms[0] this replica's current
	seen  *wire.BeatStats   // the last document read while standing by
}

func newReporter(s *Scheduler) *reporter {
	return &reporter{
		s: s,
		// The key expires the bucket's TTL after its last put: put at least
		// twice per TTL so it never lapses while a leader lives.
		every: min(wire.BeatStatsInterval, s.cfg.Elector.TTL/2),
		log:   s.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Minute}),
		kick:  make(chan struct{}, 1),
	}
}

// now asks for a put without waiting for the next period.
func (r *reporter) now() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run reports every period until ctx ends.
func (r *reporter) run(ctx context.Context) {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
		}
		r.report(ctx)
	}
}

// report puts the document while this replica leads. A standby reads it
// instead and keeps it: should the leader die and its document expire
// before this replica takes over, the terms still carry over.
func (r *reporter) report(ctx context.Context) {
	kv := r.s.el.bucketKV()
	if kv == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, r.every)
	defer cancel()
	now := r.s.cfg.Now().UTC()
	snap := r.s.stats.snapshot(now)
	if !snap.leading || !r.s.el.IsLeader() {
		if st, err := getStats(rctx, kv); err == nil {
			r.seen = &st
		} else if !errors.Is(err, ErrNoStats) && ctx.Err() == nil {
			r.s.log.Debug().Err(err).Msg("read beat stats")
		}
		return
	}
	since := snap.since.UTC()
	if snap.term != r.term {
		r.term = snap.term
		r.terms = r.takeOver(rctx, kv, since)
	}
	r.s.mu.Lock()
	schedules := r.s.t.len()
	r.s.mu.Unlock()
	st := wire.BeatStats{
		Leader: r.s.cfg.Elector.ID, LeaderSince: since, UpdatedAt: now, Schedules: schedules,
		Fires: snap.fires, FireErrors: snap.errors, Terms: r.terms,
	}
	lagFigures(&st, snap.lags)
	b, err := json.Marshal(st)
	if err != nil {
		r.log.Warn().Err(err).Msg("encode beat stats")
		return
	}
	if _, err := kv.Put(rctx, wire.BeatStatsKey, b); err != nil && ctx.Err() == nil {
		r.log.Warn().Err(err).Str("bucket", wire.LeaseBucket).Str("key", wire.BeatStatsKey).
			Msg("put beat stats failed; firing goes on (logged at most every minute)")
	}
}

// takeOver builds the terms of a term begun at since: its own, then the
// previous document's (read now, or the last one seen as a standby), the
// open one closed at the last time its holder reported.
func (r *reporter) takeOver(ctx context.Context, kv jetstream.KeyValue, since time.Time) []wire.LeaderTerm {
	prev := r.seen
	r.seen = nil
	if st, err := getStats(ctx, kv); err == nil {
		prev = &st
	} else if !errors.Is(err, ErrNoStats) {
		r.log.Warn().Err(err).Msg("read the previous beat stats; terms carried over from the last one seen")
	}
	terms := make([]wire.LeaderTerm, 0, wire.BeatTerms)
	terms = append(terms, wire.LeaderTerm{ID: r.s.cfg.Elector.ID, Since: since})
	if prev == nil {
		return terms
	}
	for _, t := range prev.Terms {
		if len(terms) == wire.BeatTerms {
			break
		}
		if t.Until.IsZero() {
			// Last seen leading at its last put; never after this term
			// began (clocks differ between replicas), never before its own.
			t.Until = prev.UpdatedAt
			if t.Until.IsZero() || t.Until.After(since) {
				t.Until = since
			}
			if t.Until.Before(t.Since) {
				t.Until = t.Since
			}
		}
		terms = append(terms, t)
	}
	return terms
}
