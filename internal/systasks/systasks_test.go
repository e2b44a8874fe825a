package systasks_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
)

// probe.http's idle keep-alive connections end when the test servers close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func registry(t *testing.T) *task.Registry {
	t.Helper()
	r := task.NewRegistry()
	systasks.Register(r)
	return r
}

// run looks name up in a registry with the built-ins and runs it once, as a
// worker would, returning the result encoded as JSON.
func run(t *testing.T, ctx context.Context, name, args string, attempt int) (json.RawMessage, error) {
	t.Helper()
	def, err := registry(t).Lookup(name)
	require.NoError(t, err)
	env := &task.Envelope{ID: "01TEST", Name: name, Queue: "default", Args: json.RawMessage(args), Attempt: attempt, MaxRetries: -1}
	res, err := def.Handler(ctx, env)
	if err != nil {
		return nil, err
	}
	b, merr := json.Marshal(res)
	require.NoError(t, merr, "results must encode as JSON")
	return b, nil
}

func TestRegister(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"probe.http", "sys.echo", "sys.fail", "sys.ping", "sys.sleep", "sys.workflow"}, registry(t).Names())
	// Registering twice in one registry is a programming error.
	r := registry(t)
	require.Panics(t, func() { systasks.Register(r) })
}

func TestPing(t *testing.T) {
	t.Parallel()
	res, err := run(t, t.Context(), "sys.ping", `{}`, 1)
	require.NoError(t, err)
	require.JSONEq(t, `"pong"`, string(res))
}

func TestEcho(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, args, want string
	}{
		{"object", `{"a":[1,"x",{"b":null}]}`, `{"a":[1,"x",{"b":null}]}`},
		{"empty object", `{}`, `{}`},
		{"no args", ``, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, err := run(t, t.Context(), "sys.echo", tc.args, 1)
			require.NoError(t, err)
			require.JSONEq(t, tc.want, string(res))
		})
	}
}

func TestSleep(t *testing.T) {
	t.Parallel()
	t.Run("sleeps", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		res, err := run(t, t.Context(), "sys.sleep", `{"ms":20}`, 1)
		require.NoError(t, err)
		require.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)
		require.JSONEq(t, `{"slept_ms":20}`, string(res))
	})
	t.Run("honours cancellation", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			_, err := run(t, ctx, "sys.sleep", `{"ms":60000}`, 1)
			done <- err
		}()
		cancel()
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.Canceled)
			require.False(t, task.IsPermanent(err), "a cancelled attempt may be retried")
		case <-time.After(5 * time.Second):
			t.Fatal("sys.sleep ignored its cancelled context")
		}
	})
	t.Run("honours a deadline", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		_, err := run(t, ctx, "sys.sleep", `{"ms":60000}`, 1)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
	t.Run("uninterruptible ignores its context", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		start := time.Now()
		res, err := run(t, ctx, "sys.sleep", `{"ms":200,"uninterruptible":true}`, 1)
		require.NoError(t, err)
		require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
		require.JSONEq(t, `{"slept_ms":200}`, string(res))
	})
	for _, tc := range []struct{ name, args string }{
		{"negative", `{"ms":-1}`},
		{"not a number", `{"ms":"10"}`},
	} {
		t.Run(tc.name+" is permanent", func(t *testing.T) {
			t.Parallel()
			_, err := run(t, t.Context(), "sys.sleep", tc.args, 1)
			require.Error(t, err)
			require.True(t, task.IsPermanent(err), err.Error())
		})
	}
}

