// Package auth authenticates and authorizes the HTTP roles (web and api):
// API tokens (stored hashed in PostgreSQL, see store) sent as a Bearer token
// or in X-API-Token, people's sessions (a cookie naming a session in Redis,
// opened by logging in with a bcrypt-checked password, with CSRF tokens for
// every state-changing request), the roles admin, operator and viewer, and
// a limit on failed attempts per user and per client address. It knows the
// roles' exempt paths (health, readiness, metrics, login), not their routes.
package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/store"
)

// PrincipalKey is the key of the echo context value holding the
// [Principal] of a request. Set by [Auth].
const PrincipalKey = "principal"

// CallerKey holds the caller's name (a string), for code that needs only
// that. Set by [Auth].
const CallerKey = "caller"

// Anonymous is the name of every caller when authentication is off.
const Anonymous = "anonymous"

// Kinds of principal.
const (
	KindUser      = "user"
	KindToken     = "token"
	KindAnonymous = "anonymous"
)

// Principal is who makes a request and what it may do.
type Principal struct {
	// Name is the user's or the token's name, or [Anonymous].
	Name string `json:"name"`
	// Kind is KindUser, KindToken or KindAnonymous.
	Kind string `json:"kind"`
	// Role is store.RoleAdmin, RoleOperator or RoleViewer.
	Role string `json:"role"`
	// Session is the session id of a user (empty for tokens).
	Session string `json:"-"`
	// CSRF is the session's CSRF token (empty for tokens).
	CSRF string `json:"-"`
}

// Modes of authentication (config web.auth and api.auth).
const (
	// AuthNone lets every request through as [Anonymous] with the admin
	// role: development only.
	AuthNone = "none"
	// AuthRequired wants an API token or, on web, a session.
	AuthRequired = "required"
	// AuthToken is AuthRequired under its older name.
	AuthToken = "token"
)

// TokenHeader is the alternative to "Authorization: Bearer <token>".
const TokenHeader = "X-API-Token"

// CSRFHeader carries the CSRF token of a session on state-changing requests.
const CSRFHeader = "X-CSRF-Token"

// ErrInvalidToken is what a verify function of [Config] returns (wrapped or
// not) for a token that is unknown, revoked or malformed; Auth answers 401
// (so it does for [store.ErrNotFound]). Any other error means the check
// itself failed; Auth answers 503.
var ErrInvalidToken = errors.New("invalid API token")

// exempt are the paths served without authentication: probes, the metrics
// scraper, and logging in (the endpoint and the dashboard's page).
var exempt = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true, LoginPath: true, LoginPage: true}

// LoginPage is the dashboard's login page; StaticPrefix starts its assets.
const (
	LoginPage    = "/login"
	StaticPrefix = "/static/"
)

// Exempt reports whether path is served without authentication: /healthz,
// /readyz, /metrics, the login endpoint and page, and the dashboard's
// static assets.
func Exempt(path string) bool { return exempt[path] || strings.HasPrefix(path, StaticPrefix) }

// isPage reports whether r asks for a dashboard page (not the API): a
// person who is not logged in is sent to the login page instead of a 401.
func isPage(r *http.Request) bool {
	return r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/")
}

// Config configures [Auth].
type Config struct {
	// Mode is AuthNone, AuthRequired or AuthToken.
	Mode string
	// Verify checks an API token and returns its principal (see
	// [StoreVerifier]); required unless Mode is AuthNone.
	Verify func(ctx context.Context, token string) (Principal, error)
	// Sessions, when set, also accepts people's session cookies (web).
	Sessions *Sessions
	// Failures limits failed attempts per client address.
	Failures FailureLimit
}

