package rest

import (
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// SecurityHeaders sets the headers every answer of web and api carries:
// no MIME sniffing, no framing, no referrer, no caching of task data, and
// a Content-Security-Policy that lets a JSON answer load nothing. Pages
// that need a looser policy set their own.
func SecurityHeaders() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("X-Frame-Options", "DENY")
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("Cross-Origin-Resource-Policy", "same-origin")
			h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
			if strings.HasPrefix(c.Request().URL.Path, "/api/") {
				h.Set("Cache-Control", "no-store")
			}
			if c.Request().TLS != nil {
				h.Set("Strict-Transport-Security", "max-age=31536000")
			}
			return next(c)
		}
	}
}

// RequireJSON answers 415 to a POST, PUT or PATCH under /api/ whose
// Content-Type is not application/json, with a body or without. A browser
// sends a cross-site request without asking the server first only as a
// form or as text/plain, so no page a user opens can enqueue tasks or
// change schedules (CSRF); and a body is only ever parsed as what it says
// it is.
func RequireJSON() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			switch r.Method {
			case http.MethodPost, http.MethodPut, http.MethodPatch:
			default:
				return next(c)
			}
			if !strings.HasPrefix(r.URL.Path, "/api/") {
				return next(c)
			}
			ct := r.Header.Get(echo.HeaderContentType)
			if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != echo.MIMEApplicationJSON {
				got := ct
				if got == "" {
					got = "none"
				}
				return NewError(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type",
					"Content-Type: "+got+": state-changing requests must send Content-Type: application/json (with a body or without)")
			}
			return next(c)
		}
	}
}
