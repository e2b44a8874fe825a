package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/worker"
	"github.com/flotilla/flotilla/internal/workflow"
)

// startWorker runs a worker named name on queue default until the test
// ends or stop is called.
func (a *accounts) startWorker(name string) (stop func()) {
	t := a.t
	nc, js := jettest.Connect(t, a.natsURL)
	eng := workflow.New(a.rs, client.New(nc, js, a.rs, client.Config{Registry: a.reg}), nil)
	w := worker.New(nc, js, a.reg, a.rs, zerolog.Nop(), worker.Config{
		Queues: []string{"default"}, Concurrency: 4, Name: name, Events: wire.EventsAll, Version: "test",
		ShutdownTimeout: 5 * time.Second, Workflows: eng, Middleware: []task.Middleware{workflow.Middleware(eng)},
	})
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			require.NoError(t, <-done)
		}
	}
	t.Cleanup(stop)
	return stop
}

// enqueue sends body with auth and returns the task id.
func (b *browser) enqueue(body, auth string) string {
	t := b.a.t
	t.Helper()
	code, out, _ := b.do(http.MethodPost, "/api/v1/tasks", body, auth)
	require.Equal(t, http.StatusAccepted, code, out)
	return out["id"].(string)
}

// TestControlPlane: queues (stats, pause, resume, purge), cancel and
// workers over HTTP, with every refusal: 400, 401, 403, 404, 409.
func TestControlPlane(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	b := a.browser()
	op, viewer := "Bearer "+a.token[store.RoleOperator], "Bearer "+a.token[store.RoleViewer]
	enqueue := func(body string) string { return b.enqueue(body, op) }
	state := func(id string) string {
		t.Helper()
		code, out, _ := b.do(http.MethodGet, "/api/v1/tasks/"+id, "", viewer)
		require.Equal(t, http.StatusOK, code, out)
		return out["state"].(string)
	}

	// Refusals first: anonymous, viewer, bad input, unknown names.
	for _, c := range []struct {
		method, path, body, auth string
		want                     int
		code                     string
	}{
		{http.MethodGet, "/api/v1/queues", "", "", http.StatusUnauthorized, "unauthorized"},
		{http.MethodGet, "/api/v1/workers", "", "", http.StatusUnauthorized, "unauthorized"},
		{http.MethodPost, "/api/v1/tasks/x/cancel", "", "", http.StatusUnauthorized, "unauthorized"},
		{http.MethodPost, "/api/v1/tasks/x/cancel", "", viewer, http.StatusForbidden, "forbidden"},
		{http.MethodPost, "/api/v1/tasks/cancel", `{"task":"sys.echo"}`, viewer, http.StatusForbidden, "forbidden"},
		{http.MethodPost, "/api/v1/queues/default/pause", "", viewer, http.StatusForbidden, "forbidden"},
		{http.MethodPost, "/api/v1/queues/default/purge?confirm=default", "", viewer, http.StatusForbidden, "forbidden"},
		{http.MethodPost, "/api/v1/tasks/nope/cancel", "", op, http.StatusNotFound, "not_found"},
		{http.MethodPost, "/api/v1/tasks/cancel", `{}`, op, http.StatusBadRequest, "invalid_field"},
		{http.MethodPost, "/api/v1/tasks/cancel", `{"task":"Bad Name"}`, op, http.StatusBadRequest, "invalid_field"},
		{http.MethodPost, "/api/v1/tasks/cancel", `{"tsk":"sys.echo"}`, op, http.StatusBadRequest, "unknown_field"},
		{http.MethodGet, "/api/v1/queues/nope", "", viewer, http.StatusNotFound, "unknown_queue"},
		{http.MethodPost, "/api/v1/queues/nope/pause", "", op, http.StatusNotFound, "unknown_queue"},
		{http.MethodPost, "/api/v1/queues/nope/resume", "", op, http.StatusNotFound, "unknown_queue"},
		{http.MethodPost, "/api/v1/queues/default/pause", `{"until":"2001-01-01T00:00:00Z"}`, op, http.StatusBadRequest, "invalid_field"},
		{http.MethodPost, "/api/v1/queues/default/pause", `{"until":"soon"}`, op, http.StatusBadRequest, "invalid_field"},
		{http.MethodPost, "/api/v1/queues/default/purge", "", op, http.StatusBadRequest, "confirmation_required"},
		{http.MethodPost, "/api/v1/queues/default/purge?confirm=other", "", op, http.StatusBadRequest, "confirmation_required"},
		{http.MethodPost, "/api/v1/queues/nope/purge?confirm=nope", "", op, http.StatusNotFound, "unknown_queue"},
		{http.MethodGet, "/api/v1/workers/nope", "", viewer, http.StatusNotFound, "not_found"},
	} {
		code, out, _ := b.do(c.method, c.path, c.body, c.auth)
		require.Equal(t, c.want, code, "%s %s %s: %v", c.auth, c.method, c.path, out)
		require.Equal(t, c.code, out["code"], "%s %s: %v", c.method, c.path, out)
	}

	// Pause: a paused queue runs nothing while tasks are enqueued, then
	// drains after resume.
	code, out, _ := b.do(http.MethodPost, "/api/v1/queues/default/pause", "", op)
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, true, out["paused"])
	require.Nil(t, out["paused_until"], "paused until resumed")
	a.startWorker("w1")
	var ids []string
	for range 20 {
		ids = append(ids, enqueue(`{"task":"sys.echo","args":{"x":1}}`))
	}
	time.Sleep(5 * time.Second)
	code, out, _ = b.do(http.MethodGet, "/api/v1/queues/default", "", viewer)
	require.Equal(t, http.StatusOK, code)
	require.EqualValues(t, 20, out["pending"], "nothing ran while paused: %v", out)
	require.NotNil(t, out["oldest_age_s"])
	for _, id := range ids {
		require.Equal(t, task.StatePending, state(id))
	}
	code, out, _ = b.do(http.MethodPost, "/api/v1/queues/default/resume", "", op)
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, false, out["paused"])
	require.Eventually(t, func() bool {
		for _, id := range ids {
			if state(id) != task.StateSuccess {
				return false
			}
		}
		return true
	}, 15*time.Second, 50*time.Millisecond, "the queue drains after resume")

	// A pause with an end.
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	code, out, _ = b.do(http.MethodPost, "/api/v1/queues/default/pause", `{"until":"`+until.Format(time.RFC3339)+`"}`, op)
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, until.Format(time.RFC3339), out["paused_until"])

	// Cancel while paused: one by id, then the rest by name; a finished
	// task is a 409.
	waiting := []string{enqueue(`{"task":"sys.sleep","args":{"ms":1}}`), enqueue(`{"task":"sys.sleep","args":{"ms":2}}`), enqueue(`{"task":"sys.sleep","args":{"ms":3}}`)}
	code, out, _ = b.do(http.MethodPost, "/api/v1/tasks/"+waiting[0]+"/cancel", "", op)
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, task.StateCancelled, out["state"])
	code, out, _ = b.do(http.MethodPost, "/api/v1/tasks/"+waiting[0]+"/cancel", "", op)
	require.Equal(t, http.StatusConflict, code)
	require.Equal(t, "finished", out["code"])
	code, _, _ = b.do(http.MethodPost, "/api/v1/tasks/"+ids[0]+"/cancel", "", op)
	require.Equal(t, http.StatusConflict, code, "SUCCESS is final")
	code, out, _ = b.do(http.MethodPost, "/api/v1/tasks/cancel", `{"task":"sys.sleep","queue":"default"}`, op)
	require.Equal(t, http.StatusOK, code, out)
	require.EqualValues(t, 3, out["cancelled"], "the one cancelled by id is still queued: the worker drops it")
	for _, id := range waiting {
		require.Equal(t, task.StateCancelled, state(id))
	}

	// Purge needs the confirmation and cancels what waits.
	enqueue(`{"task":"sys.echo"}`)
	enqueue(`{"task":"sys.echo","countdown":"1h"}`)
	code, out, _ = b.do(http.MethodGet, "/api/v1/queues/default", "", viewer)
	require.Equal(t, http.StatusOK, code)
	require.EqualValues(t, 1, out["delayed"])
	code, out, _ = b.do(http.MethodPost, "/api/v1/queues/default/purge?confirm=default", "", op)
	require.Equal(t, http.StatusOK, code, out)
	require.EqualValues(t, 2, out["purged"])
	code, out, _ = b.do(http.MethodGet, "/api/v1/queues/default", "", viewer)
	require.Equal(t, http.StatusOK, code)
	require.EqualValues(t, 0, out["pending"])
	require.EqualValues(t, 0, out["delayed"])

	// Workers: the list names the worker, its queues and what it runs.
	code, out, _ = b.do(http.MethodPost, "/api/v1/queues/default/resume", "", op)
	require.Equal(t, http.StatusOK, code, out)
	running := enqueue(`{"task":"sys.sleep","args":{"ms":60000}}`)
	var w map[string]any
	require.Eventually(t, func() bool {
		code, out, _ := b.do(http.MethodGet, "/api/v1/workers", "", viewer)
		require.Equal(t, http.StatusOK, code)
		items := out["items"].([]any)
		require.Len(t, items, 1)
		w = items[0].(map[string]any)
		rs, _ := w["running"].([]any)
		return len(rs) == 1 && rs[0].(map[string]any)["id"] == running
	}, 10*time.Second, 100*time.Millisecond, "running lists the task")
	require.Equal(t, "w1", w["id"])
	require.Equal(t, []any{"default"}, w["queues"])
	require.EqualValues(t, 4, w["concurrency"])
	require.EqualValues(t, 20, w["processed"], "the 20 echoes ran; cancelled tasks never did")
	for _, k := range []string{"host", "pid", "version", "started_at", "last_seen", "failed"} {
		require.Contains(t, w, k)
	}
	code, out, _ = b.do(http.MethodGet, "/api/v1/workers/w1", "", viewer)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "w1", out["id"])

	// Cancel the running one: 202, then CANCELLED.
	code, out, _ = b.do(http.MethodPost, "/api/v1/tasks/"+running+"/cancel", "", op)
	require.Equal(t, http.StatusAccepted, code, out)
	require.Equal(t, true, out["cancelling"])
	require.Eventually(t, func() bool { return state(running) == task.StateCancelled }, 2*time.Second, 10*time.Millisecond)

	// Every change is in the audit log.
	es, err := a.st.AuditList(t.Context(), store.AuditFilter{Limit: 1000})
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, e := range es {
		seen[e.Action+" "+e.Result] = true
	}
	for _, want := range []string{"queue.pause ok", "queue.pause forbidden", "queue.resume ok", "queue.purge ok",
		"queue.purge confirmation_required", "task.cancel ok", "task.cancel finished", "task.cancel forbidden",
		"task.cancel_bulk ok", "task.cancel_bulk invalid_field"} {
		require.True(t, seen[want], "audit log lacks %q", want)
	}
	raw, _ := json.Marshal(es[0])
	require.Contains(t, string(raw), `"actor":"oscar-token"`)
}

