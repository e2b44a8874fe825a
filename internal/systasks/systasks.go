// Package systasks registers Flotilla's built-in tasks: diagnostics for
// tests and benchmarks (sys.ping, sys.echo, sys.sleep, sys.fail), a real
// uptime check (probe.http), and sys.workflow, which starts a workflow.
package systasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/workflow"
)

// Register adds every built-in task to r.
func Register(r *task.Registry) {
	r.Handle("sys.ping", func(context.Context, *task.Envelope) (any, error) { return "pong", nil })
	r.Handle("sys.echo", func(_ context.Context, env *task.Envelope) (any, error) {
		if len(env.Args) == 0 {
			return json.RawMessage(`{}`), nil
		}
		return env.Args, nil
	})
	task.Register(r, sleep)
	task.Register(r, fail)
	task.Register(r, probeHTTP)
	workflow.Register(r)
}

// SleepArgs are the args of sys.sleep.
type SleepArgs struct {
	// MS is how long to sleep, in milliseconds.
	MS int `json:"ms"`
	// Uninterruptible sleeps ignoring the task's context, like a handler
	// stuck in a call without a deadline: operators use it to check that
	// hard timeouts fire on a live deployment.
	Uninterruptible bool `json:"uninterruptible"`
}

// TaskName implements task.Args.
func (SleepArgs) TaskName() string { return "sys.sleep" }

func sleep(ctx context.Context, _ *task.Envelope, a SleepArgs) (any, error) {
	if a.MS < 0 {
		return nil, task.Permanent(fmt.Errorf("ms must not be negative, got %d", a.MS))
	}
	if a.Uninterruptible {
		time.Sleep(time.Duration(a.MS) * time.Millisecond)
		return map[string]int{"slept_ms": a.MS}, nil
	}
	t := time.NewTimer(time.Duration(a.MS) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return map[string]int{"slept_ms": a.MS}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// FailArgs are the args of sys.fail.
type FailArgs struct {
	// Times is how many first attempts fail; nil means every attempt fails.
	Times *int `json:"times"`
}

// TaskName implements task.Args.
func (FailArgs) TaskName() string { return "sys.fail" }

func fail(_ context.Context, env *task.Envelope, a FailArgs) (any, error) {
	if a.Times == nil || env.Attempt <= *a.Times {
		return nil, fmt.Errorf("sys.fail: attempt %d fails as asked", env.Attempt)
	}
	return map[string]int{"succeeded_on_attempt": env.Attempt}, nil
}

// ProbeHTTPArgs are the args of probe.http.
type ProbeHTTPArgs struct {
	URL          string `json:"url"`
	ExpectStatus int    `json:"expect_status"`
	Timeout      string `json:"timeout"`
}

// TaskName implements task.Args.
func (ProbeHTTPArgs) TaskName() string { return "probe.http" }

// ProbeResult is the result of probe.http: a failed check is a result, not a
// task failure, so that monitoring sees it.
type ProbeResult struct {
	URL       string  `json:"url"`
	Status    int     `json:"status"`
	OK        bool    `json:"ok"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
}

var probeClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func probeHTTP(ctx context.Context, _ *task.Envelope, a ProbeHTTPArgs) (any, error) {
	if a.URL == "" {
		return nil, task.Permanent(errors.New("probe.http: url is required"))
	}
	timeout := 5 * time.Second
	if a.Timeout != "" {
		d, err := time.ParseDuration(a.Timeout)
		if err != nil || d <= 0 {
			return nil, task.Permanent(fmt.Errorf("probe.http: timeout %q is not a positive Go duration", a.Timeout))
		}
		timeout = d
	}
	if a.ExpectStatus == 0 {
		a.ExpectStatus = http.StatusOK
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL, nil)
	if err != nil {
		return nil, task.Permanent(fmt.Errorf("probe.http: %w", err))
	}
	req.Header.Set("User-Agent", "flotilla-probe/1")
	res := ProbeResult{URL: a.URL}
	start := time.Now()
	resp, err := probeClient.Do(req)
	res.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		if perr := parent.Err(); perr != nil {
			// The attempt was cut short (shutdown, the task's own timeout):
			// that says nothing about the target, so it is not a result.
			return nil, perr
		}
		res.Error = err.Error()
		return res, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	res.Status = resp.StatusCode
	res.OK = resp.StatusCode == a.ExpectStatus
	if !res.OK {
		res.Error = fmt.Sprintf("status %d, expected %d", resp.StatusCode, a.ExpectStatus)
	}
	return res, nil
}
