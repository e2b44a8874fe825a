package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/api"
	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/results/resultstest"
)

// testCaller plays Auth: the caller is the X-Test-Caller header, or
// anonymous.
func testCaller(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		caller := c.Request().Header.Get("X-Test-Caller")
		if caller == "" {
			caller = auth.Anonymous
		}
		c.Set(auth.CallerKey, caller)
		return next(c)
	}
}

type sessionBundle struct {
	e      *echo.Echo
	rdb    *redis.Client
	prefix string
}

func setupSession(t *testing.T, ttl time.Duration) sessionBundle {
	t.Helper()
	rdb, prefix := resultstest.Client(t)
	return sessionBundle{e: newEcho(testCaller, api.Session(rdb, prefix, ttl, zerolog.Nop())), rdb: rdb, prefix: prefix}
}

// get serves GET path with the cookie id (if any) as caller, and returns
// the session id the handler saw and the cookie set (nil if none).
func (b sessionBundle) get(t *testing.T, path, caller, id string) (string, *http.Cookie) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if id != "" {
		req.AddCookie(&http.Cookie{Name: api.SessionCookie, Value: id})
	}
	if caller != "" {
		req.Header.Set("X-Test-Caller", caller)
	}
	rec := httptest.NewRecorder()
	b.e.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var got whoami
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	var set *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == api.SessionCookie {
			set = c
		}
	}
	return got.Session, set
}

func TestSessionCreatedAndReused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const ttl = 60 * time.Second
	b := setupSession(t, ttl)

	before := time.Now().UTC().Add(-time.Second)
	id, ck := b.get(t, "/api/v1/whoami", "", "")
	require.NotNil(t, ck, "a new session sets the cookie")
	require.Equal(t, id, ck.Value)
	require.Regexp(t, `^[A-Za-z0-9_-]{43}$`, id, "32 random bytes, base64url")
	require.True(t, ck.HttpOnly)
	require.Equal(t, http.SameSiteLaxMode, ck.SameSite)
	require.Equal(t, "/", ck.Path)
	require.False(t, ck.Secure, "plain HTTP")
	require.Zero(t, ck.MaxAge, "Redis decides when the session ends")

	key := b.prefix + ":session:" + id
	raw, err := b.rdb.Get(ctx, key).Bytes()
	require.NoError(t, err)
	var data api.SessionData
	require.NoError(t, json.Unmarshal(raw, &data))
	require.Equal(t, auth.Anonymous, data.Caller)
	require.True(t, data.CreatedAt.After(before), data.CreatedAt)
	pttl, err := b.rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	require.Greater(t, pttl, ttl-5*time.Second)
	require.LessOrEqual(t, pttl, ttl)

	// Reused within the TTL: same id, no new cookie, TTL refreshed.
	require.NoError(t, b.rdb.PExpire(ctx, key, 5*time.Second).Err())
	again, ck := b.get(t, "/api/v1/whoami", "", id)
	require.Equal(t, id, again)
	require.Nil(t, ck, "no Set-Cookie for a live session")
	pttl, err = b.rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	require.Greater(t, pttl, ttl-5*time.Second, "sliding expiry")
	raw2, err := b.rdb.Get(ctx, key).Bytes()
	require.NoError(t, err)
	require.Equal(t, raw, raw2, "the session's data is unchanged")

	// Every client without a cookie gets its own session.
	other, ck := b.get(t, "/api/v1/whoami", "", "")
	require.NotNil(t, ck)
	require.NotEqual(t, id, other)
}

func TestSessionExpires(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setupSession(t, time.Second)

	id, ck := b.get(t, "/api/v1/whoami", "ci", "")
	require.NotNil(t, ck)
	key := b.prefix + ":session:" + id
	require.Eventually(t, func() bool { return b.rdb.Exists(ctx, key).Val() == 0 }, 5*time.Second, 50*time.Millisecond,
		"the session expires after its TTL")

	fresh, ck := b.get(t, "/api/v1/whoami", "ci", id)
	require.NotNil(t, ck, "an expired session is replaced")
	require.NotEqual(t, id, fresh)
	require.Equal(t, fresh, ck.Value)
	require.Equal(t, int64(1), b.rdb.Exists(ctx, b.prefix+":session:"+fresh).Val())
}

func TestSessionNotShared(t *testing.T) {
	t.Parallel()
	b := setupSession(t, time.Minute)

	id, _ := b.get(t, "/api/v1/whoami", "ci", "")
	same, ck := b.get(t, "/api/v1/whoami", "ci", id)
	require.Equal(t, id, same)
	require.Nil(t, ck)

	// Another token presenting that cookie gets a session of its own.
	other, ck := b.get(t, "/api/v1/whoami", "billing", id)
	require.NotNil(t, ck)
	require.NotEqual(t, id, other)

	// Malformed cookies never reach Redis and are replaced.
	for _, bad := range []string{"short", strings.Repeat("*", 43), id + "x"} {
		got, ck := b.get(t, "/api/v1/whoami", "ci", bad)
		require.NotNil(t, ck, bad)
		require.NotEqual(t, bad, got)
	}
}

func TestSessionExemptAndSecure(t *testing.T) {
	t.Parallel()
	b := setupSession(t, time.Minute)

	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		id, ck := b.get(t, p, "", "")
		require.Empty(t, id, p)
		require.Nil(t, ck, p)
	}

	req := httptest.NewRequest(http.MethodGet, "/api/v1/whoami", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	req.RemoteAddr = "10.0.0.5:40000" // a proxy on a private network, which echo trusts
	rec := httptest.NewRecorder()
	b.e.ServeHTTP(rec, req)
	cks := rec.Result().Cookies()
	require.Len(t, cks, 1)
	require.True(t, cks[0].Secure, "Secure behind an HTTPS proxy")
}

func TestSessionFailsOpen(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	var logs syncBuffer
	e := newEcho(testCaller, api.Session(rdb, "x", time.Minute, zerolog.New(&logs)))
	for range 3 {
		rec := do(e, http.MethodGet, "/api/v1/whoami")
		require.Equal(t, http.StatusOK, rec.Code)
		require.JSONEq(t, `{"caller":"anonymous","session":""}`, rec.Body.String())
		require.Empty(t, rec.Result().Cookies())
	}
	lines := logs.lines(t)
	require.Len(t, lines, 1, "logged once")
	require.Equal(t, "error", lines[0]["level"])
	require.Contains(t, lines[0]["message"], "sessions are off")
	require.Panics(t, func() { api.Session(rdb, "x", 0, zerolog.Nop()) })
}
