package task

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is a rate limit: at most N starts per Per, across every worker.
type Rate struct {
	N   int
	Per time.Duration
}

// IsZero reports whether r limits nothing.
func (r Rate) IsZero() bool { return r.N <= 0 || r.Per <= 0 }

// Interval is the time between two starts at the full rate.
func (r Rate) Interval() time.Duration { return r.Per / time.Duration(r.N) }

func (r Rate) String() string {
	switch r.Per {
	case time.Second:
		return fmt.Sprintf("%d/s", r.N)
	case time.Minute:
		return fmt.Sprintf("%d/m", r.N)
	case time.Hour:
		return fmt.Sprintf("%d/h", r.N)
	}
	return fmt.Sprintf("%d/%s", r.N, r.Per)
}

// ParseRate reads a rate such as "10/s", "100/m", "5/h" or "3/30s".
func ParseRate(s string) (Rate, error) {
	n, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count < 1 {
		return Rate{}, fmt.Errorf("rate %q: want N/s, N/m, N/h or N/<duration> with N ≥ 1, e.g. 10/s", s)
	}
	r := Rate{N: count}
	switch per {
	case "s":
		r.Per = time.Second
	case "m":
		r.Per = time.Minute
	case "h":
		r.Per = time.Hour
	default:
		d, err := time.ParseDuration(per)
		if err != nil || d <= 0 {
			return Rate{}, fmt.Errorf("rate %q: %q is not s, m, h or a positive duration", s, per)
		}
		r.Per = d
	}
	if r.Interval() < time.Microsecond {
		return Rate{}, fmt.Errorf("rate %q: more than a million per second", s)
	}
	return r, nil
}

// WithRateLimit limits how often the task starts, across every worker:
// at most n per per. A task over its limit waits (or is delayed) — it
// neither fails nor uses up an attempt.
func WithRateLimit(n int, per time.Duration) Option {
	return func(o *Options) { o.RateLimit = Rate{N: n, Per: per} }
}

// WithConcurrencyLimit limits how many attempts of the task run at once,
// across every worker.
func WithConcurrencyLimit(n int) Option { return func(o *Options) { o.Concurrency = n } }

// Limited reports whether o has a rate or a concurrency limit.
func (o Options) Limited() bool { return !o.RateLimit.IsZero() || o.Concurrency > 0 }

// Configure changes the options of the registered task name (the worker's
// configuration of limits); an unknown name is an error.
func (r *Registry) Configure(name string, opts ...Option) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.defs[name]
	if !ok {
		return UnknownTaskError(name)
	}
	nd := *d
	for _, o := range opts {
		o(&nd.Options)
	}
	r.defs[name] = &nd
	return nil
}
