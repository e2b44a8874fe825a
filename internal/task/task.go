// Package task defines what a Flotilla task is to the code that runs it: the
// [Envelope] a handler receives, the [Registry] of handlers, middleware, the
// control-flow errors that decide retries, the rules for task and queue
// names, and the [FieldError] of a request that breaks them. It imports
// nothing from internal/ and knows nothing of NATS (package wire owns the
// wire format).
package task

import (
	"context"
	"encoding/json"
	"time"
)

// Envelope is one attempt of one task as a handler sees it.
type Envelope struct {
	// ID is the task id (a ULID), stable across retries.
	ID string
	// Name is the registered task name, e.g. "email.send".
	Name string
	// Queue the task was enqueued on.
	Queue string
	// Args is the task's JSON object of arguments.
	Args json.RawMessage
	// Attempt counts deliveries, starting at 1.
	Attempt int
	// MaxRetries is the retry budget of this task: it runs at most MaxRetries+1 times.
	MaxRetries int
	// Timeout bounds one attempt; zero means the worker's default.
	Timeout time.Duration
	// EnqueuedAt is when the task was enqueued.
	EnqueuedAt time.Time
	// Expires, when not zero, is when the task stops being worth running.
	Expires time.Time
	// Origin says who enqueued it: web, api, cli, client or beat/<schedule>,
	// or sync for a synchronous execution.
	Origin string
	// Traceparent is the W3C trace context, if any.
	Traceparent string
	// Workflow is the id of the workflow the task is a step of, and Step
	// the step's path in it; both empty for a task of its own.
	Workflow, Step string
}

// HandlerFunc runs one attempt of a task and returns its result, which must
// encode as JSON (nil for none). The error decides what happens next: see
// [Permanent] and [RetryIn]; any other error is retried with backoff.
type HandlerFunc func(ctx context.Context, env *Envelope) (any, error)

// Middleware wraps a handler (recover, timeout, logging, metrics).
type Middleware func(HandlerFunc) HandlerFunc

// States a task moves through, as stored with its result.
const (
	StatePending = "PENDING"
	StateStarted = "STARTED"
	StateRetry   = "RETRY"
	StateSuccess = "SUCCESS"
	StateFailure = "FAILURE"
	StateExpired = "EXPIRED"
	// StateCancelled: cancelled before or while it ran; it will not run
	// (again).
	StateCancelled = "CANCELLED"
)

// States lists every state, in lifecycle order.
var States = []string{StatePending, StateStarted, StateRetry, StateSuccess, StateFailure, StateExpired, StateCancelled}

// Final reports whether no further state follows s.
func Final(s string) bool {
	return s == StateSuccess || s == StateFailure || s == StateExpired || s == StateCancelled
}

type envelopeKey struct{}

// WithEnvelope returns ctx carrying env; the attempt runner gives every
// handler such a context (and a logger with the task's fields).
func WithEnvelope(ctx context.Context, env *Envelope) context.Context {
	return context.WithValue(ctx, envelopeKey{}, env)
}

// EnvelopeFrom returns the envelope of the attempt ctx belongs to, for code
// deep inside a handler that was not passed it.
func EnvelopeFrom(ctx context.Context) (*Envelope, bool) {
	env, ok := ctx.Value(envelopeKey{}).(*Envelope)
	return env, ok
}
