package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
)

// Enqueuer is what the task endpoints need from the client.
type Enqueuer interface {
	Enqueue(ctx context.Context, r client.Request) (client.Result, error)
	EnqueueBatch(ctx context.Context, rs []client.Request) ([]client.Result, error)
	Get(ctx context.Context, id string) (results.State, error)
	WaitFor(ctx context.Context, id string, d time.Duration) (results.State, error)
	Search(ctx context.Context, q results.Query) (results.Page, error)
}

// MaxWait bounds GET /api/v1/tasks/{id}?wait=.
const MaxWait = time.Minute

// TaskRoutes mounts POST /api/v1/tasks and GET /api/v1/tasks/:id; with
// Search also GET /api/v1/tasks (the task index) and ?wait= on the
// former.
type TaskRoutes struct {
	Client Enqueuer
	// MaxBodyBytes limits the request body.
	MaxBodyBytes int64
	// Origin is recorded on enqueued tasks: "web" or "api".
	Origin string
	Now    func() time.Time
	// Guard decides who may enqueue (operator) and read (viewer).
	Guard Guard
	// Search serves GET /api/v1/tasks and ?wait= (web: it follows the
	// final events).
	Search bool
}

// Mount adds the routes to g (the /api/v1 group).
func (r TaskRoutes) Mount(g *echo.Group) {
	if r.Now == nil {
		r.Now = time.Now
	}
	g.POST("/tasks", r.enqueue, r.Guard.Use("", store.RoleOperator)...)
	g.POST("/tasks/batch", r.batch, r.Guard.Use("", store.RoleOperator)...)
	g.GET("/tasks/:id", r.get, r.Guard.Use("", store.RoleViewer)...)
	if r.Search {
		g.GET("/tasks", r.search, r.Guard.Use("", store.RoleViewer)...)
	}
}

// search answers GET /api/v1/tasks?state=&task=&queue=&since=&until=&limit=&cursor=.
func (r TaskRoutes) search(c echo.Context) error {
	q := results.Query{State: c.QueryParam("state"), Task: c.QueryParam("task"), Queue: c.QueryParam("queue"), Cursor: c.QueryParam("cursor")}
	if q.State != "" && !slices.Contains(task.States, q.State) {
		return NewError(http.StatusBadRequest, "invalid_field", "state", fmt.Sprintf("state: %q is not one of %s", q.State, strings.Join(task.States, ", ")))
	}
	if q.Task != "" {
		if err := task.ValidateName(q.Task); err != nil {
			return NewError(http.StatusBadRequest, "invalid_field", "task", "task: "+err.Error())
		}
	}
	if q.Queue != "" {
		if err := task.ValidateQueue(q.Queue); err != nil {
			return NewError(http.StatusBadRequest, "invalid_field", "queue", "queue: "+err.Error())
		}
	}
	for _, f := range []struct {
		name string
		to   *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		v := c.QueryParam(f.name)
		if v == "" {
			continue
		}
		t, err := ParseTimeOrAgo(v, r.Now())
		if err != nil {
			return NewError(http.StatusBadRequest, "invalid_field", f.name, f.name+": "+err.Error())
		}
		*f.to = t
	}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return NewError(http.StatusBadRequest, "invalid_field", "limit", fmt.Sprintf("limit: %q is not a number from 1 to 1000", v))
		}
		q.Limit = n
	}
	page, err := r.Client.Search(c.Request().Context(), q)
	if errors.Is(err, results.ErrBadCursor) {
		return NewError(http.StatusBadRequest, "invalid_field", "cursor", "cursor: not one a previous page returned")
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

// ReadBody reads at most limit bytes of the request body: a larger body is 413.
func ReadBody(c echo.Context, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(c.Request().Body, limit+1))
	if err != nil {
		return nil, NewError(http.StatusBadRequest, "bad_body", "", "read body: "+err.Error())
	}
	if int64(len(b)) > limit {
		return nil, NewError(http.StatusRequestEntityTooLarge, "too_large", "body", fmt.Sprintf("body exceeds the limit of %d bytes (tasks.max_body_bytes)", limit))
	}
	return b, nil
}

func (r TaskRoutes) enqueue(c echo.Context) error {
	b, err := ReadBody(c, r.MaxBodyBytes)
	if err != nil {
		return err
	}
	req, err := ParseEnqueue(b, r.Now())
	if err != nil {
		return err
	}
	req.Origin = r.Origin
	req.Traceparent = c.Request().Header.Get("traceparent")
	res, err := r.Client.Enqueue(c.Request().Context(), req)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, res) // a JSONAppender: see JSONSerializer
}

// MaxBatchBodyBytes bounds the body of POST /api/v1/tasks/batch (each
// task's args stay bounded by tasks.max_body_bytes).
const MaxBatchBodyBytes = 32 << 20

// batch answers POST /api/v1/tasks/batch {"tasks": [<enqueue body>, ...]}
// with {"ids": [...]} in order: all stored or none (see
// [client.Client.EnqueueBatch]). An invalid task is a 400 or 422 whose
// field names its index ("tasks[3].queue").
func (r TaskRoutes) batch(c echo.Context) error {
	b, err := ReadBody(c, min(MaxBatchBodyBytes, r.MaxBodyBytes*client.MaxBatch))
	if err != nil {
		return err
	}
	reqs, err := r.parseBatch(b)
	if err != nil {
		return err
	}
	tp := c.Request().Header.Get("traceparent")
	for i := range reqs {
		reqs[i].Origin, reqs[i].Traceparent = r.Origin, tp
	}
	res, err := r.Client.EnqueueBatch(c.Request().Context(), reqs)
	if err != nil {
		return err
	}
	ids := make([]string, len(res))
	for i, x := range res {
		ids[i] = x.ID
	}
	return c.JSON(http.StatusAccepted, map[string][]string{"ids": ids})
}