// Auth authenticates every request but those of [Exempt] paths and stores
// its [Principal] under [PrincipalKey] (see [From]) and its name under
// [CallerKey].
//
// With mode [AuthNone] every request passes as [Anonymous] with the admin
// role. Otherwise a token is read from "Authorization: Bearer <token>" (the
// scheme is case-insensitive) or, without that header, from
// [TokenHeader], and passed to Verify; without a token, a session cookie
// (when Sessions is set) names the user. A request authenticated by its
// cookie that changes state (any method but GET, HEAD, OPTIONS) must carry
// the session's CSRF token in [CSRFHeader]: otherwise 403 "csrf". A token
// needs none: a browser does not send it on its own.
//
// A missing or wrong token or session is a 401 JSON error with code
// "unauthorized" and a WWW-Authenticate: Bearer challenge (RFC 6750),
// logged at warn level, and counts as a failed attempt of the address. A
// failed check (the database or Redis down) is a 503 "auth_unavailable",
// logged at error level: the request is never let through unverified.
// Logs name the method, path, remote address and reason, never the token
// nor any part of it.
//
// Auth panics on an unknown mode or a missing Verify (config validation
// rules both out).
func Auth(cfg Config, log zerolog.Logger) echo.MiddlewareFunc {
	var fl *failures
	if cfg.Failures.Redis != nil && cfg.Failures.Limit > 0 {
		fl = newFailures(cfg.Failures, log)
	}
	switch cfg.Mode {
	case AuthNone:
		anon := Principal{Name: Anonymous, Kind: KindAnonymous, Role: store.RoleAdmin}
		return func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				set(c, anon)
				return next(c)
			}
		}
	case AuthRequired, AuthToken:
		if cfg.Verify == nil {
			panic("auth: mode " + cfg.Mode + " needs a Verify function")
		}
	default:
		panic(fmt.Sprintf("auth: unknown mode %q (want %q or %q)", cfg.Mode, AuthNone, AuthRequired))
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if Exempt(c.Request().URL.Path) {
				return next(c)
			}
			r := c.Request()
			addr := clientAddr(r)
			if wait := fl.blocked(r.Context(), fl.addrKey(addr)); wait > 0 {
				logRefusal(c, log.Warn(), "too many failed attempts").Msg("request refused: address locked out")
				return tooManyFailures(c, "this address", wait)
			}
			token, reason := bearerToken(r)
			if reason == reasonNoToken && cfg.Sessions != nil {
				if ck, err := r.Cookie(cfg.Sessions.cfg.Cookie); err == nil && ck.Value != "" {
					return cfg.Sessions.authenticate(c, ck.Value, fl, addr, log, next)
				}
			}
			if reason == reasonNoToken && isPage(r) {
				// A browser that is not logged in: no failed attempt.
				return unauthorized(c, log, reason, false)
			}
			if reason != "" {
				fl.failed(r.Context(), fl.addrKey(addr))
				return unauthorized(c, log, reason, false)
			}
			p, err := cfg.Verify(r.Context(), token)
			switch {
			case errors.Is(err, ErrInvalidToken), errors.Is(err, store.ErrNotFound):
				fl.failed(r.Context(), fl.addrKey(addr))
				return unauthorized(c, log, "unknown or revoked token", true)
			case err != nil:
				if r.Context().Err() == nil { // not just a client gone away
					// err comes from the verifier, which never includes
					// the token (store.TokenVerify's errors do not).
					logRefusal(c, log.Error(), "cannot verify token").Err(err).Msg("request refused: token check failed")
				}
				return authUnavailable()
			}
			set(c, p)
			return next(c)
		}
	}
}

func authUnavailable() error {
	e := rest.NewError(http.StatusServiceUnavailable, "auth_unavailable", "", "the credentials cannot be verified now; retry later")
	e.RetryAfter = rest.RetryAfter
	return e
}

func set(c echo.Context, p Principal) {
	c.Set(PrincipalKey, p)
	c.Set(CallerKey, p.Name)
}

// From returns the principal [Auth] stored, and false when Auth did not
// run (an exempt path).
func From(c echo.Context) (Principal, bool) {
	p, ok := c.Get(PrincipalKey).(Principal)
	return p, ok
}

// Caller returns the caller's name stored by [Auth], or "" when Auth did
// not run (an exempt path).
func Caller(c echo.Context) string {
	s, _ := c.Get(CallerKey).(string)
	return s
}

// rank orders the roles: a higher rank may do all that a lower one may.
func rank(role string) int {
	switch role {
	case store.RoleAdmin:
		return 3
	case store.RoleOperator:
		return 2
	case store.RoleViewer:
		return 1
	}
	return 0
}

