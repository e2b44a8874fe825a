package beat_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/beat"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/wire"
)

// stats returns the published stats once cond holds.
func (b *bundle) stats(t *testing.T, what string, cond func(wire.BeatStats) bool) wire.BeatStats {
	t.Helper()
	var st wire.BeatStats
	require.Eventually(t, func() bool {
		var err error
		st, err = beat.Stats(t.Context(), b.js)
		return err == nil && cond(st)
	}, 20*time.Second, 50*time.Millisecond, what)
	return st
}

// TestStatsPublished: the leader puts its stats; the fires are counted,
// and the lag histogram covers exactly them (all within the window).
func TestStatsPublished(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, schedule.Schedule{Name: "st", Task: "sys.ping", Interval: schedule.Duration(time.Second)})
	r := b.start(t, "r0", fastConfig(), nil)
	require.Eventually(t, r.s.IsLeader, 10*time.Second, 10*time.Millisecond)

	st := b.stats(t, "stats with 3 fires", func(st wire.BeatStats) bool { return st.Fires >= 3 })
	require.Equal(t, "r0", st.Leader)
	require.Equal(t, 1, st.Schedules)
	require.Zero(t, st.FireErrors)
	require.False(t, st.UpdatedAt.Before(st.LeaderSince))
	require.Len(t, st.LagBuckets, 13)
	var sum int64
	for i, bk := range st.LagBuckets {
		sum += bk.Count
		if i < len(st.LagBuckets)-1 {
			require.Positive(t, bk.LeMS)
		} else {
			require.Zero(t, bk.LeMS, "the last bucket is unbounded")
		}
	}
	require.Equal(t, st.Fires, sum, "every fire of the term is in the histogram")
	require.Equal(t, int(st.Fires), st.LagCount)
	require.LessOrEqual(t, st.LagP50MS, st.LagP99MS)
	require.LessOrEqual(t, st.LagP99MS, st.LagMaxMS)
	require.Equal(t, []wire.LeaderTerm{{ID: "r0", Since: st.LeaderSince}}, st.Terms)
	require.Eventually(t, func() bool { return int64(len(b.firesOf(t, "st"))) >= st.Fires }, 10*time.Second, 50*time.Millisecond,
		"the fires counted are in TASKS")

	// The document as other languages see it.
	kv, err := b.js.KeyValue(t.Context(), wire.LeaseBucket)
	require.NoError(t, err)
	ent, err := kv.Get(t.Context(), wire.BeatStatsKey)
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(ent.Value(), &raw))
	for _, k := range []string{"leader", "leader_since", "updated_at", "schedules", "fires", "fire_errors",
		"lag_count", "lag_p50_ms", "lag_p99_ms", "lag_max_ms", "lag_buckets", "terms"} {
		require.Contains(t, raw, k)
	}
	term := raw["terms"].([]any)[0].(map[string]any)
	require.NotContains(t, term, "until", "the current term has no end")
	buckets := raw["lag_buckets"].([]any)
	require.NotContains(t, buckets[len(buckets)-1], "le_ms", "+Inf has no bound")

	// Later documents of the same term count on.
	later := b.stats(t, "stats move on", func(s wire.BeatStats) bool { return s.UpdatedAt.After(st.UpdatedAt) })
	require.GreaterOrEqual(t, later.Fires, st.Fires)
	require.Equal(t, st.LeaderSince, later.LeaderSince)
}

// TestStatsTermsCarryOver: a leader killed abruptly, its document gone
// before the standby takes over (the standby remembers the last one it
// read), then one stopped in order; the terms of all three are kept,
// newest first, the old ones closed.
func TestStatsTermsCarryOver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, schedule.Schedule{Name: "st", Task: "sys.ping", Interval: schedule.Duration(time.Second)})
	cfg := fastConfig()
	rs := map[string]*replica{"a": b.start(t, "a", cfg, nil), "b": b.start(t, "b", cfg, nil)}

	first := b.stats(t, "a first leader reports", func(s wire.BeatStats) bool { return s.Leader != "" })
	// Let the standby read the document a few times (it reads every
	// TTL/2 = 1 s).
	b.stats(t, "the first leader keeps reporting", func(s wire.BeatStats) bool {
		return s.UpdatedAt.Sub(first.UpdatedAt) >= 2500*time.Millisecond
	})
	killed := first.Leader
	kv, err := b.js.KeyValue(t.Context(), wire.LeaseBucket)
	require.NoError(t, err)
	// Kill the leader, and remove its document as if it had expired
	// before the lease did (it can: both live for the bucket's TTL after
	// their last put).
	rs[killed].nc.Close()
	require.NoError(t, kv.Delete(t.Context(), wire.BeatStatsKey))
	rs[killed].stop()
	second := b.stats(t, "the standby takes over", func(s wire.BeatStats) bool {
		return s.Leader != "" && s.Leader != killed
	})
	require.Len(t, second.Terms, 2, "%+v", second.Terms)
	require.Equal(t, second.Leader, second.Terms[0].ID)
	require.True(t, second.Terms[0].Until.IsZero())
	require.Equal(t, killed, second.Terms[1].ID)
	require.True(t, second.Terms[1].Since.Equal(first.LeaderSince))
	require.False(t, second.Terms[1].Until.IsZero(), "the old term is closed")
	require.False(t, second.Terms[1].Until.Before(second.Terms[1].Since))
	require.False(t, second.Terms[1].Until.After(second.Terms[0].Since))

	// A third replica stands by; the second leader resigns.
	rs["c"] = b.start(t, "c", cfg, nil)
	b.stats(t, "the second leader reports fires", func(s wire.BeatStats) bool { return s.Fires >= 2 })
	rs[second.Leader].stop()
	third := b.stats(t, "c takes over", func(s wire.BeatStats) bool { return s.Leader == "c" })
	require.Len(t, third.Terms, 3, "%+v", third.Terms)
	ids := []string{third.Terms[0].ID, third.Terms[1].ID, third.Terms[2].ID}
	require.Equal(t, []string{"c", second.Leader, killed}, ids)
	require.True(t, third.Terms[0].Until.IsZero())
	require.Equal(t, third.LeaderSince, third.Terms[0].Since)
	for i, tm := range third.Terms[1:] {
		require.False(t, tm.Until.IsZero(), "term %d closed", i+1)
		require.False(t, tm.Until.Before(tm.Since))
		require.False(t, tm.Until.After(third.Terms[i].Since), "terms do not overlap")
	}
	require.Equal(t, second.Terms[1], third.Terms[2], "a closed term is carried over as is")
	require.Less(t, third.Fires, int64(1000))
}

// TestStatsNone: ErrNoStats without a bucket, in an empty bucket and
// beside a lease alone.
func TestStatsNone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := beat.Stats(t.Context(), b.js)
	require.ErrorIs(t, err, beat.ErrNoStats)
	kv, err := b.js.CreateOrUpdateKeyValue(t.Context(), jet.LeaseBucketConfig(10*time.Second, 1))
	require.NoError(t, err)
	_, err = beat.Stats(t.Context(), b.js)
	require.ErrorIs(t, err, beat.ErrNoStats)
	_, err = kv.Create(t.Context(), wire.LeaseKey, []byte("someone"))
	require.NoError(t, err)
	_, err = beat.Stats(t.Context(), b.js)
	require.ErrorIs(t, err, beat.ErrNoStats)
	leader, err := beat.Leader(t.Context(), b.js)
	require.NoError(t, err)
	require.Equal(t, "someone", leader)
}
