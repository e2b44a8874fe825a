package web

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/store"
)

// AuditRoutes serves GET /api/v1/audit to admins: the audit log newest
// first, filtered by ?actor=, ?action=, ?since= (RFC 3339) and paged with
// ?limit= (1-1000, default 100) and ?before= (the id of the last entry of
// the previous page). The answer is {"entries": [...], "next": ID}, next
// absent on the last page.
type AuditRoutes struct {
	Store AuditStore
	Guard rest.Guard
}

// Mount adds the route to g (the /api/v1 group).
func (r AuditRoutes) Mount(g *echo.Group) {
	g.GET("/audit", r.list, r.Guard.Use("", store.RoleAdmin)...)
}

func (r AuditRoutes) list(c echo.Context) error {
	f := store.AuditFilter{Actor: c.QueryParam("actor"), Action: c.QueryParam("action"), Limit: 100}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return rest.NewError(http.StatusBadRequest, "invalid_field", "limit", fmt.Sprintf("limit: %q is not a number from 1 to 1000", v))
		}
		f.Limit = n
	}
	if v := c.QueryParam("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return rest.NewError(http.StatusBadRequest, "invalid_field", "before", fmt.Sprintf("before: %q is not an entry id", v))
		}
		f.BeforeID = n
	}
	if v := c.QueryParam("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return rest.NewError(http.StatusBadRequest, "invalid_field", "since", fmt.Sprintf("since: %q is not an RFC 3339 time", v))
		}
		f.Since = t
	}
	es, err := r.Store.AuditList(c.Request().Context(), f)
	if err != nil {
		return err
	}
	out := map[string]any{"entries": es}
	if es == nil {
		out["entries"] = []store.AuditEntry{}
	}
	if len(es) == f.Limit {
		out["next"] = es[len(es)-1].ID
	}
	return c.JSON(http.StatusOK, out)
}
