package rest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
)

// The route tests start NATS servers, clients and result stores; all are
// closed in cleanups.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func intp(n int) *int { return &n }

func TestParseEnqueue(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, tc := range []struct {
		name string
		body string
		want client.Request
		// On error: the status, code and field of the HTTPError.
		status int
		code   string
		field  string
	}{
		{name: "minimal", body: `{"task":"a.b"}`, want: client.Request{Task: "a.b"}},
		{
			name: "every field",
			body: `{"task":"a.b","args":{"x":1},"queue":"q","countdown":"30s","max_retries":3,"timeout":"1m","idempotency_key":"k","expires":"2026-03-05T00:00:00Z"}`,
			want: client.Request{
				Task: "a.b", Args: json.RawMessage(`{"x":1}`), Queue: "q", Countdown: 30 * time.Second, MaxRetries: intp(3),
				Timeout: time.Minute, IdempotencyKey: "k", Expires: time.Date(2026, 3, 5, 0, 0, 0, 0, time.UTC),
			},
		},
		{name: "eta", body: `{"task":"a.b","eta":"2026-03-04T06:00:00+01:00"}`, want: client.Request{Task: "a.b", ETA: time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)}},
		{name: "expires as duration", body: `{"task":"a.b","expires":"10m"}`, want: client.Request{Task: "a.b", Expires: now.Add(10 * time.Minute)}},
		{name: "expires as time", body: `{"task":"a.b","expires":"2026-03-04T05:16:07Z"}`, want: client.Request{Task: "a.b", Expires: now.Add(10 * time.Minute)}},
		{name: "null args", body: `{"task":"a.b","args":null}`, want: client.Request{Task: "a.b"}},
		{name: "null args with space", body: `{"task":"a.b","args": null }`, want: client.Request{Task: "a.b"}},
		{name: "zero max retries", body: `{"task":"a.b","max_retries":0}`, want: client.Request{Task: "a.b", MaxRetries: intp(0)}},
		{name: "non-object args pass through to the client", body: `{"task":"a.b","args":[1]}`, want: client.Request{Task: "a.b", Args: json.RawMessage(`[1]`)}},
		{name: "trailing whitespace", body: "{\"task\":\"a.b\"}\n\n", want: client.Request{Task: "a.b"}},

		{name: "empty body", body: ``, status: 400, code: "bad_json"},
		{name: "blank body", body: " \n", status: 400, code: "bad_json"},
		{name: "not JSON", body: `task=a.b`, status: 400, code: "bad_json"},
		{name: "truncated", body: `{"task":`, status: 400, code: "bad_json"},
		{name: "syntax error in args", body: `{"task":"a.b","args":{"a":[}}`, status: 400, code: "bad_json"},
		{name: "array body", body: `[{"task":"a.b"}]`, status: 400, code: "bad_json"},
		{name: "string body", body: `"a.b"`, status: 400, code: "bad_json"},
		{name: "null body", body: `null`, status: 400, code: "invalid_field", field: "task"},
		{name: "multiple JSON values", body: `{"task":"a.b"}{"task":"c.d"}`, status: 400, code: "bad_json"},
		{name: "garbage after the object", body: `{"task":"a.b"} x`, status: 400, code: "bad_json"},
		{name: "unknown field", body: `{"task":"a.b","priority":1}`, status: 400, code: "unknown_field", field: "priority"},
		{name: "missing task", body: `{"args":{}}`, status: 400, code: "invalid_field", field: "task"},
		{name: "task not a string", body: `{"task":5}`, status: 400, code: "invalid_field", field: "task"},
		{name: "queue not a string", body: `{"task":"a.b","queue":["q"]}`, status: 400, code: "invalid_field", field: "queue"},
		{name: "max_retries as string", body: `{"task":"a.b","max_retries":"3"}`, status: 400, code: "invalid_field", field: "max_retries"},
		{name: "max_retries fractional", body: `{"task":"a.b","max_retries":1.5}`, status: 400, code: "invalid_field", field: "max_retries"},
		{name: "countdown without unit", body: `{"task":"a.b","countdown":"30"}`, status: 400, code: "invalid_field", field: "countdown"},
		{name: "countdown as number", body: `{"task":"a.b","countdown":30}`, status: 400, code: "invalid_field", field: "countdown"},
		{name: "eta without time", body: `{"task":"a.b","eta":"2026-03-04"}`, status: 400, code: "invalid_field", field: "eta"},
		{name: "eta as unix seconds", body: `{"task":"a.b","eta":"1767225600"}`, status: 400, code: "invalid_field", field: "eta"},
		{name: "expires neither", body: `{"task":"a.b","expires":"tomorrow"}`, status: 400, code: "invalid_field", field: "expires"},
		{name: "expires negative duration", body: `{"task":"a.b","expires":"-5m"}`, status: 400, code: "invalid_field", field: "expires"},
		{name: "expires zero duration", body: `{"task":"a.b","expires":"0s"}`, status: 400, code: "invalid_field", field: "expires"},
		{name: "timeout zero", body: `{"task":"a.b","timeout":"0s"}`, status: 400, code: "invalid_field", field: "timeout"},
		{name: "timeout negative", body: `{"task":"a.b","timeout":"-1s"}`, status: 400, code: "invalid_field", field: "timeout"},
		{name: "timeout without unit", body: `{"task":"a.b","timeout":"10"}`, status: 400, code: "invalid_field", field: "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := rest.ParseEnqueue([]byte(tc.body), now)
			if tc.status == 0 {
				require.NoError(t, err)
				require.True(t, tc.want.ETA.Equal(got.ETA), "eta %s, want %s", got.ETA, tc.want.ETA)
				require.True(t, tc.want.Expires.Equal(got.Expires), "expires %s, want %s", got.Expires, tc.want.Expires)
				got.ETA, tc.want.ETA, got.Expires, tc.want.Expires = time.Time{}, time.Time{}, time.Time{}, time.Time{}
				require.Equal(t, tc.want, got)
				return
			}
			require.Error(t, err)
			he := rest.Translate(err)
			require.Equal(t, tc.status, he.Status, he.Error())
			require.Equal(t, tc.code, he.Body.Code, he.Error())
			require.Equal(t, tc.field, he.Body.Field, he.Error())
			require.NotEmpty(t, he.Body.Error)
			if tc.field != "" {
				require.True(t, strings.HasPrefix(he.Body.Error, tc.field+": "), "the message names the field: %q", he.Body.Error)
			}
		})
	}
}

