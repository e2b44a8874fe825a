package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flotilla/flotilla/internal/task"
)

// ErrUndecodable is returned for a task message that cannot be turned into an
// [task.Envelope]; such a message is dead-lettered.
var ErrUndecodable = errors.New("undecodable task message")

// NewTaskMsg builds the message of env for subject (TaskSubject, or
// DelayedSubject for a delayed task). msgID is the deduplication id (the
// task id when empty); notify, when set, is a subject that receives the
// final state.
func NewTaskMsg(subject string, env *task.Envelope, msgID, notify string) *nats.Msg {
	h := make(nats.Header, 12)
	if msgID == "" {
		msgID = env.ID
	}
	h[HeaderMsgID] = []string{msgID}
	h[HeaderID] = []string{env.ID}
	h[HeaderTask] = []string{env.Name}
	h[HeaderEnqueued] = []string{env.EnqueuedAt.UTC().Format(time.RFC3339Nano)}
	if !env.Expires.IsZero() {
		h[HeaderExpires] = []string{env.Expires.UTC().Format(time.RFC3339Nano)}
	}
	if env.MaxRetries >= 0 {
		h[HeaderMaxRetries] = []string{strconv.Itoa(env.MaxRetries)}
	}
	if env.Timeout > 0 {
		h[HeaderTimeout] = []string{env.Timeout.String()}
	}
	if env.Origin != "" {
		h[HeaderOrigin] = []string{env.Origin}
	}
	if env.Traceparent != "" {
		h[HeaderTraceparent] = []string{env.Traceparent}
	}
	if notify != "" {
		h[HeaderNotify] = []string{notify}
	}
	if env.Workflow != "" {
		h[HeaderWorkflow] = []string{env.Workflow}
		h[HeaderStep] = []string{env.Step}
	}
	if env.Queue != "" && subject != TaskSubject(env.Queue, env.Name) {
		// Only messages off the tasks.<queue>.<task> subject (delayed ones)
		// need the queue spelled out.
		h[HeaderQueue] = []string{env.Queue}
	}
	data := env.Args
	if len(data) == 0 {
		data = json.RawMessage(`{}`)
	}
	return &nats.Msg{Subject: subject, Header: h, Data: data}
}

// DecodeTask turns a task message into an envelope. On tasks.<queue>.<task>
// the subject names the queue and the task — what a producer's subject
// permissions allowed — and a Flotilla-Task header that names another task
// is an error; elsewhere (a due delayed task) the headers name both. A
// missing Flotilla-Max-Retries yields -1 (use the default). Errors match
// [ErrUndecodable] and name the cause; the envelope returned with them
// holds what could be read, for dead-lettering.
func DecodeTask(subject string, h nats.Header, data []byte) (*task.Envelope, error) {
	env := &task.Envelope{MaxRetries: -1}
	env.ID = h.Get(HeaderID)
	env.Name = h.Get(HeaderTask)
	if q, name, ok := ParseTaskSubject(subject); ok {
		env.Queue = q
		if env.Name != "" && env.Name != name {
			header := env.Name
			env.Name = name
			return env, fmt.Errorf("%w: header %s names task %q but the subject %s names %q", ErrUndecodable, HeaderTask, header, subject, name)
		}
		env.Name = name
	} else {
		env.Queue = h.Get(HeaderQueue)
	}
	env.Origin = h.Get(HeaderOrigin)
	env.Traceparent = h.Get(HeaderTraceparent)
	env.Workflow, env.Step = h.Get(HeaderWorkflow), h.Get(HeaderStep)
	if env.ID == "" {
		return env, fmt.Errorf("%w: header %s is missing", ErrUndecodable, HeaderID)
	}
	if h.Get(HeaderTask) == "" {
		return env, fmt.Errorf("%w: header %s is missing", ErrUndecodable, HeaderTask)
	}
	if v := h.Get(HeaderEnqueued); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return env, fmt.Errorf("%w: header %s: %v", ErrUndecodable, HeaderEnqueued, err)
		}
		env.EnqueuedAt = t
	}
	if v := h.Get(HeaderExpires); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return env, fmt.Errorf("%w: header %s: %v", ErrUndecodable, HeaderExpires, err)
		}
		env.Expires = t
	}
	if v := h.Get(HeaderMaxRetries); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return env, fmt.Errorf("%w: header %s: %q is not a non-negative integer", ErrUndecodable, HeaderMaxRetries, v)
		}
		env.MaxRetries = n
	}
	if v := h.Get(HeaderTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return env, fmt.Errorf("%w: header %s: %q is not a positive duration", ErrUndecodable, HeaderTimeout, v)
		}
		env.Timeout = d
	}
	if !task.IsJSONObject(data) {
		return env, fmt.Errorf("%w: body is not a JSON object", ErrUndecodable)
	}
	env.Args = data
	return env, nil
}

// SafeQueue returns q when it is a valid queue name, else [Invalid]: the
// token to use in subjects and metric labels.
func SafeQueue(q string) string {
	if task.ValidateQueue(q) != nil {
		return Invalid
	}
	return q
}

// SafeTask returns name when it is a valid task name, else [Invalid].
func SafeTask(name string) string {
	if task.ValidateName(name) != nil {
		return Invalid
	}
	return name
}
