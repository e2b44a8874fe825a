package web

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/workflow"
)

// WorkflowRoutes serves workflows (chains, groups, chords):
//
//	POST /workflows              (operator) a definition → 202 {"id", "state": "RUNNING"}
//	GET  /workflows/{id}         (viewer)   the workflow and every step's state
//	POST /workflows/{id}/cancel  (operator) no further step starts; waiting tasks are cancelled
//	GET  /groups/{id}            (viewer)   a group or chord read as one
type WorkflowRoutes struct {
	Engine       *workflow.Engine
	MaxBodyBytes int64
	Guard        rest.Guard
}

// Mount adds the routes to g (the /api/v1 group).
func (r WorkflowRoutes) Mount(g *echo.Group) {
	g.POST("/workflows", r.start, r.Guard.Use("", store.RoleOperator)...)
	g.GET("/workflows/:id", r.get, r.Guard.Use("", store.RoleViewer)...)
	g.POST("/workflows/:id/cancel", r.cancel, r.Guard.Use("workflow.cancel", store.RoleOperator)...)
	g.GET("/groups/:id", r.group, r.Guard.Use("", store.RoleViewer)...)
}

func (r WorkflowRoutes) start(c echo.Context) error {
	b, err := rest.ReadBody(c, r.MaxBodyBytes)
	if err != nil {
		return err
	}
	def, err := workflow.Parse(b)
	if err != nil {
		return err
	}
	id, err := r.Engine.Start(c.Request().Context(), def, workflow.StartOptions{Origin: wire.OriginWeb})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, map[string]string{"id": id, "state": workflow.StateRunning})
}

func (r WorkflowRoutes) get(c echo.Context) error {
	st, err := r.Engine.Get(c.Request().Context(), c.Param("id"))
	if err != nil {
		return workflowError(err, c.Param("id"))
	}
	return c.JSON(http.StatusOK, st)
}

func (r WorkflowRoutes) group(c echo.Context) error {
	g, err := r.Engine.Group(c.Request().Context(), c.Param("id"))
	if err != nil {
		return workflowError(err, c.Param("id"))
	}
	return c.JSON(http.StatusOK, g)
}

func (r WorkflowRoutes) cancel(c echo.Context) error {
	id := c.Param("id")
	n, err := r.Engine.Cancel(c.Request().Context(), id, auth.Caller(c))
	if err != nil {
		return workflowError(err, id)
	}
	return c.JSON(http.StatusOK, map[string]any{"id": id, "state": "CANCELLED", "cancelled_tasks": n})
}

func workflowError(err error, id string) error {
	switch {
	case errors.Is(err, workflow.ErrNotFound):
		return rest.NewError(http.StatusNotFound, "not_found", "id", fmt.Sprintf("%s: no such workflow or group (unknown, or expired)", id))
	case errors.Is(err, workflow.ErrFinished):
		return rest.NewError(http.StatusConflict, "finished", "id", err.Error())
	}
	return err
}
