package wire

import (
	"strconv"
	"strings"
	"time"
)

// Streams (UPPER_SNAKE) as declared in streams/.
const (
	// StreamTasks holds the queues: tasks.<queue>.<task>.
	StreamTasks = "TASKS"
	// StreamDelayed holds countdown/ETA tasks until they are due.
	StreamDelayed = "DELAYED"
	// StreamEvents holds lifecycle events: events.<kind>.<queue>.<task>.
	StreamEvents = "EVENTS"
	// StreamDead holds dead letters: dead.<queue>.<task>.
	StreamDead = "DEAD"
)

// Consumers.
const (
	// ConsumerPrefix starts the durable consumer of every queue: q-<queue>.
	ConsumerPrefix = "q-"
	// ConsumerMover moves due delayed tasks from DELAYED into TASKS.
	// (Queue names cannot be "mover" for that reason: delayed-<queue>
	// counts a queue's delayed tasks, see DelayedConsumerName.)
	ConsumerMover = "delayed-mover"
)

// The beat leader lease: key LeaseKey in the KV bucket LeaseBucket.
const (
	LeaseBucket = "flotilla_beat"
	LeaseKey    = "leader"
)

// Cancellations: one key per cancelled task id in the KV bucket
// CancelBucket, whose value is a [CancelRecord]. Every worker watches the
// bucket: a cancelled task that arrives is not run, a running one has its
// context cancelled. Keys live for the bucket's TTL (tasks.cancel_ttl).
const CancelBucket = "flotilla_cancel"

// Workers announce themselves in the KV bucket WorkersBucket: one key per
// worker process (its name made a valid key, see [WorkerKey]) holding a
// [WorkerInfo], put every few seconds; a worker that stops putting
// disappears after the bucket's TTL ([WorkersTTL]).
const WorkersBucket = "flotilla_workers"

// The synchronous execution service (nats micro): every worker adds its
// instances in one queue group, one endpoint per task on ExecSubject(task).
const (
	ServiceName       = "flotilla"
	ServiceVersion    = "0.1.0"
	ServiceQueueGroup = "flotilla"
)

// SyncQueue is the queue field of a synchronous execution in its state,
// events and metrics: it ran on no queue.
const SyncQueue = "sync"

// Invalid stands for a queue or task name that is not a valid subject
// token, in the subjects of dead letters and in metric labels.
const Invalid = "_invalid"

// Subject prefixes.
const (
	tasksPrefix   = "tasks."
	eventsPrefix  = "events."
	deadPrefix    = "dead."
	execPrefix    = "flotilla.exec."
	delayedAt     = "delayed.at."
	delayedDue    = "delayed.due."
	consumerQueue = ConsumerPrefix
)

// TaskSubject is where a task of queue q named name is published.
func TaskSubject(q, name string) string { return tasksPrefix + q + "." + name }

// QueueFilter selects every task of queue q.
func QueueFilter(q string) string { return tasksPrefix + q + ".>" }

// ParseTaskSubject splits tasks.<queue>.<task>; ok is false for any other
// subject.
func ParseTaskSubject(subject string) (queue, name string, ok bool) {
	rest, ok := strings.CutPrefix(subject, tasksPrefix)
	if !ok {
		return "", "", false
	}
	queue, name, ok = strings.Cut(rest, ".")
	return queue, name, ok && queue != "" && name != ""
}

// DelayedSubject holds the schedule message of delayed task id of queue q;
// deleting it before it fires cancels the task.
func DelayedSubject(q, id string) string { return delayedAt + q + "." + id }

// DelayedQueueFilter selects the delayed tasks of queue q.
func DelayedQueueFilter(q string) string { return delayedAt + q + ".>" }

// DelayedIDFilter selects the schedule message of delayed task id, whatever
// its queue.
func DelayedIDFilter(id string) string { return delayedAt + "*." + id }

// DelayedFilter selects every delayed task not yet due.
const DelayedFilter = delayedAt + ">"

