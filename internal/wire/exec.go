package wire

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/flotilla/flotilla/internal/task"
)

// Error codes of a failed synchronous execution, carried in the micro
// error header Nats-Service-Error-Code; the api role maps them to the HTTP
// statuses of the same numbers.
const (
	CodeBadRequest   = "400"
	CodeHandlerError = "422"
	CodeTimeout      = "504"
	// CodeCancelled: the execution was cancelled while it ran.
	CodeCancelled = "409"
)

// ExecMeta is what a synchronous execution carries besides its args.
type ExecMeta struct {
	// ID is the task id its state is recorded under.
	ID          string
	Traceparent string
	// Timeout overrides the task's per-attempt timeout (like a task's
	// Flotilla-Timeout); zero keeps the task's.
	Timeout time.Duration
	// Wait is how long the caller waits: the attempt ends then at the latest.
	Wait time.Duration
}

// NewExecRequest builds the request of a synchronous execution of task
// name with args, for subject ExecSubject(name).
func NewExecRequest(name string, args json.RawMessage, m ExecMeta) *nats.Msg {
	msg := nats.NewMsg(ExecSubject(name))
	msg.Header.Set(HeaderID, m.ID)
	msg.Header.Set(HeaderTask, name)
	if m.Traceparent != "" {
		msg.Header.Set(HeaderTraceparent, m.Traceparent)
	}
	if m.Timeout > 0 {
		msg.Header.Set(HeaderTimeout, m.Timeout.String())
	}
	if m.Wait > 0 {
		msg.Header.Set(HeaderWait, m.Wait.String())
	}
	msg.Data = args
	return msg
}

// DecodeExecRequest turns a request for task name into the envelope of its
// one attempt (queue [SyncQueue], origin "sync", no retries, enqueued now)
// and the caller's wait (zero when the request gives none). The id is
// empty when the request carries none. Errors name the header or the body.
func DecodeExecRequest(name string, h nats.Header, data []byte, now time.Time) (*task.Envelope, time.Duration, error) {
	env := &task.Envelope{
		ID: h.Get(HeaderID), Name: name, Queue: SyncQueue, Args: data, Attempt: 1, MaxRetries: 0,
		EnqueuedAt: now, Origin: OriginSync, Traceparent: h.Get(HeaderTraceparent),
	}
	var wait time.Duration
	if v := h.Get(HeaderTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return env, 0, fmt.Errorf("header %s: %q is not a positive duration", HeaderTimeout, v)
		}
		env.Timeout = d
	}
	if v := h.Get(HeaderWait); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return env, 0, fmt.Errorf("header %s: %q is not a positive duration", HeaderWait, v)
		}
		wait = d
	}
	if !task.IsJSONObject(data) {
		return env, wait, fmt.Errorf("args must be a JSON object")
	}
	return env, wait, nil
}

// ExecReply is the outcome of a synchronous execution as the caller reads
// it: the result on success, or Code, Error and ErrorType.
type ExecReply struct {
	ID       string
	Worker   string
	Started  time.Time
	Finished time.Time
	// Result is the handler's JSON result (success only).
	Result json.RawMessage
	// Code is one of the Code constants; empty on success.
	Code      string
	Error     string
	ErrorType string
}

// Header returns the Flotilla headers of the reply; the error itself travels
// in micro's error headers (set by micro.Request.Error).
func (r ExecReply) Header() nats.Header {
	h := make(nats.Header, 5)
	h[HeaderID] = []string{r.ID}
	h[HeaderWorker] = []string{r.Worker}
	h[HeaderStarted] = []string{r.Started.UTC().Format(time.RFC3339Nano)}
	h[HeaderFinished] = []string{r.Finished.UTC().Format(time.RFC3339Nano)}
	if r.ErrorType != "" {
		h[HeaderErrorType] = []string{r.ErrorType}
	}
	return h
}

// DecodeExecReply reads a worker's reply.
func DecodeExecReply(m *nats.Msg) ExecReply {
	h := m.Header
	r := ExecReply{
		ID: h.Get(HeaderID), Worker: h.Get(HeaderWorker),
		Code: h.Get(micro.ErrorCodeHeader), Error: h.Get(micro.ErrorHeader), ErrorType: h.Get(HeaderErrorType),
	}
	r.Started, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderStarted))
	r.Finished, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderFinished))
	if r.Code == "" {
		r.Result = m.Data
	}
	return r
}
