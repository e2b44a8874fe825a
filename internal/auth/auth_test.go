package auth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the JSON log lines.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		out = append(out, m)
	}
	return out
}

// whoami is the body of the test routes.
type whoami struct {
	Caller string `json:"caller"`
}

// newEcho returns an echo with the api role's error handler, the given
// middleware, GET /api/v1/whoami and the exempt health paths.
func newEcho(mw ...echo.MiddlewareFunc) *echo.Echo {
	e := rest.NewEcho(zerolog.Nop())
	e.Use(mw...)
	me := func(c echo.Context) error {
		return c.JSON(http.StatusOK, whoami{Caller: auth.Caller(c)})
	}
	e.GET("/api/v1/whoami", me)
	e.GET("/healthz", me)
	e.GET("/readyz", me)
	e.GET("/metrics", me)
	return e
}

// do serves one request; header holds name, value pairs.
func do(e *echo.Echo, method, path string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func decodeError(t *testing.T, rec *httptest.ResponseRecorder) rest.Error {
	t.Helper()
	var body rest.Error
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), rec.Body.String())
	return body
}

func TestAuthToken(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := store.New(storetest.Pool(t))
	valid, _, err := st.TokenCreate(ctx, "ci", store.RoleAdmin)
	require.NoError(t, err)
	revoked, _, err := st.TokenCreate(ctx, "old", store.RoleAdmin)
	require.NoError(t, err)
	require.NoError(t, st.TokenRevoke(ctx, "old"))
	wrong := valid[:len(valid)-4] + "aaaa"
	if wrong == valid {
		wrong = valid[:len(valid)-4] + "bbbb"
	}

	var logs syncBuffer
	e := newEcho(auth.Auth(auth.Config{Mode: auth.AuthToken, Verify: auth.StoreVerifier(st)}, zerolog.New(&logs)))

	ok := []struct {
		name   string
		path   string
		header []string
		caller string
	}{
		{"bearer", "/api/v1/whoami", []string{"Authorization", "Bearer " + valid}, "ci"},
		{"bearer lower case", "/api/v1/whoami", []string{"Authorization", "bearer " + valid}, "ci"},
		{"x-api-token", "/api/v1/whoami", []string{"X-API-Token", valid}, "ci"},
		{"basic from a proxy and x-api-token", "/api/v1/whoami", []string{"Authorization", "Basic dTpw", "X-API-Token", valid}, "ci"},
		{"healthz exempt", "/healthz", nil, ""},
		{"readyz exempt", "/readyz", nil, ""},
		{"metrics exempt", "/metrics", []string{"Authorization", "Bearer " + wrong}, ""},
	}
	for _, tt := range ok {
		rec := do(e, http.MethodGet, tt.path, tt.header...)
		require.Equal(t, http.StatusOK, rec.Code, "%s: %s", tt.name, rec.Body)
		var got whoami
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
		require.Equal(t, tt.caller, got.Caller, tt.name)
	}

	refused := []struct {
		name      string
		header    []string
		challenge string
		reason    string
	}{
		{"missing", nil, `Bearer realm="flotilla"`, "no API token"},
		{"wrong", []string{"Authorization", "Bearer " + wrong}, `Bearer realm="flotilla", error="invalid_token"`, "unknown or revoked token"},
		{"wrong in x-api-token", []string{"X-API-Token", wrong}, `Bearer realm="flotilla", error="invalid_token"`, "unknown or revoked token"},
		{"revoked", []string{"Authorization", "Bearer " + revoked}, `Bearer realm="flotilla", error="invalid_token"`, "unknown or revoked token"},
		{"malformed", []string{"Authorization", "Bearer not-a-token"}, `Bearer realm="flotilla", error="invalid_token"`, "unknown or revoked token"},
		{"empty bearer", []string{"Authorization", "Bearer "}, `Bearer realm="flotilla", error="invalid_request"`, "empty bearer token"},
		{"basic", []string{"Authorization", "Basic dTpw"}, `Bearer realm="flotilla", error="invalid_request"`, "unsupported Authorization scheme (want Bearer)"},
		{"token without scheme", []string{"Authorization", valid}, `Bearer realm="flotilla", error="invalid_request"`, "unsupported Authorization scheme (want Bearer)"},
	}
	for _, tt := range refused {
		rec := do(e, http.MethodGet, "/api/v1/whoami", tt.header...)
		require.Equal(t, http.StatusUnauthorized, rec.Code, tt.name)
		require.Equal(t, tt.challenge, rec.Header().Get("WWW-Authenticate"), tt.name)
		body := decodeError(t, rec)
		require.Equal(t, "unauthorized", body.Code, tt.name)
		require.NotEmpty(t, body.Error, tt.name)
		require.NotContains(t, rec.Body.String(), valid[4:], tt.name)
	}

	// Every refusal is logged with the address and reason, never the token.
	lines := logs.lines(t)
	require.Len(t, lines, len(refused))
	for i, l := range lines {
		require.Equal(t, "warn", l["level"])
		require.Equal(t, refused[i].reason, l["reason"], refused[i].name)
		require.Equal(t, "192.0.2.1:1234", l["remote_addr"])
		require.Equal(t, "/api/v1/whoami", l["path"])
		require.Equal(t, "GET", l["method"])
	}
	all := logs.String()
	for _, secret := range []string{valid, wrong, revoked} {
		require.NotContains(t, all, secret)
		require.NotContains(t, all, secret[4:], "no part of a token")
		require.NotContains(t, all, secret[len(secret)-12:], "no part of a token")
	}
}

