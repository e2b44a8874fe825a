package rest

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a role's metrics registry with the Go runtime and
// process collectors; each role serves its own on /metrics, so a role shows
// only its metrics even when dev runs every role in one process.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Metrics counts every request by route pattern (e.g.
// /api/v1/tasks/:id; "unmatched" for 404s of no route), method and status
// in flotilla_http_requests_total, and observes its latency in
// flotilla_http_request_duration_seconds. Mount it first, so it sees the
// status the error handler writes.
func Metrics(reg prometheus.Registerer) echo.MiddlewareFunc {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flotilla_http_requests_total",
		Help: "HTTP requests answered, by route, method and status.",
	}, []string{"route", "method", "status"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flotilla_http_request_duration_seconds",
		Help:    "HTTP request latency, by route and method.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12),
	}, []string{"route", "method"})
	reg.MustRegister(requests, latency)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				// Let the error handler write the answer now, so that its
				// status is the one counted.
				c.Error(err)
				err = nil
			}
			route := c.Path()
			if route == "" || c.Response().Status == 404 && route == "/*" {
				route = "unmatched"
			}
			method := c.Request().Method
			requests.WithLabelValues(route, method, strconv.Itoa(c.Response().Status)).Inc()
			latency.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
			return err
		}
	}
}
