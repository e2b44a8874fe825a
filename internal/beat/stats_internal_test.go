package beat

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/wire"
)

// TestLagFigures: percentiles by nearest rank, a lag equal to a bound in
// that bound's bucket, the unbounded bucket last and without a bound.
func TestLagFigures(t *testing.T) {
	t.Parallel()
	var st wire.BeatStats
	lags := []float64{7000, 1, 0.2, 3, 1.5, 5, 40, 2, 0.9, 100}
	lagFigures(&st, lags)
	require.Equal(t, 10, st.LagCount)
	require.InDelta(t, 2, st.LagP50MS, 1e-9)
	require.InDelta(t, 7000, st.LagP99MS, 1e-9)
	require.InDelta(t, 7000, st.LagMaxMS, 1e-9)
	require.Len(t, st.LagBuckets, len(lagBoundsMS)+1)
	got := map[float64]int64{}
	var sum int64
	for _, b := range st.LagBuckets {
		got[b.LeMS] = b.Count
		sum += b.Count
	}
	require.Equal(t, int64(10), sum)
	require.Equal(t, map[float64]int64{
		1: 3, 2: 2, 5: 2, 10: 0, 20: 0, 50: 1, 100: 1, 200: 0, 500: 0, 1000: 0, 2000: 0, 5000: 0, 0: 1,
	}, got)
	require.Zero(t, st.LagBuckets[len(st.LagBuckets)-1].LeMS)

	var empty wire.BeatStats
	lagFigures(&empty, nil)
	require.Zero(t, empty.LagCount)
	require.Zero(t, empty.LagMaxMS)
	require.Len(t, empty.LagBuckets, len(lagBoundsMS)+1)
}

// TestFireStatsBounded: the samples never exceed wire.BeatLagSamples,
// the counter counts every fire, old samples leave the window, and a new
// term starts afresh.
func TestFireStatsBounded(t *testing.T) {
	t.Parallel()
	var f fireStats
	t0 := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	f.begin(t0)
	batch := make([]fire, 7000)
	for i := range batch {
		batch[i].at = t0
	}
	for i := range 4 {
		f.record(t0.Add(time.Duration(i)*time.Second), batch)
	}
	require.LessOrEqual(t, cap(f.ring), wire.BeatLagSamples)
	s := f.snapshot(t0.Add(4 * time.Second))
	require.Equal(t, int64(28000), s.fires)
	require.Len(t, s.lags, wire.BeatLagSamples)
	// The newest samples are kept: 7000 of the last batch (3 s late) and
	// 3000 of the one before (2 s late).
	var at2, at3 int
	for _, l := range s.lags {
		switch l {
		case 2000:
			at2++
		case 3000:
			at3++
		default:
			t.Fatalf("unexpected lag %v", l)
		}
	}
	require.Equal(t, [2]int{3000, 7000}, [2]int{at2, at3})
	// One huge batch keeps only its last samples.
	f.record(t0, make([]fire, 3*wire.BeatLagSamples))
	require.LessOrEqual(t, cap(f.ring), wire.BeatLagSamples)

	s = f.snapshot(t0.Add(wire.BeatLagWindow + 4*time.Second))
	require.Empty(t, s.lags, "samples older than the window do not count")
	f.failed()
	f.begin(t0.Add(time.Hour))
	s = f.snapshot(t0.Add(time.Hour))
	require.Zero(t, s.fires)
	require.Zero(t, s.errors)
	require.Empty(t, s.lags)
	require.True(t, s.leading)
	f.end()
	require.False(t, f.snapshot(t0.Add(time.Hour)).leading)
}
