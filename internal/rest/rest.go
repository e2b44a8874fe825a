// Package rest holds the HTTP endpoints that the web and api roles share:
// task enqueue and status, JSON errors, health, readiness and metrics. Role
// specific endpoints live in their role's package.
package rest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
)

// Error is the JSON body of every error response.
type Error struct {
	Error string `json:"error"`
	// Field names the request field at fault, when there is one.
	Field string `json:"field,omitempty"`
	// Code is a stable machine-readable cause.
	Code string `json:"code"`
	// ID is the task the answer is about, when there is one: with code
	// publish_unconfirmed, enqueue again with this id.
	ID string `json:"id,omitempty"`
	// RequestID is the X-Request-Id of a 500, to find its log line.
	RequestID string `json:"request_id,omitempty"`
}

// HTTPError is an error with its status, for handlers to return.
type HTTPError struct {
	Status     int
	Body       Error
	RetryAfter time.Duration
}

func (e *HTTPError) Error() string { return e.Body.Error }

// NewError returns an HTTPError.
func NewError(status int, code, field, msg string) *HTTPError {
	return &HTTPError{Status: status, Body: Error{Error: msg, Field: field, Code: code}}
}

// RetryAfter is the Retry-After of every 503: how long a client should
// wait before it retries when a dependency is down.
const RetryAfter = 5 * time.Second

// unavailable is a 503 with Retry-After.
func unavailable(code, msg string) *HTTPError {
	e := NewError(http.StatusServiceUnavailable, code, "", msg)
	e.RetryAfter = RetryAfter
	return e
}

// Translate maps domain errors to HTTP errors, in one place. A dependency
// that is down is a 503 with Retry-After and a stable code, and its
// message names no address, user or database.
func Translate(err error) *HTTPError {
	var ie *client.ItemError
	if errors.As(err, &ie) {
		// One task of a batch: its own answer, naming its index.
		inner := *Translate(ie.Err)
		inner.Body.Error = fmt.Sprintf("tasks[%d]: %s", ie.Index, inner.Body.Error)
		if inner.Body.Field != "" {
			inner.Body.Field = fmt.Sprintf("tasks[%d].%s", ie.Index, inner.Body.Field)
		} else {
			inner.Body.Field = fmt.Sprintf("tasks[%d]", ie.Index)
		}
		return &inner
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he
	}
	var fe *task.FieldError
	var ee *echo.HTTPError
	switch {
	case errors.Is(err, client.ErrBatchDuplicate):
		return NewError(http.StatusConflict, "duplicate", "tasks", err.Error()+"; nothing of the batch was stored")
	case errors.As(err, &fe):
		return NewError(http.StatusBadRequest, "invalid_field", fe.Field, err.Error())
	case errors.Is(err, client.ErrUnknownQueue):
		return NewError(http.StatusUnprocessableEntity, "unknown_queue", "queue", err.Error())
	case errors.Is(err, task.ErrUnknownTask):
		return NewError(http.StatusNotFound, "unknown_task", "task", err.Error())
	case errors.Is(err, results.ErrNotFound):
		return NewError(http.StatusNotFound, "not_found", "", err.Error())
	case errors.Is(err, client.ErrTooLarge):
		return NewError(http.StatusRequestEntityTooLarge, "too_large", "args", err.Error())
	case errors.Is(err, client.ErrQueueFull):
		e := unavailable("queue_full", err.Error())
		e.Body.Field = "queue"
		return e
	case errors.As(err, new(*client.UnconfirmedError)):
		var ue *client.UnconfirmedError
		errors.As(err, &ue)
		e := unavailable("publish_unconfirmed", fmt.Sprintf("task %s was sent but JetStream did not confirm it in time: it may or may not be stored; "+
			"enqueue it again with \"id\": %q (or the same idempotency_key) and it runs at most once", ue.ID, ue.ID))
		e.Body.ID = ue.ID
		return e
	case errors.Is(err, client.ErrUnavailable):
		return unavailable("nats_unavailable", "NATS JetStream cannot take tasks right now (no server, stream or leader answered); nothing was stored, retry later")
	case errors.Is(err, results.ErrUnavailable):
		return unavailable("redis_unavailable", "the task state store (Redis) is unavailable; nothing was stored, retry later")
	case errors.Is(err, store.ErrUnavailable):
		return unavailable("database_unavailable", "the database (PostgreSQL) is unavailable; retry later")
	case errors.As(err, &ee):
		msg := http.StatusText(ee.Code)
		if s, ok := ee.Message.(string); ok {
			msg = s
		}
		return NewError(ee.Code, "http", "", msg)
	case errors.Is(err, context.DeadlineExceeded):
		return unavailable("timeout", "the request did not finish within its deadline; retry later")
	default:
		// The cause is logged, not answered: it may name hosts or users.
		return NewError(http.StatusInternalServerError, "internal", "", "internal error; the server log has the cause under this request_id")
	}
}

