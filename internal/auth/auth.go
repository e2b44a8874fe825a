// Package auth authenticates the HTTP roles (web and api): API tokens
// (stored hashed in PostgreSQL, see store) sent as a Bearer token or in
// X-API-Token, and a limit on failed attempts per client address. It knows
// the roles' exempt paths (health, readiness, metrics), not their routes.
package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/store"
)

// Keys of the values the middleware of this package store in the echo
// context with c.Set.
const (
	// CallerKey holds the caller's name (a string): the API token's name,
	// or [Anonymous] when auth is "none". Set by [Auth].
	CallerKey = "caller"
)

// Anonymous is the caller name of every request when auth is "none".
const Anonymous = "anonymous"

// Auth modes (config web.auth and api.auth).
const (
	AuthNone  = "none"
	AuthToken = "token"
)

// TokenHeader is the alternative to "Authorization: Bearer <token>".
const TokenHeader = "X-API-Token"

// ErrInvalidToken is what a verify function of [Auth] returns (wrapped or
// not) for a token that is unknown, revoked or malformed; Auth answers 401
// (so it does for [store.ErrNotFound]). Any other error means the check
// itself failed; Auth answers 503.
var ErrInvalidToken = errors.New("invalid API token")

// exempt are the paths served without authentication (and without a
// session): probes and the metrics scraper.
var exempt = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// Exempt reports whether path is served without authentication or session:
// /healthz, /readyz and /metrics.
func Exempt(path string) bool { return exempt[path] }

// Auth authenticates every request but those of [Exempt] paths and stores
// the caller's name under [CallerKey] (see [Caller]).
//
// With mode [AuthNone] every request passes as [Anonymous]. With mode
// [AuthToken] the token is read from "Authorization: Bearer <token>" (the
// scheme is case-insensitive) or, without that header, from [TokenHeader],
// and passed to verify, which returns the token's name.
//
// A missing or wrong token (verify returned [ErrInvalidToken] or
// [store.ErrNotFound], possibly wrapped) is a 401 JSON error with code
// "unauthorized" and a WWW-Authenticate: Bearer challenge (RFC 6750),
// logged at warn level. Any other error from verify (the database is
// down) is a 503 with code "auth_unavailable", logged at error level: the
// request is never let through unverified, and an outage does not look
// like a bad token. Logs name the method, path, remote address and reason,
// never the token nor any part of it.
//
// Auth panics when mode is neither "none" nor "token" (config validation
// rules that out).
func Auth(mode string, verify func(ctx context.Context, token string) (name string, err error), log zerolog.Logger, limit ...FailureLimit) echo.MiddlewareFunc {
	var fl *failures
	if len(limit) > 0 && limit[0].Redis != nil && limit[0].Limit > 0 {
		fl = newFailures(limit[0], log)
	}
	switch mode {
	case AuthNone:
		return func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				c.Set(CallerKey, Anonymous)
				return next(c)
			}
		}
	case AuthToken:
		if verify == nil {
			panic("auth: mode token needs a verify function")
		}
	default:
		panic(fmt.Sprintf("auth: unknown mode %q (want %q or %q)", mode, AuthNone, AuthToken))
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if Exempt(c.Request().URL.Path) {
				return next(c)
			}
			addr := clientAddr(c.Request())
			if wait := fl.blocked(c.Request().Context(), addr); wait > 0 {
				logRefusal(c, log.Warn(), "too many failed attempts").Msg("request refused: address locked out")
				c.Response().Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds()+0.999)))
				return rest.NewError(http.StatusTooManyRequests, "too_many_failures",
					"", fmt.Sprintf("too many failed authentication attempts from this address; retry in %s", wait.Round(time.Second)))
			}
			token, reason := bearerToken(c.Request())
			if reason != "" {
				fl.failed(c.Request().Context(), addr)
				return unauthorized(c, log, reason, false)
			}
			name, err := verify(c.Request().Context(), token)
			switch {
			case errors.Is(err, ErrInvalidToken), errors.Is(err, store.ErrNotFound):
				fl.failed(c.Request().Context(), addr)
				return unauthorized(c, log, "unknown or revoked token", true)
			case err != nil:
				if c.Request().Context().Err() == nil { // not just a client gone away
					// err comes from the verifier, which never includes
					// the token (store.TokenVerify's errors do not).
					logRefusal(c, log.Error(), "cannot verify token").Err(err).Msg("request refused: token check failed")
				}
				return rest.NewError(http.StatusServiceUnavailable, "auth_unavailable", "",
					"the API token cannot be verified now; retry later")
			}
			c.Set(CallerKey, name)
			return next(c)
		}
	}
}

