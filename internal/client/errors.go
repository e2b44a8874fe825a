package client

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/task"
)

// Sentinels; web maps them to HTTP statuses.
var (
	// ErrInvalid matches every [FieldError].
	ErrInvalid = errors.New("invalid request")
	// ErrQueueFull means the TASKS stream reached its limits and refused the task.
	ErrQueueFull = errors.New("queue is full")
	// ErrTooLarge means the args exceed the configured limit.
	ErrTooLarge = errors.New("task too large")
	// ErrUnknownTask is task.ErrUnknownTask.
	ErrUnknownTask = task.ErrUnknownTask
)

// FieldError names the request field that is wrong.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string        { return e.Field + ": " + e.Msg }
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// translatePublishErr turns stream-limit errors into ErrQueueFull / ErrTooLarge.
func translatePublishErr(queue string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch {
		case apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return fmt.Errorf("%w: %s", ErrTooLarge, apiErr.Description)
		case apiErr.ErrorCode == 10077 && strings.Contains(apiErr.Description, "exceeded"):
			return fmt.Errorf("%w: queue %s: %s", ErrQueueFull, queue, apiErr.Description)
		}
	}
	return fmt.Errorf("publish task: %w", err)
}
