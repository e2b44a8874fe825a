package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Kinds of lifecycle events, the second token of their subject.
const (
	// EventSent: a producer stored the task (web, api, cli, client, beat).
	EventSent = "sent"
	// EventStarted: a worker (or a sync execution) began an attempt.
	EventStarted = "started"
	// EventSucceeded: the attempt returned a result, which is recorded.
	EventSucceeded = "succeeded"
	// EventFailed: the attempt failed; EventRetried or EventDead follows
	// for queued tasks.
	EventFailed = "failed"
	// EventRetried: the task will run again after RetryInS seconds.
	EventRetried = "retried"
	// EventDead: the task was dead-lettered; it will not run again.
	EventDead = "dead"
	// EventExpired: the task arrived after its expiry and was not run.
	EventExpired = "expired"
	// EventCancelled: the task was cancelled (POST /api/v1/tasks/{id}/cancel
	// or a bulk cancel) before it ran, or while it ran; it will not run
	// (again).
	EventCancelled = "cancelled"
)

// EventLevel says which lifecycle events are published (tasks.events).
type EventLevel string

// Event levels, each publishing what the one before it does and more.
const (
	// EventsOff publishes none.
	EventsOff EventLevel = "off"
	// EventsOutcomes publishes how attempts end: succeeded, failed,
	// retried, dead, expired, cancelled (what ?wait= and the dead-letter
	// alerts follow).
	EventsOutcomes EventLevel = "outcomes"
	// EventsStandard adds sent, which the dashboard counts as enqueued:
	// the default.
	EventsStandard EventLevel = "standard"
	// EventsAll adds started: every attempt's beginning, one more stored
	// message per attempt.
	EventsAll EventLevel = "all"
)

// EventLevels lists the levels, fewest events first.
var EventLevels = []EventLevel{EventsOff, EventsOutcomes, EventsStandard, EventsAll}

// Publishes reports whether events of kind go out at level l. An unknown
// level publishes nothing.
func (l EventLevel) Publishes(kind string) bool {
	switch kind {
	case EventStarted:
		return l == EventsAll
	case EventSent:
		return l == EventsAll || l == EventsStandard
	default:
		return l == EventsAll || l == EventsStandard || l == EventsOutcomes
	}
}

// EventKinds lists every kind, in lifecycle order.
var EventKinds = []string{EventSent, EventStarted, EventSucceeded, EventFailed, EventRetried, EventDead, EventExpired, EventCancelled}

// Event is one lifecycle event of a task, published as JSON on
// events.<kind>.<queue>.<task> and kept 24 h in the EVENTS stream:
//
//	nats sub 'events.failed.>'
//
// Decode one with [DecodeEvent] (or encoding/json).
type Event struct {
	// Kind is one of the Event* constants, as in the subject.
	Kind string `json:"kind"`
	// ID is the task id.
	ID    string `json:"id"`
	Task  string `json:"task"`
	Queue string `json:"queue"`
	// Time is when the event happened.
	Time time.Time `json:"time"`
	// Attempt counts deliveries, from 1 (absent on sent).
	Attempt int `json:"attempt,omitempty"`
	// Origin is who enqueued the task: web, api, cli, client,
	// beat/<schedule>, or sync for a synchronous execution.
	Origin string `json:"origin,omitempty"`
	// Worker names the worker process (absent on sent).
	Worker string `json:"worker,omitempty"`
	// Error and ErrorType (error, permanent, panic, timeout) describe a
	// failure; Error is also the reason of dead and expired.
	Error     string `json:"error,omitempty"`
	ErrorType string `json:"error_type,omitempty"`
	// RuntimeS is the attempt's run time in seconds (succeeded, failed).
	RuntimeS float64 `json:"runtime_s,omitempty"`
	// RetryInS is the delay before the next attempt in seconds (retried).
	RetryInS float64 `json:"retry_in_s,omitempty"`
}

// Subject is where e is published.
func (e *Event) Subject() string { return EventSubject(e.Kind, SafeQueue(e.Queue), SafeTask(e.Task)) }

// AppendJSON appends the JSON encoding of e to b: the same bytes as
// encoding/json would write, without reflection (events are published
// several times per task).
func (e *Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"kind":`...)
	b = AppendJSONString(b, e.Kind)
	b = append(b, `,"id":`...)
	b = AppendJSONString(b, e.ID)
	b = append(b, `,"task":`...)
	b = AppendJSONString(b, e.Task)
	b = append(b, `,"queue":`...)
	b = AppendJSONString(b, e.Queue)
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if e.Attempt != 0 {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(e.Attempt), 10)
	}
	for _, f := range [...]struct{ k, v string }{
		{`,"origin":`, e.Origin}, {`,"worker":`, e.Worker}, {`,"error":`, e.Error}, {`,"error_type":`, e.ErrorType},
	} {
		if f.v != "" {
			b = append(b, f.k...)
			b = AppendJSONString(b, f.v)
		}
	}
	if e.RuntimeS != 0 {
		b = append(b, `,"runtime_s":`...)
		b = appendFloat(b, e.RuntimeS)
	}
	if e.RetryInS != 0 {
		b = append(b, `,"retry_in_s":`...)
		b = appendFloat(b, e.RetryInS)
	}
	return append(b, '}')
}

// DecodeEvent reads an event published on EVENTS.
func DecodeEvent(data []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("decode event: %w", err)
	}
	return e, nil
}

// AppendJSONString appends s as a JSON string, as encoding/json writes
// it; plain ASCII without quotes, backslashes, control or HTML characters
// (names, ids) is copied as is, anything else goes through encoding/json.
func AppendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= utf8.RuneSelf {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendFloat writes f as encoding/json does (finite values).
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// EventID returns the task id of the encoded event b without decoding all
// of it ("" when b has none): what a consumer that follows many events for
// a few ids needs.
func EventID(b []byte) string {
	const key = `"id":"`
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return ""
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || bytes.IndexByte(rest[:j], '\\') >= 0 {
		var ev struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(b, &ev)
		return ev.ID
	}
	return string(rest[:j])
}
