package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/store"
)

// Keys of the values the middleware of this package store in the echo
// context with c.Set.
const (
	// CallerKey holds the caller's name (a string): the API token's name,
	// or [Anonymous] when api.auth is "none". Set by [Auth].
	CallerKey = "caller"
	// SessionKey holds the session id (a string). Set by [Session].
	SessionKey = "session"
)

// Anonymous is the caller name of every request when api.auth is "none".
const Anonymous = "anonymous"

// Auth modes (config api.auth).
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
func Auth(mode string, verify func(ctx context.Context, token string) (name string, err error), log zerolog.Logger) echo.MiddlewareFunc {
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
			panic("api: Auth with mode token needs a verify function")
		}
	default:
		panic(fmt.Sprintf("api: unknown auth mode %q (want %q or %q)", mode, AuthNone, AuthToken))
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if Exempt(c.Request().URL.Path) {
				return next(c)
			}
			token, reason := bearerToken(c.Request())
			if reason != "" {
				return unauthorized(c, log, reason, false)
			}
			name, err := verify(c.Request().Context(), token)
			switch {
			case errors.Is(err, ErrInvalidToken), errors.Is(err, store.ErrNotFound):
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
