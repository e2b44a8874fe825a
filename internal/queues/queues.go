// Package queues reads and steers the queues: per queue the figures an
// operator needs (pending, in flight, redelivered, delayed, oldest task,
// processing rate over the last minute, dead letters, paused until), and
// pause/resume through JetStream consumer pause. Everything comes from
// JetStream; the rate from samples of the consumers' delivery counters
// this process takes every few seconds.
package queues

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/wire"
)

// ErrUnknownQueue is returned for a queue without its consumer q-<queue>.
var ErrUnknownQueue = errors.New("unknown queue")

// Stats are one queue's figures.
type Stats struct {
	Queue string `json:"queue"`
	// Pending tasks wait for a worker; InFlight were delivered and are not
	// acked yet (running, buffered by a worker, or waiting for a retry);
	// Redelivered of those were delivered more than once.
	Pending     uint64 `json:"pending"`
	InFlight    int    `json:"in_flight"`
	Redelivered int    `json:"redelivered"`
	// Delayed tasks (countdown, ETA) are not due yet; nil when the
	// counting consumer delayed-<queue> is missing (streams not applied).
	Delayed *uint64 `json:"delayed"`
	// OldestAt is when the oldest task still in the queue (pending or in
	// flight) was stored; OldestAgeS its age in seconds. Nil when empty.
	OldestAt   *time.Time `json:"oldest_at"`
	OldestAgeS *float64   `json:"oldest_age_s"`
	// RatePerMin is attempts finished per minute, measured over the last
	// minute (RateWindowS says over how long when this process has seen
	// less); nil until two samples exist.
	RatePerMin  *float64 `json:"rate_per_min"`
	RateWindowS float64  `json:"rate_window_s,omitempty"`
	// Dead letters of this queue in DEAD.
	Dead uint64 `json:"dead"`
	// Paused queues deliver nothing until resumed or PausedUntil (nil when
	// paused until resumed).
	Paused      bool       `json:"paused"`
	PausedUntil *time.Time `json:"paused_until"`
	// Waiting is how many pull requests (idle worker fetches) wait.
	Waiting int `json:"waiting"`
}

// Indefinitely is how far ahead a pause without an end is set (JetStream
// pauses need a time); a pause more than half that far ahead shows as
// paused until resumed.
const Indefinitely = 200 * 365 * 24 * time.Hour

// Service reads and steers the queues. Run samples the rates.
type Service struct {
	js  jetstream.JetStream
	now func() time.Time

	mu      sync.Mutex
	samples map[string][]sample // per queue, oldest first, ~70 s
}

type sample struct {
	at   time.Time
	done uint64 // deliveries no longer pending an ack
}

// New returns the service.
func New(js jetstream.JetStream) *Service {
	return &Service{js: js, now: time.Now, samples: map[string][]sample{}}
}

// SampleEvery is how often Run samples the consumers.
const SampleEvery = 5 * time.Second

