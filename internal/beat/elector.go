package beat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/wire"
)

// ElectorConfig configures leader election.
type ElectorConfig struct {
	// ID names this replica in the lease (e.g. hostname:pid).
	ID string
	// TTL of the lease: the bucket's max age. Default 10s.
	TTL time.Duration
	// Renew is how often the leader renews; default TTL/3.
	Renew time.Duration
	// Poll is how often a standby tries to take the lease; default 250ms.
	Poll time.Duration
	// Margin: the leader trusts itself only until last renewal + TTL - Margin
	// (river's local safety margin). Default TTL/5.
	Margin time.Duration
	// Replicas of the lease bucket. Default 1.
	Replicas int
	// CreateBucket lets the elector create or update the lease bucket
	// (nats.apply_streams). Without it the bucket must exist — `flotilla
	// streams apply` creates it — and beat needs no right to change
	// streams.
	CreateBucket bool
	// Now is the local clock. Default time.Now.
	Now func() time.Time
}

func (c *ElectorConfig) defaults() {
	if c.TTL <= 0 {
		c.TTL = 10 * time.Second
	}
	if c.Renew <= 0 {
		c.Renew = c.TTL / 3
	}
	if c.Poll <= 0 {
		c.Poll = 250 * time.Millisecond
	}
	if c.Margin <= 0 {
		c.Margin = c.TTL / 5
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Elector holds or waits for the lease in the flotilla_beat KV bucket. The
// lease is taken with Create and renewed with Update(rev); a failed renewal
// ends leadership at once.
type Elector struct {
	js      jetstream.JetStream
	cfg     ElectorConfig
	log     zerolog.Logger
	metrics *metrics

	mu      sync.Mutex
	kv      jetstream.KeyValue // the lease bucket, once Run has bound to it
	leading bool
	until   time.Time // trust the lease until then
	rev     uint64
	changes chan bool
}

// NewElector returns an elector; Run it.
func NewElector(js jetstream.JetStream, cfg ElectorConfig, m *metrics, log zerolog.Logger) *Elector {
	cfg.defaults()
	return &Elector{js: js, cfg: cfg, log: log, metrics: m, changes: make(chan bool, 16)}
}

// Changes delivers true when this replica becomes leader and false when it
// stops being leader.
func (e *Elector) Changes() <-chan bool { return e.changes }

// IsLeader reports whether this replica may fire now: it holds the lease and
// its last renewal is recent enough.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading && e.cfg.Now().Before(e.until)
}

// bucket binds to the lease bucket, creating or updating it first when
// the elector may. A bucket whose TTL is not the lease's is used, with a
// warning: the lease then outlives (or undercuts) its holder.
func (e *Elector) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	if e.cfg.CreateBucket {
		kv, err := e.js.CreateOrUpdateKeyValue(ctx, jet.LeaseBucketConfig(e.cfg.TTL, e.cfg.Replicas))
		if err != nil {
			return nil, fmt.Errorf("lease bucket %s: %w", wire.LeaseBucket, err)
		}
		return kv, nil
	}
	kv, err := e.js.KeyValue(ctx, wire.LeaseBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("lease bucket %s does not exist: create it with `flotilla streams apply` (as the NATS admin user), or start beat with nats.apply_streams=true", wire.LeaseBucket)
	}
	if err != nil {
		return nil, fmt.Errorf("lease bucket %s: %w", wire.LeaseBucket, err)
	}
	if st, err := kv.Status(ctx); err == nil && st.TTL() != e.cfg.TTL {
		e.log.Warn().Dur("bucket_ttl", st.TTL()).Dur("lease_ttl", e.cfg.TTL).
			Msg("the lease bucket's TTL differs from beat.lease_ttl: run `flotilla streams apply` with the same beat.lease_ttl")
	}
	return kv, nil
}

// Run campaigns until ctx ends, then resigns (deletes the lease if it still
// holds it) so a standby takes over at once.
func (e *Elector) Run(ctx context.Context) error {
	kv, err := e.bucket(ctx)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.kv = kv
	e.mu.Unlock()
	defer close(e.changes)
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			e.resign(kv)
			return nil
		case <-tick.C:
		}
		if e.leadingNow() {
			e.renew(ctx, kv)
			tick.Reset(e.cfg.Renew)
			continue
		}
		e.campaign(ctx, kv)
		if e.leadingNow() {
			tick.Reset(e.cfg.Renew)
		} else {
			tick.Reset(e.cfg.Poll)
		}
	}
}