func TestAuthLogsForwardedAddress(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	verify := func(context.Context, string) (auth.Principal, error) { return auth.Principal{}, auth.ErrInvalidToken }
	e := newEcho(auth.Auth(auth.Config{Mode: auth.AuthToken, Verify: verify}, zerolog.New(&logs)))
	rec := do(e, http.MethodGet, "/api/v1/whoami", "X-API-Token", "secret-text", "X-Forwarded-For", "203.0.113.9")
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	lines := logs.lines(t)
	require.Len(t, lines, 1)
	require.Equal(t, "192.0.2.1:1234", lines[0]["remote_addr"])
	require.Equal(t, "203.0.113.9", lines[0]["real_ip"])
	require.NotContains(t, logs.String(), "secret-text")
}

func TestAuthNone(t *testing.T) {
	t.Parallel()
	called := false
	verify := func(context.Context, string) (auth.Principal, error) {
		called = true
		return auth.Principal{Name: "x"}, nil
	}
	e := newEcho(auth.Auth(auth.Config{Mode: auth.AuthNone, Verify: verify}, zerolog.Nop()))
	for _, h := range [][]string{nil, {"Authorization", "Bearer whatever"}} {
		rec := do(e, http.MethodGet, "/api/v1/whoami", h...)
		require.Equal(t, http.StatusOK, rec.Code)
		require.JSONEq(t, `{"caller":"anonymous"}`, rec.Body.String())
	}
	require.False(t, called, "mode none never verifies")
}

func TestAuthVerifyFails(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	verify := func(context.Context, string) (auth.Principal, error) {
		return auth.Principal{}, errors.New("postgresql at 127.0.0.1:5432 is not reachable")
	}
	e := newEcho(auth.Auth(auth.Config{Mode: auth.AuthToken, Verify: verify}, zerolog.New(&logs)))
	rec := do(e, http.MethodGet, "/api/v1/whoami", "Authorization", "Bearer flt_secret")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, "never let through unverified")
	require.Equal(t, "auth_unavailable", decodeError(t, rec).Code)
	lines := logs.lines(t)
	require.Len(t, lines, 1)
	require.Equal(t, "error", lines[0]["level"])
	require.Contains(t, lines[0]["error"], "not reachable")
	require.NotContains(t, logs.String(), "flt_secret")
}

func TestAuthPanicsOnBadMode(t *testing.T) {
	t.Parallel()
	require.Panics(t, func() { auth.Auth(auth.Config{Mode: "basic", Verify: nil}, zerolog.Nop()) })
	require.Panics(t, func() { auth.Auth(auth.Config{Mode: auth.AuthToken, Verify: nil}, zerolog.Nop()) })
}

func TestStoreVerifier(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := store.New(storetest.Pool(t))
	plain, _, err := st.TokenCreate(ctx, "svc", store.RoleViewer)
	require.NoError(t, err)
	verify := auth.StoreVerifier(st)
	p, err := verify(ctx, plain)
	require.NoError(t, err)
	require.Equal(t, auth.Principal{Name: "svc", Kind: auth.KindToken, Role: store.RoleViewer}, p)
	_, err = verify(ctx, "flt_nope")
	require.ErrorIs(t, err, auth.ErrInvalidToken)
}

func TestAuthStoreNotFoundIs401(t *testing.T) {
	t.Parallel()
	verify := func(context.Context, string) (auth.Principal, error) {
		return auth.Principal{}, fmt.Errorf("verify token: %w", store.ErrNotFound)
	}
	e := newEcho(auth.Auth(auth.Config{Mode: auth.AuthToken, Verify: verify}, zerolog.Nop()))
	rec := do(e, http.MethodGet, "/api/v1/whoami", "Authorization", "Bearer x")
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	require.Equal(t, "unauthorized", decodeError(t, rec).Code)
}
