// Package logging builds the root zerolog logger of a role from
// [config.Log] and names the structured fields every package logs with.
//
// It owns the log destination only: JSON or console text on stdout, or one
// rotating, gzip-compressed JSON file per role under log.dir. It keeps no
// global logger; roles inject the returned zerolog.Logger by value, add
// [Component] per package and per-task fields such as [TaskID] with
// l.With(), and attach it to contexts with l.WithContext.
package logging

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/flotilla/flotilla/internal/config"
)

// Field names shared by every package, so that log queries work across roles.
const (
	// TaskID is the task's ULID.
	TaskID = "task_id"
	// TaskName is the registered task name, e.g. "email.send".
	TaskName = "task_name"
	// Queue is the queue a task was sent to.
	Queue = "queue"
	// Attempt is the 1-based delivery attempt of a task.
	Attempt = "attempt"
	// Role is the role of the process (web, api, worker, beat, dev, cli); set
	// on the root logger by [New].
	Role = "role"
	// Component is the package or subsystem that logs, e.g. "jet", "beat".
	Component = "component"
	// Stream is a JetStream stream name.
	Stream = "stream"
	// Consumer is a JetStream consumer name.
	Consumer = "consumer"
	// Subject is a NATS subject.
	Subject = "subject"
	// ScheduleID is the id of a beat schedule.
	ScheduleID = "schedule_id"
	// Worker is the name of a worker process (config worker.name).
	Worker = "worker"
)

// ConsoleTimeFormat is the time layout of console output.
const ConsoleTimeFormat = "15:04:05.000"

// FileName returns the log file name of role under log.dir: web.log,
// worker.log, beat.log, kernel_api.log for the api role (the name the
// kernel API service has always used), and role + ".log" for any other role
// ("flotilla.log" when role is empty).
func FileName(role string) string {
	switch role {
	case config.RoleAPI:
		return "kernel_api.log"
	case "":
		return "flotilla.log"
	}
	return role + ".log"
}

// New returns the root logger of role, configured by cfg, and a Closer that
// flushes and closes its file.
//
// The level is cfg.Level (a zerolog level name; empty means info). When
// cfg.Dir is set, JSON lines go to filepath.Join(cfg.Dir, FileName(role)),
// created with its directory (0o755) if missing, rotated at cfg.MaxSizeMB
// megabytes, keeping cfg.MaxBackups gzip-compressed backups for at most
// cfg.MaxAgeDays days (zero: no limit). Otherwise lines go to stdout:
// zerolog's ConsoleWriter when cfg.Format is "console", JSON otherwise.
// Every line carries a "time" field (RFC 3339 with nanoseconds, UTC) and
// the [Role] field.
//
// The Closer closes the log file, and is a no-op for stdout; log nothing
// through the logger after closing it. New returns an error naming log.level
// for an unknown level, or the error creating cfg.Dir; it does not mutate
// zerolog's globals.
func New(cfg config.Log, role string, stdout io.Writer) (zerolog.Logger, io.Closer, error) {
	level := zerolog.InfoLevel
	if cfg.Level != "" {
		l, err := zerolog.ParseLevel(cfg.Level)
		if err != nil {
			return zerolog.Nop(), nil, fmt.Errorf("logging: log.level: unknown level %q", cfg.Level)
		}
		level = l
	}

	var (
		w      io.Writer
		closer io.Closer = nopCloser{}
	)
	switch {
	case cfg.Dir != "":
		if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
			return zerolog.Nop(), nil, fmt.Errorf("logging: create log.dir: %w", err)
		}
		f := &lumberjack.Logger{
			Filename:   filepath.Join(cfg.Dir, FileName(role)),
			MaxSize:    cfg.MaxSizeMB,
			MaxBackups: cfg.MaxBackups,
			MaxAge:     cfg.MaxAgeDays,
			Compress:   true,
		}
		w, closer = f, f
	case cfg.Format == "console":
		w = zerolog.ConsoleWriter{
			Out:        stdout,
			TimeFormat: ConsoleTimeFormat,
			NoColor:    !isTerminal(stdout),
		}
	default:
		w = stdout
	}

	l := zerolog.New(w).
		Level(level).
		Hook(timestampHook{}).
		With().Str(Role, role).Logger()
	return l, closer, nil
}

// timestampHook adds the time field to every event in RFC 3339 with
// nanoseconds. zerolog's own Context.Timestamp formats with the global
// zerolog.TimeFieldFormat (seconds only by default); a hook gives the
// precision without changing globals that other code may rely on.
// ConsoleWriter still parses the value, since Go accepts fractional seconds
// when parsing RFC 3339.
type timestampHook struct{}

// Run implements zerolog.Hook.
func (timestampHook) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str(zerolog.TimestampFieldName, time.Now().UTC().Format(time.RFC3339Nano))
}

// nopCloser is the Closer of stdout loggers: stdout belongs to the process.
type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// isTerminal reports whether w is a character device, so console output is
// colored on terminals only.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