func TestTranslate(t *testing.T) {
	t.Parallel()
	custom := rest.NewError(http.StatusConflict, "conflict", "name", "taken")
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		code       string
		field      string
		retryAfter time.Duration
	}{
		{name: "field error", err: &task.FieldError{Field: "queue", Msg: "bad"}, status: 400, code: "invalid_field", field: "queue"},
		{name: "wrapped field error", err: fmt.Errorf("enqueue: %w", &task.FieldError{Field: "eta", Msg: "bad"}), status: 400, code: "invalid_field", field: "eta"},
		{name: "unknown task", err: task.UnknownTaskError("x.y"), status: 404, code: "unknown_task", field: "task"},
		{name: "not found", err: fmt.Errorf("get: %w", results.ErrNotFound), status: 404, code: "not_found"},
		{name: "too large", err: fmt.Errorf("%w: args are 2 MiB", client.ErrTooLarge), status: 413, code: "too_large", field: "args"},
		{name: "queue full", err: fmt.Errorf("%w: queue default", client.ErrQueueFull), status: 503, code: "queue_full", field: "queue", retryAfter: 5 * time.Second},
		{name: "echo not found", err: echo.ErrNotFound, status: 404, code: "http"},
		{name: "echo method not allowed", err: echo.ErrMethodNotAllowed, status: 405, code: "http"},
		{name: "echo with message", err: echo.NewHTTPError(http.StatusUnauthorized, "token expired"), status: 401, code: "http"},
		{name: "deadline", err: fmt.Errorf("wait: %w", context.DeadlineExceeded), status: 503, code: "timeout", retryAfter: 5 * time.Second},
		{name: "redis down", err: fmt.Errorf("get: %w: %w", results.ErrUnavailable, errors.New("dial tcp 10.0.0.1:6379: refused")), status: 503, code: "redis_unavailable", retryAfter: 5 * time.Second},
		{name: "postgres down", err: fmt.Errorf("list: %w: %w", store.ErrUnavailable, errors.New("failed to connect to user=admin database=flotilla")), status: 503, code: "database_unavailable", retryAfter: 5 * time.Second},
		{name: "nats down", err: fmt.Errorf("%w: no response from stream", client.ErrUnavailable), status: 503, code: "nats_unavailable", retryAfter: 5 * time.Second},
		{name: "unconfirmed", err: &client.UnconfirmedError{ID: "01J", Err: context.DeadlineExceeded}, status: 503, code: "publish_unconfirmed", retryAfter: 5 * time.Second},
		{name: "anything else", err: errors.New("redis: connection refused"), status: 500, code: "internal"},
		{name: "HTTPError passes through", err: fmt.Errorf("x: %w", custom), status: 409, code: "conflict", field: "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			he := rest.Translate(tc.err)
			require.Equal(t, tc.status, he.Status)
			require.Equal(t, tc.code, he.Body.Code)
			require.Equal(t, tc.field, he.Body.Field)
			require.Equal(t, tc.retryAfter, he.RetryAfter)
			require.NotEmpty(t, he.Body.Error)
			if tc.status >= 500 {
				// An outage answer names no host, user or database.
				for _, leak := range []string{"10.0.0.1", "admin", "database=", "tcp"} {
					require.NotContains(t, he.Body.Error, leak)
				}
			}
		})
	}
	he := rest.Translate(echo.NewHTTPError(http.StatusUnauthorized, "token expired"))
	require.Equal(t, "token expired", he.Body.Error)
	he = rest.Translate(echo.ErrNotFound)
	require.Equal(t, "Not Found", he.Body.Error)
}

