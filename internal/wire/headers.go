package wire

// Headers of a task message. Dead letters keep every original header and add
// HeaderError and HeaderAttempts.
const (
	// HeaderMsgID is the server's deduplication id: the task id, the
	// caller's idempotency key, or beat:<schedule>:<unix fire time>.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderID is the task id (a ULID), stable across retries.
	HeaderID = "Flotilla-Id"
	// HeaderTask is the task name; it must match the subject's.
	HeaderTask = "Flotilla-Task"
	// HeaderEnqueued is the RFC 3339 time of the enqueue.
	HeaderEnqueued = "Flotilla-Enqueued"
	// HeaderExpires, when set, is the RFC 3339 time after which the task is
	// recorded EXPIRED instead of run.
	HeaderExpires = "Flotilla-Expires"
	// HeaderMaxRetries overrides the task's retry budget.
	HeaderMaxRetries = "Flotilla-Max-Retries"
	// HeaderTimeout overrides the task's per-attempt timeout (Go duration).
	HeaderTimeout = "Flotilla-Timeout"
	// HeaderOrigin says who enqueued it: web, api, cli, client or
	// beat/<schedule>.
	HeaderOrigin = "Flotilla-Origin"
	// HeaderQueue repeats the queue on a delayed task, whose subject
	// (delayed.at.<id>, then delayed.due.<id>) does not name it.
	HeaderQueue = "Flotilla-Queue"
	// HeaderTraceparent is the W3C trace context.
	HeaderTraceparent = "traceparent"
	// HeaderNotify names a core NATS subject that receives the task's final
	// state as JSON; set by callers that wait for the result.
	HeaderNotify = "Flotilla-Notify"
	// HeaderWorkflow is the id of the workflow (chain, group, chord) the
	// task is a step of; HeaderStep is the step's path in it ("0", "2-cb"):
	// the worker that finishes the task moves the workflow on.
	HeaderWorkflow = "Flotilla-Workflow"
	HeaderStep     = "Flotilla-Step"
)

// Headers a dead letter adds to the original ones.
const (
	// HeaderError is why the task is dead.
	HeaderError = "Flotilla-Error"
	// HeaderAttempts is how often it was delivered.
	HeaderAttempts = "Flotilla-Attempts"
)

// Headers of a synchronous execution's request and reply (besides HeaderID,
// HeaderTask, HeaderOrigin and HeaderTraceparent on the request).
const (
	// HeaderWait is how long the caller waits for the reply (Go duration):
	// the attempt's context ends then at the latest.
	HeaderWait = "Flotilla-Wait"
	// HeaderWorker names the worker that ran the attempt.
	HeaderWorker = "Flotilla-Worker"
	// HeaderStarted and HeaderFinished are RFC 3339 times of the attempt.
	HeaderStarted  = "Flotilla-Started"
	HeaderFinished = "Flotilla-Finished"
	// HeaderErrorType classifies a failed attempt: error, permanent,
	// panic or timeout.
	HeaderErrorType = "Flotilla-Error-Type"
)
