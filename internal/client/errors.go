package client

import (
	"errors"
	"fmt"

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
)

// translatePublishErr turns stream-limit errors into ErrQueueFull / ErrTooLarge.
func translatePublishErr(queue string, err error) error {
	switch {
	case jet.IsMsgTooLarge(err):
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	case jet.IsStreamFull(err):
		return fmt.Errorf("%w: queue %s: %v", ErrQueueFull, queue, err)
	}
	return fmt.Errorf("publish task: %w", err)
}
