// Package api is the kernel API role on :8081: synchronous execution
// (POST /api/v1/exec/{task}, answered by a worker over NATS request-reply,
// or in-process with api.exec=local), the enqueue and status endpoints of
// the web role (package rest), health, readiness and metrics.
package api

import (
	"context"
	"net"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/logging"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/wire"
)

// Config configures the api role.
type Config struct {
	Addr            string
	MaxBodyBytes    int64
	ShutdownTimeout time.Duration
	// Exec runs sync executions (Remote or Local).
	Exec Executor
	// ExecTimeout is the default wait, ExecTimeoutMax the largest ?timeout=.
	ExecTimeout, ExecTimeoutMax time.Duration

	// Auth is auth.AuthNone or auth.AuthRequired (tokens); Verify checks a
	// token (see auth.StoreVerifier); Failures limits failed attempts per
	// address. Tokens need the operator role to enqueue and execute.
	Auth     string
	Verify   func(ctx context.Context, token string) (auth.Principal, error)
	Failures auth.FailureLimit
	// Redis, when set, backs sessions (SessionTTL) and the per-token rate
	// limit (RateLimit requests per RateWindow; 0 = off) under Prefix.
	Redis      redis.UniversalClient
	Prefix     string
	SessionTTL time.Duration
	RateLimit  int
	RateWindow time.Duration
	// Metrics is the role's registry, served on /metrics; nil = a new one.
	Metrics *prometheus.Registry
	// Listener, when set, is Addr bound already (Run binds Addr otherwise).
	Listener net.Listener
	// RequestTimeout bounds every request but sync executions (see
	// rest.NewRole); 0 = none.
	RequestTimeout time.Duration
}

// Server is the api role.
type Server struct {
	cfg  Config
	echo *echo.Echo
}

// New builds the api role's routes.
func New(cfg Config, c rest.Enqueuer, checks []rest.Check, log zerolog.Logger) *Server {
	log = log.With().Str(logging.Component, "api").Logger()
	if cfg.Metrics == nil {
		cfg.Metrics = rest.NewRegistry()
	}
	e := rest.NewRole("api", log, cfg.Metrics, checks, cfg.RequestTimeout)
	e.JSONSerializer = TimezoneSerializer{}
	// Order matters: the rate limit and the session need the caller Auth sets.
	mode := cfg.Auth
	if mode == "" {
		mode = auth.AuthNone
	}
	e.Use(auth.Auth(auth.Config{Mode: mode, Verify: cfg.Verify, Failures: cfg.Failures}, log))
	guard := auth.Guard(nil)
	if cfg.Redis != nil {
		e.Use(RateLimit(cfg.Redis, cfg.Prefix, cfg.RateLimit, cfg.RateWindow, log))
		if cfg.SessionTTL > 0 {
			e.Use(Session(cfg.Redis, cfg.Prefix, cfg.SessionTTL, log))
		}
	}
	e.Use(Timezone())
	g := e.Group("/api/v1")
	rest.TaskRoutes{Client: c, MaxBodyBytes: cfg.MaxBodyBytes, Origin: wire.OriginAPI, Guard: guard}.Mount(g)
	if cfg.Exec != nil {
		ExecRoutes{Exec: cfg.Exec, MaxBodyBytes: cfg.MaxBodyBytes, Timeout: cfg.ExecTimeout, MaxTimeout: cfg.ExecTimeoutMax, Guard: guard}.Mount(g)
	}
	return &Server{cfg: cfg, echo: e}
}

// Handler exposes the routes (for httptest).
func (s *Server) Handler() *echo.Echo { return s.echo }

// Run serves until ctx is done, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = rest.Listen(s.cfg.Addr); err != nil {
			return err
		}
	}
	return rest.Serve(ctx, s.echo, ln, s.cfg.ShutdownTimeout)
}
