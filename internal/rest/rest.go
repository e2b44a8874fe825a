// Package rest holds the HTTP endpoints that the web and api roles share:
// task enqueue and status, JSON errors, health, readiness and metrics. Role
// specific endpoints live in their role's package.
package rest

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/task"
)

// Error is the JSON body of every error response.
type Error struct {
	Error string `json:"error"`
	// Field names the request field at fault, when there is one.
	Field string `json:"field,omitempty"`
	// Code is a stable machine-readable cause.
	Code string `json:"code"`
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

// Translate maps domain errors to HTTP errors, in one place.
func Translate(err error) *HTTPError {
	var he *HTTPError
	if errors.As(err, &he) {
		return he
	}
	var fe *task.FieldError
	var ee *echo.HTTPError
	switch {
	case errors.As(err, &fe):
		return NewError(http.StatusBadRequest, "invalid_field", fe.Field, err.Error())
	case errors.Is(err, task.ErrUnknownTask):
		return NewError(http.StatusNotFound, "unknown_task", "task", err.Error())
	case errors.Is(err, results.ErrNotFound):
		return NewError(http.StatusNotFound, "not_found", "", err.Error())
	case errors.Is(err, client.ErrTooLarge):
		return NewError(http.StatusRequestEntityTooLarge, "too_large", "args", err.Error())
	case errors.Is(err, client.ErrQueueFull):
		e := NewError(http.StatusServiceUnavailable, "queue_full", "queue", err.Error())
		e.RetryAfter = 5 * time.Second
		return e
	case errors.As(err, &ee):
		msg := http.StatusText(ee.Code)
		if s, ok := ee.Message.(string); ok {
			msg = s
		}
		return NewError(ee.Code, "http", "", msg)
	case errors.Is(err, context.DeadlineExceeded):
		return NewError(http.StatusGatewayTimeout, "timeout", "", err.Error())
	default:
		return NewError(http.StatusInternalServerError, "internal", "", err.Error())
	}
}

// ErrorHandler is the echo HTTPErrorHandler of both roles: every error is a
// JSON [Error]; 5xx are logged once here.
func ErrorHandler(log zerolog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		he := Translate(err)
		if he.Status >= 500 {
			log.Error().Err(err).Str("path", c.Path()).Str("method", c.Request().Method).Msg("request failed")
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

// Check is one readiness check.
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
		ctx, cancel := context.WithTimeout(c.Request().Context(), 3*time.Second)
		defer cancel()
		status := http.StatusOK
		out := map[string]string{}
		for _, ch := range checks {
			if err := ch.Func(ctx); err != nil {
				status = http.StatusServiceUnavailable
				out[ch.Name] = err.Error()
			} else {
				out[ch.Name] = "ok"
			}
		}
		return c.JSON(status, map[string]any{"ready": status == http.StatusOK, "role": role, "checks": out})
	})
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(metrics, promhttp.HandlerOpts{})))
}

// NewRole returns the echo instance of an HTTP role (web, api): Flotilla's
// error handler, request metrics and panic recovery, /healthz, /readyz and
// /metrics (metrics, a registry of the role's own).
func NewRole(role string, log zerolog.Logger, metrics *prometheus.Registry, checks []Check) *echo.Echo {
	e := NewEcho(log)
	e.Use(Metrics(metrics), middleware.Recover())
	MountHealth(e, role, checks, nil, metrics)
	return e
}

// NewEcho returns an echo instance with Flotilla's error handler and no banner.
func NewEcho(log zerolog.Logger) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = ErrorHandler(log)
	return e
}

// Serve runs e on addr until ctx is done, then shuts it down within timeout.
func Serve(ctx context.Context, e *echo.Echo, addr string, timeout time.Duration) error {
	srv := &http.Server{Addr: addr, Handler: e, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
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
