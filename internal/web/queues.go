package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/queues"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/revoke"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/wire"
)

// Queues reads and steers the queues (implemented by [queues.Service]).
type Queues interface {
	List(ctx context.Context) ([]queues.Stats, error)
	Get(ctx context.Context, q string) (queues.Stats, error)
	Pause(ctx context.Context, q string, until time.Time) (queues.Stats, error)
	Resume(ctx context.Context, q string) (queues.Stats, error)
}

// Workers lists the live workers (see package fleet).
type Workers interface {
	List(ctx context.Context) ([]wire.WorkerInfo, error)
	Get(ctx context.Context, id string) (wire.WorkerInfo, error)
}

// QueueRoutes serves the queues and the workers:
//
//	GET  /queues                  {"queues": [stats…]} (viewer)
//	GET  /queues/{q}              one queue's stats; 404 unknown queue
//	POST /queues/{q}/pause        optional {"until": RFC 3339}: nothing is delivered until then or
//	                              until resumed (operator); 400 for an until in the past
//	POST /queues/{q}/resume       (operator)
//	POST /queues/{q}/purge?confirm={q}
//	                              cancels every pending and delayed task of the queue:
//	                              {"purged": N}; 400 without the confirmation (operator)
//	GET  /workers                 {"items": [worker…]} (viewer)
//	GET  /workers/{id}            one worker; 404 when it is not announced
type QueueRoutes struct {
	Queues       Queues
	Workers      Workers
	Canceller    Canceller // purge; nil = no purge route
	MaxBodyBytes int64
	Guard        rest.Guard
	Now          func() time.Time
}

// Mount adds the routes to g (the /api/v1 group).
func (r QueueRoutes) Mount(g *echo.Group) {
	if r.Now == nil {
		r.Now = time.Now
	}
	viewer := r.Guard.Use("", store.RoleViewer)
	g.GET("/queues", r.list, viewer...)
	g.GET("/queues/:queue", r.get, viewer...)
	g.POST("/queues/:queue/pause", r.pause, r.Guard.Use("queue.pause", store.RoleOperator)...)
	g.POST("/queues/:queue/resume", r.resume, r.Guard.Use("queue.resume", store.RoleOperator)...)
	if r.Canceller != nil {
		g.POST("/queues/:queue/purge", r.purge, r.Guard.Use("queue.purge", store.RoleOperator)...)
	}
	if r.Workers != nil {
		g.GET("/workers", r.workers, viewer...)
		g.GET("/workers/:id", r.worker, viewer...)
	}
}

func queueErr(err error) error {
	if errors.Is(err, queues.ErrUnknownQueue) {
		return rest.NewError(http.StatusNotFound, "unknown_queue", "queue", err.Error())
	}
	return err
}

func (r QueueRoutes) list(c echo.Context) error {
	qs, err := r.Queues.List(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"queues": qs})
}

func (r QueueRoutes) get(c echo.Context) error {
	st, err := r.Queues.Get(c.Request().Context(), c.Param("queue"))
	if err != nil {
		return queueErr(err)
	}
	return c.JSON(http.StatusOK, st)
}

// PauseBody is the optional body of POST /api/v1/queues/{q}/pause.
type PauseBody struct {
	// Until is an RFC 3339 time; empty = until resumed.
	Until string `json:"until"`
}

func (r QueueRoutes) pause(c echo.Context) error {
	var b PauseBody
	if err := rest.BindStrict(c, r.MaxBodyBytes, &b); err != nil {
		return err
	}
	var until time.Time
	if b.Until != "" {
		t, err := time.Parse(time.RFC3339, b.Until)
		if err != nil {
			return rest.NewError(http.StatusBadRequest, "invalid_field", "until", fmt.Sprintf("until: %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", b.Until))
		}
		if !t.After(r.Now()) {
			return rest.NewError(http.StatusBadRequest, "invalid_field", "until", fmt.Sprintf("until: %s is not in the future", b.Until))
		}
		until = t
	}
	st, err := r.Queues.Pause(c.Request().Context(), c.Param("queue"), until)
	if err != nil {
		return queueErr(err)
	}
	return c.JSON(http.StatusOK, st)
}

func (r QueueRoutes) resume(c echo.Context) error {
	st, err := r.Queues.Resume(c.Request().Context(), c.Param("queue"))
	if err != nil {
		return queueErr(err)
	}
	return c.JSON(http.StatusOK, st)
}

func (r QueueRoutes) purge(c echo.Context) error {
	q := c.Param("queue")
	if c.QueryParam("confirm") != q {
		return rest.NewError(http.StatusBadRequest, "confirmation_required", "confirm",
			fmt.Sprintf("purging cancels every waiting task of queue %s: repeat the queue's name in ?confirm=%s", q, q))
	}
	if _, err := r.Queues.Get(c.Request().Context(), q); err != nil {
		return queueErr(err)
	}
	n, err := r.Canceller.CancelMatching(c.Request().Context(), revoke.Filter{Queue: q}, auth.Caller(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"queue": q, "purged": n})
}

func (r QueueRoutes) workers(c echo.Context) error {
	ws, err := r.Workers.List(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": ws})
}

func (r QueueRoutes) worker(c echo.Context) error {
	w, err := r.Workers.Get(c.Request().Context(), c.Param("id"))
	if errors.Is(err, fleet.ErrUnknownWorker) {
		return rest.NewError(http.StatusNotFound, "not_found", "id", err.Error())
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, w)
}
