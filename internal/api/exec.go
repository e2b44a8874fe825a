package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"

	"github.com/flotilla/flotilla/internal/attempt"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// Result is a successful sync execution.
type Result struct {
	ID         string          `json:"id"`
	Task       string          `json:"task"`
	Result     json.RawMessage `json:"result"`
	Worker     string          `json:"worker"`
	StartedAt  time.Time       `json:"started_at"`
	FinishedAt time.Time       `json:"finished_at"`
	// RuntimeMS is the handler's run time; DurationMS the whole call as the api saw it.
	RuntimeMS  float64 `json:"runtime_ms"`
	DurationMS float64 `json:"duration_ms"`
}

// ExecError is a failed sync execution with the HTTP status it maps to.
type ExecError struct {
	Status int    `json:"-"`
	ID     string `json:"id,omitempty"`
	Task   string `json:"task"`
	Msg    string `json:"error"`
	Code   string `json:"code"`
	// ErrorType classifies handler errors: error, permanent, panic, timeout.
	ErrorType string `json:"error_type,omitempty"`
	Worker    string `json:"worker,omitempty"`
}

func (e *ExecError) Error() string { return e.Msg }

// Executor runs a task synchronously.
type Executor interface {
	Exec(ctx context.Context, name string, args json.RawMessage, m wire.ExecMeta) (Result, error)
}

// Remote executes on workers over NATS request-reply (the micro service
// "flotilla"). Known, when set, tells an unknown task (404) from one that
// no worker serves right now (503) after a no-responders answer.
type Remote struct {
	NC    *nats.Conn
	Known func(name string) bool
}

// Exec implements Executor.
func (r Remote) Exec(ctx context.Context, name string, args json.RawMessage, m wire.ExecMeta) (Result, error) {
	start := time.Now()
	resp, err := r.NC.RequestMsgWithContext(ctx, wire.NewExecRequest(name, args, m))
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		if r.Known != nil && !r.Known(name) {
			return Result{}, &ExecError{Status: http.StatusNotFound, ID: m.ID, Task: name, Code: "unknown_task",
				Msg: fmt.Sprintf("unknown task %q: no handler is registered for it", name)}
		}
		return Result{}, &ExecError{Status: http.StatusServiceUnavailable, ID: m.ID, Task: name, Code: "no_worker",
			Msg: fmt.Sprintf("no worker serves task %q right now (none is running, or none has it registered)", name)}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return Result{}, &ExecError{Status: http.StatusGatewayTimeout, ID: m.ID, Task: name, Code: "timeout",
			Msg: fmt.Sprintf("no reply for task %q within %s", name, time.Since(start).Round(time.Millisecond))}
	case err != nil:
		return Result{}, fmt.Errorf("exec %s: %w", name, err)
	}
	return fromReply(name, wire.DecodeExecReply(resp))
}

// Local runs handlers inside the api process (api.exec=local): Celery's
// task_always_eager, for development and tests. It runs them through the
// same attempt runner as workers do — middleware, timeouts, recorded
// states and events included.
type Local struct {
	Registry *task.Registry
	Runner   *attempt.Runner
}

// Exec implements Executor.
func (l Local) Exec(ctx context.Context, name string, args json.RawMessage, m wire.ExecMeta) (Result, error) {
	def, err := l.Registry.Lookup(name)
	if err != nil {
		return Result{}, &ExecError{Status: http.StatusNotFound, ID: m.ID, Task: name, Code: "unknown_task", Msg: err.Error()}
	}
	req := wire.NewExecRequest(name, args, m)
	env, wait, err := wire.DecodeExecRequest(name, req.Header, req.Data, time.Now())
	if err != nil {
		return Result{}, &ExecError{Status: http.StatusBadRequest, ID: m.ID, Task: name, Code: "invalid_field", Msg: err.Error()}
	}
	if wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	return fromReply(name, l.Runner.Exec(ctx, def, env))
}

