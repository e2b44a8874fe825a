package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/api"
	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/results/resultstest"
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
	Caller  string `json:"caller"`
	Session string `json:"session"`
}

// newEcho returns an echo with the api role's error handler, the given
// middleware, GET /api/v1/whoami and the exempt health paths.
func newEcho(mw ...echo.MiddlewareFunc) *echo.Echo {
	e := rest.NewEcho(zerolog.Nop())
	e.Use(mw...)
	me := func(c echo.Context) error {
		return c.JSON(http.StatusOK, whoami{Caller: auth.Caller(c), Session: api.SessionID(c)})
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

// TestMiddlewareChain runs the api role's protective middleware in the
// recommended order: Auth → RateLimit → Session → Timezone.
func TestMiddlewareChain(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := store.New(storetest.Pool(t))
	rdb, prefix := resultstest.Client(t)
	token, _, err := st.TokenCreate(ctx, "ci", store.RoleAdmin)
	require.NoError(t, err)

	e := newEcho(
		auth.Auth(auth.Config{Mode: auth.AuthToken, Verify: auth.StoreVerifier(st)}, zerolog.Nop()),
		api.RateLimit(rdb, prefix, 3, time.Hour, zerolog.Nop()),
		api.Session(rdb, prefix, time.Minute, zerolog.Nop()),
		api.Timezone(),
	)
	e.JSONSerializer = api.TimezoneSerializer{}

	// Refused requests count against nothing and open no session.
	for range 5 {
		rec := do(e, http.MethodGet, "/api/v1/whoami")
		require.Equal(t, http.StatusUnauthorized, rec.Code)
		require.Empty(t, rec.Result().Cookies())
	}
	rec := do(e, http.MethodGet, "/api/v1/whoami", "Authorization", "Bearer "+token, "X-Timezone", "Nowhere/Land")
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Equal(t, "X-Timezone", decodeError(t, rec).Field)

	rec = do(e, http.MethodGet, "/api/v1/whoami", "Authorization", "Bearer "+token, "X-Timezone", "Asia/Kolkata")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var got whoami
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	require.Equal(t, "ci", got.Caller)
	require.NotEmpty(t, got.Session)
	require.Equal(t, "1", rec.Header().Get(api.HeaderRateLimitRemaining), "the 400 above counted too")

	rec = do(e, http.MethodGet, "/api/v1/whoami", "Authorization", "Bearer "+token)
	require.Equal(t, http.StatusOK, rec.Code)
	rec = do(e, http.MethodGet, "/api/v1/whoami", "Authorization", "Bearer "+token)
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, "rate_limited", decodeError(t, rec).Code)
	require.NotEmpty(t, rec.Header().Get("Retry-After"))
	require.Equal(t, http.StatusOK, do(e, http.MethodGet, "/healthz").Code, "probes pass")
}
