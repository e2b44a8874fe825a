package dashboard

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/queues"
	"github.com/flotilla/flotilla/internal/wire"
)

// Kinds the hub counts, in the order of [Counts].
var kinds = []string{wire.EventSent, wire.EventSucceeded, wire.EventFailed, wire.EventRetried, wire.EventDead, wire.EventCancelled}

// Counts are events of one second (or bucket), by kind: sent (enqueued),
// succeeded, failed, retried, dead, cancelled.
type Counts [6]uint32

const (
	window     = 3600             // seconds of per-second history
	qBucket    = 10 * time.Second // per-queue history resolution
	qBuckets   = 360              // one hour of it
	maxClients = 200              // live dashboards per web process
	clientBuf  = 4                // updates a slow tab may be behind before it misses some
)

// Sources are what the hub snapshots every SnapshotEvery.
type Sources struct {
	Queues  func(ctx context.Context) ([]queues.Stats, error)
	Workers func(ctx context.Context) ([]wire.WorkerInfo, error)
	Beat    func(ctx context.Context) (BeatView, error)
	Dead    func(ctx context.Context) (uint64, error)
}

// BeatView is what the dashboard shows of beat.
type BeatView struct {
	Leader string          `json:"leader"`
	Stats  *wire.BeatStats `json:"stats,omitempty"`
}

// Snapshot is the latest state of the queues, workers, beat and dead
// letters, with the errors of the sources that failed.
type Snapshot struct {
	At      time.Time         `json:"at"`
	Queues  []queues.Stats    `json:"queues"`
	Workers []wire.WorkerInfo `json:"workers"`
	Beat    BeatView          `json:"beat"`
	Dead    uint64            `json:"dead"`
	Errors  map[string]string `json:"errors,omitempty"`
}

// Hub is the live state one web process shares among every open
// dashboard: a single subscription to the lifecycle events, counted per
// second by kind (one hour) and per queue (10 s buckets, one hour);
// snapshots of queues, workers, beat and dead letters; and the fan-out of
// one update per second to the open pages over Server-Sent Events. A tab
// that reads slowly misses updates (each has a buffer of clientBuf), so it
// never grows the hub's memory.
type Hub struct {
	nc  *nats.Conn
	src Sources
	log zerolog.Logger
	now func() time.Time

	mu      sync.Mutex
	secs    [window]Counts
	secAt   [window]int64 // the Unix second each slot holds
	perQ    map[string]*queueHist
	clients map[*client]struct{}

	snap    atomic.Pointer[Snapshot]
	dropped atomic.Int64
}

type queueHist struct {
	done [qBuckets]uint32 // finished attempts (succeeded, failed, dead, cancelled)
	at   [qBuckets]int64  // bucket start, Unix seconds
}

type client struct {
	ch chan []byte
}

// SnapshotEvery is how often the hub reads the queues, workers, beat and
// dead letters.
const SnapshotEvery = 2 * time.Second

// NewHub returns a hub; Run starts it.
func NewHub(nc *nats.Conn, src Sources, log zerolog.Logger) *Hub {
	h := &Hub{nc: nc, src: src, log: log, now: time.Now, perQ: map[string]*queueHist{}, clients: map[*client]struct{}{}}
	h.snap.Store(&Snapshot{})
	return h
}

// Run follows the events and takes snapshots until ctx ends.
func (h *Hub) Run(ctx context.Context) {
	if h.nc != nil {
		sub, err := h.nc.Subscribe("events.>", h.onEvent)
		if err != nil {
			h.log.Error().Err(err).Msg("dashboard: cannot follow events; charts stay empty")
		} else {
			defer func() { _ = sub.Unsubscribe() }()
			// Events arrive faster than a dashboard needs them: the
			// subscription may drop under overload rather than grow.
			_ = sub.SetPendingLimits(65536, 64<<20)
		}
	}
	h.snapshot(ctx)
	snap := time.NewTicker(SnapshotEvery)
	defer snap.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-snap.C:
			h.snapshot(ctx)
		case <-tick.C:
			h.broadcast()
		}
	}
}

// onEvent counts one event from its subject events.<kind>.<queue>.<task>.
func (h *Hub) onEvent(m *nats.Msg) {
	rest, ok := strings.CutPrefix(m.Subject, "events.")
	if !ok {
		return
	}
	kind, rest, _ := strings.Cut(rest, ".")
	queue, _, _ := strings.Cut(rest, ".")
	k := -1
	for i, name := range kinds {
		if name == kind {
			k = i
			break
		}
	}
	if k < 0 {
		return
	}
	now := h.now().Unix()
	h.mu.Lock()
	defer h.mu.Unlock()
	slot := now % window
	if h.secAt[slot] != now {
		h.secs[slot], h.secAt[slot] = Counts{}, now
	}
	h.secs[slot][k]++
	if kind == wire.EventSent || kind == wire.EventRetried || queue == "" || queue == wire.SyncQueue {
		return
	}
	qh := h.perQ[queue]
	if qh == nil {
		if len(h.perQ) >= 1000 {
			return // bounded: a flood of queue names cannot grow memory
		}
		qh = &queueHist{}
		h.perQ[queue] = qh
	}
	start := now - now%int64(qBucket/time.Second)
	b := (start / int64(qBucket/time.Second)) % qBuckets
	if qh.at[b] != start {
		qh.done[b], qh.at[b] = 0, start
	}
	qh.done[b]++
}

