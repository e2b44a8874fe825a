package jet

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flotilla/flotilla/internal/task"
)

// ErrUndecodable is returned for a task message that cannot be turned into an
// [task.Envelope]; such a message is dead-lettered.
var ErrUndecodable = errors.New("undecodable task message")

// NewTaskMsg builds the message of env for subject. msgID is the
// deduplication id (the task id, or the caller's idempotency key); notify,
// when set, is a subject that receives the final state.
func NewTaskMsg(subject string, env *task.Envelope, msgID, notify string) *nats.Msg {
	h := nats.Header{}
	if msgID == "" {
		msgID = env.ID
	}
	h[task.HeaderMsgID] = []string{msgID}
	h[task.HeaderID] = []string{env.ID}
	h[task.HeaderTask] = []string{env.Name}
	h[task.HeaderEnqueued] = []string{env.EnqueuedAt.UTC().Format(time.RFC3339Nano)}
	if !env.Expires.IsZero() {
		h[task.HeaderExpires] = []string{env.Expires.UTC().Format(time.RFC3339Nano)}
	}
	if env.MaxRetries >= 0 {
		h[task.HeaderMaxRetries] = []string{strconv.Itoa(env.MaxRetries)}
	}
	if env.Timeout > 0 {
		h[task.HeaderTimeout] = []string{env.Timeout.String()}
	}
	if env.Origin != "" {
		h[task.HeaderOrigin] = []string{env.Origin}
	}
	if env.Traceparent != "" {
		h[task.HeaderTraceparent] = []string{env.Traceparent}
	}
	if notify != "" {
		h[task.HeaderNotify] = []string{notify}
	}
	if env.Queue != "" && subject != TaskSubject(env.Queue, env.Name) {
		// Only messages off the tasks.<queue>.<task> subject (delayed ones)
		// need the queue spelled out.
		h[task.HeaderQueue] = []string{env.Queue}
	}
	data := env.Args
	if len(data) == 0 {
		data = json.RawMessage(`{}`)
	}
	return &nats.Msg{Subject: subject, Header: h, Data: data}
}

// DecodeTask turns a task message into an envelope. queue comes from the
// subject tasks.<queue>.<task>. A missing MaxRetries header yields -1
// (use the default). Errors match [ErrUndecodable] and name the cause.
func DecodeTask(subject string, h nats.Header, data []byte) (*task.Envelope, error) {
	env := &task.Envelope{MaxRetries: -1}
	env.ID = h.Get(task.HeaderID)
	env.Name = h.Get(task.HeaderTask)
	env.Queue = queueOf(subject, "tasks.")
	if env.Queue == "" {
		env.Queue = h.Get(task.HeaderQueue)
	}
	env.Origin = h.Get(task.HeaderOrigin)
	env.Traceparent = h.Get(task.HeaderTraceparent)
	if env.ID == "" {
		return env, fmt.Errorf("%w: header %s is missing", ErrUndecodable, task.HeaderID)
	}
	if env.Name == "" {
		return env, fmt.Errorf("%w: header %s is missing", ErrUndecodable, task.HeaderTask)
	}
	if v := h.Get(task.HeaderEnqueued); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return env, fmt.Errorf("%w: header %s: %v", ErrUndecodable, task.HeaderEnqueued, err)
		}
		env.EnqueuedAt = t
	}
	if v := h.Get(task.HeaderExpires); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return env, fmt.Errorf("%w: header %s: %v", ErrUndecodable, task.HeaderExpires, err)
		}
		env.Expires = t
	}
	if v := h.Get(task.HeaderMaxRetries); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return env, fmt.Errorf("%w: header %s: %q is not a non-negative integer", ErrUndecodable, task.HeaderMaxRetries, v)
		}
		env.MaxRetries = n
	}
	if v := h.Get(task.HeaderTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return env, fmt.Errorf("%w: header %s: %q is not a positive duration", ErrUndecodable, task.HeaderTimeout, v)
		}
		env.Timeout = d
	}
	if !task.IsJSONObject(data) {
		return env, fmt.Errorf("%w: body is not a JSON object", ErrUndecodable)
	}
	env.Args = data
	return env, nil
}

// queueOf returns <queue> of a subject prefix.<queue>.<task> ("tasks." or
// "dead."), or "" when subject does not start with prefix.
func queueOf(subject, prefix string) string {
	rest, ok := strings.CutPrefix(subject, prefix)
	if !ok {
		return ""
	}
	q, _, _ := strings.Cut(rest, ".")
	return q
}
