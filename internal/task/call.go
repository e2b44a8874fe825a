package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
)

// Call runs one attempt of h wrapped in mw (outermost first): a panic
// becomes a *PanicError, and the result is encoded as JSON (null for none;
// a result that does not encode is a Permanent error). Timeouts are the
// caller's: it passes a context with a deadline.
func Call(ctx context.Context, h HandlerFunc, env *Envelope, mw ...Middleware) (out json.RawMessage, err error) {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	res, err := safeCall(ctx, h, env)
	if err != nil {
		return nil, err
	}
	switch v := res.(type) {
	case nil:
		return json.RawMessage("null"), nil
	case json.RawMessage:
		if len(v) == 0 {
			return json.RawMessage("null"), nil
		}
		return v, nil
	default:
		b, err := json.Marshal(res)
		if err != nil {
			return nil, Permanent(fmt.Errorf("result does not encode as JSON: %w", err))
		}
		return b, nil
	}
}

func safeCall(ctx context.Context, h HandlerFunc, env *Envelope) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return h(ctx, env)
}

// Error types: how a failed attempt failed.
const (
	ErrorTypeError     = "error"
	ErrorTypePermanent = "permanent"
	ErrorTypePanic     = "panic"
	ErrorTypeTimeout   = "timeout"
	ErrorTypeCancelled = "cancelled"
)

// ErrCancelled is the cause of the context of an attempt whose task was
// cancelled; handlers see ctx.Err() == context.Canceled and
// context.Cause(ctx) == ErrCancelled.
var ErrCancelled = errors.New("task cancelled")

// ErrorType classifies a handler error: ErrorTypePanic, ErrorTypePermanent,
// ErrorTypeTimeout or ErrorTypeError ("" for nil).
func ErrorType(err error) string {
	var pe *PanicError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &pe):
		return ErrorTypePanic
	case errors.Is(err, ErrCancelled):
		return ErrorTypeCancelled
	case IsPermanent(err):
		return ErrorTypePermanent
	case errors.Is(err, context.DeadlineExceeded):
		return ErrorTypeTimeout
	default:
		return ErrorTypeError
	}
}
