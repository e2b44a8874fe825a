package worker

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/flotilla/flotilla/internal/attempt"
	"github.com/flotilla/flotilla/internal/limits"
)

// deferralTTL is how long a task's count of deferrals is kept.
const deferralTTL = 7 * 24 * time.Hour

// limit waits until d's task may start under its rate and concurrency
// limits and returns the concurrency lease (nil without that limit). It
// holds the task — in-progress acks keep it — while its reserved slot is
// near or a concurrency slot may free up soon, for at most half of
// ack_wait (10 s at most); beyond that it counts a deferral and hands the
// task back to its queue with a delay, which is not an attempt: d's
// attempt number leaves the deferrals out. ok is false when the task was
// handed back (or the worker is stopping).
func (w *Worker) limit(ctx context.Context, d *delivery) (lease *limits.Lease, ok bool) {
	hold := min(w.cfg.AckWait/2, 10*time.Second)
	grace := w.cfg.Grace
	if grace <= 0 {
		grace = attempt.DefaultGrace
	}
	leaseFor := w.runner.Timeout(d.def, d.env) + grace + hold
	giveUp := time.Now().Add(hold)
	delivered := d.env.Attempt
	backoff := 100 * time.Millisecond
	for {
		dec, err := w.cfg.Limiter.Acquire(ctx, d.def, d.env.ID, max(time.Until(giveUp), 0), leaseFor)
		if err != nil {
			// Redis is down: hold the task (it must not run unlimited, nor
			// count a delivery) until it is back.
			w.holdLog.Warn().Err(err).Str("task", d.env.Name).Msg("rate/concurrency limit not checked: Redis unavailable; holding the task (logged at most every 5 s)")
			if !sleep(ctx, backoff) {
				_ = d.msg.Nak()
				return nil, false
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		d.env.Attempt = max(1, delivered-dec.Deferrals)
		if dec.Granted {
			if dec.Wait > 0 && !sleep(ctx, dec.Wait) {
				dec.Lease.Release(context.WithoutCancel(ctx))
				_ = d.msg.Nak()
				return nil, false
			}
			return dec.Lease, true
		}
		poll := 50*time.Millisecond + rand.N(100*time.Millisecond)
		if dec.Full && time.Now().Add(poll).Before(giveUp) {
			if !sleep(ctx, poll) {
				_ = d.msg.Nak()
				return nil, false
			}
			continue
		}
		delay := dec.Wait
		if dec.Full {
			delay = 500*time.Millisecond + rand.N(500*time.Millisecond)
		}
		if err := w.cfg.Limiter.Defer(ctx, d.env.ID, deferralTTL); err != nil {
			continue // Redis went away: hold as above
		}
		_ = d.msg.NakWithDelay(delay)
		d.log.Debug().Dur("delay", delay).Bool("concurrency_full", dec.Full).Msg("task over its limit: deferred (not an attempt)")
		return nil, false
	}
}

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