func TestFail(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		args     string
		failures []int // attempts that fail
		succeeds int   // first attempt that succeeds, 0 = none of 1..5
	}{
		{name: "times=2", args: `{"times":2}`, failures: []int{1, 2}, succeeds: 3},
		{name: "times=0", args: `{"times":0}`, succeeds: 1},
		{name: "always", args: `{}`, failures: []int{1, 2, 3, 4, 5}},
		{name: "always, explicit null", args: `{"times":null}`, failures: []int{1, 2, 3, 4, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, attempt := range tc.failures {
				_, err := run(t, t.Context(), "sys.fail", tc.args, attempt)
				require.Error(t, err, "attempt %d", attempt)
				require.False(t, task.IsPermanent(err), "sys.fail asks for retries")
				require.Contains(t, err.Error(), "attempt")
			}
			if tc.succeeds > 0 {
				for attempt := tc.succeeds; attempt < tc.succeeds+2; attempt++ {
					res, err := run(t, t.Context(), "sys.fail", tc.args, attempt)
					require.NoError(t, err, "attempt %d", attempt)
					require.JSONEq(t, `{"succeeded_on_attempt":`+itoa(attempt)+`}`, string(res))
				}
			}
		})
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func probe(t *testing.T, ctx context.Context, args map[string]any) (systasks.ProbeResult, error) {
	t.Helper()
	b, err := json.Marshal(args)
	require.NoError(t, err)
	raw, err := run(t, ctx, "probe.http", string(b), 1)
	if err != nil {
		return systasks.ProbeResult{}, err
	}
	var res systasks.ProbeResult
	require.NoError(t, json.Unmarshal(raw, &res))
	return res, nil
}

// closedURL is an http URL on a port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr + "/"
}

func TestProbeHTTP(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") != "flotilla-probe/1" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		_, _ = w.Write([]byte("fine"))
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	mux.HandleFunc("/empty", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusMovedPermanently) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		name    string
		args    map[string]any
		ok      bool
		status  int
		errPart string // in ProbeResult.Error
	}{
		{name: "200 ok", args: map[string]any{"url": srv.URL + "/ok"}, ok: true, status: 200},
		{name: "500 is a failed check", args: map[string]any{"url": srv.URL + "/fail"}, status: 500, errPart: "status 500, expected 200"},
		{name: "expected status", args: map[string]any{"url": srv.URL + "/empty", "expect_status": 204}, ok: true, status: 204},
		{name: "unexpected 204", args: map[string]any{"url": srv.URL + "/empty"}, status: 204, errPart: "expected 200"},
		{name: "redirects are not followed", args: map[string]any{"url": srv.URL + "/moved"}, status: 301, errPart: "status 301"},
		{name: "expected redirect", args: map[string]any{"url": srv.URL + "/moved", "expect_status": 301}, ok: true, status: 301},
		{name: "closed port", args: map[string]any{"url": closedURL(t)}, errPart: "connect"},
		{name: "timeout", args: map[string]any{"url": srv.URL + "/slow", "timeout": "50ms"}, errPart: "deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, err := probe(t, t.Context(), tc.args)
			require.NoError(t, err, "a failed check is a result, not a task failure")
			require.Equal(t, tc.args["url"], res.URL)
			require.Equal(t, tc.ok, res.OK)
			require.Equal(t, tc.status, res.Status)
			require.GreaterOrEqual(t, res.LatencyMS, 0.0)
			if tc.errPart == "" {
				require.Empty(t, res.Error)
			} else {
				require.Contains(t, res.Error, tc.errPart)
			}
		})
	}
}

func TestProbeHTTPPermanentErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args string
	}{
		{"no url", `{}`},
		{"bad timeout", `{"url":"http://127.0.0.1/","timeout":"soon"}`},
		{"zero timeout", `{"url":"http://127.0.0.1/","timeout":"0s"}`},
		{"negative timeout", `{"url":"http://127.0.0.1/","timeout":"-1s"}`},
		{"unparsable url", `{"url":"http://[::1"}`},
		{"args of the wrong type", `{"url":5}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := run(t, t.Context(), "probe.http", tc.args, 1)
			require.Error(t, err)
			require.True(t, task.IsPermanent(err), "%v is not permanent", err)
		})
	}
}

// TestProbeHTTPCancelled: when the attempt itself is cancelled (worker
// shutdown, task timeout) the probe returns the context's error, so that the
// worker retries it instead of recording a failed check of a healthy target.
func TestProbeHTTPCancelled(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(t.Context())
			return ctx, cancel
		}, context.Canceled},
		{"task deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(t.Context(), 50*time.Millisecond)
		}, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := tc.ctx()
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := run(t, ctx, "probe.http", `{"url":"`+srv.URL+`","timeout":"1m"}`, 1)
				done <- err
			}()
			if tc.want == context.Canceled {
				cancel()
			}
			select {
			case err := <-done:
				require.ErrorIs(t, err, tc.want)
				require.False(t, task.IsPermanent(err))
			case <-time.After(5 * time.Second):
				t.Fatal("probe.http ignored its context")
			}
		})
	}
}
