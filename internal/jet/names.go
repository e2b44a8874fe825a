package jet

// Streams and buckets.
const (
	StreamTasks  = "TASKS"
	StreamEvents = "EVENTS"
	StreamDead   = "DEAD"
	// StreamDelayed holds countdown/ETA tasks until they are due.
	StreamDelayed = "DELAYED"
	// MoverConsumer moves due delayed tasks into TASKS.
	MoverConsumer = "delayed-mover"
)

// Event kinds published on events.<kind>.<queue>.<task>.
const (
	EventSent      = "sent"
	EventStarted   = "started"
	EventSucceeded = "succeeded"
	EventFailed    = "failed"
	EventRetried   = "retried"
	EventDead      = "dead"
	EventExpired   = "expired"
	EventRevoked   = "revoked"
)

// TaskSubject is where a task of queue q named name is published.
func TaskSubject(q, name string) string { return "tasks." + q + "." + name }

// QueueFilter selects every task of queue q.
func QueueFilter(q string) string { return "tasks." + q + ".>" }

// DelayedSubject holds the schedule message of a delayed task; deleting it
// before it fires cancels the task.
func DelayedSubject(id string) string { return "delayed.at." + id }

// DueSubject is where the server puts a delayed task when it is due.
func DueSubject(id string) string { return "delayed.due." + id }

// DueFilter selects every due delayed task.
const DueFilter = "delayed.due.>"

// EventSubject is where lifecycle events of a task are published.
func EventSubject(kind, q, name string) string { return "events." + kind + "." + q + "." + name }

// DeadSubject is where dead letters of a task go.
func DeadSubject(q, name string) string { return "dead." + q + "." + name }

// ConsumerName is the durable consumer of queue q.
func ConsumerName(q string) string { return "q-" + q }

// ExecSubject is where workers answer synchronous executions of a task.
func ExecSubject(name string) string { return "flotilla.exec." + name }

// Reply headers of a sync execution.
const (
	HeaderWorker    = "Flotilla-Worker"
	HeaderStarted   = "Flotilla-Started"
	HeaderFinished  = "Flotilla-Finished"
	HeaderErrorType = "Flotilla-Error-Type"
)

// Micro error codes of a sync execution; api maps them to HTTP statuses.
const (
	CodeHandlerError = "422"
	CodeBadRequest   = "400"
	CodeTimeout      = "504"
)