// ErrorHandler is the echo HTTPErrorHandler of both roles: every error is a
// JSON [Error]; 5xx are logged once here.
func ErrorHandler(log zerolog.Logger) echo.HTTPErrorHandler {
	unavailableLog := log.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second})
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		he := Translate(err)
		rid := c.Response().Header().Get(echo.HeaderXRequestID)
		switch {
		case he.Status == http.StatusServiceUnavailable:
			// A dependency outage answers many requests alike: log a few.
			unavailableLog.Warn().Err(err).Str("path", c.Path()).Str("method", c.Request().Method).Str("code", he.Body.Code).Msg("request refused: dependency unavailable")
		case he.Status >= 500:
			log.Error().Err(err).Str("path", c.Path()).Str("method", c.Request().Method).Str("request_id", rid).Msg("request failed")
			body := he.Body
			body.RequestID = rid
			he = &HTTPError{Status: he.Status, Body: body, RetryAfter: he.RetryAfter}
		}
		if he.RetryAfter > 0 {
			c.Response().Header().Set("Retry-After", strconv.Itoa(int(he.RetryAfter.Seconds())))
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(he.Status)
			return
		}
		_ = c.JSON(he.Status, he.Body)
	}
}

// CheckTimeout bounds each readiness check.
const CheckTimeout = time.Second

// Check is one readiness check: a round trip to a dependency that fails
// when it cannot answer within the context's deadline.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// MountHealth adds /healthz (liveness, with extra fields from info), /readyz
// (every check, 503 if one fails) and /metrics (the role's own registry) to e.
func MountHealth(e *echo.Echo, role string, checks []Check, info func() map[string]any, metrics prometheus.Gatherer) {
	e.GET("/healthz", func(c echo.Context) error {
		body := map[string]any{"status": "ok", "role": role}
		if info != nil {
			for k, v := range info() {
				body[k] = v
			}
		}
		return c.JSON(http.StatusOK, body)
	})
	e.GET("/readyz", func(c echo.Context) error {
		// Each check is a round trip with its own deadline, all at once,
		// so that a paused dependency turns the answer 503 within
		// CheckTimeout, not after a connection notices.
		errs := make([]error, len(checks))
		var wg sync.WaitGroup
		for i, ch := range checks {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(c.Request().Context(), CheckTimeout)
				defer cancel()
				errs[i] = ch.Func(ctx)
			})
		}
		wg.Wait()
		status := http.StatusOK
		out := map[string]string{}
		for i, ch := range checks {
			if errs[i] != nil {
				status = http.StatusServiceUnavailable
				out[ch.Name] = errs[i].Error()
			} else {
				out[ch.Name] = "ok"
			}
		}
		if status != http.StatusOK {
			c.Response().Header().Set("Retry-After", strconv.Itoa(int(RetryAfter.Seconds())))
		}
		return c.JSON(status, map[string]any{"ready": status == http.StatusOK, "role": role, "checks": out})
	})
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(metrics, promhttp.HandlerOpts{})))
}

