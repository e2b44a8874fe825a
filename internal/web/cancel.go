package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/revoke"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
)

// Canceller cancels tasks (implemented by [revoke.Canceller]).
type Canceller interface {
	Cancel(ctx context.Context, id, by string) (revoke.Outcome, error)
	CancelMatching(ctx context.Context, f revoke.Filter, by string) (int, error)
}

// CancelRoutes serves, to operators:
//
//	POST /tasks/{id}/cancel  200 the task's state, CANCELLED; 202 the state STARTED
//	                         with "cancelling": true when a worker runs it (it ends
//	                         CANCELLED within a second); 404 unknown id; 409 finished
//	POST /tasks/cancel       {"task": NAME, "queue": Q} (either or both): 200
//	                         {"cancelled": N}, every matching task pending or delayed now
type CancelRoutes struct {
	Canceller    Canceller
	MaxBodyBytes int64
	Guard        rest.Guard
}

// Mount adds the routes to g (the /api/v1 group).
func (r CancelRoutes) Mount(g *echo.Group) {
	g.POST("/tasks/cancel", r.bulk, r.Guard.Use("task.cancel_bulk", store.RoleOperator)...)
	g.POST("/tasks/:id/cancel", r.one, r.Guard.Use("task.cancel", store.RoleOperator)...)
}

// cancelAnswer is a task's state after a cancel.
type cancelAnswer struct {
	results.State
	// Cancelling: a worker runs the task and has been told.
	Cancelling bool `json:"cancelling,omitempty"`
}

func (r CancelRoutes) one(c echo.Context) error {
	id := c.Param("id")
	out, err := r.Canceller.Cancel(c.Request().Context(), id, auth.Caller(c))
	switch {
	case errors.Is(err, results.ErrNotFound):
		return rest.NewError(http.StatusNotFound, "not_found", "id", fmt.Sprintf("task %s not found (unknown, or its state expired)", id))
	case errors.Is(err, revoke.ErrFinished):
		e := rest.NewError(http.StatusConflict, "finished", "id", fmt.Sprintf("task %s already finished (%s): nothing to cancel", id, out.State.State))
		e.Body.ID = id
		return e
	case err != nil:
		return err
	}
	if out.Running {
		return c.JSON(http.StatusAccepted, cancelAnswer{State: out.State, Cancelling: true})
	}
	return c.JSON(http.StatusOK, cancelAnswer{State: out.State})
}

// BulkCancel is the body of POST /api/v1/tasks/cancel.
type BulkCancel struct {
	Task  string `json:"task"`
	Queue string `json:"queue"`
}

func (r CancelRoutes) bulk(c echo.Context) error {
	var b BulkCancel
	if err := rest.BindStrict(c, r.MaxBodyBytes, &b); err != nil {
		return err
	}
	c.Set(auth.TargetKey, fmt.Sprintf("task=%s queue=%s", b.Task, b.Queue))
	if b.Task == "" && b.Queue == "" {
		return rest.NewError(http.StatusBadRequest, "invalid_field", "task", "task or queue: a bulk cancel needs a task name, a queue, or both")
	}
	if b.Task != "" {
		if err := task.ValidateName(b.Task); err != nil {
			return rest.NewError(http.StatusBadRequest, "invalid_field", "task", "task: "+err.Error())
		}
	}
	if b.Queue != "" {
		if err := task.ValidateQueue(b.Queue); err != nil {
			return rest.NewError(http.StatusBadRequest, "invalid_field", "queue", "queue: "+err.Error())
		}
	}
	n, err := r.Canceller.CancelMatching(c.Request().Context(), revoke.Filter{Task: b.Task, Queue: b.Queue}, auth.Caller(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"cancelled": n, "task": b.Task, "queue": b.Queue})
}
