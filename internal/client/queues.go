package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/wire"
)

// How long the answer "q-<queue> exists" (or not) is trusted.
const (
	queueKnownTTL   = time.Minute
	queueUnknownTTL = 2 * time.Second
)

// queueCache answers whether a queue is served: declared in configuration,
// or with a consumer q-<queue> on TASKS.
type queueCache struct {
	js       jetstream.JetStream
	declared map[string]bool

	mu   sync.Mutex
	seen map[string]queueSeen
}

type queueSeen struct {
	exists bool
	until  time.Time
}

func newQueueCache(js jetstream.JetStream, declared []string) *queueCache {
	q := &queueCache{js: js, declared: map[string]bool{}, seen: map[string]queueSeen{}}
	for _, d := range declared {
		q.declared[d] = true
	}
	return q
}

// check returns an error matching ErrUnknownQueue when queue is neither
// declared nor consumed. When JetStream cannot be asked, it lets the task
// through: the publish itself then tells.
func (q *queueCache) check(ctx context.Context, queue string) error {
	if q == nil || q.declared[queue] {
		return nil
	}
	now := time.Now()
	q.mu.Lock()
	s, ok := q.seen[queue]
	q.mu.Unlock()
	if !ok || now.After(s.until) {
		_, err := q.js.Consumer(ctx, wire.StreamTasks, wire.ConsumerName(queue))
		switch {
		case err == nil:
			s = queueSeen{exists: true, until: now.Add(queueKnownTTL)}
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			s = queueSeen{exists: false, until: now.Add(queueUnknownTTL)}
		default:
			return nil
		}
		q.mu.Lock()
		q.seen[queue] = s
		q.mu.Unlock()
	}
	if !s.exists {
		return fmt.Errorf("%w %q: no worker consumes it (no consumer %s on %s) and no configuration declares it; "+
			"create it with `flotilla streams apply --queues %s` or start a worker for it", ErrUnknownQueue, queue,
			wire.ConsumerName(queue), wire.StreamTasks, queue)
	}
	return nil
}
