package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// ScheduleStore is what the schedule endpoints need from PostgreSQL
// (implemented by [store.Store]).
type ScheduleStore interface {
	ScheduleList(ctx context.Context) ([]schedule.Schedule, error)
	ScheduleGet(ctx context.Context, name string) (schedule.Schedule, error)
	ScheduleCreate(ctx context.Context, sc schedule.Schedule) (schedule.Schedule, error)
	ScheduleReplace(ctx context.Context, sc schedule.Schedule) (schedule.Schedule, error)
	ScheduleDelete(ctx context.Context, name string) error
	ScheduleSetEnabled(ctx context.Context, name string, enabled bool) (schedule.Schedule, error)
}

// ScheduleRoutes serves the schedules of the beat role under /api/v1:
//
//	GET    /schedules              200 {"schedules": [...]}, ordered by name
//	POST   /schedules              201 the schedule (Location: /api/v1/schedules/{name}); 409 if the name exists
//	GET    /schedules/{name}       200 the schedule
//	PUT    /schedules/{name}       200: replaces the whole definition (absent fields take their defaults)
//	PATCH  /schedules/{name}       200: changes only the fields present (null clears a field)
//	DELETE /schedules/{name}       204
//	POST   /schedules/{name}/run   202 {"id", "state"}: enqueues the schedule's task now
//
// Bodies are the JSON of [schedule.Schedule], decoded strictly: an unknown
// field or a value of the wrong type is a 400 naming the field, and so is
// every validation error (the first field is named, the message lists
// all). "enabled" defaults to true when absent from a POST or PUT. The
// read-only fields (last_run_at, run_count, next_run_at, source,
// created_at, updated_at) are accepted and ignored, so a schedule read
// with GET can be edited and PUT back as is. A task name the binary has no
// handler for is a 404 when CheckRegistered is set. A schedule declared in
// code answers 409 to DELETE and to any change but enabled. Responses
// carry next_run_at for enabled schedules.
//
// A run through /run is not a tick: it does not touch last_run_at or
// run_count, and it works for disabled schedules too. Its task carries
// Flotilla-Origin beat/<name> like the ticks.
type ScheduleRoutes struct {
	Store  ScheduleStore
	Client rest.Enqueuer
	// Registry, with CheckRegistered, rejects schedules of tasks that have
	// no handler, and gives a schedule without a queue its task's queue.
	Registry        *task.Registry
	CheckRegistered bool
	// MaxBodyBytes limits request bodies.
	MaxBodyBytes int64
	// Now is the clock of next_run_at. Default time.Now.
	Now func() time.Time
	// Guard decides who may read (viewer) and change (operator).
	Guard rest.Guard
}

// Mount adds the routes to g (the /api/v1 group).
func (r ScheduleRoutes) Mount(g *echo.Group) {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.MaxBodyBytes <= 0 {
		r.MaxBodyBytes = 1 << 20
	}
	viewer := r.Guard.Use("", store.RoleViewer)
	g.GET("/schedules", r.list, viewer...)
	g.POST("/schedules", r.create, r.Guard.Use("schedule.create", store.RoleOperator)...)
	g.GET("/schedules/:name", r.get, viewer...)
	g.PUT("/schedules/:name", r.replace, r.Guard.Use("schedule.replace", store.RoleOperator)...)
	g.PATCH("/schedules/:name", r.patch, r.Guard.Use("schedule.update", store.RoleOperator)...)
	g.DELETE("/schedules/:name", r.delete, r.Guard.Use("schedule.delete", store.RoleOperator)...)
	g.POST("/schedules/:name/run", r.run, r.Guard.Use("schedule.run", store.RoleOperator)...)
}

func (r ScheduleRoutes) list(c echo.Context) error {
	scs, err := r.Store.ScheduleList(c.Request().Context())
	if err != nil {
		return scheduleError(err)
	}
	now := r.Now()
	for i := range scs {
		scs[i] = WithNextRun(scs[i], now)
	}
	return c.JSON(http.StatusOK, map[string]any{"schedules": scs})
}

func (r ScheduleRoutes) get(c echo.Context) error {
	sc, err := r.Store.ScheduleGet(c.Request().Context(), c.Param("name"))
	if err != nil {
		return scheduleError(err)
	}
	return c.JSON(http.StatusOK, WithNextRun(sc, r.Now()))
}