// Series returns the per-second counts of the last n seconds, oldest
// first, ending with the last complete second.
func (h *Hub) Series(n int) (start int64, out []Counts) {
	n = min(max(n, 1), window-1)
	end := h.now().Unix() - 1
	h.mu.Lock()
	defer h.mu.Unlock()
	out = make([]Counts, n)
	for i := range n {
		sec := end - int64(n-1-i)
		slot := sec % window
		if h.secAt[slot] == sec {
			out[i] = h.secs[slot]
		}
	}
	return end - int64(n-1), out
}

// Sum adds the counts of the last n seconds.
func (h *Hub) Sum(n int) Counts {
	_, s := h.Series(n)
	var c Counts
	for _, x := range s {
		for k := range c {
			c[k] += x[k]
		}
	}
	return c
}

// QueueRate returns queue q's finished attempts per 10 s bucket over the
// last hour, oldest first.
func (h *Hub) QueueRate(q string) []uint32 {
	step := int64(qBucket / time.Second)
	now := h.now().Unix()
	end := now - now%step - step // the last complete bucket
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]uint32, qBuckets)
	qh := h.perQ[q]
	if qh == nil {
		return out
	}
	for i := range qBuckets {
		start := end - int64(qBuckets-1-i)*step
		b := (start / step) % qBuckets
		if qh.at[b] == start {
			out[i] = qh.done[b]
		}
	}
	return out
}

// Snapshot returns the latest snapshot (never nil).
func (h *Hub) Snapshot() *Snapshot { return h.snap.Load() }

func (h *Hub) snapshot(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, SnapshotEvery)
	defer cancel()
	s := &Snapshot{At: h.now().UTC(), Errors: map[string]string{}, Queues: []queues.Stats{}, Workers: []wire.WorkerInfo{}}
	prev := h.snap.Load()
	var wg sync.WaitGroup
	var mu sync.Mutex
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				mu.Lock()
				s.Errors[name] = err.Error()
				mu.Unlock()
			}
		}()
	}
	if h.src.Queues != nil {
		run("queues", func() error {
			qs, err := h.src.Queues(ctx)
			if err != nil {
				s.Queues = prev.Queues
				return err
			}
			s.Queues = qs
			return nil
		})
	}
	if h.src.Workers != nil {
		run("workers", func() error {
			ws, err := h.src.Workers(ctx)
			if err != nil {
				s.Workers = prev.Workers
				return err
			}
			s.Workers = ws
			return nil
		})
	}
	if h.src.Beat != nil {
		run("beat", func() error {
			b, err := h.src.Beat(ctx)
			s.Beat = b
			return err
		})
	}
	if h.src.Dead != nil {
		run("dead", func() error {
			n, err := h.src.Dead(ctx)
			s.Dead = n
			return err
		})
	}
	wg.Wait()
	if len(s.Errors) == 0 {
		s.Errors = nil
	}
	h.snap.Store(s)
}

// Update is what every open dashboard receives each second.
type Update struct {
	// T is the Unix second the counts are of.
	T      int64  `json:"t"`
	Counts Counts `json:"counts"`
	// Last5m sums the last five minutes.
	Last5m  Counts       `json:"last5m"`
	Queues  []queueBrief `json:"queues"`
	Workers int          `json:"workers"`
	Running int          `json:"running"`
	Dead    uint64       `json:"dead"`
	Leader  string       `json:"leader"`
	LagP99  float64      `json:"lag_p99_ms"`
	Errors  []string     `json:"errors,omitempty"`
}

type queueBrief struct {
	Queue    string   `json:"queue"`
	Pending  uint64   `json:"pending"`
	InFlight int      `json:"in_flight"`
	Paused   bool     `json:"paused"`
	Oldest   *float64 `json:"oldest_age_s"`
}

// update builds the current update.
func (h *Hub) update() Update {
	start, s := h.Series(1)
	snap := h.Snapshot()
	u := Update{T: start, Counts: s[0], Last5m: h.Sum(300), Workers: len(snap.Workers), Dead: snap.Dead, Leader: snap.Beat.Leader}
	for _, w := range snap.Workers {
		u.Running += len(w.Running)
	}
	if st := snap.Beat.Stats; st != nil {
		u.LagP99 = st.LagP99MS
	}
	for _, q := range snap.Queues {
		u.Queues = append(u.Queues, queueBrief{Queue: q.Queue, Pending: q.Pending, InFlight: q.InFlight, Paused: q.Paused, Oldest: q.OldestAgeS})
	}
	for name := range snap.Errors {
		u.Errors = append(u.Errors, name)
	}
	return u
}

// broadcast sends the current update to every open dashboard; a tab whose
// buffer is full misses it.
func (h *Hub) broadcast() {
	h.mu.Lock()
	n := len(h.clients)
	h.mu.Unlock()
	if n == 0 {
		return
	}
	b, err := json.Marshal(h.update())
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.ch <- b:
		default:
			h.dropped.Add(1)
		}
	}
}

// subscribe registers an open dashboard; false when too many are open.
func (h *Hub) subscribe() (*client, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clients) >= maxClients {
		return nil, false
	}
	c := &client{ch: make(chan []byte, clientBuf)}
	h.clients[c] = struct{}{}
	return c, true
}

func (h *Hub) unsubscribe(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
}

// Clients is how many dashboards are open.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}