// parseBatch decodes a batch body into its requests. A body no larger than
// one task may be (so that no task in it is over the limit) is decoded in
// one pass; when that pass fails, or the body is larger, each task is
// decoded on its own, so that an error names the task's index.
func (r TaskRoutes) parseBatch(b []byte) ([]client.Request, error) {
	now := r.Now()
	missing := NewError(http.StatusBadRequest, "invalid_field", "tasks", `tasks: missing; want {"tasks": [<enqueue body>, ...]}`)
	if int64(len(b)) <= r.MaxBodyBytes {
		var body struct {
			Tasks []client.EnqueueBody `json:"tasks"`
		}
		if DecodeStrict(b, &body) == nil {
			if body.Tasks == nil {
				return nil, missing
			}
			reqs := make([]client.Request, len(body.Tasks))
			for i, t := range body.Tasks {
				req, err := t.Request(now)
				if err != nil {
					return nil, &client.ItemError{Index: i, Err: err}
				}
				reqs[i] = req
			}
			return reqs, nil
		}
	}
	var body struct {
		Tasks []json.RawMessage `json:"tasks"`
	}
	if err := DecodeStrict(b, &body); err != nil {
		return nil, err
	}
	if body.Tasks == nil {
		return nil, missing
	}
	reqs := make([]client.Request, len(body.Tasks))
	for i, raw := range body.Tasks {
		if int64(len(raw)) > r.MaxBodyBytes {
			return nil, &client.ItemError{Index: i, Err: NewError(http.StatusRequestEntityTooLarge, "too_large", "",
				fmt.Sprintf("is %d bytes; the limit per task is %d (tasks.max_body_bytes)", len(raw), r.MaxBodyBytes))}
		}
		req, err := ParseEnqueue(raw, now)
		if err != nil {
			return nil, &client.ItemError{Index: i, Err: err}
		}
		reqs[i] = req
	}
	return reqs, nil
}

// ParseEnqueue decodes an enqueue body strictly (an unknown field or a
// value of the wrong type is an error naming the field) and parses it with
// [client.EnqueueBody.Request].
func ParseEnqueue(b []byte, now time.Time) (client.Request, error) {
	var body client.EnqueueBody
	if err := DecodeStrict(b, &body); err != nil {
		return client.Request{}, err
	}
	return body.Request(now)
}

// DecodeStrict decodes the JSON object b into v: an unknown field, a value
// of the wrong type or trailing data is a 400 naming the field.
func DecodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if dec.More() {
		return NewError(http.StatusBadRequest, "bad_json", "", "body holds more than one JSON value")
	}
	return nil
}

// BindStrict reads c's body (at most limit bytes) into v with
// [DecodeStrict]; an empty body leaves v as it is.
func BindStrict(c echo.Context, limit int64, v any) error {
	b, err := ReadBody(c, limit)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return err
	}
	return DecodeStrict(b, v)
}

func bodyError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te) && te.Field == "":
		// The body itself is not an object: there is no field to name.
		return NewError(http.StatusBadRequest, "bad_json", "", "body: want a JSON object, got JSON "+te.Value)
	case errors.As(err, &te):
		return NewError(http.StatusBadRequest, "invalid_field", te.Field, fmt.Sprintf("%s: expected %s, got JSON %s", te.Field, te.Type, te.Value))
	case errors.As(err, &se):
		return NewError(http.StatusBadRequest, "bad_json", "", "body is not valid JSON: "+err.Error())
	case errors.Is(err, io.EOF):
		return NewError(http.StatusBadRequest, "bad_json", "", "body is empty; want a JSON object")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return NewError(http.StatusBadRequest, "unknown_field", f, fmt.Sprintf("%s: unknown field", f))
	default:
		return NewError(http.StatusBadRequest, "bad_json", "", "body: "+err.Error())
	}
}

func (r TaskRoutes) get(c echo.Context) error {
	id := c.Param("id")
	wait, err := waitParam(c, r.Search)
	if err != nil {
		return err
	}
	var st results.State
	if wait > 0 {
		st, err = r.Client.WaitFor(c.Request().Context(), id, wait)
	} else {
		st, err = r.Client.Get(c.Request().Context(), id)
	}
	if errors.Is(err, results.ErrNotFound) {
		return NewError(http.StatusNotFound, "not_found", "id", fmt.Sprintf("task %s not found (unknown, or its state expired)", id))
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

// ParseTimeOrAgo reads an RFC 3339 time, or a Go duration meaning that
// long before now (e.g. "1h").
func ParseTimeOrAgo(v string, now time.Time) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, v)
	if err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration ago such as 1h", v)
	}
	return now.Add(-d), nil
}

// waitParam is the ?wait= of a GET: a Go duration up to [MaxWait]; a 400
// when it is malformed or the role does not wait.
func waitParam(c echo.Context, allowed bool) (time.Duration, error) {
	v := c.QueryParam("wait")
	if v == "" {
		return 0, nil
	}
	if !allowed {
		return 0, NewError(http.StatusBadRequest, "invalid_field", "wait", "wait: not served by this role; use the web role")
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > MaxWait {
		return 0, NewError(http.StatusBadRequest, "invalid_field", "wait", fmt.Sprintf("wait: %q is not a duration from 0s to %s", v, MaxWait))
	}
	return d, nil
}
