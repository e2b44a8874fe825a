// Package flotilla is the public face of Flotilla: register task handlers and
// get every role and admin command of the flotilla binary in your own main.
//
//	func main() {
//		app := flotilla.New()
//		flotilla.Register(app, func(ctx context.Context, env *flotilla.Envelope, a SendEmail) (any, error) {
//			return nil, send(ctx, a)
//		})
//		app.Main()
//	}
//
// Everything else lives in internal/ packages.
package flotilla

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flotilla/flotilla/internal/cli"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

type (
	// Envelope is one attempt of a task as a handler sees it.
	Envelope = task.Envelope
	// HandlerFunc runs one attempt and returns a JSON-encodable result.
	HandlerFunc = task.HandlerFunc
	// Args is implemented by payload types that name their task.
	Args = task.Args
	// Option sets per-task defaults at registration.
	Option = task.Option
	// Middleware wraps handlers (see [App.Use]).
	Middleware = task.Middleware
	// Event is a lifecycle event of a task as published on the EVENTS
	// stream (events.<kind>.<queue>.<task>); decode one with [DecodeEvent].
	Event = wire.Event
)

// Event kinds, the second token of an event's subject.
const (
	EventSent      = wire.EventSent
	EventStarted   = wire.EventStarted
	EventSucceeded = wire.EventSucceeded
	EventFailed    = wire.EventFailed
	EventRetried   = wire.EventRetried
	EventDead      = wire.EventDead
	EventExpired   = wire.EventExpired
)

// EnvelopeFrom returns the envelope of the attempt ctx belongs to, for code
// deep inside a handler that was not passed it.
func EnvelopeFrom(ctx context.Context) (*Envelope, bool) { return task.EnvelopeFrom(ctx) }

// DecodeEvent reads the JSON body of a message on EVENTS, e.g. one
// received with nats.Subscribe("events.>", ...).
func DecodeEvent(data []byte) (Event, error) { return wire.DecodeEvent(data) }

// Permanent marks an error as not worth retrying: the task is dead-lettered.
func Permanent(err error) error { return task.Permanent(err) }

// RetryIn asks for another attempt after d.
func RetryIn(d time.Duration, err error) error { return task.RetryIn(d, err) }

// WithQueue sets a task's default queue.
func WithQueue(q string) Option { return task.WithQueue(q) }

// WithMaxRetries sets a task's retry budget.
func WithMaxRetries(n int) Option { return task.WithMaxRetries(n) }

// WithTimeout sets a task's per-attempt timeout.
func WithTimeout(d time.Duration) Option { return task.WithTimeout(d) }

// WithoutResult opts a task out of result storage.
func WithoutResult() Option { return task.WithoutResult() }

// WithRateLimit limits how often a task starts across every worker: at
// most n per per (e.g. 10, time.Second). Over the limit a task waits or is
// delayed; it neither fails nor uses up an attempt. Configuration
// (tasks.limits) overrides it.
func WithRateLimit(n int, per time.Duration) Option { return task.WithRateLimit(n, per) }

// WithConcurrencyLimit limits how many attempts of a task run at once
// across every worker.
func WithConcurrencyLimit(n int) Option { return task.WithConcurrencyLimit(n) }

// Schedule is a periodic task (see [App.Schedule], [Every], [Cron]).
type Schedule = schedule.Schedule

// Duration is a time.Duration that reads and writes JSON as "30s".
type Duration = schedule.Duration

// Misfire policies of a [Schedule].
const (
	MisfireSkip    = schedule.MisfireSkip
	MisfireOnce    = schedule.MisfireOnce
	MisfireCatchUp = schedule.MisfireCatchUp
)

// Every returns a schedule named name that runs taskName every d.
func Every(name, taskName string, d time.Duration) Schedule {
	return Schedule{Name: name, Task: taskName, Interval: Duration(d), Enabled: true}
}

// Cron returns a schedule named name that runs taskName at the times of a
// cron expression (5 fields, or 6 with seconds first) in UTC; set Timezone
// for another IANA zone.
func Cron(name, taskName, expr string) Schedule {
	return Schedule{Name: name, Task: taskName, Cron: expr, Enabled: true}
}

// App is a Flotilla binary under construction: its task registry and the
// schedules declared in code.
type App struct {
	reg        *task.Registry
	schedules  []schedule.Schedule
	middleware []task.Middleware
}

// Use adds handler middleware, outermost first: it wraps every handler
// wherever it runs — queue workers, synchronous execution on workers, and
// in-process execution in the api role — once per attempt. The context a
// handler (and middleware) gets carries the task's logger (zerolog.Ctx)
// and envelope. Call it before Run.
func (a *App) Use(mw ...Middleware) { a.middleware = append(a.middleware, mw...) }

// Schedule declares a periodic task in code, like Celery's beat_schedule.
// Beat syncs it into PostgreSQL at start, marked as coming from code: it can
// be disabled at runtime but not deleted or changed there. A declared
// schedule starts enabled. An invalid schedule makes the beat role fail at
// start with an error naming it.
func (a *App) Schedule(s Schedule) {
	s.Enabled = true
	a.schedules = append(a.schedules, s)
}

// New returns an App with the built-in tasks (sys.ping, sys.echo, sys.sleep,
// sys.fail, probe.http) registered.
func New() *App {
	reg := task.NewRegistry()
	systasks.Register(reg)
	return &App{reg: reg}
}

// Handle registers fn under name; it panics on an invalid or duplicate name.
func (a *App) Handle(name string, fn HandlerFunc, opts ...Option) { a.reg.Handle(name, fn, opts...) }

// Register registers a typed handler whose args decode into A.
func Register[A Args](a *App, fn func(ctx context.Context, env *Envelope, args A) (any, error), opts ...Option) {
	task.Register(a.reg, fn, opts...)
}

// Tasks lists the registered task names.
func (a *App) Tasks() []string { return a.reg.Names() }

// Run executes a command line (without the program name): a role such as
// "worker" or an admin command such as "task send".
func (a *App) Run(ctx context.Context, args []string) error {
	return cli.Run(ctx, cli.Env{Registry: a.reg, Schedules: a.schedules, Middleware: a.middleware}, args)
}

// Main runs the command line of the process until SIGINT or SIGTERM and
// exits with status 1 on error.
func (a *App) Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "flotilla:", err)
		stop()
		os.Exit(1)
	}
}
