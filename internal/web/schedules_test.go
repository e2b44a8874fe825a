package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/web"
)

// fakeClient records enqueues; the task path itself is tested elsewhere.
type fakeClient struct {
	mu   sync.Mutex
	reqs []client.Request
}

func (f *fakeClient) EnqueueBatch(ctx context.Context, rs []client.Request) ([]client.Result, error) {
	out := make([]client.Result, len(rs))
	for i, r := range rs {
		out[i], _ = f.Enqueue(ctx, r)
	}
	return out, nil
}

func (f *fakeClient) Enqueue(_ context.Context, r client.Request) (client.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
	return client.Result{ID: "01TESTID", State: task.StatePending}, nil
}

func (f *fakeClient) Get(context.Context, string) (results.State, error) {
	return results.State{}, results.ErrNotFound
}

func (f *fakeClient) WaitFor(context.Context, string, time.Duration) (results.State, error) {
	return results.State{}, results.ErrNotFound
}

func (f *fakeClient) Search(context.Context, results.Query) (results.Page, error) {
	return results.Page{}, nil
}

type bundle struct {
	url    string
	store  *store.Store
	client *fakeClient
}

func setup(t *testing.T) bundle {
	t.Helper()
	st := store.New(storetest.Pool(t))
	reg := task.NewRegistry()
	noop := func(context.Context, *task.Envelope) (any, error) { return nil, nil }
	reg.Handle("report.daily", noop)
	reg.Handle("metrics.collect", noop, task.WithQueue("metrics"))
	fc := &fakeClient{}
	s := web.New(web.Config{MaxBodyBytes: 4096, Schedules: st, Registry: reg, CheckRegistered: true}, fc, nil, zerolog.Nop())
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return bundle{url: srv.URL + "/api/v1/schedules", store: st, client: fc}
}

// do sends a request and decodes the JSON answer into a map.
func do(t *testing.T, method, url, body string) (int, map[string]any, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	if len(bytes.TrimSpace(b)) > 0 {
		require.NoError(t, json.Unmarshal(b, &out), string(b))
	}
	return resp.StatusCode, out, resp.Header
}

const dailyBody = `{"name":"sales-daily","task":"report.daily","cron":"30 2 * * *","timezone":"Europe/Berlin",
	"args":{"kind":"sales"},"spread":"10s","misfire":"catch_up","catch_up_max":5,"description":"sales"}`

func TestSchedulesCreateGetList(t *testing.T) {
	t.Parallel()
	b := setup(t)

	code, body, hdr := do(t, http.MethodPost, b.url, dailyBody)
	require.Equal(t, http.StatusCreated, code, body)
	require.Equal(t, "/api/v1/schedules/sales-daily", hdr.Get("Location"))
	require.Equal(t, true, body["enabled"], "enabled defaults to true")
	require.Equal(t, "default", body["queue"])
	require.Equal(t, "10s", body["spread"])
	require.Equal(t, "runtime", body["source"])
	require.NotNil(t, body["next_run_at"])
	next, err := time.Parse(time.RFC3339, body["next_run_at"].(string))
	require.NoError(t, err)
	require.True(t, next.After(time.Now()))

	// The task's registered queue is the default.
	code, body, _ = do(t, http.MethodPost, b.url, `{"name":"collect","task":"metrics.collect","interval":"1m","enabled":false}`)
	require.Equal(t, http.StatusCreated, code, body)
	require.Equal(t, "metrics", body["queue"])
	require.Equal(t, false, body["enabled"])
	require.Nil(t, body["next_run_at"], "disabled: no next run")

	code, body, _ = do(t, http.MethodGet, b.url+"/sales-daily", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "30 2 * * *", body["cron"])
	require.Equal(t, map[string]any{"kind": "sales"}, body["args"])

	code, body, _ = do(t, http.MethodGet, b.url, "")
	require.Equal(t, http.StatusOK, code)
	list := body["schedules"].([]any)
	require.Len(t, list, 2)
	require.Equal(t, "collect", list[0].(map[string]any)["name"])
}

func TestSchedulesErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	code, body, _ := do(t, http.MethodPost, b.url, dailyBody)
	require.Equal(t, http.StatusCreated, code, body)
	require.NoError(t, b.store.ScheduleSyncCode(t.Context(), []schedule.Schedule{
		{Name: "from-code", Task: "report.daily", Interval: schedule.Duration(time.Hour), Enabled: true},
	}))

	tests := []struct {
		name, method, path, body string
		status                   int
		code, field              string
	}{
		{"unknown field", "POST", "", `{"name":"x","task":"report.daily","interval":"1m","colour":"red"}`, 400, "unknown_field", "colour"},
		{"wrong type", "POST", "", `{"name":"x","task":"report.daily","interval":"1m","enabled":"yes"}`, 400, "invalid_field", "enabled"},
		{"bad duration", "POST", "", `{"name":"x","task":"report.daily","interval":"often"}`, 400, "invalid_field", "interval"},
		{"bad time", "POST", "", `{"name":"x","task":"report.daily","interval":"1m","start_at":"tomorrow"}`, 400, "invalid_field", "start_at"},
		{"not json", "POST", "", `{"name":`, 400, "bad_json", ""},
		{"not an object", "POST", "", `[1,2]`, 400, "bad_json", ""},
		{"empty", "POST", "", ``, 400, "bad_json", ""},
		{"no name", "POST", "", `{"task":"report.daily","interval":"1m"}`, 400, "invalid_field", "name"},
		{"both cron and interval", "POST", "", `{"name":"x","task":"report.daily","interval":"1m","cron":"* * * * *"}`, 400, "invalid_field", "interval"},
		{"neither", "POST", "", `{"name":"x","task":"report.daily"}`, 400, "invalid_field", "cron"},
		{"bad cron", "POST", "", `{"name":"x","task":"report.daily","cron":"every day"}`, 400, "invalid_field", "cron"},
		{"bad time zone", "POST", "", `{"name":"x","task":"report.daily","cron":"* * * * *","timezone":"Mars/Olympus"}`, 400, "invalid_field", "timezone"},
		{"short interval", "POST", "", `{"name":"x","task":"report.daily","interval":"500ms"}`, 400, "invalid_field", "interval"},
		{"args not an object", "POST", "", `{"name":"x","task":"report.daily","interval":"1m","args":[1]}`, 400, "invalid_field", "args"},
		{"bad name", "POST", "", `{"name":"a b","task":"report.daily","interval":"1m"}`, 400, "invalid_field", "name"},
		{"unknown task", "POST", "", `{"name":"x","task":"no.such_task","interval":"1m"}`, 404, "unknown_task", "task"},
		{"too large", "POST", "", `{"name":"x","task":"report.daily","interval":"1m","description":"` + strings.Repeat("d", 5000) + `"}`, 413, "too_large", "body"},
		{"exists", "POST", "", dailyBody, 409, "conflict", "name"},
		{"get missing", "GET", "/nope", "", 404, "not_found", "name"},
		{"put missing", "PUT", "/nope", `{"task":"report.daily","interval":"1m"}`, 404, "not_found", "name"},
		{"patch missing", "PATCH", "/nope", `{"enabled":false}`, 404, "not_found", "name"},
		{"delete missing", "DELETE", "/nope", "", 404, "not_found", "name"},
		{"run missing", "POST", "/nope/run", "", 404, "not_found", "name"},
		{"rename", "PUT", "/sales-daily", `{"name":"other","task":"report.daily","interval":"1m"}`, 400, "invalid_field", "name"},
		{"patch invalid", "PATCH", "/sales-daily", `{"interval":"1m"}`, 400, "invalid_field", "interval"},
		{"delete code", "DELETE", "/from-code", "", 409, "from_code", "name"},
		{"put code", "PUT", "/from-code", `{"task":"report.daily","interval":"2h"}`, 409, "from_code", "name"},
		{"patch code", "PATCH", "/from-code", `{"description":"mine now"}`, 409, "from_code", "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := do(t, tt.method, b.url+tt.path, tt.body)
			require.Equal(t, tt.status, code, body)
			require.Equal(t, tt.code, body["code"], body)
			if tt.field == "" {
				require.NotContains(t, body, "field")
			} else {
				require.Equal(t, tt.field, body["field"], body)
			}
			require.NotEmpty(t, body["error"])
		})
	}
}

