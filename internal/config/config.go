// Package config holds Flotilla's settings and the layered loader that fills
// them: code defaults (base) → role overlay → optional file (FLOTILLA_CONFIG)
// → FLOTILLA_* environment → command-line flags. Later layers win.
//
// It owns no connections; roles receive a validated [Config] by value.
package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/task"
)

// Roles a process can run. Dev runs every role in one process.
const (
	RoleWeb    = "web"
	RoleAPI    = "api"
	RoleWorker = "worker"
	RoleBeat   = "beat"
	RoleDev    = "dev"
	// RoleCLI is used by admin commands (task send, streams apply, …).
	RoleCLI = "cli"
)

// Config is the effective configuration of one role.
type Config struct {
	// Role is the role this configuration was loaded for (not a file key).
	Role string `koanf:"-" json:"-"`

	// Env is "dev" or "production". Default "dev" for the dev role,
	// "production" otherwise.
	Env string `koanf:"env"`
	// DataDir holds the embedded JetStream store and other local state of dev. Default ./var.
	DataDir string `koanf:"data_dir"`
	// ShutdownTimeout bounds each graceful shutdown step. Default 25s.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
	// RequestTimeout bounds every HTTP request of web and api but sync
	// executions: a dependency that hangs is a 503 within it. Default 5s.
	RequestTimeout time.Duration `koanf:"request_timeout"`

	NATS     NATS     `koanf:"nats"`
	Database Database `koanf:"database"`
	Redis    Redis    `koanf:"redis"`
	Log      Log      `koanf:"log"`
	Tasks    Tasks    `koanf:"tasks"`
	Auth     Auth     `koanf:"auth"`
	Web      Web      `koanf:"web"`
	API      API      `koanf:"api"`
	Worker   Worker   `koanf:"worker"`
	Beat     Beat     `koanf:"beat"`
	Outbox   Outbox   `koanf:"outbox"`
}

// NATS configures the connection to NATS and the JetStream topology.
type NATS struct {
	// URL lists NATS servers, comma-separated. Empty in dev = embedded server;
	// default nats://127.0.0.1:4222 otherwise. May hold credentials (redacted).
	URL string `koanf:"url"`
	// EmbedAddr is where dev's embedded server listens; a free port is used if taken.
	// Default 127.0.0.1:4222.
	EmbedAddr string `koanf:"embed_addr"`
	// Replicas of every stream: 1 or 3. Default 1.
	Replicas int `koanf:"replicas"`
	// ApplyStreams makes roles create-or-update streams/ at start. Default true.
	ApplyStreams bool `koanf:"apply_streams"`
	// TaskStreamMaxMsgs bounds the TASKS stream (discard new). Default 1,000,000.
	TaskStreamMaxMsgs int64 `koanf:"task_stream_max_msgs"`
	// TaskStreamMaxBytes bounds the TASKS stream in bytes (discard new). Default 1 GiB.
	TaskStreamMaxBytes int64 `koanf:"task_stream_max_bytes"`
	// AckWait is how long a worker may hold a task without acking or sending
	// in-progress before it is redelivered. Default 30s.
	AckWait time.Duration `koanf:"ack_wait"`
	// InboxPrefix is where the connection receives replies, instead of
	// _INBOX: each role's NATS user may subscribe to its own prefix only,
	// so no role reads another's replies (deploy/nats/accounts.conf).
	// Default _INBOX_<role> (_INBOX_admin for admin commands, _INBOX for dev).
	InboxPrefix string `koanf:"inbox_prefix"`
}

// Database configures PostgreSQL.
type Database struct {
	// URL of PostgreSQL. Default postgres://postgres@127.0.0.1:5432/flotilla?sslmode=disable.
	URL string `koanf:"url"`
}

// Redis configures the result store.
type Redis struct {
	// URL of Redis. Default redis://127.0.0.1:6379/0.
	URL string `koanf:"url"`
	// Prefix of every key. Default "flotilla".
	Prefix string `koanf:"prefix"`
}

// Log configures logging.
type Log struct {
	// Format is "console" or "json". Default console in dev, json otherwise.
	Format string `koanf:"format"`
	// Level is a zerolog level name. Default info.
	Level string `koanf:"level"`
	// Dir, when set, sends each role's log to a rotating gzip-compressed file
	// in it (web.log, worker.log, beat.log, kernel_api.log). Default empty = stdout.
	Dir string `koanf:"dir"`
	// MaxSizeMB rotates a file when it reaches this size. Default 100.
	MaxSizeMB int `koanf:"max_size_mb"`
	// MaxBackups is how many rotated files are kept. Default 10.
	MaxBackups int `koanf:"max_backups"`
	// MaxAgeDays deletes rotated files older than this. Default 14.
	MaxAgeDays int `koanf:"max_age_days"`
}

