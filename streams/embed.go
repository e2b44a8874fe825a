// Package streams embeds Flotilla's JetStream topology: stream and consumer
// definitions in the JSON the nats CLI accepts (nats stream add --config,
// nats consumer add --config). Durations are nanoseconds, as the server prints them.
package streams

import "embed"

// FS holds every *.json definition of this directory.
//
//go:embed *.json
var FS embed.FS

// Names of the files in FS.
const (
	TasksStream     = "tasks.stream.json"
	EventsStream    = "events.stream.json"
	DeadStream      = "dead.stream.json"
	DelayedStream   = "delayed.stream.json"
	DefaultConsumer = "tasks.q-default.consumer.json"
	MoverConsumer   = "delayed.mover.consumer.json"
)
