package client

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/task"
)

// EnqueueBody is an enqueue as people write it: the JSON of
// POST /api/v1/tasks and the flags of `flotilla task send`, with times and
// durations as strings.
type EnqueueBody struct {
	ID             string          `json:"id"`
	Task           string          `json:"task"`
	Args           json.RawMessage `json:"args"`
	Queue          string          `json:"queue"`
	Countdown      string          `json:"countdown"`
	ETA            string          `json:"eta"`
	Expires        string          `json:"expires"`
	MaxRetries     *int            `json:"max_retries"`
	Timeout        string          `json:"timeout"`
	IdempotencyKey string          `json:"idempotency_key"`
}

// Request parses b into a request (relative expiries count from now);
// every error is a [task.FieldError] naming its field. Prepare checks the
// rest.
func (b EnqueueBody) Request(now time.Time) (Request, error) {
	req := Request{
		ID: b.ID, Task: b.Task, Queue: b.Queue, Args: b.Args,
		MaxRetries: b.MaxRetries, IdempotencyKey: b.IdempotencyKey,
	}
	if b.Task == "" {
		return req, task.FieldErrorf("task", "required")
	}
	if s := strings.TrimSpace(string(b.Args)); s == "null" {
		req.Args = nil
	}
	var err error
	if b.Countdown != "" {
		if req.Countdown, err = time.ParseDuration(b.Countdown); err != nil {
			return req, task.FieldErrorf("countdown", "%q is not a Go duration such as 30s or 5m", b.Countdown)
		}
	}
	if b.ETA != "" {
		if req.ETA, err = time.Parse(time.RFC3339, b.ETA); err != nil {
			return req, task.FieldErrorf("eta", "%q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", b.ETA)
		}
	}
	if b.Expires != "" {
		if t, perr := time.Parse(time.RFC3339, b.Expires); perr == nil {
			req.Expires = t
		} else if d, derr := time.ParseDuration(b.Expires); derr == nil {
			if d <= 0 {
				return req, task.FieldErrorf("expires", "duration must be positive")
			}
			req.Expires = now.Add(d)
		} else {
			return req, task.FieldErrorf("expires", "%q is neither an RFC 3339 time nor a Go duration", b.Expires)
		}
	}
	if b.Timeout != "" {
		if req.Timeout, err = time.ParseDuration(b.Timeout); err != nil || req.Timeout <= 0 {
			return req, task.FieldErrorf("timeout", "%q is not a positive Go duration", b.Timeout)
		}
	}
	return req, nil
}
