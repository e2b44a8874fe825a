package web_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
)

// TestWorkflowRoutes: POST /api/v1/workflows, GET /api/v1/workflows/{id},
// GET /api/v1/groups/{id} and cancel, with their refusals.
func TestWorkflowRoutes(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	b := a.browser()
	op, viewer := "Bearer "+a.token[store.RoleOperator], "Bearer "+a.token[store.RoleViewer]
	a.startWorker("w1")

	for _, c := range []struct {
		method, path, body, auth string
		want                     int
		code, field              string
	}{
		{http.MethodPost, "/api/v1/workflows", `{"chain":[{"task":"sys.ping"}]}`, viewer, http.StatusForbidden, "forbidden", ""},
		{http.MethodPost, "/api/v1/workflows", `{"chain":[{"task":"sys.ping"},{"task":"Bad"}]}`, op, http.StatusBadRequest, "invalid_field", "chain[1].task"},
		{http.MethodPost, "/api/v1/workflows", `{"task":"sys.ping"}`, op, http.StatusBadRequest, "invalid_field", "workflow"},
		{http.MethodPost, "/api/v1/workflows", `{"chain":[{"task":"sys.ping"},{"group":[{"task":"sys.ping"},{"task":"no.such"}]}]}`, op, http.StatusBadRequest, "invalid_field", "chain[1].group[1].task"},
		{http.MethodGet, "/api/v1/workflows/nope", "", viewer, http.StatusNotFound, "not_found", "id"},
		{http.MethodGet, "/api/v1/groups/nope", "", viewer, http.StatusNotFound, "not_found", "id"},
		{http.MethodPost, "/api/v1/workflows/nope/cancel", "", op, http.StatusNotFound, "not_found", "id"},
	} {
		code, out, _ := b.do(c.method, c.path, c.body, c.auth)
		require.Equal(t, c.want, code, "%s %s: %v", c.method, c.path, out)
		require.Equal(t, c.code, out["code"], "%s %s: %v", c.method, c.path, out)
		if c.field != "" {
			require.Equal(t, c.field, out["field"], "%s %s: %v", c.method, c.path, out)
		}
	}

	var members []string
	for i := range 10 {
		members = append(members, fmt.Sprintf(`{"task":"sys.echo","args":{"i":%d}}`, i))
	}
	code, out, _ := b.do(http.MethodPost, "/api/v1/workflows",
		`{"chord":{"group":[`+strings.Join(members, ",")+`],"callback":{"task":"sys.echo","args":{"done":true}}}}`, op)
	require.Equal(t, http.StatusAccepted, code, out)
	id := out["id"].(string)
	require.Eventually(t, func() bool {
		_, out, _ = b.do(http.MethodGet, "/api/v1/workflows/"+id, "", viewer)
		return out["state"] != "RUNNING"
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, task.StateSuccess, out["state"], out)
	res := out["result"].(map[string]any)
	require.Equal(t, true, res["done"])
	require.Len(t, res["results"], 10)
	require.Equal(t, map[string]any{"i": float64(3)}, res["results"].([]any)[3])

	code, g, _ := b.do(http.MethodGet, "/api/v1/groups/"+id, "", viewer)
	require.Equal(t, http.StatusOK, code, g)
	require.Equal(t, float64(10), g["succeeded"])
	require.Equal(t, "chord", g["kind"])

	code, out, _ = b.do(http.MethodPost, "/api/v1/workflows/"+id+"/cancel", "", op)
	require.Equal(t, http.StatusConflict, code, out)
	require.Equal(t, "finished", out["code"])
}