// TaskLimit is one entry of tasks.limits.
type TaskLimit struct {
	Task string
	// Rate is the rate limit; zero = none.
	Rate task.Rate
	// Concurrency is how many attempts may run at once; 0 = no limit.
	Concurrency int
}

// ParseTaskLimit reads an entry of tasks.limits: "TASK rate=10/s
// concurrency=5", with a rate, a concurrency or both.
func ParseTaskLimit(s string) (TaskLimit, error) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return TaskLimit{}, fmt.Errorf("%q: want \"TASK rate=N/s concurrency=N\" (either or both)", s)
	}
	l := TaskLimit{Task: f[0]}
	if err := task.ValidateName(l.Task); err != nil {
		return TaskLimit{}, fmt.Errorf("%q: %w", s, err)
	}
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "rate":
			r, err := task.ParseRate(v)
			if err != nil {
				return TaskLimit{}, fmt.Errorf("%q: %w", s, err)
			}
			l.Rate = r
		case "concurrency":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return TaskLimit{}, fmt.Errorf("%q: concurrency=%s is not a number ≥ 1", s, v)
			}
			l.Concurrency = n
		default:
			return TaskLimit{}, fmt.Errorf("%q: unknown setting %q (want rate= or concurrency=)", s, k)
		}
	}
	return l, nil
}

// Tasks holds defaults that apply to every task unless a task overrides them.
type Tasks struct {
	// MaxBodyBytes limits an enqueue request body and task args. Default 1 MiB.
	MaxBodyBytes int64 `koanf:"max_body_bytes"`
	// MaxRetries is the default retry budget. Default 3.
	MaxRetries int `koanf:"max_retries"`
	// Timeout is the default per-attempt handler timeout. Default 5m.
	Timeout time.Duration `koanf:"timeout"`
	// TimeoutGrace is how long a handler whose context ended (timeout,
	// shutdown) may take to return before its attempt is finished without
	// it and its goroutine abandoned. Default 5s.
	TimeoutGrace time.Duration `koanf:"timeout_grace"`
	// RetryBackoff is the base of the exponential retry delay. Default 1s.
	RetryBackoff time.Duration `koanf:"retry_backoff"`
	// RetryBackoffMax caps the retry delay. Default 10m.
	RetryBackoffMax time.Duration `koanf:"retry_backoff_max"`
	// ResultTTL is how long states and results stay in Redis. Default 24h.
	ResultTTL time.Duration `koanf:"result_ttl"`
	// Limits set tasks' rate and concurrency limits across every worker,
	// over what the code declares (flotilla.WithRateLimit,
	// WithConcurrencyLimit): entries "TASK rate=10/s concurrency=5" (either
	// or both), comma-separated in FLOTILLA_TASKS_LIMITS.
	Limits []string `koanf:"limits"`
	// Index keeps the task index (GET /api/v1/tasks) and attempt
	// histories in Redis. Default true.
	Index bool `koanf:"index"`
	// CancelTTL is how long a cancellation holds (the flotilla_cancel
	// bucket's TTL). Default 720h.
	CancelTTL time.Duration `koanf:"cancel_ttl"`
	// Results turns result recording in Redis on or off. Default true.
	Results bool `koanf:"results"`
	// Events is the level of lifecycle events on the EVENTS stream: off,
	// outcomes, standard (outcomes and sent) or all (and started); true
	// means all and false off, as before levels. Default standard.
	Events string `koanf:"events"`
	// CheckRegistered rejects enqueues of task names this binary has no
	// handler for. Producer-only builds turn it off. Default true.
	CheckRegistered bool `koanf:"check_registered"`
	// MaxRetriesMax caps the max_retries of an enqueue. Default 100.
	MaxRetriesMax int `koanf:"max_retries_max"`
	// TimeoutMax caps the timeout of an enqueue. Default 24h.
	TimeoutMax time.Duration `koanf:"timeout_max"`
	// DelayMax caps countdown, and how far ahead eta may be. Default 720h.
	DelayMax time.Duration `koanf:"delay_max"`
	// ExpiresMax caps how far ahead expires may be. Default 720h.
	ExpiresMax time.Duration `koanf:"expires_max"`
}

// Auth configures what web and api do about failed authentication.
type Auth struct {
	// FailLimit is how many failed attempts (no token, a wrong one) one
	// client address may make per FailWindow before it is refused with 429
	// until the window ends; 0 turns the limit off. Default 10.
	FailLimit int `koanf:"fail_limit"`
	// FailWindow is the window of FailLimit. Default 1m.
	FailWindow time.Duration `koanf:"fail_window"`
}

