package worker

import (
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// inbox is the bounded FIFO between a queue's consumer and its handlers. It
// exists (instead of a channel) so that tasks waiting for a free handler can
// be kept alive: keepAlive sends in-progress acks for every task that has
// waited a while, so a large prefetch never lets buffered tasks time out and
// be redelivered to another worker while this one still holds them.
type inbox struct {
	mu       sync.Mutex
	notEmpty sync.Cond
	notFull  sync.Cond
	items    []queued // ring buffer
	head, n  int
	closed   bool
}

type queued struct {
	m jetstream.Msg
}

func newInbox(capacity int) *inbox {
	b := &inbox{items: make([]queued, capacity)}
	b.notEmpty.L = &b.mu
	b.notFull.L = &b.mu
	return b
}

// put appends m, waiting while the inbox is full; false if it was closed.
func (b *inbox) put(m jetstream.Msg) bool {
	b.mu.Lock()
	for b.n == len(b.items) && !b.closed {
		b.notFull.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		return false
	}
	b.items[(b.head+b.n)%len(b.items)] = queued{m: m}
	b.n++
	b.mu.Unlock()
	b.notEmpty.Signal()
	return true
}

// get removes the oldest message, waiting while the inbox is empty; false
// once it is closed and empty.
func (b *inbox) get() (jetstream.Msg, bool) {
	b.mu.Lock()
	for b.n == 0 && !b.closed {
		b.notEmpty.Wait()
	}
	if b.n == 0 {
		b.mu.Unlock()
		return nil, false
	}
	q := b.items[b.head]
	b.items[b.head] = queued{}
	b.head = (b.head + 1) % len(b.items)
	b.n--
	b.mu.Unlock()
	b.notFull.Signal()
	return q.m, true
}

// close wakes every waiter; get drains what is left, then reports false.
func (b *inbox) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.notEmpty.Broadcast()
	b.notFull.Broadcast()
}

// drain removes and returns everything queued.
func (b *inbox) drain() []jetstream.Msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]jetstream.Msg, 0, b.n)
	for b.n > 0 {
		out = append(out, b.items[b.head].m)
		b.items[b.head] = queued{}
		b.head = (b.head + 1) % len(b.items)
		b.n--
	}
	return out
}

// keepAlive sends an in-progress ack for every waiting message. It runs
// every AckWait/4, so no waiting message goes longer than about a quarter
// of ack_wait (plus scheduling delays) without one.
func (b *inbox) keepAlive() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := 0; i < b.n; i++ {
		_ = b.items[(b.head+i)%len(b.items)].m.InProgress()
	}
}