// bucketKV returns the lease bucket, or nil before Run has bound to it.
func (e *Elector) bucketKV() jetstream.KeyValue {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.kv
}

func (e *Elector) leadingNow() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

func (e *Elector) campaign(ctx context.Context, kv jetstream.KeyValue) {
	start := e.cfg.Now()
	cctx, cancel := context.WithTimeout(ctx, e.cfg.Renew)
	defer cancel()
	rev, err := kv.Create(cctx, wire.LeaseKey, []byte(e.cfg.ID))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			e.log.Debug().Err(err).Msg("campaign")
		}
		return
	}
	e.set(true, rev, start)
}

func (e *Elector) renew(ctx context.Context, kv jetstream.KeyValue) {
	start := e.cfg.Now()
	e.mu.Lock()
	rev := e.rev
	e.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, e.cfg.Renew)
	defer cancel()
	nrev, err := kv.Update(cctx, wire.LeaseKey, []byte(e.cfg.ID), rev)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn().Err(err).Msg("lease renewal failed: no longer leader")
		}
		e.set(false, 0, time.Time{})
		return
	}
	e.set(true, nrev, start)
}

func (e *Elector) set(leading bool, rev uint64, renewedAt time.Time) {
	e.mu.Lock()
	changed := e.leading != leading
	e.leading = leading
	e.rev = rev
	if leading {
		e.until = renewedAt.Add(e.cfg.TTL - e.cfg.Margin)
	} else {
		e.until = time.Time{}
	}
	e.mu.Unlock()
	if changed {
		e.metrics.leader.Set(b2f(leading))
		e.metrics.changes.Inc()
		if leading {
			e.log.Info().Str("id", e.cfg.ID).Msg("beat leadership acquired")
		} else {
			e.log.Info().Str("id", e.cfg.ID).Msg("beat leadership lost")
		}
		e.changes <- leading
	}
}

func (e *Elector) resign(kv jetstream.KeyValue) {
	e.mu.Lock()
	leading, rev := e.leading, e.rev
	e.mu.Unlock()
	if !leading {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := kv.Delete(ctx, wire.LeaseKey, jetstream.LastRevision(rev)); err != nil {
		e.log.Warn().Err(err).Msg("resign")
	}
	e.set(false, 0, time.Time{})
}

// Leader returns the id in the lease, or "" when nobody leads.
func Leader(ctx context.Context, js jetstream.JetStream) (string, error) {
	kv, err := js.KeyValue(ctx, wire.LeaseBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	ent, err := kv.Get(ctx, wire.LeaseKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return string(ent.Value()), nil
}

// Stats returns the document the beat leader puts into the lease bucket
// every few seconds ([wire.BeatStatsKey]). It returns [ErrNoStats] when
// there is none: no replica has led within the bucket's TTL, or the bucket
// does not exist.
func Stats(ctx context.Context, js jetstream.JetStream) (wire.BeatStats, error) {
	kv, err := js.KeyValue(ctx, wire.LeaseBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return wire.BeatStats{}, ErrNoStats
	}
	if err != nil {
		return wire.BeatStats{}, fmt.Errorf("beat stats: %w", err)
	}
	return getStats(ctx, kv)
}

// getStats reads and decodes the stats document from the lease bucket.
func getStats(ctx context.Context, kv jetstream.KeyValue) (wire.BeatStats, error) {
	ent, err := kv.Get(ctx, wire.BeatStatsKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return wire.BeatStats{}, ErrNoStats
	}
	if err != nil {
		return wire.BeatStats{}, fmt.Errorf("beat stats: %w", err)
	}
	var st wire.BeatStats
	if err := json.Unmarshal(ent.Value(), &st); err != nil {
		return wire.BeatStats{}, fmt.Errorf("beat stats: decode %s: %w", wire.BeatStatsKey, err)
	}
	return st, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
