package rest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

const maxBody = 1024

type routes struct {
	e  *echo.Echo
	js jetstream.JetStream
	cl *client.Client
}

// setupRoutes mounts TaskRoutes on echo with a real client: an in-process
// JetStream server with the streams/ topology and the test Redis; bodies
// are limited to maxBody.
func setupRoutes(t testing.TB, p jet.TopologyParams) *routes {
	t.Helper()
	return setupRoutesLimit(t, p, maxBody)
}

// setupRoutesLimit is setupRoutes with bodies limited to limit bytes.
func setupRoutesLimit(t testing.TB, p jet.TopologyParams, limit int64) *routes {
	t.Helper()
	ns := jettest.Server(t)
	nc, js, err := jet.Connect(t.Context(), ns.ClientURL(), "rest-test", "")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	top, err := jet.LoadTopology(p)
	require.NoError(t, err)
	require.NoError(t, jet.ApplyStreams(t.Context(), js, top))
	require.NoError(t, jet.ApplyQueues(t.Context(), js, top, []string{task.DefaultQueue}))

	rdb, prefix := resultstest.Client(t)
	store := results.New(rdb, results.Config{Prefix: prefix})
	t.Cleanup(store.Close)

	reg := task.NewRegistry()
	noop := func(context.Context, *task.Envelope) (any, error) { return nil, nil }
	reg.Handle("sys.ping", noop)
	reg.Handle("email.send", noop)
	cl := client.New(nc, js, store, client.Config{Registry: reg, CheckRegistered: true, MaxArgsBytes: 512})

	e := rest.NewEcho(zerolog.New(zerolog.NewTestWriter(t)))
	rest.TaskRoutes{Client: cl, MaxBodyBytes: limit, Origin: "web"}.Mount(e.Group("/api/v1"))
	return &routes{e: e, js: js, cl: cl}
}

func (r *routes) post(body string, hdr map[string]string) errorResponse {
	return serve(r.e, http.MethodPost, "/api/v1/tasks", body, hdr)
}

func TestTaskRoutes(t *testing.T) {
	t.Parallel()
	r := setupRoutes(t, jet.TopologyParams{})
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

	res := r.post(`{"task":"email.send","args":{"to":"a@example.com"},"max_retries":2}`, map[string]string{"traceparent": traceparent})
	require.Equal(t, http.StatusAccepted, res.status, res.body)
	var accepted map[string]any
	require.NoError(t, json.Unmarshal([]byte(res.body), &accepted))
	require.Len(t, accepted, 2, "202 body is {id, state}: %s", res.body)
	id, ok := accepted["id"].(string)
	require.True(t, ok)
	require.Len(t, id, 26)
	require.Equal(t, task.StatePending, accepted["state"])

	// The message carries the origin and the caller's trace context.
	s, err := r.js.Stream(t.Context(), wire.StreamTasks)
	require.NoError(t, err)
	raw, err := s.GetLastMsgForSubject(t.Context(), wire.TaskSubject(task.DefaultQueue, "email.send"))
	require.NoError(t, err)
	require.Equal(t, id, raw.Header.Get(wire.HeaderID))
	require.Equal(t, "web", raw.Header.Get(wire.HeaderOrigin))
	require.Equal(t, traceparent, raw.Header.Get(wire.HeaderTraceparent))
	require.Equal(t, "2", raw.Header.Get(wire.HeaderMaxRetries))

	// GET shows the recorded state.
	got := serve(r.e, http.MethodGet, "/api/v1/tasks/"+id, "", nil)
	require.Equal(t, http.StatusOK, got.status, got.body)
	var st results.State
	require.NoError(t, json.Unmarshal([]byte(got.body), &st))
	require.Equal(t, id, st.ID)
	require.Equal(t, "email.send", st.Task)
	require.Equal(t, task.DefaultQueue, st.Queue)
	require.Equal(t, task.StatePending, st.State)
	require.NotNil(t, st.EnqueuedAt)

	// A repeated idempotency key is 202 with the first id.
	first := r.post(`{"task":"sys.ping","idempotency_key":"k1"}`, nil)
	require.Equal(t, http.StatusAccepted, first.status, first.body)
	again := r.post(`{"task":"sys.ping","idempotency_key":"k1"}`, nil)
	require.Equal(t, http.StatusAccepted, again.status, again.body)
	var a, b client.Result
	require.NoError(t, json.Unmarshal([]byte(first.body), &a))
	require.NoError(t, json.Unmarshal([]byte(again.body), &b))
	require.False(t, a.Duplicate)
	require.True(t, b.Duplicate)
	require.Equal(t, a.ID, b.ID)
}

