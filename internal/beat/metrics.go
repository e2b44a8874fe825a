package beat

import "github.com/prometheus/client_golang/prometheus"

// metrics are beat's own: registered by the beat role only.
type metrics struct {
	leader    prometheus.Gauge
	changes   prometheus.Counter
	fires     *prometheus.CounterVec
	lag       prometheus.Histogram
	schedules prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flotilla_beat_leader", Help: "1 while this beat replica leads, else 0.",
		}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_beat_leadership_changes_total", Help: "Times this replica gained or lost leadership.",
		}),
		fires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_beat_fires_total", Help: "Schedule fires published, by result (ok, duplicate, error).",
		}, []string{"result"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flotilla_beat_fire_lag_seconds", Help: "Delay between a fire's due time and its publish.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		schedules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flotilla_beat_schedules", Help: "Enabled schedules loaded by this replica.",
		}),
	}
	reg.MustRegister(m.leader, m.changes, m.fires, m.lag, m.schedules)
	return m
}
