package attempt

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// Outcomes of an attempt, the outcome label of flotilla_tasks_total.
const (
	OutcomeSuccess = "success"
	// OutcomeRetry: a queued task failed and will run again.
	OutcomeRetry = "retry"
	// OutcomeDead: a queued task was dead-lettered.
	OutcomeDead = "dead"
	// OutcomeExpired: a queued task arrived after its expiry and was not run.
	OutcomeExpired = "expired"
	// OutcomeFailure: a synchronous execution failed.
	OutcomeFailure = "failure"
	// OutcomeCancelled: the task was cancelled before or while it ran.
	OutcomeCancelled = "cancelled"
)

var outcomes = []string{OutcomeSuccess, OutcomeRetry, OutcomeDead, OutcomeExpired, OutcomeFailure, OutcomeCancelled}

// Metrics are the task metrics of one role: flotilla_tasks_total,
// flotilla_task_duration_seconds and flotilla_tasks_abandoned_total. A nil
// *Metrics counts nothing.
type Metrics struct {
	tasks     *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	abandoned *prometheus.CounterVec
	cache     sync.Map // queue\x00task → *series
}

type series struct {
	counters  map[string]prometheus.Counter
	duration  prometheus.Observer
	abandoned prometheus.Counter
}

// NewMetrics registers the task metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_tasks_total",
			Help: "Task attempts finished, by outcome (success, retry, dead, expired, cancelled; failure for synchronous executions).",
		}, []string{"queue", "task", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flotilla_task_duration_seconds",
			Help:    "Run time of task attempts that ran (success, retry, failure).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12),
		}, []string{"queue", "task"}),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_tasks_abandoned_total",
			Help: "Attempts whose handler did not return within the grace period after its context ended; its goroutine was left running.",
		}, []string{"queue", "task"}),
	}
	reg.MustRegister(m.tasks, m.duration, m.abandoned)
	return m
}

func (m *Metrics) series(env *task.Envelope) *series {
	q, name := wire.SafeQueue(env.Queue), wire.SafeTask(env.Name)
	key := q + "\x00" + name
	if v, ok := m.cache.Load(key); ok {
		return v.(*series)
	}
	s := &series{counters: make(map[string]prometheus.Counter, len(outcomes)),
		duration: m.duration.WithLabelValues(q, name), abandoned: m.abandoned.WithLabelValues(q, name)}
	for _, o := range outcomes {
		s.counters[o] = m.tasks.WithLabelValues(q, name, o)
	}
	v, _ := m.cache.LoadOrStore(key, s)
	return v.(*series)
}

// Observe counts one finished attempt of env with outcome and run time d
// (d is observed for attempts that ran: success, retry, failure).
func (m *Metrics) Observe(env *task.Envelope, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	s := m.series(env)
	s.counters[outcome].Inc()
	if outcome == OutcomeSuccess || outcome == OutcomeRetry || outcome == OutcomeFailure {
		s.duration.Observe(d.Seconds())
	}
}

func (m *Metrics) abandon(env *task.Envelope) {
	if m == nil {
		return
	}
	m.series(env).abandoned.Inc()
}