// fromReply maps a worker's (or the local runner's) reply to the answer:
// the result, or an ExecError with the HTTP status of its code.
func fromReply(name string, r wire.ExecReply) (Result, error) {
	if r.Code != "" {
		e := &ExecError{ID: r.ID, Task: name, Msg: r.Error, ErrorType: r.ErrorType, Worker: r.Worker}
		switch r.Code {
		case wire.CodeTimeout:
			e.Status, e.Code = http.StatusGatewayTimeout, "timeout"
		case wire.CodeBadRequest:
			e.Status, e.Code = http.StatusBadRequest, "invalid_field"
		case wire.CodeCancelled:
			e.Status, e.Code = http.StatusConflict, "cancelled"
		default:
			e.Status, e.Code = http.StatusUnprocessableEntity, "handler_error"
		}
		return Result{}, e
	}
	return Result{ID: r.ID, Task: name, Result: r.Result, Worker: r.Worker, StartedAt: r.Started, FinishedAt: r.Finished,
		RuntimeMS: ms(r.Finished.Sub(r.Started))}, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ExecRoutes mounts POST /api/v1/exec/:task.
type ExecRoutes struct {
	Exec         Executor
	MaxBodyBytes int64
	// Timeout is the default wait; MaxTimeout caps ?timeout= (api.exec_timeout, api.exec_timeout_max).
	Timeout, MaxTimeout time.Duration
	// Guard decides who may execute (operator).
	Guard rest.Guard
}

// Mount adds the route to g (the /api/v1 group).
func (r ExecRoutes) Mount(g *echo.Group) {
	g.POST("/exec/:task", r.exec, r.Guard.Use("", store.RoleOperator)...)
}

func (r ExecRoutes) exec(c echo.Context) error {
	name := c.Param("task")
	if err := task.ValidateName(name); err != nil {
		return rest.NewError(http.StatusBadRequest, "invalid_field", "task", "task: "+err.Error())
	}
	timeout, err := r.timeout(c)
	if err != nil {
		return err
	}
	body, err := rest.ReadBody(c, r.MaxBodyBytes)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		body = []byte(`{}`)
	}
	if !json.Valid(body) {
		return rest.NewError(http.StatusBadRequest, "bad_json", "body", "body is not valid JSON")
	}
	if !task.IsJSONObject(body) {
		return rest.NewError(http.StatusBadRequest, "invalid_field", "body", "body: the args must be a JSON object")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), timeout)
	defer cancel()
	m := wire.ExecMeta{ID: ulid.Make().String(), Traceparent: c.Request().Header.Get("traceparent"),
		// The worker gives up a little before the caller does, so a slow
		// handler yields its own timeout error rather than a lost reply.
		Wait: timeout - min(timeout/10, 100*time.Millisecond)}
	start := time.Now()
	res, err := r.Exec.Exec(ctx, name, body, m)
	var ee *ExecError
	if errors.As(err, &ee) {
		return c.JSON(ee.Status, ee)
	}
	if err != nil {
		return err
	}
	res.DurationMS = ms(time.Since(start))
	return c.JSON(http.StatusOK, res)
}

func (r ExecRoutes) timeout(c echo.Context) (time.Duration, error) {
	v := c.QueryParam("timeout")
	field := "timeout"
	if v == "" {
		v, field = c.Request().Header.Get("Flotilla-Timeout"), "Flotilla-Timeout"
	}
	if v == "" {
		return r.Timeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, rest.NewError(http.StatusBadRequest, "invalid_field", field, fmt.Sprintf("%s: %q is not a positive Go duration such as 2s", field, v))
	}
	if d > r.MaxTimeout {
		return 0, rest.NewError(http.StatusBadRequest, "invalid_field", field, fmt.Sprintf("%s: %s exceeds the maximum of %s (api.exec_timeout_max)", field, d, r.MaxTimeout))
	}
	return d, nil
}
