package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// Operator is what the dead-letter endpoints need.
type Operator interface {
	Dead(ctx context.Context, limit int) ([]wire.DeadLetter, error)
	Requeue(ctx context.Context, seq uint64) (client.Result, error)
	DeleteDead(ctx context.Context, seq uint64) error
	// RetryTask requeues the dead letter of a FAILURE task by its id.
	RetryTask(ctx context.Context, id string) (client.Result, error)
}

// maxBulk bounds the sequences of one bulk dead-letter request.
const maxBulk = 1000

// BulkSeqs is the body of POST /api/v1/dead/requeue and /dead/delete.
type BulkSeqs struct {
	Seqs []uint64 `json:"seqs"`
}

// BulkResult answers a bulk dead-letter request: how many succeeded, and
// why the others did not.
type BulkResult struct {
	Done   int          `json:"done"`
	Failed []BulkFailed `json:"failed"`
}

// BulkFailed is one sequence of a bulk request that failed.
type BulkFailed struct {
	Seq   uint64 `json:"seq"`
	Code  string `json:"code"`
	Error string `json:"error"`
}

// OperatorRoutes mounts GET /api/v1/dead,
// POST /api/v1/dead/:seq/requeue (operator) and DELETE /api/v1/dead/:seq
// (admin).
type OperatorRoutes struct {
	Op    Operator
	Guard rest.Guard
}

// Mount adds the routes to g (the /api/v1 group).
func (r OperatorRoutes) Mount(g *echo.Group) {
	viewer := r.Guard.Use("", store.RoleViewer)
	g.GET("/dead", func(c echo.Context) error {
		limit := 50
		if v := c.QueryParam("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				return rest.NewError(http.StatusBadRequest, "invalid_field", "limit", fmt.Sprintf("limit: %q is not a number from 1 to 1000", v))
			}
			limit = n
		}
		ds, err := r.Op.Dead(c.Request().Context(), limit)
		if err != nil {
			return err
		}
		out := make([]deadJSON, 0, len(ds))
		for _, d := range ds {
			out = append(out, deadJSON{DeadLetter: d, Args: rawOrString(d.Args)})
		}
		return c.JSON(http.StatusOK, map[string]any{"dead": out})
	}, viewer...)
	g.POST("/dead/:seq/requeue", func(c echo.Context) error {
		seq, err := seqParam(c)
		if err != nil {
			return err
		}
		res, err := r.Op.Requeue(c.Request().Context(), seq)
		if err != nil {
			return deadErr(err)
		}
		return c.JSON(http.StatusAccepted, res)
	}, r.Guard.Use("dead.requeue", store.RoleOperator)...)
	g.DELETE("/dead/:seq", func(c echo.Context) error {
		seq, err := seqParam(c)
		if err != nil {
			return err
		}
		if err := r.Op.DeleteDead(c.Request().Context(), seq); err != nil {
			return deadErr(err)
		}
		return c.NoContent(http.StatusNoContent)
	}, r.Guard.Use("dead.delete", store.RoleAdmin)...)
	bulk := func(op func(ctx context.Context, seq uint64) error) echo.HandlerFunc {
		return func(c echo.Context) error {
			var b BulkSeqs
			if err := rest.BindStrict(c, 1<<20, &b); err != nil {
				return err
			}
			if len(b.Seqs) == 0 || len(b.Seqs) > maxBulk {
				return rest.NewError(http.StatusBadRequest, "invalid_field", "seqs", fmt.Sprintf("seqs: give 1 to %d dead-letter sequences", maxBulk))
			}
			c.Set(auth.TargetKey, fmt.Sprintf("%d letters", len(b.Seqs)))
			out := BulkResult{Failed: []BulkFailed{}}
			for _, seq := range b.Seqs {
				if err := op(c.Request().Context(), seq); err != nil {
					he := rest.Translate(deadErr(err))
					if he.Status == http.StatusServiceUnavailable {
						return err // a dependency is down: stop, say so
					}
					out.Failed = append(out.Failed, BulkFailed{Seq: seq, Code: he.Body.Code, Error: he.Body.Error})
					continue
				}
				out.Done++
			}
			return c.JSON(http.StatusOK, out)
		}
	}
	g.POST("/dead/requeue", bulk(func(ctx context.Context, seq uint64) error {
		_, err := r.Op.Requeue(ctx, seq)
		return err
	}), r.Guard.Use("dead.requeue_bulk", store.RoleOperator)...)
	g.POST("/dead/delete", bulk(r.Op.DeleteDead), r.Guard.Use("dead.delete_bulk", store.RoleAdmin)...)
	g.POST("/tasks/:id/retry", func(c echo.Context) error {
		res, err := r.Op.RetryTask(c.Request().Context(), c.Param("id"))
		switch {
		case errors.Is(err, results.ErrNotFound):
			return rest.NewError(http.StatusNotFound, "not_found", "id", err.Error())
		case errors.Is(err, client.ErrNotFailed):
			return rest.NewError(http.StatusConflict, "not_failed", "id", err.Error())
		case errors.Is(err, jet.ErrDeadNotFound):
			return rest.NewError(http.StatusNotFound, "no_dead_letter", "id", err.Error())
		case err != nil:
			return err
		}
		return c.JSON(http.StatusAccepted, res)
	}, r.Guard.Use("task.retry", store.RoleOperator)...)
}

type deadJSON struct {
	wire.DeadLetter
	Args any `json:"args"`
}

// rawOrString shows valid JSON args as JSON and anything else (the reason a
// message may be dead) as a string.
func rawOrString(b []byte) any {
	if task.IsJSONObject(b) {
		return json.RawMessage(b)
	}
	return string(b)
}

func seqParam(c echo.Context) (uint64, error) {
	seq, err := strconv.ParseUint(c.Param("seq"), 10, 64)
	if err != nil || seq == 0 {
		return 0, rest.NewError(http.StatusBadRequest, "invalid_field", "seq", fmt.Sprintf("seq: %q is not a DEAD stream sequence number", c.Param("seq")))
	}
	return seq, nil
}

func deadErr(err error) error {
	if errors.Is(err, jet.ErrDeadNotFound) {
		return rest.NewError(http.StatusNotFound, "not_found", "seq", err.Error())
	}
	return err
}
