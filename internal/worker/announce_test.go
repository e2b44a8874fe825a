package worker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/wire"
)

// TestWorkerAnnouncements: a worker is listed while it runs, leaves the
// list at once when it stops, and within 15 s when it dies (here: its
// connection is cut, so it can neither announce nor say goodbye).
func TestWorkerAnnouncements(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	cfg := b.cfg()
	cfg.Name = "host-a:1"
	stop, _ := b.start(t, cfg)
	cfg.Name = "host-b:2"
	_, nc := b.start(t, cfg)

	var ws []wire.WorkerInfo
	require.Eventually(t, func() bool {
		var err error
		ws, err = fleet.List(t.Context(), b.js)
		return err == nil && len(ws) == 2
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, "host-a:1", ws[0].ID)
	require.Equal(t, []string{"default"}, ws[0].Queues)
	require.NotZero(t, ws[0].PID)
	w, err := fleet.Get(t.Context(), b.js, "host-b:2")
	require.NoError(t, err)
	require.Equal(t, "host-b:2", w.ID)
	_, err = fleet.Get(t.Context(), b.js, "nobody")
	require.ErrorIs(t, err, fleet.ErrUnknownWorker)

	stop()
	ws, err = fleet.List(t.Context(), b.js)
	require.NoError(t, err)
	require.Len(t, ws, 1, "a stopped worker says goodbye")

	cut := time.Now()
	nc.Close()
	require.Eventually(t, func() bool {
		ws, err := fleet.List(t.Context(), b.js)
		return err == nil && len(ws) == 0
	}, 15*time.Second, 100*time.Millisecond)
	t.Logf("a dead worker left the list %s after its last chance to announce (TTL %s)", time.Since(cut).Round(100*time.Millisecond), wire.WorkersTTL)
}
