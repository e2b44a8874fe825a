//go:build faults

// Package faults holds fault tests (issue #8): each scenario starts its own
// nats-server, redis-server and PostgreSQL on free loopback ports, runs the
// Flotilla roles as separate processes of a freshly built binary, pushes a
// few thousand tasks through them while a dependency is killed, paused or
// stopped, and checks what the README promises: no acknowledged task lost,
// nothing dead-lettered because of an outage, every task final within 60 s
// of the dependency's return, every HTTP answer 202/200 or a 503 with
// Retry-After and a stable code within the request deadline, and /readyz
// following the dependency within 2 s.
//
// The package only builds with the tag faults:
//
//	go test -tags faults -count=1 -timeout 15m ./internal/faults/
//
// With -v (or on failure) the run ends with one summary line per scenario:
// tasks, answers by status and code, the slowest answer, /readyz
// transitions, and how many tasks ran more than once (at-least-once allows
// it; the line says which). FAULTS_SUMMARY=file writes the summary there
// too; FAULTS_FLOTILLA_BIN=path runs the scenarios against another build
// instead of this tree's.
//
// It needs redis-server on PATH and PostgreSQL's server binaries under
// /usr/lib/postgresql/*/bin (run as the postgres user when the tests run as
// root). It never touches the servers on the usual ports: every server is
// its own, on free loopback ports, killed by its pid at the end.
package faults