func TestSchedulesReplacePatchDelete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	code, created, _ := do(t, http.MethodPost, b.url, dailyBody)
	require.Equal(t, http.StatusCreated, code, created)

	// GET, edit, PUT back as is: read-only fields are ignored.
	created["description"] = "edited"
	created["run_count"] = 99
	put, err := json.Marshal(created)
	require.NoError(t, err)
	code, body, _ := do(t, http.MethodPut, b.url+"/sales-daily", string(put))
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "edited", body["description"])
	require.EqualValues(t, 0, body["run_count"])
	require.Equal(t, "catch_up", body["misfire"])

	// PUT replaces everything: absent fields take their defaults.
	code, body, _ = do(t, http.MethodPut, b.url+"/sales-daily", `{"task":"report.daily","interval":"1h"}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "1h0m0s", body["interval"])
	require.NotContains(t, body, "cron")
	require.Equal(t, "once", body["misfire"])
	require.Equal(t, "", body["description"])
	require.Equal(t, true, body["enabled"])

	// PATCH changes only what it names; null clears.
	code, body, _ = do(t, http.MethodPatch, b.url+"/sales-daily", `{"interval":null,"cron":"0 * * * *","description":"hourly"}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "0 * * * *", body["cron"])
	require.Equal(t, "UTC", body["timezone"])
	require.NotContains(t, body, "interval")
	require.Equal(t, "hourly", body["description"])
	require.Equal(t, "report.daily", body["task"])

	code, body, _ = do(t, http.MethodPatch, b.url+"/sales-daily", `{"enabled":false}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, false, body["enabled"])
	require.Nil(t, body["next_run_at"])
	require.Equal(t, "hourly", body["description"])

	code, _, _ = do(t, http.MethodDelete, b.url+"/sales-daily", "")
	require.Equal(t, http.StatusNoContent, code)
	code, _, _ = do(t, http.MethodGet, b.url+"/sales-daily", "")
	require.Equal(t, http.StatusNotFound, code)
}

func TestSchedulesCodeCanBeDisabled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, b.store.ScheduleSyncCode(t.Context(), []schedule.Schedule{
		{Name: "from-code", Task: "report.daily", Interval: schedule.Duration(time.Hour), Enabled: true},
	}))
	code, body, _ := do(t, http.MethodPatch, b.url+"/from-code", `{"enabled":false}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, false, body["enabled"])
	require.Equal(t, "code", body["source"])

	// PUT of the same definition with enabled flipped back is accepted.
	body["enabled"] = true
	put, err := json.Marshal(body)
	require.NoError(t, err)
	code, body, _ = do(t, http.MethodPut, b.url+"/from-code", string(put))
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, true, body["enabled"])
}

func TestSchedulesRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	code, body, _ := do(t, http.MethodPost, b.url, `{"name":"collect","task":"metrics.collect","interval":"1m","args":{"x":1},"enabled":false}`)
	require.Equal(t, http.StatusCreated, code, body)

	code, body, _ = do(t, http.MethodPost, b.url+"/collect/run", "")
	require.Equal(t, http.StatusAccepted, code, body)
	require.Equal(t, "01TESTID", body["id"])
	require.Equal(t, task.StatePending, body["state"])

	b.client.mu.Lock()
	defer b.client.mu.Unlock()
	require.Len(t, b.client.reqs, 1)
	r := b.client.reqs[0]
	require.Equal(t, "metrics.collect", r.Task)
	require.Equal(t, "metrics", r.Queue)
	require.JSONEq(t, `{"x":1}`, string(r.Args))
	require.Equal(t, "beat/collect", r.Origin)

	// A run is not a tick.
	sc, err := b.store.ScheduleGet(t.Context(), "collect")
	require.NoError(t, err)
	require.Zero(t, sc.RunCount)
	require.Nil(t, sc.LastRunAt)
}

// TestSchedulesUnmounted: without a store there are no schedule routes.
func TestSchedulesUnmounted(t *testing.T) {
	t.Parallel()
	s := web.New(web.Config{MaxBodyBytes: 1024}, &fakeClient{}, nil, zerolog.Nop())
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	code, body, _ := do(t, http.MethodGet, srv.URL+"/api/v1/schedules", "")
	require.Equal(t, http.StatusNotFound, code, body)
}

var _ rest.Enqueuer = (*fakeClient)(nil)
