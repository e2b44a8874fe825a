package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/auth"
)

// SessionKey is the key of the echo context value holding the session id
// (a string). Set by [Session].
const SessionKey = "session"

// SessionCookie is the name of the api role's session cookie.
const SessionCookie = "flotilla_session"

// sessionIDBytes is the entropy of a session id: 256 bits.
const sessionIDBytes = 32

// sessionIDLen is the length of an encoded session id.
var sessionIDLen = base64.RawURLEncoding.EncodedLen(sessionIDBytes)

// SessionData is the JSON value of a session in Redis.
type SessionData struct {
	// Caller is the name of the caller that opened the session (see [auth.Caller]).
	Caller string `json:"caller"`
	// CreatedAt is when the session was opened, in UTC.
	CreatedAt time.Time `json:"created_at"`
}

// Session gives every request but those of [auth.Exempt] paths a session in
// Redis, as the kernel API always had: key <prefix>:session:<id> holding a
// JSON [SessionData], expiring ttl after the latest request that used it
// (sliding expiry; 60 s on the api role, api.session_ttl). The id (32
// random bytes, base64url) travels in the cookie [SessionCookie]
// (HttpOnly, SameSite=Lax, Path=/, Secure over HTTPS, no Max-Age: Redis
// decides when it ends). It must run after [Auth]; the id is stored under
// [SessionKey] (see [SessionID]).
//
// A request without the cookie, with a malformed one, with an expired
// session, or with a session opened by another caller (a different token:
// sessions are never shared between callers) gets a new session and a
// Set-Cookie; otherwise the session's TTL is refreshed with GETEX, one
// round trip either way. Note that clients that do not keep cookies (curl,
// SDKs) open one short-lived session per request.
//
// When Redis fails or does not answer within 500 ms the request goes on
// without a session (SessionID returns ""): sessions carry no
// authorization here, so a Redis outage should not fail the API. After a
// failure, requests skip Redis for a second, then one tries again. The
// first failure is logged at error level, recovery at info level.
//
// Session panics if ttl is not positive.
func Session(rdb redis.UniversalClient, prefix string, ttl time.Duration, log zerolog.Logger) echo.MiddlewareFunc {
	if ttl <= 0 {
		panic("api: Session needs a positive ttl")
	}
	s := &sessions{rdb: rdb, prefix: prefix + ":session:", ttl: ttl}
	s.brk = breaker{log: log, off: "sessions are off: Redis failed, requests go on without a session until it answers again",
		on: "sessions are on again: Redis answers"}
	return s.middleware
}

// SessionID returns the session id stored by [Session], or "" when the
// request has none (an exempt path, or Redis failed).
func SessionID(c echo.Context) string {
	s, _ := c.Get(SessionKey).(string)
	return s
}

type sessions struct {
	rdb    redis.UniversalClient
	prefix string // <prefix>:session:
	ttl    time.Duration
	brk    breaker
}

func (s *sessions) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if auth.Exempt(c.Request().URL.Path) {
			return next(c)
		}
		if s.brk.open() {
			return next(c)
		}
		ctx, cancel := context.WithTimeout(c.Request().Context(), redisTimeout)
		id, err := s.session(ctx, c)
		cancel()
		if err != nil {
			s.brk.fail(c.Request().Context(), err)
			return next(c)
		}
		s.brk.ok()
		c.Set(SessionKey, id)
		return next(c)
	}
}

// session refreshes the request's session, or opens a new one and sets the
// cookie, and returns its id.
func (s *sessions) session(ctx context.Context, c echo.Context) (string, error) {
	caller := auth.Caller(c)
	if ck, err := c.Cookie(SessionCookie); err == nil && validSessionID(ck.Value) {
		raw, err := s.rdb.GetEx(ctx, s.prefix+ck.Value, s.ttl).Bytes()
		switch {
		case errors.Is(err, redis.Nil):
			// expired or never existed: open a new one
		case err != nil:
			return "", err
		default:
			var d SessionData
			if json.Unmarshal(raw, &d) == nil && d.Caller == caller {
				return ck.Value, nil
			}
			// Another caller's session (or garbage): never share it.
		}
	}

	b := make([]byte, sessionIDBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	id := base64.RawURLEncoding.EncodeToString(b)
	val, err := json.Marshal(SessionData{Caller: caller, CreatedAt: time.Now().UTC()})
	if err != nil {
		return "", err
	}
	if err := s.rdb.Set(ctx, s.prefix+id, val, s.ttl).Err(); err != nil {
		return "", err
	}
	c.SetCookie(&http.Cookie{
		Name: SessionCookie, Value: id, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: c.Scheme() == "https",
	})
	return id, nil
}

// validSessionID reports whether v could be an id made by session, so that
// arbitrary cookie values never reach Redis.
func validSessionID(v string) bool {
	if len(v) != sessionIDLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}
