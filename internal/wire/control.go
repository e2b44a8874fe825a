package wire

import (
	"strings"
	"time"
)

// CancelRecord is the value of a key in [CancelBucket]: who cancelled task
// ID and when.
type CancelRecord struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
	// By names the actor: a user, a token, or "cli:<os user>@<host>".
	By string `json:"by,omitempty"`
}

// CancelSubject is the subject that puts the cancellation of task id into
// [CancelBucket] (what a KV put publishes to).
func CancelSubject(id string) string { return "$KV." + CancelBucket + "." + id }

// WorkersTTL is the max age of [WorkersBucket]: a worker that has not
// announced itself for this long is gone. Workers announce every
// [WorkersHeartbeat].
const (
	WorkersTTL       = 10 * time.Second
	WorkersHeartbeat = 3 * time.Second
)

// WorkerInfo is what a worker announces in [WorkersBucket] and what
// GET /api/v1/workers lists.
type WorkerInfo struct {
	// ID is the worker's name (worker.name, default host:pid).
	ID          string   `json:"id"`
	Host        string   `json:"host"`
	PID         int      `json:"pid"`
	Version     string   `json:"version"`
	Queues      []string `json:"queues"`
	Concurrency int      `json:"concurrency"`
	// Running are the attempts in progress now, oldest first.
	Running []RunningTask `json:"running"`
	// Processed counts finished attempts since start; Failed those that
	// failed (retried, dead-lettered, timed out, panicked).
	Processed int64     `json:"processed"`
	Failed    int64     `json:"failed"`
	StartedAt time.Time `json:"started_at"`
	LastSeen  time.Time `json:"last_seen"`
}

// RunningTask is one attempt in progress on a worker.
type RunningTask struct {
	ID        string    `json:"id"`
	Task      string    `json:"task"`
	Queue     string    `json:"queue"`
	StartedAt time.Time `json:"started_at"`
}

// WorkerKey is the key of worker name in [WorkersBucket]: every character
// that a KV key cannot hold (anything but A-Z a-z 0-9 - _ = .) becomes
// "_", and dots are kept only between other characters.
func WorkerKey(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '=':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}
