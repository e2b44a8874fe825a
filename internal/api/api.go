// Package api is the kernel API role on :8081: the enqueue and status
// endpoints of the web role (package rest), health, readiness and metrics.
// Synchronous execution over NATS request-reply is issue #4.
package api

import (
	"context"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/logging"
	"github.com/flotilla/flotilla/internal/rest"
)

// Config configures the api role.
type Config struct {
	Addr            string
	MaxBodyBytes    int64
	ShutdownTimeout time.Duration
}

// Server is the api role.
type Server struct {
	cfg  Config
	echo *echo.Echo
}

// New builds the api role's routes.
func New(cfg Config, c rest.Enqueuer, checks []rest.Check, log zerolog.Logger) *Server {
	log = log.With().Str(logging.Component, "api").Logger()
	e := rest.NewEcho(log)
	e.Use(middleware.Recover())
	rest.MountHealth(e, "api", checks, nil)
	g := e.Group("/api/v1")
	rest.TaskRoutes{Client: c, MaxBodyBytes: cfg.MaxBodyBytes, Origin: "api"}.Mount(g)
	return &Server{cfg: cfg, echo: e}
}

// Handler exposes the routes (for httptest).
func (s *Server) Handler() *echo.Echo { return s.echo }

// Run serves until ctx is done, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	return rest.Serve(ctx, s.echo, s.cfg.Addr, s.cfg.ShutdownTimeout)
}
