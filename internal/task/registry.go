package task

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Args is implemented by payload types that name their task, so that
// [Register] can infer the task name (river's Kind()).
type Args interface {
	TaskName() string
}

// Options are per-task defaults set at registration. Zero values mean
// "use the worker's configuration".
type Options struct {
	// Queue the task goes to when the enqueue names none.
	Queue string
	// MaxRetries overrides the default retry budget when not nil.
	MaxRetries *int
	// Timeout bounds one attempt.
	Timeout time.Duration
	// NoResult opts the task out of storing its state and result.
	NoResult bool
	// RateLimit and Concurrency limit the task across every worker (see
	// [WithRateLimit], [WithConcurrencyLimit]).
	RateLimit   Rate
	Concurrency int
}

// Option changes [Options].
type Option func(*Options)

// WithQueue sets the task's default queue.
func WithQueue(q string) Option { return func(o *Options) { o.Queue = q } }

// WithMaxRetries sets the task's retry budget.
func WithMaxRetries(n int) Option { return func(o *Options) { o.MaxRetries = &n } }

// WithTimeout sets the task's per-attempt timeout.
func WithTimeout(d time.Duration) Option { return func(o *Options) { o.Timeout = d } }

// WithoutResult opts the task out of result storage.
func WithoutResult() Option { return func(o *Options) { o.NoResult = true } }

// Definition is one registered task.
type Definition struct {
	Name    string
	Handler HandlerFunc
	Options Options
}

// Registry maps task names to handlers. It is safe for concurrent use;
// register everything before starting roles.
type Registry struct {
	mu   sync.RWMutex
	defs map[string]*Definition
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{defs: make(map[string]*Definition)} }

// Handle registers fn under name. It panics on an invalid or duplicate name,
// which is a programming error.
func (r *Registry) Handle(name string, fn HandlerFunc, opts ...Option) {
	if err := ValidateName(name); err != nil {
		panic(err)
	}
	d := &Definition{Name: name, Handler: fn}
	for _, o := range opts {
		o(&d.Options)
	}
	if d.Options.Queue != "" {
		if err := ValidateQueue(d.Options.Queue); err != nil {
			panic(fmt.Sprintf("task %s: %v", name, err))
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.defs[name]; dup {
		panic(fmt.Sprintf("task %s registered twice", name))
	}
	r.defs[name] = d
}

// Lookup returns the definition of name, or an error matching [ErrUnknownTask].
func (r *Registry) Lookup(name string) (*Definition, error) {
	r.mu.RLock()
	d, ok := r.defs[name]
	r.mu.RUnlock()
	if !ok {
		return nil, UnknownTaskError(name)
	}
	return d, nil
}

// Names lists the registered task names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.defs))
	for n := range r.defs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Register registers a typed handler: the registry decodes the task's args
// into A (a JSON object) before calling fn. Args that do not decode are a
// [Permanent] failure.
func Register[A Args](r *Registry, fn func(ctx context.Context, env *Envelope, args A) (any, error), opts ...Option) {
	var zero A
	r.Handle(zero.TaskName(), func(ctx context.Context, env *Envelope) (any, error) {
		var a A
		if len(env.Args) > 0 {
			if err := json.Unmarshal(env.Args, &a); err != nil {
				return nil, Permanent(fmt.Errorf("decode args of %s: %w", env.Name, err))
			}
		}
		return fn(ctx, env, a)
	}, opts...)
}
