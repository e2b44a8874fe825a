// Package web is the web role: HTTP for people and programs on :8080 —
// enqueue tasks and read their states (shared with the api role through
// package rest), manage beat's schedules, health, readiness and metrics.
package web

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/dashboard"
	"github.com/flotilla/flotilla/internal/logging"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/workflow"
)

// Config configures the web role.
type Config struct {
	// Addr to listen on, e.g. ":8080".
	Addr string
	// MaxBodyBytes limits request bodies.
	MaxBodyBytes int64
	// ShutdownTimeout bounds the graceful HTTP shutdown.
	ShutdownTimeout time.Duration
	// Schedules, when not nil, serves /api/v1/schedules (see [ScheduleRoutes]).
	Schedules ScheduleStore
	// Registry, with CheckRegistered, rejects schedules of tasks without a
	// handler (tasks.check_registered).
	Registry        *task.Registry
	CheckRegistered bool
	// Operator, when not nil, serves the queue and dead-letter endpoints.
	Operator Operator
	// BeatLeader, when not nil, serves GET /api/v1/beat: the id of the beat
	// replica holding the lease ("" when none does).
	BeatLeader func(ctx context.Context) (string, error)
	// Metrics is the role's registry, served on /metrics; nil = a new one.
	Metrics *prometheus.Registry
	// Listener, when set, is Addr bound already (Run binds Addr otherwise).
	Listener net.Listener
	// RequestTimeout bounds every request (see rest.NewRole); 0 = none.
	RequestTimeout time.Duration
	// Auth is auth.AuthNone (the default) or auth.AuthRequired: every
	// /api/v1 request then needs an API token (checked by Verify) or a
	// session (Sessions, when set); Failures limits failed attempts per
	// address. Roles decide what each may do (viewer reads, operator
	// changes tasks, queues and schedules, admin everything).
	Auth     string
	Verify   func(ctx context.Context, token string) (auth.Principal, error)
	Sessions *auth.Sessions
	Failures auth.FailureLimit
	// Queues, when set, serves the queue endpoints, and Workers the worker
	// endpoints (see [QueueRoutes]).
	Queues  Queues
	Workers Workers
	// Canceller, when set, serves POST /api/v1/tasks/{id}/cancel and
	// POST /api/v1/tasks/cancel (see [CancelRoutes]).
	Canceller Canceller
	// Dashboard, when set, serves the pages at / (see package dashboard).
	Dashboard *dashboard.Dashboard
	// Workflows, when set, serves the workflow and group endpoints (see
	// [WorkflowRoutes]).
	Workflows *workflow.Engine
	// Audit, when set, keeps the audit log of state-changing management
	// actions (served on GET /api/v1/audit to admins).
	Audit AuditStore
}

// AuditStore is the audit log (implemented by [store.Store]).
type AuditStore interface {
	auth.Auditor
	AuditList(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error)
}

// Server is the web role.
type Server struct {
	cfg  Config
	echo *echo.Echo
}

// New builds the web role's routes.
func New(cfg Config, c rest.Enqueuer, checks []rest.Check, log zerolog.Logger) *Server {
	log = log.With().Str(logging.Component, "web").Logger()
	if cfg.Metrics == nil {
		cfg.Metrics = rest.NewRegistry()
	}
	e := rest.NewRole("web", log, cfg.Metrics, checks, cfg.RequestTimeout)
	mode := cfg.Auth
	if mode == "" {
		mode = auth.AuthNone
	}
	e.Use(auth.Auth(auth.Config{Mode: mode, Verify: cfg.Verify, Sessions: cfg.Sessions, Failures: cfg.Failures}, log))
	var record auth.RecordFunc
	if cfg.Audit != nil {
		record = auth.Recorder(cfg.Audit, log)
	}
	guard := auth.Guard(record)
	if cfg.Sessions != nil {
		cfg.Sessions.Mount(e, record)
	} else {
		e.GET(auth.MePath, auth.Me)
	}
	g := e.Group("/api/v1")
	rest.TaskRoutes{Client: c, MaxBodyBytes: cfg.MaxBodyBytes, Origin: wire.OriginWeb, Guard: guard, Search: true}.Mount(g)
	if cfg.Schedules != nil {
		ScheduleRoutes{
			Store: cfg.Schedules, Client: c, Registry: cfg.Registry,
			CheckRegistered: cfg.CheckRegistered, MaxBodyBytes: cfg.MaxBodyBytes, Guard: guard,
		}.Mount(g)
	}
	if cfg.Operator != nil {
		OperatorRoutes{Op: cfg.Operator, Guard: guard}.Mount(g)
	}
	if cfg.Queues != nil {
		QueueRoutes{Queues: cfg.Queues, Workers: cfg.Workers, Canceller: cfg.Canceller, MaxBodyBytes: cfg.MaxBodyBytes, Guard: guard}.Mount(g)
	}
	if cfg.Canceller != nil {
		CancelRoutes{Canceller: cfg.Canceller, MaxBodyBytes: cfg.MaxBodyBytes, Guard: guard}.Mount(g)
	}
	if cfg.BeatLeader != nil {
		g.GET("/beat", func(c echo.Context) error {
			id, err := cfg.BeatLeader(c.Request().Context())
			if err != nil {
				return err
			}
			return c.JSON(http.StatusOK, map[string]any{"leader": id, "has_leader": id != ""})
		}, guard.Use("", store.RoleViewer)...)
	}
	if cfg.Workflows != nil {
		WorkflowRoutes{Engine: cfg.Workflows, MaxBodyBytes: cfg.MaxBodyBytes, Guard: guard}.Mount(g)
	}
	if cfg.Audit != nil {
		AuditRoutes{Store: cfg.Audit, Guard: guard}.Mount(g)
	}
	if cfg.Dashboard != nil {
		cfg.Dashboard.Mount(e)
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
