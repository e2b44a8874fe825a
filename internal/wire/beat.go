package wire

import "time"

// BeatStatsKey is the key of [BeatStats] in [LeaseBucket]: the beat leader
// puts it every [BeatStatsInterval] (and once as soon as it leads), so that
// roles that cannot scrape beat's /metrics (web's dashboard) see the leader,
// its predecessors and its fire lag. Like the lease, the key lives for the
// bucket's TTL (beat.lease_ttl) after its last put: it disappears when no
// replica has led for that long.
const BeatStatsKey = "stats"

// Parameters of [BeatStats].
const (
	// BeatStatsInterval is how often the leader puts its BeatStats; half the
	// lease TTL when that is shorter, so the key never expires while a
	// leader lives.
	BeatStatsInterval = 5 * time.Second
	// BeatLagWindow and BeatLagSamples bound the fires that the lag
	// figures cover: those of the last BeatLagWindow, at most the last
	// BeatLagSamples of them.
	BeatLagWindow  = 5 * time.Minute
	BeatLagSamples = 10000
	// BeatTerms is how many leadership terms BeatStats keeps.
	BeatTerms = 20
)

// BeatStats is the beat leader's report in [LeaseBucket] under
// [BeatStatsKey]. Lag is the delay between a tick's due time and the moment
// the leader handed it to the producer (flotilla_beat_fire_lag_seconds).
type BeatStats struct {
	// Leader is the id of the replica that put the document: the lease
	// holder (beat's worker.name, default host:pid).
	Leader string `json:"leader"`
	// LeaderSince is when Leader's current term began.
	LeaderSince time.Time `json:"leader_since"`
	// UpdatedAt is when the document was put; older than a few
	// BeatStatsInterval means the leader stopped reporting.
	UpdatedAt time.Time `json:"updated_at"`
	// Schedules counts the enabled schedules the leader has loaded.
	Schedules int `json:"schedules"`
	// Fires counts the ticks the leader fired since LeaderSince (duplicates
	// the server dropped included); FireErrors those whose publish failed.
	Fires      int64 `json:"fires"`
	FireErrors int64 `json:"fire_errors"`
	// LagCount is the number of fires in the lag window (the last
	// BeatLagWindow of this term, at most BeatLagSamples): the population of
	// the lag figures, and the sum of LagBuckets' counts. The figures are 0
	// when it is 0.
	LagCount int `json:"lag_count"`
	// LagP50MS, LagP99MS and LagMaxMS are the median, 99th percentile
	// (nearest rank) and maximum lag of those fires, in milliseconds.
	LagP50MS float64 `json:"lag_p50_ms"`
	LagP99MS float64 `json:"lag_p99_ms"`
	LagMaxMS float64 `json:"lag_max_ms"`
	// LagBuckets is the histogram of the same fires over fixed bounds (1, 2,
	// 5, … 5000 ms, then unbounded), in ascending order; counts are not
	// cumulative.
	LagBuckets []LagBucket `json:"lag_buckets"`
	// Terms are the last BeatTerms leadership terms, newest first: Terms[0]
	// is the current one.
	Terms []LeaderTerm `json:"terms"`
}

// LagBucket is one bar of [BeatStats.LagBuckets]: Count fires whose lag was
// above the previous bucket's bound and at most LeMS milliseconds.
type LagBucket struct {
	// LeMS is the inclusive upper bound in milliseconds; 0 (and omitted in
	// JSON) for the last bucket, which has none (+Inf).
	LeMS  float64 `json:"le_ms,omitzero"`
	Count int64   `json:"count"`
}

// LeaderTerm is one replica's uninterrupted hold of the lease.
type LeaderTerm struct {
	// ID is the replica's id, as in [BeatStats.Leader].
	ID    string    `json:"id"`
	Since time.Time `json:"since"`
	// Until is zero (omitted in JSON) while the term lasts. The next leader
	// closes it at the last UpdatedAt its holder put: the last moment it was
	// seen leading.
	Until time.Time `json:"until,omitzero"`
}