func (r ScheduleRoutes) create(c echo.Context) error {
	sc := schedule.Schedule{Enabled: true}
	if _, err := r.decode(c, &sc); err != nil {
		return err
	}
	if sc.Name == "" {
		return rest.NewError(http.StatusBadRequest, "invalid_field", "name", "name: required")
	}
	c.Set(auth.TargetKey, sc.Name)
	if err := r.check(&sc); err != nil {
		return err
	}
	out, err := r.Store.ScheduleCreate(c.Request().Context(), sc)
	if err != nil {
		return scheduleError(err)
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/schedules/"+out.Name)
	return c.JSON(http.StatusCreated, WithNextRun(out, r.Now()))
}

func (r ScheduleRoutes) replace(c echo.Context) error {
	name := c.Param("name")
	sc := schedule.Schedule{Enabled: true}
	if _, err := r.decode(c, &sc); err != nil {
		return err
	}
	if err := sameName(name, &sc); err != nil {
		return err
	}
	if err := r.check(&sc); err != nil {
		return err
	}
	out, err := r.Store.ScheduleReplace(c.Request().Context(), sc)
	if err != nil {
		return scheduleError(err)
	}
	return c.JSON(http.StatusOK, WithNextRun(out, r.Now()))
}

func (r ScheduleRoutes) patch(c echo.Context) error {
	ctx := c.Request().Context()
	name := c.Param("name")
	sc, err := r.Store.ScheduleGet(ctx, name)
	if err != nil {
		return scheduleError(err)
	}
	present, err := r.decode(c, &sc)
	if err != nil {
		return err
	}
	if err := sameName(name, &sc); err != nil {
		return err
	}
	delete(present, "name")
	var out schedule.Schedule
	if len(present) == 1 && present["enabled"] {
		// Enabling and disabling work for code schedules too and need no
		// validation of the rest.
		out, err = r.Store.ScheduleSetEnabled(ctx, name, sc.Enabled)
	} else {
		if err := r.check(&sc); err != nil {
			return err
		}
		out, err = r.Store.ScheduleReplace(ctx, sc)
	}
	if err != nil {
		return scheduleError(err)
	}
	return c.JSON(http.StatusOK, WithNextRun(out, r.Now()))
}

func (r ScheduleRoutes) delete(c echo.Context) error {
	if err := r.Store.ScheduleDelete(c.Request().Context(), c.Param("name")); err != nil {
		return scheduleError(err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (r ScheduleRoutes) run(c echo.Context) error {
	ctx := c.Request().Context()
	sc, err := r.Store.ScheduleGet(ctx, c.Param("name"))
	if err != nil {
		return scheduleError(err)
	}
	res, err := r.Client.Enqueue(ctx, client.Request{
		Task: sc.Task, Queue: sc.Queue, Args: sc.Args, Origin: wire.OriginBeat(sc.Name),
		Traceparent: c.Request().Header.Get("traceparent"),
	})
	if err != nil {
		return err // rest.Translate names the cause
	}
	return c.JSON(http.StatusAccepted, res)
}

// check fills defaults (the task's registered queue first), validates sc
// and checks that its task is registered.
func (r ScheduleRoutes) check(sc *schedule.Schedule) error {
	if r.Registry != nil {
		def, err := r.Registry.Lookup(sc.Task)
		switch {
		case err == nil && sc.Queue == "":
			sc.Queue = def.Options.Queue
		case err != nil && r.CheckRegistered && task.ValidateName(sc.Task) == nil:
			return err // 404 unknown_task
		}
	}
	sc.Normalize()
	return validationError(sc.Validate())
}

func sameName(name string, sc *schedule.Schedule) error {
	if sc.Name != "" && sc.Name != name {
		return rest.NewError(http.StatusBadRequest, "invalid_field", "name",
			fmt.Sprintf("name: %q in the body differs from %q in the path (schedules cannot be renamed)", sc.Name, name))
	}
	sc.Name = name
	return nil
}

// WithNextRun sets sc.NextRunAt to its first fire after now when sc is
// enabled and fires again; otherwise to nil.
func WithNextRun(sc schedule.Schedule, now time.Time) schedule.Schedule {
	sc.NextRunAt = nil
	if !sc.Enabled {
		return sc
	}
	c, err := schedule.Compile(sc)
	if err != nil {
		return sc
	}
	if t, ok := c.Next(now); ok {
		t = t.UTC()
		sc.NextRunAt = &t
	}
	return sc
}

// readOnly are fields of [schedule.Schedule] that bodies may carry (as
// read from GET) but never set.
var readOnly = map[string]bool{
	"last_run_at": true, "run_count": true, "next_run_at": true,
	"source": true, "created_at": true, "updated_at": true,
}

// fields maps the writable JSON fields to sc's.
func fields(sc *schedule.Schedule) map[string]any {
	return map[string]any{
		"name": &sc.Name, "task": &sc.Task, "queue": &sc.Queue, "args": &sc.Args,
		"cron": &sc.Cron, "timezone": &sc.Timezone, "interval": &sc.Interval,
		"start_at": &sc.StartAt, "expires_at": &sc.ExpiresAt, "enabled": &sc.Enabled,
		"one_off": &sc.OneOff, "spread": &sc.Spread, "misfire": &sc.Misfire,
		"catch_up_max": &sc.CatchUpMax, "description": &sc.Description,
	}
}

// decode reads the body and sets the fields it holds on sc, one by one so
// that every error names its field; null sets a field to its zero value.
// It returns the writable fields present.
func (r ScheduleRoutes) decode(c echo.Context, sc *schedule.Schedule) (map[string]bool, error) {
	b, err := rest.ReadBody(c, r.MaxBodyBytes)
	if err != nil {
		return nil, err
	}
	return DecodeSchedule(b, sc)
}

// DecodeSchedule sets the fields of the JSON object b on sc (see
// [ScheduleRoutes] for the rules) and returns the writable fields present.
// Errors are [rest.HTTPError]s naming the field.
func DecodeSchedule(b []byte, sc *schedule.Schedule) (map[string]bool, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return nil, rest.NewError(http.StatusBadRequest, "bad_json", "", "body is empty; want a JSON object")
		case errors.As(err, &te):
			return nil, rest.NewError(http.StatusBadRequest, "bad_json", "", "body: want a JSON object, got JSON "+te.Value)
		default:
			return nil, rest.NewError(http.StatusBadRequest, "bad_json", "", "body is not valid JSON: "+err.Error())
		}
	}
	if raw == nil {
		return nil, rest.NewError(http.StatusBadRequest, "bad_json", "", "body: want a JSON object, got null")
	}
	if dec.More() {
		return nil, rest.NewError(http.StatusBadRequest, "bad_json", "", "body holds more than one JSON value")
	}
	targets := fields(sc)
	present := map[string]bool{}
	// Sorted: the first bad field of a body is always the same one.
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		v := raw[k]
		if readOnly[k] {
			continue
		}
		dst, ok := targets[k]
		if !ok {
			return nil, rest.NewError(http.StatusBadRequest, "unknown_field", k, k+": unknown field")
		}
		present[k] = true
		if strings.TrimSpace(string(v)) == "null" {
			setZero(dst)
			continue
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return nil, rest.NewError(http.StatusBadRequest, "invalid_field", k, k+": "+fieldMsg(dst, err))
		}
	}
	return present, nil
}

func setZero(dst any) {
	switch p := dst.(type) {
	case *string:
		*p = ""
	case *bool:
		*p = false
	case *int:
		*p = 0
	case *schedule.Duration:
		*p = 0
	case **time.Time:
		*p = nil
	case *json.RawMessage:
		*p = nil
	}
}

func fieldMsg(dst any, err error) string {
	switch dst.(type) {
	case *string:
		return "want a string"
	case *bool:
		return "want true or false"
	case *int:
		return "want an integer"
	case **time.Time:
		return "want an RFC 3339 time such as 2026-01-02T15:04:05Z"
	case *schedule.Duration:
		return err.Error() // names the expected format already
	}
	return err.Error()
}

// validationError turns the joined FieldErrors of Validate into a 400
// naming the first field and listing every problem.
func validationError(err error) error {
	if err == nil {
		return nil
	}
	var fe *task.FieldError
	field := ""
	if errors.As(err, &fe) {
		field = fe.Field
	}
	return rest.NewError(http.StatusBadRequest, "invalid_field", field, strings.ReplaceAll(err.Error(), "\n", "; "))
}

// scheduleError maps the store's errors to HTTP errors.
func scheduleError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return rest.NewError(http.StatusNotFound, "not_found", "name", err.Error())
	case errors.Is(err, store.ErrConflict):
		return rest.NewError(http.StatusConflict, "conflict", "name", err.Error())
	case errors.Is(err, store.ErrFromCode):
		return rest.NewError(http.StatusConflict, "from_code", "name", err.Error())
	case errors.Is(err, task.ErrInvalid):
		return validationError(err)
	}
	return err
}
