package revoke

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/wire"
)

// Set is a worker's view of the cancelled task ids: every key of the
// bucket, kept current by a watch. Lookups take a read lock and no round
// trip.
type Set struct {
	mu  sync.RWMutex
	ids map[string]time.Time // id → when this process learned it
	ttl time.Duration
	w   jetstream.KeyWatcher
}

// Watch loads every cancellation of the bucket — it returns only once it
// has them, so a worker that starts consuming afterwards never runs a task
// cancelled while it was down — and then keeps the set current until ctx
// ends, calling onCancel (on the watch goroutine) for each new one.
func Watch(ctx context.Context, js jetstream.JetStream, log zerolog.Logger, onCancel func(id string)) (*Set, error) {
	kv, err := js.KeyValue(ctx, wire.CancelBucket)
	if err != nil {
		return nil, fmt.Errorf("KV bucket %s: %w (run `flotilla streams apply`)", wire.CancelBucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("KV bucket %s: %w", wire.CancelBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch KV bucket %s: %w", wire.CancelBucket, err)
	}
	s := &Set{ids: map[string]time.Time{}, ttl: st.TTL(), w: w}
	// Initial values, then nil.
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("watch KV bucket %s: closed while loading", wire.CancelBucket)
			}
			if e == nil {
				go s.follow(ctx, log, onCancel)
				return s, nil
			}
			s.ids[e.Key()] = e.Created()
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		}
	}
}

// follow applies new cancellations until the watch ends, and forgets
// those older than the bucket's TTL (the server has dropped them too).
func (s *Set) follow(ctx context.Context, log zerolog.Logger, onCancel func(string)) {
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	defer func() { _ = s.w.Stop() }()
	for {
		select {
		case e, ok := <-s.w.Updates():
			if !ok {
				log.Warn().Str("bucket", wire.CancelBucket).Msg("cancellation watch ended")
				return
			}
			if e == nil {
				continue
			}
			s.mu.Lock()
			s.ids[e.Key()] = e.Created()
			s.mu.Unlock()
			if onCancel != nil {
				onCancel(e.Key())
			}
		case <-prune.C:
			if s.ttl <= 0 {
				continue
			}
			cut := time.Now().Add(-s.ttl)
			s.mu.Lock()
			for id, at := range s.ids {
				if at.Before(cut) {
					delete(s.ids, id)
				}
			}
			s.mu.Unlock()
		case <-ctx.Done():
			return
		}
	}
}

// Has reports whether task id is cancelled. A nil Set has nothing.
func (s *Set) Has(id string) bool {
	if s == nil {
		return false
	}
	s.mu.RLock()
	_, ok := s.ids[id]
	s.mu.RUnlock()
	return ok
}

// Len is how many cancellations the set holds.
func (s *Set) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.ids)
}
