package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/store"
)

// Paths of the session endpoints (mounted by [Sessions.Mount]).
const (
	LoginPath  = "/api/v1/login"
	LogoutPath = "/api/v1/logout"
	MePath     = "/api/v1/me"
)

// PasswordCost is the bcrypt cost of stored password hashes.
const PasswordCost = bcrypt.DefaultCost

// MinPasswordLen is the shortest password a user may set.
const MinPasswordLen = 8

// HashPassword returns the bcrypt hash of password, or an error when it is
// shorter than [MinPasswordLen] or longer than bcrypt's 72 bytes.
func HashPassword(password string) (string, error) {
	if len(password) < MinPasswordLen {
		return "", fmt.Errorf("password: at least %d characters", MinPasswordLen)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), PasswordCost)
	if err != nil {
		return "", fmt.Errorf("password: %w", err)
	}
	return string(h), nil
}

// dummyHash is compared against when a user does not exist, so that an
// unknown name takes as long as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a password of anyone"), PasswordCost)

// Users is what logging in needs from PostgreSQL (implemented by
// [store.Store]).
type Users interface {
	UserCredentials(ctx context.Context, name string) (store.User, string, error)
	UserTouchLogin(ctx context.Context, name string) error
}

// SessionConfig configures [Sessions].
type SessionConfig struct {
	// Redis holds the sessions under Prefix.
	Redis  redis.UniversalClient
	Prefix string
	// Idle ends a session that made no request for this long. Default 30m.
	Idle time.Duration
	// Max ends a session this long after its login, used or not. Default 12h.
	Max time.Duration
	// Secure sets the cookie's Secure attribute always; it is set anyway on
	// a request that came over TLS.
	Secure bool
	// Cookie is the cookie's name. Default flotilla_web.
	Cookie string
	// Failures limits failed logins per user name and per address.
	Failures FailureLimit
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Sessions are people's logins to the web role: a random id in an
// HttpOnly, SameSite=Lax cookie names a Redis hash with the user, role,
// CSRF token and login time, which expires after Idle without requests
// and Max after the login.
type Sessions struct {
	cfg   SessionConfig
	users Users
	fl    *failures
	log   zerolog.Logger
}

// NewSessions returns the session store of web.
func NewSessions(cfg SessionConfig, users Users, log zerolog.Logger) *Sessions {
	if cfg.Idle <= 0 {
		cfg.Idle = 30 * time.Minute
	}
	if cfg.Max <= 0 {
		cfg.Max = 12 * time.Hour
	}
	if cfg.Cookie == "" {
		cfg.Cookie = "flotilla_web"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sessions{cfg: cfg, users: users, log: log}
	if cfg.Failures.Redis != nil && cfg.Failures.Limit > 0 {
		s.fl = newFailures(cfg.Failures, log)
	}
	return s
}

func (s *Sessions) key(id string) string       { return s.cfg.Prefix + ":websession:" + id }
func (s *Sessions) userKey(name string) string { return s.cfg.Prefix + ":websessions:" + name }

// LoginBody is the JSON of POST /api/v1/login.
type LoginBody struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// LoginAnswer is the answer of a login and of GET /api/v1/me: who is
// logged in, the CSRF token every state-changing request must carry in
// X-CSRF-Token, and when the session ends at the latest.
type LoginAnswer struct {
	Name      string     `json:"name"`
	Kind      string     `json:"kind"`
	Role      string     `json:"role"`
	CSRFToken string     `json:"csrf_token,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// AuthOff is true when authentication is off (dev).
	AuthOff bool `json:"auth_off,omitempty"`
}

// Mount adds POST /api/v1/login, POST /api/v1/logout and GET /api/v1/me
// to e. audit, when set, records logins and logouts.
func (s *Sessions) Mount(e *echo.Echo, audit func(c echo.Context, action, target, result string, status int)) {
	e.POST(LoginPath, func(c echo.Context) error { return s.login(c, audit) })
	e.POST(LogoutPath, func(c echo.Context) error { return s.logout(c, audit) })
	e.GET(MePath, Me)
}

// Me answers GET /api/v1/me: the principal of the request, and for a
// session its CSRF token.
func Me(c echo.Context) error {
	p, ok := From(c)
	if !ok {
		return rest.NewError(http.StatusUnauthorized, "unauthorized", "", "not authenticated")
	}
	return c.JSON(http.StatusOK, LoginAnswer{Name: p.Name, Kind: p.Kind, Role: p.Role, CSRFToken: p.CSRF, AuthOff: p.Kind == KindAnonymous})
}

func (s *Sessions) login(c echo.Context, audit func(echo.Context, string, string, string, int)) error {
	r := c.Request()
	var body LoginBody
	if err := c.Bind(&body); err != nil || body.Name == "" || body.Password == "" {
		return rest.NewError(http.StatusBadRequest, "invalid_field", "name", "want a JSON object with name and password")
	}
	addr := clientAddr(r)
	for _, lock := range []struct{ key, who string }{{s.fl.userKey(body.Name), "this user"}, {s.fl.addrKey(addr), "this address"}} {
		if wait := s.fl.blocked(r.Context(), lock.key); wait > 0 {
			logRefusal(c, s.log.Warn(), "login locked out").Str("user", body.Name).Msg("login refused: too many failures")
			if audit != nil {
				audit(c, "user.login", body.Name, "too_many_failures", http.StatusTooManyRequests)
			}
			return tooManyFailures(c, lock.who, wait)
		}
	}
	u, hash, err := s.users.UserCredentials(r.Context(), body.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(body.Password))
		return s.loginFailed(c, body.Name, addr, audit)
	case err != nil:
		logRefusal(c, s.log.Error(), "cannot check credentials").Err(err).Msg("login failed: store unavailable")
		return authUnavailable()
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(body.Password)) != nil {
		return s.loginFailed(c, body.Name, addr, audit)
	}
	id, csrf := randomToken(), randomToken()
	now := s.cfg.Now()
	pipe := s.cfg.Redis.TxPipeline()
	pipe.HSet(r.Context(), s.key(id), "user", u.Name, "role", u.Role, "csrf", csrf, "created", strconv.FormatInt(now.Unix(), 10))
	pipe.Expire(r.Context(), s.key(id), s.cfg.Idle)
	pipe.SAdd(r.Context(), s.userKey(u.Name), id)
	pipe.Expire(r.Context(), s.userKey(u.Name), s.cfg.Max)
	if _, err := pipe.Exec(r.Context()); err != nil {
		logRefusal(c, s.log.Error(), "cannot store session").Err(err).Msg("login failed: Redis unavailable")
		return authUnavailable()
	}
	_ = s.users.UserTouchLogin(context.WithoutCancel(r.Context()), u.Name)
	http.SetCookie(c.Response(), &http.Cookie{
		Name: s.cfg.Cookie, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: s.cfg.Secure || r.TLS != nil, MaxAge: int(s.cfg.Max.Seconds()),
	})
	p := Principal{Name: u.Name, Kind: KindUser, Role: u.Role, Session: id, CSRF: csrf}
	set(c, p)
	if audit != nil {
		audit(c, "user.login", u.Name, "ok", http.StatusOK)
	}
	exp := now.Add(s.cfg.Max).UTC()
	return c.JSON(http.StatusOK, LoginAnswer{Name: u.Name, Kind: KindUser, Role: u.Role, CSRFToken: csrf, ExpiresAt: &exp})
}

func (s *Sessions) loginFailed(c echo.Context, name, addr string, audit func(echo.Context, string, string, string, int)) error {
	s.fl.failed(c.Request().Context(), s.fl.userKey(name), s.fl.addrKey(addr))
	logRefusal(c, s.log.Warn(), "wrong name or password").Str("user", name).Msg("login refused")
	if audit != nil {
		c.Set(CallerKey, name)
		audit(c, "user.login", name, "invalid_credentials", http.StatusUnauthorized)
	}
	return rest.NewError(http.StatusUnauthorized, "invalid_credentials", "", "wrong user name or password")
}

func (s *Sessions) logout(c echo.Context, audit func(echo.Context, string, string, string, int)) error {
	p, ok := From(c)
	if !ok || p.Session == "" {
		return rest.NewError(http.StatusBadRequest, "not_a_session", "", "logout ends a session; this request has none")
	}
	ctx := c.Request().Context()
	if err := s.cfg.Redis.Del(ctx, s.key(p.Session)).Err(); err != nil {
		return authUnavailable()
	}
	_ = s.cfg.Redis.SRem(ctx, s.userKey(p.Name), p.Session).Err()
	http.SetCookie(c.Response(), &http.Cookie{Name: s.cfg.Cookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	if audit != nil {
		audit(c, "user.logout", p.Name, "ok", http.StatusNoContent)
	}
	return c.NoContent(http.StatusNoContent)
}

// EndUser ends every session of user name (after a password or role
// change, or a deletion).
func (s *Sessions) EndUser(ctx context.Context, name string) error {
	ids, err := s.cfg.Redis.SMembers(ctx, s.userKey(name)).Result()
	if err != nil {
		return fmt.Errorf("sessions of %s: %w", name, err)
	}
	keys := []string{s.userKey(name)}
	for _, id := range ids {
		keys = append(keys, s.key(id))
	}
	return s.cfg.Redis.Del(ctx, keys...).Err()
}

// authenticate checks the session id of a cookie and, for a
// state-changing request, its CSRF token; then calls next as the user.
func (s *Sessions) authenticate(c echo.Context, id string, fl *failures, addr string, log zerolog.Logger, next echo.HandlerFunc) error {
	r := c.Request()
	ctx := r.Context()
	pipe := s.cfg.Redis.Pipeline()
	get := pipe.HGetAll(ctx, s.key(id))
	pipe.Expire(ctx, s.key(id), s.cfg.Idle) // each request restarts the idle clock
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		logRefusal(c, log.Error(), "cannot read session").Err(err).Msg("request refused: Redis unavailable")
		return authUnavailable()
	}
	m := get.Val()
	created, _ := strconv.ParseInt(m["created"], 10, 64)
	if len(m) == 0 || m["user"] == "" || s.cfg.Now().Sub(time.Unix(created, 0)) > s.cfg.Max {
		if len(m) > 0 {
			_ = s.cfg.Redis.Del(ctx, s.key(id)).Err()
		}
		fl.failed(ctx, fl.addrKey(addr))
		http.SetCookie(c.Response(), &http.Cookie{Name: s.cfg.Cookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
		return unauthorized(c, log, "session expired or unknown: log in again", false)
	}
	p := Principal{Name: m["user"], Kind: KindUser, Role: m["role"], Session: id, CSRF: m["csrf"]}
	if changesState(r.Method) && !csrfOK(r, p.CSRF) {
		logRefusal(c, log.Warn(), "missing or wrong CSRF token").Str("user", p.Name).Msg("request refused: CSRF")
		return rest.NewError(http.StatusForbidden, "csrf", CSRFHeader,
			"a state-changing request authenticated by a session cookie must carry the session's CSRF token in "+CSRFHeader+" (see GET "+MePath+")")
	}
	set(c, p)
	return next(c)
}

// randomToken is 32 bytes from crypto/rand, URL-safe base64.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
