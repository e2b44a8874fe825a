package attempt_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/attempt"
	"github.com/flotilla/flotilla/internal/task"
)

func runner(t *testing.T, cfg attempt.Config) (*attempt.Runner, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Metrics = attempt.NewMetrics(reg)
	return attempt.New(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)), reg
}

func def(fn task.HandlerFunc, opts ...task.Option) *task.Definition {
	d := &task.Definition{Name: "t.x", Handler: fn}
	for _, o := range opts {
		o(&d.Options)
	}
	return d
}

func env() *task.Envelope {
	return &task.Envelope{ID: "01J", Name: "t.x", Queue: "default", Attempt: 1}
}

func abandoned(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "flotilla_tasks_abandoned_total" {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

func TestTimeoutRule(t *testing.T) {
	t.Parallel()
	r, _ := runner(t, attempt.Config{Timeout: time.Minute})
	e := env()
	require.Equal(t, time.Minute, r.Timeout(def(nil), e), "the default")
	require.Equal(t, 10*time.Second, r.Timeout(def(nil, task.WithTimeout(10*time.Second)), e), "the registered one")
	e.Timeout = 2 * time.Hour
	require.Equal(t, 2*time.Hour, r.Timeout(def(nil, task.WithTimeout(10*time.Second)), e), "the task's own")
}

func TestRunOutcomes(t *testing.T) {
	t.Parallel()
	r, _ := runner(t, attempt.Config{Timeout: 100 * time.Millisecond, Grace: time.Second})
	for _, tc := range []struct {
		name    string
		fn      task.HandlerFunc
		typ     string
		result  string
		errText string
	}{
		{name: "success", fn: func(context.Context, *task.Envelope) (any, error) { return map[string]int{"a": 1}, nil }, result: `{"a":1}`},
		{name: "error", fn: func(context.Context, *task.Envelope) (any, error) { return nil, errors.New("boom") }, typ: task.ErrorTypeError, errText: "boom"},
		{name: "permanent", fn: func(context.Context, *task.Envelope) (any, error) { return nil, task.Permanent(errors.New("no")) }, typ: task.ErrorTypePermanent},
		{name: "panic", fn: func(context.Context, *task.Envelope) (any, error) { panic("p") }, typ: task.ErrorTypePanic, errText: "panic: p"},
		{name: "honours its deadline", fn: func(ctx context.Context, _ *task.Envelope) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, typ: task.ErrorTypeTimeout, errText: "timed out after 100ms"},
		{name: "late success is a timeout", fn: func(context.Context, *task.Envelope) (any, error) {
			time.Sleep(300 * time.Millisecond)
			return "late", nil
		}, typ: task.ErrorTypeTimeout, errText: "timed out after 100ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o, ok := r.Run(t.Context(), def(tc.fn), env(), zerolog.Nop(), nil)
			require.True(t, ok)
			require.Equal(t, tc.typ, o.ErrorType)
			require.False(t, o.Abandoned)
			if tc.typ == "" {
				require.NoError(t, o.Err)
				require.JSONEq(t, tc.result, string(o.Result))
				return
			}
			require.Error(t, o.Err)
			require.Nil(t, o.Result)
			if tc.errText != "" {
				require.Contains(t, o.Err.Error(), tc.errText)
			}
			if tc.typ == task.ErrorTypeTimeout {
				require.ErrorIs(t, o.Err, context.DeadlineExceeded)
			}
		})
	}
}

// TestRunContext: the handler's context carries its envelope and logger.
func TestRunContext(t *testing.T) {
	t.Parallel()
	r, _ := runner(t, attempt.Config{})
	var got *task.Envelope
	var hasLogger bool
	o, _ := r.Run(t.Context(), def(func(ctx context.Context, _ *task.Envelope) (any, error) {
		got, _ = task.EnvelopeFrom(ctx)
		hasLogger = zerolog.Ctx(ctx) != zerolog.DefaultContextLogger && zerolog.Ctx(ctx).GetLevel() != zerolog.Disabled
		return nil, nil
	}), env(), zerolog.New(nil), nil)
	require.NoError(t, o.Err)
	require.Equal(t, "01J", got.ID)
	require.True(t, hasLogger)
}

// TestMiddlewareOnce: middleware wraps the handler once, outermost first.
func TestMiddlewareOnce(t *testing.T) {
	t.Parallel()
	var order []string
	mw := func(name string) task.Middleware {
		return func(next task.HandlerFunc) task.HandlerFunc {
			return func(ctx context.Context, e *task.Envelope) (any, error) {
				order = append(order, name)
				return next(ctx, e)
			}
		}
	}
	r, _ := runner(t, attempt.Config{Middleware: []task.Middleware{mw("outer"), mw("inner")}})
	r.Run(t.Context(), def(func(context.Context, *task.Envelope) (any, error) {
		order = append(order, "handler")
		return nil, nil
	}), env(), zerolog.Nop(), nil)
	require.Equal(t, []string{"outer", "inner", "handler"}, order)
}

// TestHardTimeout: a handler that ignores its context is abandoned grace
// after its deadline: the abandonment callback gets a timeout outcome then,
// while the handler runs on; Run returns ok false once it comes back.
func TestHardTimeout(t *testing.T) {
	t.Parallel()
	r, reg := runner(t, attempt.Config{Timeout: 100 * time.Millisecond, Grace: 200 * time.Millisecond})
	start := time.Now()
	abandonedC := make(chan attempt.Outcome, 1)
	returned := make(chan bool, 1)
	go func() {
		_, ok := r.Run(t.Context(), def(func(context.Context, *task.Envelope) (any, error) {
			time.Sleep(time.Second)
			return "never seen", nil
		}), env(), zerolog.Nop(), func(o attempt.Outcome) { abandonedC <- o })
		returned <- ok
	}()
	var o attempt.Outcome
	select {
	case o = <-abandonedC:
	case <-returned:
		t.Fatal("Run returned before the handler was abandoned")
	case <-time.After(5 * time.Second):
		t.Fatal("not abandoned")
	}
	took := time.Since(start)
	require.True(t, o.Abandoned)
	require.Equal(t, task.ErrorTypeTimeout, o.ErrorType)
	require.ErrorIs(t, o.Err, context.DeadlineExceeded)
	require.Contains(t, o.Err.Error(), "timed out after 100ms; the handler ignored its context and was abandoned 200ms later")
	require.GreaterOrEqual(t, took, 300*time.Millisecond)
	require.Less(t, took, 900*time.Millisecond)
	require.Equal(t, 1.0, abandoned(t, reg))
	select {
	case ok := <-returned:
		require.False(t, ok, "the late result is dropped")
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return after the handler did")
	}
}

// TestCallerDeadline: a context with an earlier deadline (a sync caller's
// wait) ends the attempt as a timeout too; a cancelled one (shutdown) is
// not a timeout, and a handler ignoring it is abandoned after the grace.
func TestCallerDeadline(t *testing.T) {
	t.Parallel()
	r, _ := runner(t, attempt.Config{Timeout: time.Hour, Grace: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	o, ok := r.Run(ctx, def(func(ctx context.Context, _ *task.Envelope) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}), env(), zerolog.Nop(), nil)
	require.True(t, ok)
	require.Equal(t, task.ErrorTypeTimeout, o.ErrorType)
	// What was left of the caller's 50 ms when the attempt started.
	var te *attempt.TimeoutError
	require.ErrorAs(t, o.Err, &te)
	after := te.After
	require.Greater(t, after, time.Duration(0))
	require.LessOrEqual(t, after, 50*time.Millisecond)
	require.Contains(t, o.Err.Error(), "timed out after "+after.String())

	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	release := make(chan struct{})
	abandonedC := make(chan attempt.Outcome, 1)
	go r.Run(ctx, def(func(context.Context, *task.Envelope) (any, error) {
		<-release
		return nil, nil
	}), env(), zerolog.Nop(), func(o attempt.Outcome) { abandonedC <- o })
	o = <-abandonedC
	close(release)
	require.True(t, o.Abandoned)
	require.Equal(t, task.ErrorTypeError, o.ErrorType)
	require.ErrorIs(t, o.Err, context.Canceled)
}

// TestExecAbandoned: a synchronous execution answers when its handler is
// abandoned, without waiting for it.
func TestExecAbandoned(t *testing.T) {
	t.Parallel()
	r, _ := runner(t, attempt.Config{Timeout: 50 * time.Millisecond, Grace: 50 * time.Millisecond})
	release := make(chan struct{})
	defer close(release)
	start := time.Now()
	reply := r.Exec(t.Context(), def(func(context.Context, *task.Envelope) (any, error) {
		<-release
		return nil, nil
	}), &task.Envelope{ID: "01J", Name: "t.x", Queue: "sync", Attempt: 1, Origin: "sync"})
	require.Less(t, time.Since(start), time.Second)
	require.Equal(t, "504", reply.Code)
	require.Equal(t, task.ErrorTypeTimeout, reply.ErrorType)
}
