package attempt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/task"
)

// watchdog abandons attempts whose handlers outlive their context by the
// grace period. Attempts in flight sit in an intrusive list; one goroutine
// walks it every tick while it is not empty and stops when it is, so an
// attempt costs two short critical sections and no allocation (watches
// are pooled).
type watchdog struct {
	grace   time.Duration
	tick    time.Duration
	now     func() time.Time
	metrics *Metrics

	pool    sync.Pool
	mu      sync.Mutex
	head    watch // sentinel of the list of attempts in flight
	running bool  // the walking goroutine runs
}

// watch is one attempt in flight.
type watch struct {
	prev, next *watch
	state      atomic.Int32

	ctx       context.Context
	env       *task.Envelope
	log       zerolog.Logger
	start     time.Time
	deadline  time.Time
	allowed   time.Duration
	doneAt    time.Time // when the walker first saw a cancelled (not timed out) context
	abandoned func(Outcome)
}

func newWatchdog(grace time.Duration, now func() time.Time, m *Metrics) *watchdog {
	d := &watchdog{grace: grace, tick: min(max(grace/5, 10*time.Millisecond), 100*time.Millisecond), now: now, metrics: m}
	d.head.prev, d.head.next = &d.head, &d.head
	d.pool.New = func() any { return new(watch) }
	return d
}

// watch puts an attempt under watch: ctx is its context, ending at
// deadline after allowed.
func (d *watchdog) watch(ctx context.Context, env *task.Envelope, log zerolog.Logger, start, deadline time.Time, allowed time.Duration, abandoned func(Outcome)) *watch {
	w := d.pool.Get().(*watch)
	w.state.Store(running)
	w.ctx, w.env, w.log, w.start, w.abandoned = ctx, env, log, start, abandoned
	w.deadline, w.allowed, w.doneAt = deadline, allowed, time.Time{}
	d.mu.Lock()
	w.prev, w.next = d.head.prev, &d.head
	d.head.prev.next = w
	d.head.prev = w
	launch := !d.running
	d.running = true
	d.mu.Unlock()
	if launch {
		go d.walk()
	}
	return w
}

// unwatch ends the watch of a handler that returned; false when the
// attempt was abandoned before.
func (d *watchdog) unwatch(w *watch) bool {
	won := w.state.CompareAndSwap(running, returnedInTime)
	d.mu.Lock()
	if won {
		w.prev.next, w.next.prev = w.next, w.prev
	}
	// Under the lock the walker is done with w either way.
	d.mu.Unlock()
	*w = watch{}
	d.pool.Put(w)
	return won
}

// walk checks the attempts in flight every tick until there are none.
func (d *watchdog) walk() {
	t := time.NewTicker(d.tick)
	defer t.Stop()
	for range t.C {
		now := d.now()
		var fire []func()
		d.mu.Lock()
		for w := d.head.next; w != &d.head; {
			next := w.next
			if f := d.check(w, now); f != nil {
				w.prev.next, w.next.prev = w.next, w.prev
				fire = append(fire, f)
			}
			w = next
		}
		empty := d.head.next == &d.head
		if empty {
			d.running = false
		}
		d.mu.Unlock()
		for _, f := range fire {
			go f()
		}
		if empty {
			return
		}
	}
}

// check returns the abandonment of w when its context ended at least the
// grace period ago and its handler has not returned; d.mu is held.
func (d *watchdog) check(w *watch, now time.Time) func() {
	err := w.ctx.Err()
	if err == nil {
		return nil
	}
	timedOut := errors.Is(err, context.DeadlineExceeded)
	ended := w.deadline
	if !timedOut {
		if w.doneAt.IsZero() {
			w.doneAt = now
		}
		ended = w.doneAt
	}
	grace := d.grace
	if errors.Is(context.Cause(w.ctx), task.ErrCancelled) {
		grace = min(grace, CancelGrace)
	}
	if now.Sub(ended) < grace || !w.state.CompareAndSwap(running, abandonedState) {
		return nil
	}
	a := Outcome{Start: w.start, End: now, Abandoned: true}
	if timedOut {
		a.Err = &TimeoutError{After: w.allowed, Abandoned: true, Grace: d.grace}
	} else {
		a.Err = fmt.Errorf("cancelled (%w); the handler ignored its context and was abandoned %s later", context.Cause(w.ctx), grace)
	}
	a.ErrorType = task.ErrorType(a.Err)
	env, log, abandoned := w.env, w.log, w.abandoned
	return func() {
		d.metrics.abandon(env)
		log.Error().Err(a.Err).Dur("grace", grace).
			Msg("handler abandoned: it did not return after its context ended; its goroutine still runs (handlers must watch ctx.Done())")
		if abandoned != nil {
			abandoned(a)
		}
	}
}