// Run samples every queue's counters every SampleEvery until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(SampleEvery)
	defer t.Stop()
	for {
		_, _ = s.consumers(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// consumers lists the queue consumers' infos and records a sample of each.
func (s *Service) consumers(ctx context.Context) ([]*jetstream.ConsumerInfo, error) {
	st, err := s.js.Stream(ctx, wire.StreamTasks)
	if err != nil {
		return nil, jet.Wrap("stream "+wire.StreamTasks, err)
	}
	var out []*jetstream.ConsumerInfo
	l := st.ListConsumers(ctx)
	for ci := range l.Info() {
		if _, ok := wire.QueueOfConsumer(ci.Name); ok {
			out = append(out, ci)
		}
	}
	if err := l.Err(); err != nil {
		return nil, jet.Wrap("list queues", err)
	}
	for _, ci := range out {
		s.record(ci)
	}
	slices.SortFunc(out, func(a, b *jetstream.ConsumerInfo) int { return compare(a.Name, b.Name) })
	return out, nil
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *Service) record(ci *jetstream.ConsumerInfo) {
	q, _ := wire.QueueOfConsumer(ci.Name)
	done := ci.Delivered.Consumer - min(ci.Delivered.Consumer, uint64(ci.NumAckPending))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	xs := s.samples[q]
	if n := len(xs); n > 0 && (done < xs[n-1].done || now.Sub(xs[n-1].at) < time.Second) {
		if done < xs[n-1].done {
			xs = xs[:0] // the consumer was recreated: its counters restarted
		} else {
			return // sampled a moment ago
		}
	}
	xs = append(xs, sample{at: now, done: done})
	cut := 0
	for cut < len(xs)-1 && now.Sub(xs[cut+1].at) >= time.Minute {
		cut++ // keep one sample at least a minute old
	}
	s.samples[q] = xs[cut:]
}

// rate is attempts per minute over the samples of q.
func (s *Service) rate(q string) (*float64, float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	xs := s.samples[q]
	if len(xs) < 2 {
		return nil, 0
	}
	first, last := xs[0], xs[len(xs)-1]
	window := last.at.Sub(first.at).Seconds()
	if window <= 0 {
		return nil, 0
	}
	r := float64(last.done-first.done) / window * 60
	return &r, window
}

// List returns every queue's figures, by name.
func (s *Service) List(ctx context.Context) ([]Stats, error) {
	cis, err := s.consumers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Stats, 0, len(cis))
	for _, ci := range cis {
		st, err := s.stats(ctx, ci)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// Get returns queue q's figures, or [ErrUnknownQueue].
func (s *Service) Get(ctx context.Context, q string) (Stats, error) {
	c, err := s.js.Consumer(ctx, wire.StreamTasks, wire.ConsumerName(q))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return Stats{}, fmt.Errorf("queue %s: %w (no consumer %s)", q, ErrUnknownQueue, wire.ConsumerName(q))
	}
	if err != nil {
		return Stats{}, jet.Wrap("queue "+q, err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return Stats{}, jet.Wrap("queue "+q, err)
	}
	s.record(ci)
	return s.stats(ctx, ci)
}

func (s *Service) stats(ctx context.Context, ci *jetstream.ConsumerInfo) (Stats, error) {
	q, _ := wire.QueueOfConsumer(ci.Name)
	now := s.now()
	st := Stats{Queue: q, Pending: ci.NumPending, InFlight: ci.NumAckPending, Redelivered: ci.NumRedelivered,
		Waiting: ci.NumWaiting, Paused: ci.Paused}
	if ci.Paused && ci.Config.PauseUntil != nil && ci.Config.PauseUntil.Before(now.Add(Indefinitely/2)) {
		u := ci.Config.PauseUntil.UTC()
		st.PausedUntil = &u
	}
	st.RatePerMin, st.RateWindowS = s.rate(q)
	if st.Pending > 0 || st.InFlight > 0 {
		tasks, err := s.js.Stream(ctx, wire.StreamTasks)
		if err != nil {
			return st, jet.Wrap("stream "+wire.StreamTasks, err)
		}
		m, err := tasks.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(wire.QueueFilter(q)))
		switch {
		case err == nil:
			at := m.Time.UTC()
			age := now.Sub(at).Seconds()
			st.OldestAt, st.OldestAgeS = &at, &age
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return st, jet.Wrap("oldest task of "+q, err)
		}
	}
	dc, err := s.js.Consumer(ctx, wire.StreamDelayed, wire.DelayedConsumerName(q))
	switch {
	case err == nil:
		n := dc.CachedInfo().NumPending
		st.Delayed = &n
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return st, jet.Wrap("delayed tasks of "+q, err)
	}
	dead, err := s.js.Stream(ctx, wire.StreamDead)
	if err != nil {
		return st, jet.Wrap("stream "+wire.StreamDead, err)
	}
	info, err := dead.Info(ctx, jetstream.WithSubjectFilter(wire.DeadSubject(q, ">")))
	if err != nil {
		return st, jet.Wrap("dead letters of "+q, err)
	}
	for _, n := range info.State.Subjects {
		st.Dead += n
	}
	return st, nil
}

// Pause stops queue q from delivering tasks until until (zero: until
// resumed). Workers keep their running tasks; nothing new starts.
func (s *Service) Pause(ctx context.Context, q string, until time.Time) (Stats, error) {
	if until.IsZero() {
		until = s.now().Add(Indefinitely)
	}
	if _, err := s.js.PauseConsumer(ctx, wire.StreamTasks, wire.ConsumerName(q), until); err != nil {
		return Stats{}, s.steerErr(q, "pause", err)
	}
	return s.Get(ctx, q)
}

// Resume lets queue q deliver again.
func (s *Service) Resume(ctx context.Context, q string) (Stats, error) {
	if _, err := s.js.ResumeConsumer(ctx, wire.StreamTasks, wire.ConsumerName(q)); err != nil {
		return Stats{}, s.steerErr(q, "resume", err)
	}
	return s.Get(ctx, q)
}

func (s *Service) steerErr(q, op string, err error) error {
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("queue %s: %w (no consumer %s)", q, ErrUnknownQueue, wire.ConsumerName(q))
	}
	return jet.Wrap(op+" queue "+q, err)
}
