package auth

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/store"
)

// Auditor keeps the audit log (implemented by [store.Store]).
type Auditor interface {
	AuditAdd(ctx context.Context, e store.AuditEntry) error
}

// RecordFunc records one action of a request: what, on what target, how it
// ended (result "ok" or an error code) and its HTTP status.
type RecordFunc func(c echo.Context, action, target, result string, status int)

// Recorder returns the RecordFunc of a: the entry names the request's
// principal (or the caller name a failed login left) and address. A failed
// write is logged at error level; the action stands. A nil a records
// nothing.
func Recorder(a Auditor, log zerolog.Logger) RecordFunc {
	if a == nil {
		return nil
	}
	return func(c echo.Context, action, target, result string, status int) {
		e := store.AuditEntry{Action: action, Target: target, Result: result, Status: status, RemoteAddr: clientAddr(c.Request())}
		if p, ok := From(c); ok {
			e.Actor, e.ActorKind = p.Name, p.Kind
		} else {
			e.Actor, e.ActorKind = Caller(c), KindAnonymous
			if e.Actor == "" {
				e.Actor = Anonymous
			}
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), 2*time.Second)
		defer cancel()
		if err := a.AuditAdd(ctx, e); err != nil {
			log.Error().Err(err).Str("action", action).Str("actor", e.Actor).Str("target", target).Msg("audit entry not written")
		}
	}
}

// TargetKey is the echo context key a handler may set (a string) to name
// the target of its audit entry when the path does not, e.g. the name of
// a created schedule.
const TargetKey = "audit.target"

// Guard returns the guard of web and api (see rest.Guard): [Require] need,
// and for an action, an audit entry written after the handler through
// record — refusals by role included — naming the target ([TargetKey], or
// else the route's path parameters) and the answer's error code (or "ok")
// and status as result.
func Guard(record RecordFunc) rest.Guard {
	return func(action, need string) []echo.MiddlewareFunc {
		if action == "" || record == nil {
			return []echo.MiddlewareFunc{Require(need)}
		}
		audit := func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				err := next(c)
				result, status := "ok", c.Response().Status
				if err != nil {
					he := rest.Translate(err)
					result, status = he.Body.Code, he.Status
				} else if status == 0 {
					status = http.StatusOK
				}
				target, _ := c.Get(TargetKey).(string)
				if target == "" {
					target = strings.Join(c.ParamValues(), "/")
				}
				record(c, action, target, result, status)
				return err
			}
		}
		return []echo.MiddlewareFunc{audit, Require(need)}
	}
}
