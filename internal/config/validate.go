package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

var inboxPrefixRE = regexp.MustCompile(`^_INBOX[A-Za-z0-9_-]*$`)

// queueNameRE is the form of a queue name: it becomes part of NATS subjects
// (tasks.<queue>.<task>) and consumer names (q-<queue>).
var queueNameRE = regexp.MustCompile(`^[a-z0-9_-]+$`)

// MaxConcurrency is the largest accepted worker.concurrency.
const MaxConcurrency = 10000

// Validate reports every problem of c at once, joined with [errors.Join];
// each error names its key, e.g. "config: nats.replicas: must be 1 or 3,
// got 2". It returns nil when c is usable. Messages never include URL
// credentials.
//
// Rules that depend on the role: nats.url may be empty only for the dev role
// (which embeds a server), data_dir must be set for dev, and api.exec_timeout
// and api.session_ttl must be positive for the api and dev roles and for an
// empty Role (a Config built by hand), and not negative otherwise.
func (c Config) Validate() error {
	var v validator

	v.oneOf("env", c.Env, "dev", "production")
	if c.Role == RoleDev && c.DataDir == "" {
		v.addf("data_dir", "must not be empty for the dev role")
	}
	v.positive("shutdown_timeout", c.ShutdownTimeout)
	v.positive("request_timeout", c.RequestTimeout)

	// nats
	if c.NATS.URL == "" {
		if c.Role != RoleDev {
			v.addf("nats.url", "must not be empty (only the dev role embeds a NATS server)")
		}
	} else {
		for i, u := range strings.Split(c.NATS.URL, ",") {
			key := "nats.url"
			if strings.Contains(c.NATS.URL, ",") {
				key = fmt.Sprintf("nats.url[%d]", i)
			}
			v.url(key, strings.TrimSpace(u), true, "nats", "tls", "ws", "wss")
		}
	}
	v.addr("nats.embed_addr", c.NATS.EmbedAddr)
	if c.NATS.Replicas != 1 && c.NATS.Replicas != 3 {
		v.addf("nats.replicas", "must be 1 or 3, got %d", c.NATS.Replicas)
	}
	v.positiveOrUnlimited("nats.task_stream_max_msgs", c.NATS.TaskStreamMaxMsgs)
	v.positiveOrUnlimited("nats.task_stream_max_bytes", c.NATS.TaskStreamMaxBytes)
	v.positive("nats.ack_wait", c.NATS.AckWait)
	if !inboxPrefixRE.MatchString(c.NATS.InboxPrefix) {
		v.addf("nats.inbox_prefix", "%q is invalid: want _INBOX followed by letters, digits, _ or -, e.g. _INBOX_web", c.NATS.InboxPrefix)
	}

	// stores
	v.url("database.url", c.Database.URL, false, "postgres", "postgresql")
	v.url("redis.url", c.Redis.URL, false, "redis", "rediss")

	// log
	v.oneOf("log.format", c.Log.Format, "console", "json")
	if c.Log.Level == "" {
		v.addf("log.level", "must not be empty")
	} else if _, err := zerolog.ParseLevel(c.Log.Level); err != nil {
		v.addf("log.level", "unknown level %q (want trace, debug, info, warn, error, fatal, panic or disabled)", c.Log.Level)
	}
	if c.Log.MaxSizeMB <= 0 {
		v.addf("log.max_size_mb", "must be positive, got %d", c.Log.MaxSizeMB)
	}
	v.notNegative("log.max_backups", int64(c.Log.MaxBackups))
	v.notNegative("log.max_age_days", int64(c.Log.MaxAgeDays))

	// tasks
	if c.Tasks.MaxBodyBytes <= 0 {
		v.addf("tasks.max_body_bytes", "must be positive, got %d", c.Tasks.MaxBodyBytes)
	}
	v.notNegative("tasks.max_retries", int64(c.Tasks.MaxRetries))
	v.positive("tasks.timeout", c.Tasks.Timeout)
	v.oneOf("tasks.events", c.Tasks.Events, "off", "outcomes", "standard", "all")
	v.positive("tasks.timeout_grace", c.Tasks.TimeoutGrace)
	if c.Tasks.MaxRetriesMax < 1 {
		v.addf("tasks.max_retries_max", "must be at least 1, got %d", c.Tasks.MaxRetriesMax)
	} else if c.Tasks.MaxRetries > c.Tasks.MaxRetriesMax {
		v.addf("tasks.max_retries", "must not exceed tasks.max_retries_max (%d), got %d", c.Tasks.MaxRetriesMax, c.Tasks.MaxRetries)
	}
	v.positive("tasks.timeout_max", c.Tasks.TimeoutMax)
	if c.Tasks.TimeoutMax > 0 && c.Tasks.Timeout > c.Tasks.TimeoutMax {
		v.addf("tasks.timeout", "must not exceed tasks.timeout_max (%s), got %s", c.Tasks.TimeoutMax, c.Tasks.Timeout)
	}
	v.positive("tasks.delay_max", c.Tasks.DelayMax)
	v.positive("tasks.expires_max", c.Tasks.ExpiresMax)
	v.positive("tasks.retry_backoff", c.Tasks.RetryBackoff)
	v.positive("tasks.retry_backoff_max", c.Tasks.RetryBackoffMax)
	if c.Tasks.RetryBackoff > 0 && c.Tasks.RetryBackoffMax > 0 && c.Tasks.RetryBackoffMax < c.Tasks.RetryBackoff {
		v.addf("tasks.retry_backoff_max", "must not be less than tasks.retry_backoff (%s), got %s",
			c.Tasks.RetryBackoff, c.Tasks.RetryBackoffMax)
	}
	v.positive("tasks.result_ttl", c.Tasks.ResultTTL)
	v.positive("tasks.cancel_ttl", c.Tasks.CancelTTL)
	for _, s := range c.Tasks.Limits {
		if _, err := ParseTaskLimit(s); err != nil {
			v.addf("tasks.limits", "%v", err)
		}
	}

	// roles
	v.addr("web.addr", c.Web.Addr)

	v.addr("api.addr", c.API.Addr)
	v.oneOf("api.exec", c.API.Exec, "remote", "local")
	v.oneOf("api.auth", c.API.Auth, "none", "token")
	v.oneOf("web.auth", c.Web.Auth, "none", "required", "token")
	v.positive("web.session_idle", c.Web.SessionIdle)
	v.positive("web.session_max", c.Web.SessionMax)
	v.notNegative("auth.fail_limit", int64(c.Auth.FailLimit))
	v.positive("auth.fail_window", c.Auth.FailWindow)
	if c.Role == "" || c.Role == RoleAPI || c.Role == RoleDev {
		v.positive("api.exec_timeout", c.API.ExecTimeout)
		v.positive("api.session_ttl", c.API.SessionTTL)
	} else {
		v.notNegativeDuration("api.exec_timeout", c.API.ExecTimeout)
		v.notNegativeDuration("api.session_ttl", c.API.SessionTTL)
	}
	v.positive("api.exec_timeout_max", c.API.ExecTimeoutMax)
	if c.API.ExecTimeout > 0 && c.API.ExecTimeoutMax > 0 && c.API.ExecTimeout > c.API.ExecTimeoutMax {
		v.addf("api.exec_timeout", "must not exceed api.exec_timeout_max (%s), got %s",
			c.API.ExecTimeoutMax, c.API.ExecTimeout)
	}

	v.notNegative("api.rate_limit", int64(c.API.RateLimit))
	v.positive("api.rate_window", c.API.RateWindow)
	if c.API.RateWindow > 0 && c.API.RateWindow%time.Millisecond != 0 {
		v.addf("api.rate_window", "must be a whole number of milliseconds, got %s", c.API.RateWindow)
	}

	v.addr("worker.addr", c.Worker.Addr)
	if len(c.Worker.Queues) == 0 {
		v.addf("worker.queues", "must list at least one queue")
	}
	for i, q := range c.Worker.Queues {
		switch {
		case !queueNameRE.MatchString(q):
			v.addf("worker.queues", "queue %q must match %s", q, queueNameRE)
		case slices.Index(c.Worker.Queues, q) < i:
			v.addf("worker.queues", "queue %q is listed twice", q)
		}
	}
	if c.Worker.Concurrency < 1 || c.Worker.Concurrency > MaxConcurrency {
		v.addf("worker.concurrency", "must be between 1 and %d, got %d", MaxConcurrency, c.Worker.Concurrency)
	}
	if c.Worker.SyncConcurrency < 1 || c.Worker.SyncConcurrency > 256 {
		v.addf("worker.sync_concurrency", "must be between 1 and 256, got %d", c.Worker.SyncConcurrency)
	}
	if c.Worker.Prefetch < 0 {
		v.addf("worker.prefetch", "must not be negative, got %d", c.Worker.Prefetch)
	}
	if c.Worker.Name == "" {
		v.addf("worker.name", "must not be empty")
	}

	v.addr("beat.addr", c.Beat.Addr)
	v.positive("beat.lease_ttl", c.Beat.LeaseTTL)
	if c.Beat.LeaseTTL > 0 && c.Beat.LeaseTTL < 2*time.Second {
		v.addf("beat.lease_ttl", "must be at least 2s, got %s", c.Beat.LeaseTTL)
	}
	v.positive("beat.grace", c.Beat.Grace)
	v.positive("beat.resync", c.Beat.Resync)
	v.positive("beat.full_resync", c.Beat.FullResync)
	v.oneOf("beat.publish_mode", c.Beat.PublishMode, "async", "inline")
	if c.Beat.MaxPending < 1 {
		v.addf("beat.max_pending", "must be at least 1, got %d", c.Beat.MaxPending)
	}

	return errors.Join(v.errs...)
}