// Allows reports whether a principal of role may do what needs role need.
func Allows(role, need string) bool { return rank(role) >= rank(need) }

// Require answers 403 "forbidden" to a principal whose role is below need
// (store.RoleViewer, RoleOperator or RoleAdmin). Mount it on routes, after
// [Auth].
func Require(need string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			p, ok := From(c)
			if !ok {
				return rest.NewError(http.StatusUnauthorized, "unauthorized", "", "not authenticated")
			}
			if !Allows(p.Role, need) {
				return rest.NewError(http.StatusForbidden, "forbidden", "",
					fmt.Sprintf("%s %s has the role %s; this needs %s", p.Kind, p.Name, p.Role, need))
			}
			return next(c)
		}
	}
}

// StoreVerifier adapts a token store (such as [store.Store]) to
// Config.Verify: the token's name and role, [ErrInvalidToken] for one that
// is unknown or revoked.
func StoreVerifier(s interface {
	TokenVerify(ctx context.Context, plaintext string) (store.Token, error)
},
) func(ctx context.Context, token string) (Principal, error) {
	return func(ctx context.Context, token string) (Principal, error) {
		t, err := s.TokenVerify(ctx, token)
		if errors.Is(err, store.ErrNotFound) {
			return Principal{}, ErrInvalidToken
		}
		if err != nil {
			return Principal{}, err
		}
		return Principal{Name: t.Name, Kind: KindToken, Role: t.Role}, nil
	}
}

// changesState reports whether a request with method may change state
// (and so needs a CSRF token when a cookie authenticates it).
func changesState(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// csrfOK reports whether r carries the session's CSRF token.
func csrfOK(r *http.Request, want string) bool {
	got := r.Header.Get(CSRFHeader)
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
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
	if isPage(c.Request()) {
		// A person's browser: to the login page, and back here after it.
		return c.Redirect(http.StatusSeeOther, LoginPage+"?next="+url.QueryEscape(c.Request().URL.RequestURI()))
	}
	logRefusal(c, log.Warn(), reason).Msg("request refused: not authenticated")
	challenge := `Bearer realm="flotilla"`
	how := "log in, or send Authorization: Bearer <token> or " + TokenHeader + ": <token>"
	msg := "authentication is required: " + how
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

func tooManyFailures(c echo.Context, who string, wait time.Duration) error {
	c.Response().Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds()+0.999)))
	return rest.NewError(http.StatusTooManyRequests, "too_many_failures",
		"", fmt.Sprintf("too many failed authentication attempts for %s; retry in %s", who, wait.Round(time.Second)))
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
// malformed, unknown or revoked one, a wrong password) per client address
// and, for logins, per user name: after Limit failures within Window the
// address (or user) is refused with 429 and Retry-After until the window
// ends, before any credential is checked. The count lives in Redis under
// Prefix, so every replica shares it; when Redis fails the limit is not
// applied (logged) and credentials are still checked.
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

func (f *failures) addrKey(addr string) string {
	if f == nil {
		return ""
	}
	return f.Prefix + ":authfail:addr:" + addr
}

func (f *failures) userKey(name string) string {
	if f == nil {
		return ""
	}
	return f.Prefix + ":authfail:user:" + name
}

// blocked returns how long key stays locked out, 0 when it is not.
func (f *failures) blocked(ctx context.Context, key string) time.Duration {
	if f == nil {
		return 0
	}
	n, err := f.Redis.Get(ctx, key).Int()
	if errors.Is(err, redis.Nil) || err == nil && n < f.Limit {
		return 0
	}
	if err != nil {
		f.log.Warn().Err(err).Msg("failed-attempt limit not applied: Redis unavailable")
		return 0
	}
	ttl, err := f.Redis.PTTL(ctx, key).Result()
	if err != nil || ttl <= 0 {
		return f.Window
	}
	return ttl
}

// failed counts one failed attempt of each key.
func (f *failures) failed(ctx context.Context, keys ...string) {
	if f == nil {
		return
	}
	pipe := f.Redis.Pipeline()
	for _, k := range keys {
		pipe.Incr(ctx, k)
		pipe.ExpireNX(ctx, k, f.Window)
	}
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