type errorResponse struct {
	status int
	header http.Header
	body   string
}

func serve(e *echo.Echo, method, target, body string, hdr map[string]string) errorResponse {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if body != "" {
		req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return errorResponse{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

func decodeError(t *testing.T, body string) rest.Error {
	t.Helper()
	var e rest.Error
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&e), body)
	return e
}

func TestErrorHandler(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	e := rest.NewEcho(zerolog.New(&logs))
	e.GET("/full", func(echo.Context) error { return fmt.Errorf("%w: queue default", client.ErrQueueFull) })
	bad := func(echo.Context) error { return &task.FieldError{Field: "queue", Msg: "bad"} }
	e.GET("/bad", bad)
	e.HEAD("/bad", bad)
	e.GET("/boom", func(echo.Context) error { return errors.New("boom") })
	e.GET("/committed", func(c echo.Context) error {
		_ = c.String(http.StatusOK, "partial")
		return errors.New("after the response was sent")
	})

	r := serve(e, http.MethodGet, "/full", "", nil)
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.Equal(t, "5", r.header.Get("Retry-After"))
	require.Equal(t, echo.MIMEApplicationJSON, strings.Split(r.header.Get(echo.HeaderContentType), ";")[0])
	eb := decodeError(t, r.body)
	require.Equal(t, "queue_full", eb.Code)
	require.Equal(t, "queue", eb.Field)
	require.Contains(t, logs.String(), "queue is full", "a 5xx is logged")
	logs.Reset()

	r = serve(e, http.MethodGet, "/bad", "", nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Empty(t, r.header.Get("Retry-After"))
	require.Equal(t, rest.Error{Error: "queue: bad", Field: "queue", Code: "invalid_field"}, decodeError(t, r.body))
	require.Empty(t, logs.String(), "4xx are not logged")

	r = serve(e, http.MethodGet, "/boom", "", nil)
	require.Equal(t, http.StatusInternalServerError, r.status)
	require.Equal(t, "internal", decodeError(t, r.body).Code)
	require.Equal(t, 1, strings.Count(logs.String(), "\n"), "a 5xx is logged once: %s", logs.String())
	require.Contains(t, logs.String(), "/boom")

	r = serve(e, http.MethodHead, "/bad", "", nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Empty(t, r.body, "HEAD gets no body")

	r = serve(e, http.MethodGet, "/nowhere", "", nil)
	require.Equal(t, http.StatusNotFound, r.status)
	require.Equal(t, "http", decodeError(t, r.body).Code)

	r = serve(e, http.MethodPost, "/bad", "", nil)
	require.Equal(t, http.StatusMethodNotAllowed, r.status)
	require.Equal(t, "http", decodeError(t, r.body).Code)

	r = serve(e, http.MethodGet, "/committed", "", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "partial", r.body, "a committed response is left alone")
}

func TestMountHealth(t *testing.T) {
	t.Parallel()
	e := rest.NewEcho(zerolog.Nop())
	healthy := true
	rest.MountHealth(e, "web", []rest.Check{
		{Name: "nats", Func: func(context.Context) error { return nil }},
		{Name: "redis", Func: func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("check without a deadline")
			}
			if !healthy {
				return errors.New("connection refused")
			}
			return nil
		}},
	}, func() map[string]any { return map[string]any{"version": "v1.2.3"} }, rest.NewRegistry())

	r := serve(e, http.MethodGet, "/healthz", "", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"status":"ok","role":"web","version":"v1.2.3"}`, r.body)

	r = serve(e, http.MethodGet, "/readyz", "", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"ready":true,"role":"web","checks":{"nats":"ok","redis":"ok"}}`, r.body)

	healthy = false
	r = serve(e, http.MethodGet, "/readyz", "", nil)
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.JSONEq(t, `{"ready":false,"role":"web","checks":{"nats":"ok","redis":"connection refused"}}`, r.body)

	r = serve(e, http.MethodGet, "/metrics", "", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.body, "go_goroutines")
}

func TestMountHealthWithoutInfo(t *testing.T) {
	t.Parallel()
	e := rest.NewEcho(zerolog.Nop())
	rest.MountHealth(e, "worker", nil, nil, rest.NewRegistry())
	r := serve(e, http.MethodGet, "/healthz", "", nil)
	require.JSONEq(t, `{"status":"ok","role":"worker"}`, r.body)
	r = serve(e, http.MethodGet, "/readyz", "", nil)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"ready":true,"role":"worker","checks":{}}`, r.body)
}
