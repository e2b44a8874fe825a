package task

import (
	"errors"
	"fmt"
	"time"
)

// ErrUnknownTask is returned for a task name that has no registered handler.
var ErrUnknownTask = errors.New("unknown task")

// UnknownTaskError names the task that has no handler; it matches ErrUnknownTask.
func UnknownTaskError(name string) error {
	return fmt.Errorf("%w %q: no handler is registered for it", ErrUnknownTask, name)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the task is dead-lettered at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was wrapped with [Permanent].
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// RetryError asks for a retry after Delay instead of the computed backoff.
type RetryError struct {
	Delay time.Duration
	Err   error
}

func (e *RetryError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("retry in %s", e.Delay)
	}
	return fmt.Sprintf("retry in %s: %v", e.Delay, e.Err)
}

func (e *RetryError) Unwrap() error { return e.Err }

// RetryIn asks for another attempt after d (the retry budget still applies).
func RetryIn(d time.Duration, err error) error { return &RetryError{Delay: d, Err: err} }

// PanicError is the failure a recovered handler panic turns into.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// ErrInvalid matches every [FieldError]: a request (an enqueue, a schedule)
// that names a wrong field.
var ErrInvalid = errors.New("invalid request")

// FieldError names the field of a request that is wrong and why.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Is makes every FieldError match [ErrInvalid].
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// FieldErrorf returns a *FieldError for field with a formatted message.
func FieldErrorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}
