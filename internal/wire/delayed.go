package wire

import (
	"github.com/nats-io/nats.go"
)

// DueToTask turns a due delayed task (delayed.due.<id>, as the server wrote
// it from the schedule) into the task message for its queue: the subject
// tasks.<queue>.<task> from its Flotilla-Queue and Flotilla-Task headers,
// every Flotilla header and the Nats-Msg-Id kept (a repeated move is
// deduplicated), the server's schedule headers left behind. A message
// whose headers name no valid queue or task goes to a subject with
// [Invalid] tokens, where no consumer takes it and `nats stream subjects`
// shows it.
func DueToTask(h nats.Header, data []byte) *nats.Msg {
	q, name := SafeQueue(h.Get(HeaderQueue)), SafeTask(h.Get(HeaderTask))
	return &nats.Msg{Subject: TaskSubject(q, name), Header: carried(h), Data: data}
}