// Web configures the web role.
type Web struct {
	// Addr is the HTTP listen address. Default :8080.
	Addr string `koanf:"addr"`
	// Auth is "none" (development: everyone may do everything) or
	// "required": every /api/v1 request needs a person's session (POST
	// /api/v1/login) or an API token. "token" is an older name of
	// "required". Default none in dev, required in production.
	Auth string `koanf:"auth"`
	// SessionIdle ends a session without requests for this long. Default 30m.
	SessionIdle time.Duration `koanf:"session_idle"`
	// SessionMax ends a session this long after its login. Default 12h.
	SessionMax time.Duration `koanf:"session_max"`
	// CookieSecure marks the session cookie Secure (HTTPS only) even when
	// web is reached over plain HTTP behind a TLS proxy; it is set anyway
	// on requests that come over TLS. Default false.
	CookieSecure bool `koanf:"cookie_secure"`
}

// API configures the kernel API role.
type API struct {
	// Addr is the HTTP listen address. Default :8081.
	Addr string `koanf:"addr"`
	// Exec is "remote" (workers over NATS request-reply) or "local" (handlers
	// in the api process). Default remote.
	Exec string `koanf:"exec"`
	// ExecTimeout is the default wait for a sync execution. Default 30s (api overlay).
	ExecTimeout time.Duration `koanf:"exec_timeout"`
	// ExecTimeoutMax caps ?timeout=. Default 5m.
	ExecTimeoutMax time.Duration `koanf:"exec_timeout_max"`
	// SessionTTL is the lifetime of an api session in Redis. Default 60s (api overlay).
	SessionTTL time.Duration `koanf:"session_ttl"`
	// Auth is "none" or "token". Default none in dev, token in production.
	Auth string `koanf:"auth"`
	// RateLimit is the number of requests each API token may make per
	// RateWindow (counted in Redis, so shared by every api replica); more
	// are refused with 429. 0 turns rate limiting off. Default 1000.
	RateLimit int `koanf:"rate_limit"`
	// RateWindow is the rate limit's window. Default 1s.
	RateWindow time.Duration `koanf:"rate_window"`
}

// Worker configures the worker role.
type Worker struct {
	// Addr serves health and metrics. Default :8082.
	Addr string `koanf:"addr"`
	// Queues this worker consumes. Default [default].
	Queues []string `koanf:"queues"`
	// Concurrency is the number of handlers in flight per queue. Default 64.
	Concurrency int `koanf:"concurrency"`
	// Prefetch is how many tasks per queue the worker pulls ahead (running
	// or waiting, the waiting ones kept alive with in-progress acks).
	// Default 0 = max(concurrency, 256).
	Prefetch int `koanf:"prefetch"`
	// Name identifies the worker in task states. Default hostname:pid.
	Name string `koanf:"name"`
	// Sync serves every registered task for synchronous execution by the
	// api role (NATS micro service "flotilla"). Default true.
	Sync bool `koanf:"sync"`
	// SyncConcurrency is how many sync requests of one task run at once per
	// worker process (instances of the micro service). Default 8.
	SyncConcurrency int `koanf:"sync_concurrency"`
}

// Beat configures the beat role.
type Beat struct {
	// Addr serves health and metrics. Default :8083.
	Addr string `koanf:"addr"`
	// LeaseTTL is the leader lease's lifetime (the flotilla_beat bucket TTL);
	// a standby takes over at most about this long after the leader dies.
	// Default 10s.
	LeaseTTL time.Duration `koanf:"lease_ttl"`
	// Grace: ticks at most this old when a replica starts leading are all
	// fired (they fell into a failover); older ones follow each schedule's
	// misfire policy. Must stay below TASKS' duplicate window minus the
	// lease TTL. Default 30s.
	Grace time.Duration `koanf:"grace"`
	// Resync is the period of the re-read of the schedules whose
	// definition changed lately (the safety net behind LISTEN/NOTIFY).
	// Default 30s.
	Resync time.Duration `koanf:"resync"`
	// FullResync is the period of the full re-read of every schedule, in
	// pages beside the firing (it also finds schedules deleted without a
	// notification). Default 10m.
	FullResync time.Duration `koanf:"full_resync"`
	// PublishMode is "async" (a bounded pipeline, default) or "inline".
	PublishMode string `koanf:"publish_mode"`
	// MaxPending bounds the async publish pipeline. Default 4096.
	MaxPending int `koanf:"max_pending"`
}

// Outbox configures the transactional outbox (flotilla.Client.EnqueueTx).
type Outbox struct {
	// Relay runs the outbox relay, which publishes committed outbox rows,
	// in this process when it runs the web or worker role (once in dev).
	// Relays on many processes share the work safely. It needs
	// database.url. Default true.
	Relay bool `koanf:"relay"`
}