// validator collects problems in the order they are found.
type validator struct{ errs []error }

func (v *validator) addf(key, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
}

func (v *validator) oneOf(key, got string, allowed ...string) {
	if !slices.Contains(allowed, got) {
		v.addf(key, "must be %s, got %q", orList(allowed), got)
	}
}

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.addf(key, "must be a positive duration, got %s", d)
	}
}

func (v *validator) notNegativeDuration(key string, d time.Duration) {
	if d < 0 {
		v.addf(key, "must not be negative, got %s", d)
	}
}

func (v *validator) notNegative(key string, n int64) {
	if n < 0 {
		v.addf(key, "must not be negative, got %d", n)
	}
}

func (v *validator) positiveOrUnlimited(key string, n int64) {
	if n <= 0 && n != -1 {
		v.addf(key, "must be positive or -1 (unlimited), got %d", n)
	}
}

// addr checks a listen address in host:port form; the host may be empty
// (":8080" listens on every interface).
func (v *validator) addr(key, addr string) {
	if addr == "" {
		v.addf(key, "must not be empty")
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.addf(key, "%q is not a host:port address", addr)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.addf(key, "%q has an invalid port %q", addr, port)
	}
}

// url checks that raw parses with one of schemes. Its text never appears in
// the error, as it may hold a password.
func (v *validator) url(key, raw string, needHost bool, schemes ...string) {
	if raw == "" {
		v.addf(key, "must not be empty")
		return
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, password included
		}
		v.addf(key, "not a valid URL: %v", err)
		return
	}
	if !slices.Contains(schemes, u.Scheme) {
		v.addf(key, "scheme must be %s, got %q", orList(schemes), u.Scheme)
		return
	}
	if needHost && u.Host == "" {
		v.addf(key, "must name a host")
	}
}

// orList formats {"a","b","c"} as `"a", "b" or "c"`.
func orList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
