package web_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/web"
)

// TestWebProtected: with token auth (the production default) every
// /api/v1 request needs an API token, state changes must be JSON, every
// answer carries the security headers, and an address that keeps failing
// is locked out for the window.
func TestWebProtected(t *testing.T) {
	t.Parallel()
	nc, js := jettest.Connect(t, jettest.Server(t).ClientURL())
	topo, err := jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)
	require.NoError(t, jet.ApplyStreams(t.Context(), js, topo))
	require.NoError(t, jet.ApplyQueues(t.Context(), js, topo, []string{"default"}))
	rdb, prefix := resultstest.Client(t)
	rs := results.New(rdb, results.Config{Prefix: prefix, TTL: time.Hour})
	t.Cleanup(rs.Close)
	reg := task.NewRegistry()
	systasks.Register(reg)
	cl := client.New(nc, js, rs, client.Config{Registry: reg, CheckRegistered: true})
	st := store.New(storetest.Pool(t))
	token, _, err := st.TokenCreate(t.Context(), "ci")
	require.NoError(t, err)
	srv := httptest.NewServer(web.New(web.Config{
		MaxBodyBytes: 1 << 20, Schedules: st, Registry: reg, RequestTimeout: 5 * time.Second,
		Auth: auth.AuthToken, Verify: auth.StoreVerifier(st),
		Failures: auth.FailureLimit{Redis: rdb, Prefix: prefix, Limit: 8, Window: time.Minute},
	}, cl, nil, zerolog.Nop()).Handler())
	t.Cleanup(srv.Close)

	call := func(method, path, ctype, tok, body string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	const enqueue = `{"task":"sys.echo","args":{"x":1}}`

	// Anonymous: 401 for reads and changes alike (the DELETE).
	for _, r := range []struct{ method, path, body string }{
		{http.MethodGet, "/api/v1/schedules", ""},
		{http.MethodDelete, "/api/v1/schedules/x", ""},
		{http.MethodPost, "/api/v1/tasks", enqueue},
	} {
		resp := call(r.method, r.path, "application/json", "", r.body)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, r.path)
		require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Bearer")
	}
	// With the token.
	resp := call(http.MethodPost, "/api/v1/tasks", "application/json", token, enqueue)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	// A body that says it is text (a cross-site form or fetch) is not parsed.
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""} {
		resp = call(http.MethodPost, "/api/v1/tasks", ct, token, enqueue)
		require.Equal(t, http.StatusUnsupportedMediaType, resp.StatusCode, ct)
	}
	resp = call(http.MethodPost, "/api/v1/tasks", "application/json; charset=utf-8", token, enqueue)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	// Security headers on every answer, probes included (and those need no token).
	for _, path := range []string{"/healthz", "/api/v1/schedules"} {
		resp = call(http.MethodGet, path, "", token, "")
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
		require.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
		require.Contains(t, resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'")
		require.Equal(t, "no-referrer", resp.Header.Get("Referrer-Policy"))
	}
	// Eight failures (the three anonymous calls above count too) lock the
	// address out, even for the right token, until the window ends.
	for range 5 {
		resp = call(http.MethodGet, "/api/v1/schedules", "", "wrong-token", "")
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	resp = call(http.MethodGet, "/api/v1/schedules", "", token, "")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	resp = call(http.MethodGet, "/healthz", "", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "probes are never locked out")
}
