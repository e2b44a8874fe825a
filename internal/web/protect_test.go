package web_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/store"
)

// TestWebProtected: with token auth (the production default) every
// /api/v1 request needs an API token, state changes must be JSON, every
// answer carries the security headers, and an address that keeps failing
// is locked out for the window.
func TestWebProtected(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	token := a.token[store.RoleAdmin]

	call := func(method, path, ctype, tok, body string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, a.url+path, strings.NewReader(body))
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