// DueSubject is where the server puts delayed task id of queue q when it is
// due.
func DueSubject(q, id string) string { return delayedDue + q + "." + id }

// DueFilter selects every due delayed task (the mover's filter).
const DueFilter = delayedDue + ">"

// EventSubject is where events of kind about a task of queue q are published.
func EventSubject(kind, q, name string) string {
	return eventsPrefix + kind + "." + q + "." + name
}

// DeadSubject is where dead letters of a task of queue q go.
func DeadSubject(q, name string) string { return deadPrefix + q + "." + name }

// ParseDeadSubject splits dead.<queue>.<task>.
func ParseDeadSubject(subject string) (queue, name string, ok bool) {
	rest, ok := strings.CutPrefix(subject, deadPrefix)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, ".")
}

// ExecSubject is where workers answer synchronous executions of a task.
func ExecSubject(name string) string { return execPrefix + name }

// EndpointName is the micro endpoint of a task: its name with dots turned
// into underscores (micro allows no dots there); the subject keeps the dots.
func EndpointName(taskName string) string { return strings.ReplaceAll(taskName, ".", "_") }

// ConsumerName is the durable consumer of queue q.
func ConsumerName(q string) string { return consumerQueue + q }

// DelayedConsumerName is the consumer on DELAYED that counts queue q's
// delayed tasks (filter DelayedQueueFilter(q)); nothing ever pulls from it.
func DelayedConsumerName(q string) string { return "delayed-" + q }

// QueueOfConsumer is the queue of a consumer name q-<queue>; ok is false
// for consumers that are not a queue's.
func QueueOfConsumer(name string) (string, bool) {
	q, ok := strings.CutPrefix(name, consumerQueue)
	return q, ok && q != ""
}

// Origins of a task (Flotilla-Origin and the origin of its events).
const (
	OriginWeb    = "web"
	OriginAPI    = "api"
	OriginCLI    = "cli"
	OriginClient = "client"
	// OriginSync marks a synchronous execution.
	OriginSync = "sync"
	// originBeat prefixes the schedule name of a beat-fired task.
	originBeat = "beat/"
)

// OriginBeat is the origin of a task fired (or run by hand) from schedule name.
func OriginBeat(schedule string) string { return originBeat + schedule }

// BeatMsgID is the deduplication id (Nats-Msg-Id) of the fire of schedule
// name at t: the same on every beat replica, so overlapping leaders cannot
// fire one tick twice within TASKS' duplicate window.
func BeatMsgID(schedule string, t time.Time) string {
	return "beat:" + schedule + ":" + strconv.FormatInt(t.Unix(), 10)
}

// notifyPrefix starts every notify subject (header Flotilla-Notify):
// flotilla.notify.<who>.<...>, a namespace of its own so that workers,
// which publish final states there, never need to publish into an inbox.
const notifyPrefix = "flotilla.notify."

// NotifyPrefix is the prefix of the notify subjects of a producer whose
// connection uses inboxPrefix: flotilla.notify.<who>. with who its inbox
// prefix without "_INBOX_" (web, api, admin, client; "default" for a plain
// _INBOX). Its NATS user may subscribe there and nowhere else.
func NotifyPrefix(inboxPrefix string) string {
	who := strings.TrimPrefix(strings.TrimPrefix(inboxPrefix, "_INBOX"), "_")
	if who == "" {
		who = "default"
	}
	return notifyPrefix + who + "."
}

// ValidNotify reports whether subject may receive a task's final state: a
// subject under flotilla.notify.<who>. with at least one more token and no
// wildcards or empty tokens. Workers publish to nothing else.
func ValidNotify(subject string) bool {
	rest, ok := strings.CutPrefix(subject, notifyPrefix)
	if !ok || len(subject) > 255 {
		return false
	}
	tokens := strings.Split(rest, ".")
	if len(tokens) < 2 {
		return false
	}
	for _, t := range tokens {
		if t == "" || strings.ContainsAny(t, "*> \t\r\n") {
			return false
		}
	}
	return true
}