// TestTaskSearchAndWait: GET /api/v1/tasks filters the index; a task's
// detail has its attempt history; ?wait= answers when the task finishes.
func TestTaskSearchAndWait(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	b := a.browser()
	op, viewer := "Bearer "+a.token[store.RoleOperator], "Bearer "+a.token[store.RoleViewer]
	enqueue := func(body string) string { return b.enqueue(body, op) }
	// ?wait on a task that finishes while the request waits.
	slow := enqueue(`{"task":"sys.sleep","args":{"ms":300}}`)
	a.startWorker("w1")
	start := time.Now()
	code, out, _ := b.do(http.MethodGet, "/api/v1/tasks/"+slow+"?wait=10s", "", viewer)
	took := time.Since(start)
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, task.StateSuccess, out["state"])
	fin, err := time.Parse(time.RFC3339Nano, out["finished_at"].(string))
	require.NoError(t, err)
	t.Logf("?wait answered %s after the task finished (waited %s)", time.Since(fin).Round(time.Millisecond), took.Round(time.Millisecond))
	// A wait that ends first returns the state as it is.
	long := enqueue(`{"task":"sys.sleep","args":{"ms":5000}}`)
	code, out, _ = b.do(http.MethodGet, "/api/v1/tasks/"+long+"?wait=200ms", "", viewer)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, []any{task.StatePending, task.StateStarted}, out["state"])

	var ok []string
	for range 5 {
		ok = append(ok, enqueue(`{"task":"sys.echo"}`))
	}
	failed := enqueue(`{"task":"sys.fail","max_retries":1}`)
	for _, id := range append(ok, failed) {
		code, out, _ := b.do(http.MethodGet, "/api/v1/tasks/"+id+"?wait=10s", "", viewer)
		require.Equal(t, http.StatusOK, code)
		require.True(t, task.Final(out["state"].(string)), out)
	}

	code, out, _ = b.do(http.MethodGet, "/api/v1/tasks?task=sys.echo&state=SUCCESS&since=1h", "", viewer)
	require.Equal(t, http.StatusOK, code, out)
	items := out["items"].([]any)
	require.Len(t, items, 5)
	require.Equal(t, ok[4], items[0].(map[string]any)["id"], "newest first")
	code, out, _ = b.do(http.MethodGet, "/api/v1/tasks?limit=2&queue=default", "", viewer)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, out["items"], 2)
	code, out, _ = b.do(http.MethodGet, "/api/v1/tasks?limit=2&queue=default&cursor="+out["next"].(string), "", viewer)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, ok[3], out["items"].([]any)[0].(map[string]any)["id"], "the next page goes on after the failed task and ok[4]")

	code, out, _ = b.do(http.MethodGet, "/api/v1/tasks/"+failed, "", viewer)
	require.Equal(t, http.StatusOK, code)
	hist := out["history"].([]any)
	require.Len(t, hist, 2)
	require.Equal(t, "retry", hist[0].(map[string]any)["outcome"])
	require.Equal(t, "dead", hist[1].(map[string]any)["outcome"])
	require.Equal(t, "w1", hist[1].(map[string]any)["worker"])
	require.Contains(t, hist[1].(map[string]any)["error"], "attempt 2 fails")

	for path, field := range map[string]string{
		"/api/v1/tasks?state=DONE":           "state",
		"/api/v1/tasks?task=Bad":             "task",
		"/api/v1/tasks?queue=a.b":            "queue",
		"/api/v1/tasks?since=yesterday":      "since",
		"/api/v1/tasks?limit=0":              "limit",
		"/api/v1/tasks?cursor=nope":          "cursor",
		"/api/v1/tasks/" + slow + "?wait=x":  "wait",
		"/api/v1/tasks/" + slow + "?wait=2m": "wait",
	} {
		code, out, _ := b.do(http.MethodGet, path, "", viewer)
		require.Equal(t, http.StatusBadRequest, code, path)
		require.Equal(t, field, out["field"], path)
	}
	code, _, _ = b.do(http.MethodGet, "/api/v1/tasks", "", "")
	require.Equal(t, http.StatusUnauthorized, code)
	code, _, _ = b.do(http.MethodGet, "/api/v1/tasks/nope?wait=1s", "", viewer)
	require.Equal(t, http.StatusNotFound, code)
}