// StoreVerifier adapts a token store (such as [store.Store]) to the verify
// function of [Auth]: [store.ErrNotFound] becomes [ErrInvalidToken].
func StoreVerifier(s interface {
	TokenVerify(ctx context.Context, plaintext string) (store.Token, error)
},
) func(ctx context.Context, token string) (string, error) {
	return func(ctx context.Context, token string) (string, error) {
		t, err := s.TokenVerify(ctx, token)
		if errors.Is(err, store.ErrNotFound) {
			return "", ErrInvalidToken
		}
		if err != nil {
			return "", err
		}
		return t.Name, nil
	}
}

// Caller returns the caller's name stored by [Auth], or "" when Auth did
// not run (an exempt path).
func Caller(c echo.Context) string {
	s, _ := c.Get(CallerKey).(string)
	return s
}

// bearerToken extracts the token of r, or says why there is none. An
// Authorization header with another scheme (Basic from a proxy) does not
// hide an X-API-Token header.
func bearerToken(r *http.Request) (token, reason string) {
	h := r.Header.Get(echo.HeaderAuthorization)
	if scheme, tok, _ := strings.Cut(h, " "); strings.EqualFold(scheme, "Bearer") {
		if tok = strings.TrimSpace(tok); tok == "" {
			return "", "empty bearer token"
		}
		return tok, ""
	}
	if tok := strings.TrimSpace(r.Header.Get(TokenHeader)); tok != "" {
		return tok, ""
	}
	if h != "" {
		return "", "unsupported Authorization scheme (want Bearer)"
	}
	return "", reasonNoToken
}

const reasonNoToken = "no API token"

// unauthorized logs the refusal and returns the 401.
func unauthorized(c echo.Context, log zerolog.Logger, reason string, presented bool) error {
	logRefusal(c, log.Warn(), reason).Msg("request refused: not authenticated")
	challenge := `Bearer realm="flotilla"`
	how := "send Authorization: Bearer <token> or " + TokenHeader + ": <token>"
	msg := "an API token is required: " + how
	switch {
	case presented:
		challenge += `, error="invalid_token"`
		msg = "the API token is unknown or revoked"
	case reason != reasonNoToken:
		challenge += `, error="invalid_request"`
		msg = reason + ": " + how
	}
	c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
	return rest.NewError(http.StatusUnauthorized, "unauthorized", "", msg)
}

// logRefusal adds the request's method, path, addresses and the reason to
// e — never a header value, so never the token.
func logRefusal(c echo.Context, e *zerolog.Event, reason string) *zerolog.Event {
	r := c.Request()
	e = e.Str("method", r.Method).Str("path", r.URL.Path).Str("remote_addr", r.RemoteAddr)
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if ip := c.RealIP(); ip != "" && ip != host {
			e = e.Str("real_ip", ip) // from X-Forwarded-For or X-Real-IP
		}
	}
	return e.Str("reason", reason)
}

// FailureLimit limits failed authentication attempts (no token, a
// malformed, unknown or revoked one) per client address: after Limit
// failures within Window the address is refused with 429 and Retry-After
// until the window ends, before any token is checked. The count lives in
// Redis under Prefix, so every replica shares it; when Redis fails the
// limit is not applied (logged) and tokens are still checked.
type FailureLimit struct {
	Redis  redis.UniversalClient
	Prefix string
	Limit  int
	Window time.Duration
}

type failures struct {
	FailureLimit
	log zerolog.Logger
}

func newFailures(l FailureLimit, log zerolog.Logger) *failures {
	if l.Window <= 0 {
		l.Window = time.Minute
	}
	return &failures{FailureLimit: l, log: log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Minute})}
}

func (f *failures) key(addr string) string { return f.Prefix + ":authfail:" + addr }

// blocked returns how long addr stays locked out, 0 when it is not.
func (f *failures) blocked(ctx context.Context, addr string) time.Duration {
	if f == nil {
		return 0
	}
	n, err := f.Redis.Get(ctx, f.key(addr)).Int()
	if errors.Is(err, redis.Nil) || err == nil && n < f.Limit {
		return 0
	}
	if err != nil {
		f.log.Warn().Err(err).Msg("failed-attempt limit not applied: Redis unavailable")
		return 0
	}
	ttl, err := f.Redis.PTTL(ctx, f.key(addr)).Result()
	if err != nil || ttl <= 0 {
		return f.Window
	}
	return ttl
}

// failed counts one failed attempt of addr.
func (f *failures) failed(ctx context.Context, addr string) {
	if f == nil {
		return
	}
	pipe := f.Redis.Pipeline()
	pipe.Incr(ctx, f.key(addr))
	pipe.ExpireNX(ctx, f.key(addr), f.Window)
	if _, err := pipe.Exec(ctx); err != nil {
		f.log.Warn().Err(err).Msg("failed-attempt limit not counted: Redis unavailable")
	}
}

// clientAddr is the address failed attempts are counted by: the peer of
// the connection (headers such as X-Forwarded-For are not trusted, since a
// client could vary them; behind a proxy all its clients share a count).
func clientAddr(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