func TestTaskRoutesErrors(t *testing.T) {
	t.Parallel()
	r := setupRoutes(t, jet.TopologyParams{})
	for _, tc := range []struct {
		name   string
		method string
		target string
		body   string
		status int
		code   string
		field  string
	}{
		{name: "unknown id", method: http.MethodGet, target: "/api/v1/tasks/01UNKNOWN", status: 404, code: "not_found", field: "id"},
		{name: "body over the limit", method: http.MethodPost, target: "/api/v1/tasks", body: `{"task":"sys.ping","args":{"x":"` + strings.Repeat("x", maxBody) + `"}}`, status: 413, code: "too_large", field: "body"},
		{name: "args over the client limit", method: http.MethodPost, target: "/api/v1/tasks", body: `{"task":"sys.ping","args":{"x":"` + strings.Repeat("x", 600) + `"}}`, status: 413, code: "too_large", field: "args"},
		{name: "empty body", method: http.MethodPost, target: "/api/v1/tasks", status: 400, code: "bad_json"},
		{name: "unknown field", method: http.MethodPost, target: "/api/v1/tasks", body: `{"task":"sys.ping","prio":1}`, status: 400, code: "unknown_field", field: "prio"},
		{name: "invalid task name", method: http.MethodPost, target: "/api/v1/tasks", body: `{"task":"Sys.Ping"}`, status: 400, code: "invalid_field", field: "task"},
		{name: "unregistered task", method: http.MethodPost, target: "/api/v1/tasks", body: `{"task":"no.such"}`, status: 404, code: "unknown_task", field: "task"},
		{name: "args not an object", method: http.MethodPost, target: "/api/v1/tasks", body: `{"task":"sys.ping","args":[1]}`, status: 400, code: "invalid_field", field: "args"},
		{name: "bad queue", method: http.MethodPost, target: "/api/v1/tasks", body: `{"task":"sys.ping","queue":"a.b"}`, status: 400, code: "invalid_field", field: "queue"},
		{name: "countdown and eta", method: http.MethodPost, target: "/api/v1/tasks", body: `{"task":"sys.ping","countdown":"1m","eta":"2099-01-01T00:00:00Z"}`, status: 400, code: "invalid_field", field: "eta"},
		{name: "expires in the past", method: http.MethodPost, target: "/api/v1/tasks", body: `{"task":"sys.ping","expires":"2001-01-01T00:00:00Z"}`, status: 400, code: "invalid_field", field: "expires"},
		{name: "negative max_retries", method: http.MethodPost, target: "/api/v1/tasks", body: `{"task":"sys.ping","max_retries":-1}`, status: 400, code: "invalid_field", field: "max_retries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := serve(r.e, tc.method, tc.target, tc.body, nil)
			require.Equal(t, tc.status, res.status, res.body)
			eb := decodeError(t, res.body)
			require.Equal(t, tc.code, eb.Code, res.body)
			require.Equal(t, tc.field, eb.Field, res.body)
			require.NotEmpty(t, eb.Error)
		})
	}
}

func TestTaskRoutesBodyLimitIsExact(t *testing.T) {
	t.Parallel()
	r := setupRoutes(t, jet.TopologyParams{})
	prefix, suffix := `{"task":"sys.ping","idempotency_key":"`, `"}`
	fill := maxBody - len(prefix) - len(suffix)
	// Idempotency keys are at most 256 characters; pad with spaces instead.
	body := prefix + "k" + suffix + strings.Repeat(" ", fill-1)
	require.Len(t, body, maxBody)
	res := r.post(body, nil)
	require.Equal(t, http.StatusAccepted, res.status, res.body)
	res = r.post(body+" ", nil)
	require.Equal(t, http.StatusRequestEntityTooLarge, res.status, res.body)
}

func TestTaskRoutesQueueFull(t *testing.T) {
	t.Parallel()
	r := setupRoutes(t, jet.TopologyParams{TaskMaxMsgs: 3})
	for i := range 3 {
		res := r.post(fmt.Sprintf(`{"task":"sys.ping","args":{"i":%d}}`, i), nil)
		require.Equal(t, http.StatusAccepted, res.status, res.body)
	}
	res := r.post(`{"task":"sys.ping"}`, nil)
	require.Equal(t, http.StatusServiceUnavailable, res.status, res.body)
	require.Equal(t, "5", res.header.Get("Retry-After"))
	eb := decodeError(t, res.body)
	require.Equal(t, "queue_full", eb.Code)
	require.Equal(t, "queue", eb.Field)
}

