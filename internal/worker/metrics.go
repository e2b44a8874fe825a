package worker

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla/flotilla/internal/task"
)

type metrics struct {
	tasks    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	cache    sync.Map // key → *series
}

type series struct {
	counters map[string]prometheus.Counter
	duration prometheus.Observer
}

var (
	metricsOnce sync.Once
	theMetrics  *metrics
)

// defaultMetrics registers the worker's metrics with the default registry once.
func defaultMetrics() *metrics {
	metricsOnce.Do(func() {
		theMetrics = &metrics{
			tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "flotilla_tasks_total",
				Help: "Task attempts finished by a worker, by outcome (success, retry, dead, expired).",
			}, []string{"queue", "task", "outcome"}),
			duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "flotilla_task_duration_seconds",
				Help:    "Handler run time of task attempts.",
				Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12),
			}, []string{"queue", "task"}),
		}
		prometheus.MustRegister(theMetrics.tasks, theMetrics.duration)
	})
	return theMetrics
}

func (m *metrics) observe(env *task.Envelope, outcome string, d time.Duration) {
	if task.ValidateQueue(env.Queue) != nil || task.ValidateName(env.Name) != nil {
		m.tasks.WithLabelValues("_invalid", "_invalid", outcome).Inc()
		return
	}
	key := env.Queue + "\x00" + env.Name
	v, ok := m.cache.Load(key)
	if !ok {
		s := &series{counters: map[string]prometheus.Counter{}, duration: m.duration.WithLabelValues(env.Queue, env.Name)}
		for _, o := range []string{outSuccess, outRetry, outDead, outExpired} {
			s.counters[o] = m.tasks.WithLabelValues(env.Queue, env.Name, o)
		}
		v, _ = m.cache.LoadOrStore(key, s)
	}
	s := v.(*series)
	s.counters[outcome].Inc()
	if outcome == outSuccess || outcome == outRetry {
		s.duration.Observe(d.Seconds())
	}
}
