package client

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/task"
)

// Sentinels; web maps them to HTTP statuses.
var (
	// ErrInvalid matches every [task.FieldError].
	ErrInvalid = task.ErrInvalid
	// ErrQueueFull means the TASKS stream reached its limits and refused the task.
	ErrQueueFull = errors.New("queue is full")
	// ErrTooLarge means the args exceed the configured limit.
	ErrTooLarge = errors.New("task too large")
	// ErrUnknownTask is task.ErrUnknownTask.
	ErrUnknownTask = task.ErrUnknownTask
	// ErrUnavailable means NATS JetStream could not take the task now
	// (no server or stream answered, no leader yet): nothing was stored,
	// retry later.
	ErrUnavailable = jet.ErrUnavailable
	// ErrUnconfirmed matches every [UnconfirmedError].
	ErrUnconfirmed = errors.New("publish unconfirmed")
	// ErrUnknownQueue means no worker consumes the queue and no
	// configuration declares it: the task would wait forever.
	ErrUnknownQueue = errors.New("unknown queue")
)

// UnconfirmedError means the task was published but its acknowledgement did
// not come back in time: it may or may not be stored. Enqueue it again with
// the same ID (or the same idempotency key) — it runs at most once.
type UnconfirmedError struct {
	ID  string
	Err error
}

func (e *UnconfirmedError) Error() string {
	return fmt.Sprintf("task %s published, but JetStream did not confirm it: it may or may not be stored; enqueue it again with this id or the same idempotency key (it will run once): %v", e.ID, e.Err)
}

// Is makes an UnconfirmedError match [ErrUnconfirmed].
func (e *UnconfirmedError) Is(target error) bool { return target == ErrUnconfirmed }

func (e *UnconfirmedError) Unwrap() error { return e.Err }

// translatePublishErr turns the publish error of task id on queue into
// ErrQueueFull, ErrTooLarge, ErrUnavailable or an *UnconfirmedError.
func translatePublishErr(id, queue string, err error) error {
	switch {
	case jet.IsMsgTooLarge(err):
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	case jet.IsStreamFull(err):
		return fmt.Errorf("%w: queue %s: %v", ErrQueueFull, queue, err)
	case jet.Unavailable(err), errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	case jet.PublishUnconfirmed(err):
		return &UnconfirmedError{ID: id, Err: err}
	}
	return fmt.Errorf("publish task: %w", err)
}