// NewRole returns the echo instance of an HTTP role (web, api): Flotilla's
// error handler, request metrics, request ids, panic recovery, security
// headers, JSON-only state changes (see [RequireJSON]), /healthz, /readyz
// and /metrics (metrics, a registry of the role's own).
//
// Every request but the sync executions of the api (/api/v1/exec/, which
// carry their own wait) must be answered within requestTimeout: the
// handlers' context ends a little earlier, so a dependency that hangs
// turns into a 503 before the deadline.
func NewRole(role string, log zerolog.Logger, metrics *prometheus.Registry, checks []Check, requestTimeout time.Duration) *echo.Echo {
	e := NewEcho(log)
	e.Use(Metrics(metrics), middleware.RequestID(), middleware.Recover(), SecurityHeaders(), RequireJSON(),
		Deadline(requestTimeout, "/api/v1/exec/", "/ui/live"))
	MountHealth(e, role, checks, nil, metrics)
	return e
}

// Deadline gives every request's context a deadline of timeout minus a
// margin for writing the answer, except under the path prefixes skip; a
// GET with ?wait= (up to [MaxWait]) gets that much longer.
func Deadline(timeout time.Duration, skip ...string) echo.MiddlewareFunc {
	margin := min(timeout/10, 250*time.Millisecond)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if timeout <= 0 {
				return next(c)
			}
			for _, p := range skip {
				if strings.HasPrefix(c.Request().URL.Path, p) {
					return next(c)
				}
			}
			d := timeout - margin
			if c.Request().Method == http.MethodGet {
				if w, err := time.ParseDuration(c.QueryParam("wait")); err == nil && w > 0 && w <= MaxWait {
					d += w
				}
			}
			ctx, cancel := context.WithTimeout(c.Request().Context(), d)
			defer cancel()
			c.SetRequest(c.Request().WithContext(ctx))
			return next(c)
		}
	}
}

// NewEcho returns an echo instance with Flotilla's error handler and JSON
// serializer and no banner.
func NewEcho(log zerolog.Logger) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = ErrorHandler(log)
	e.JSONSerializer = JSONSerializer{}
	return e
}

// JSONAppender is a value that appends its JSON to b: the same bytes as
// encoding/json writes for it, without reflection.
type JSONAppender interface{ AppendJSON(b []byte) []byte }

// JSONSerializer is echo's DefaultJSONSerializer, except that a
// [JSONAppender] answered without indentation (no ?pretty, no debug) is
// written by its AppendJSON, with encoding/json's trailing newline: the
// answer to every single enqueue costs a sixth less of its handler.
type JSONSerializer struct{ echo.DefaultJSONSerializer }

// Serialize writes i to c's response as JSON.
func (s JSONSerializer) Serialize(c echo.Context, i any, indent string) error {
	if a, ok := i.(JSONAppender); ok && indent == "" {
		_, err := c.Response().Write(append(a.AppendJSON(make([]byte, 0, 128)), '\n'))
		return err
	}
	return s.DefaultJSONSerializer.Serialize(c, i, indent)
}

// Listen binds addr for [Serve]; the error says which address is taken.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("listen on %s: the address is already in use (another process listens there; stop it or choose another address)", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve runs e on ln until ctx is done, then shuts it down within timeout.
func Serve(ctx context.Context, e *echo.Echo, ln net.Listener, timeout time.Duration) error {
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	return err
}

// Guard returns the route middleware that lets only principals of role
// need use a route, and records the state-changing action it performs
// (action "" records nothing). The web and api roles build it from package
// auth and the audit log; nil guards nothing.
type Guard func(action, need string) []echo.MiddlewareFunc

// Use returns g(action, need), or nothing when g is nil.
func (g Guard) Use(action, need string) []echo.MiddlewareFunc {
	if g == nil {
		return nil
	}
	return g(action, need)
}