func TestTaskRoutesDelayed(t *testing.T) {
	t.Parallel()
	r := setupRoutes(t, jet.TopologyParams{})
	res := r.post(`{"task":"sys.ping","countdown":"1h","expires":"2h"}`, nil)
	require.Equal(t, http.StatusAccepted, res.status, res.body)
	var out client.Result
	require.NoError(t, json.Unmarshal([]byte(res.body), &out))
	s, err := r.js.Stream(t.Context(), wire.StreamDelayed)
	require.NoError(t, err)
	raw, err := s.GetLastMsgForSubject(t.Context(), wire.DelayedSubject("default", out.ID))
	require.NoError(t, err)
	exp, err := time.Parse(time.RFC3339Nano, raw.Header.Get(wire.HeaderExpires))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(2*time.Hour), exp, time.Minute, "expires as a duration counts from now")
}

// TestTaskBatch: POST /api/v1/tasks/batch answers the ids in order, or an
// error naming the index of the task at fault and storing nothing.
func TestTaskBatch(t *testing.T) {
	t.Parallel()
	r := setupRoutes(t, jet.TopologyParams{})
	post := func(body string) errorResponse { return serve(r.e, http.MethodPost, "/api/v1/tasks/batch", body, nil) }
	msgs := func() uint64 {
		s, err := r.js.Stream(t.Context(), wire.StreamTasks)
		require.NoError(t, err)
		info, err := s.Info(t.Context())
		require.NoError(t, err)
		return info.State.Msgs
	}

	res := post(`{"tasks":[{"task":"sys.ping"},{"task":"email.send","args":{"to":"a@example.com"},"id":"mail-1"},{"task":"sys.ping","queue":"default"}]}`)
	require.Equal(t, http.StatusAccepted, res.status, res.body)
	var ok struct {
		IDs []string `json:"ids"`
	}
	require.NoError(t, json.Unmarshal([]byte(res.body), &ok))
	require.Len(t, ok.IDs, 3)
	require.Equal(t, "mail-1", ok.IDs[1])
	require.EqualValues(t, 3, msgs())

	for _, tc := range []struct {
		name, body string
		status     int
		code       string
		field      string
	}{
		{"unknown task", `{"tasks":[{"task":"sys.ping"},{"task":"no.such"}]}`, http.StatusNotFound, "unknown_task", "tasks[1].task"},
		{"bad field", `{"tasks":[{"task":"sys.ping","max_retries":-1}]}`, http.StatusBadRequest, "invalid_field", "tasks[0].max_retries"},
		{"unknown field", `{"tasks":[{"task":"sys.ping"},{"task":"sys.ping","color":"red"}]}`, http.StatusBadRequest, "unknown_field", "tasks[1].color"},
		{"not an object", `{"tasks":[1]}`, http.StatusBadRequest, "bad_json", "tasks[0]"},
		{"wrong type", `{"tasks":[{"task":"sys.ping"},{"task":"sys.ping","countdown":5}]}`, http.StatusBadRequest, "invalid_field", "tasks[1].countdown"},
		{"null task", `{"tasks":[{"task":"sys.ping"},null]}`, http.StatusBadRequest, "invalid_field", "tasks[1].task"},
		{"bad countdown", `{"tasks":[{"task":"sys.ping"},{"task":"sys.ping","countdown":"soon"}]}`, http.StatusBadRequest, "invalid_field", "tasks[1].countdown"},
		{"task over the limit", `{"tasks":[{"task":"sys.ping"},{"task":"sys.ping","args":{"x":"` + strings.Repeat("x", maxBody) + `"}}]}`, http.StatusRequestEntityTooLarge, "too_large", "tasks[1]"},
		{"trailing data", `{"tasks":[{"task":"sys.ping"}]} {}`, http.StatusBadRequest, "bad_json", ""},
		{"no tasks", `{}`, http.StatusBadRequest, "invalid_field", "tasks"},
		{"empty", `{"tasks":[]}`, http.StatusBadRequest, "invalid_field", "tasks"},
		{"stored id", `{"tasks":[{"task":"sys.ping"},{"task":"sys.ping","id":"mail-1"}]}`, http.StatusConflict, "duplicate", "tasks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := post(tc.body)
			require.Equal(t, tc.status, res.status, res.body)
			var e rest.Error
			require.NoError(t, json.Unmarshal([]byte(res.body), &e))
			require.Equal(t, tc.code, e.Code, res.body)
			require.Equal(t, tc.field, e.Field, res.body)
			require.EqualValues(t, 3, msgs(), "nothing of a refused batch is stored")
		})
	}

	// A batch larger than one task may be is read task by task.
	big := `{"tasks":[` + strings.Repeat(`{"task":"sys.ping","args":{"pad":"`+strings.Repeat("x", 200)+`"}},`, 9) + `{"task":"sys.ping"}]}`
	require.Greater(t, len(big), maxBody)
	res = post(big)
	require.Equal(t, http.StatusAccepted, res.status, res.body)
	require.EqualValues(t, 13, msgs())
}
