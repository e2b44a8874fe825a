// Package wire is Flotilla's wire format, in one place: the names of streams,
// subjects, consumers, buckets and the sync service; every header; and every
// message shape that crosses NATS — the task message, a delayed task and its
// move into a queue, a dead letter and its requeue, a synchronous execution's
// request and reply, and the lifecycle [Event] published on EVENTS.
//
// Any language can speak it: metadata travels in headers, arguments and
// results as JSON bodies. The README's "Wire format" section documents the
// same names, and a test fails when the two drift apart. The package builds
// and parses messages; it does no I/O.
package wire
