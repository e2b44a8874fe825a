package bench_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/bench"
	"github.com/flotilla/flotilla/internal/results/resultstest"
)

// TestBenchModesRun runs `flotilla bench` on small sizes on one server,
// with sync_interval always, and on a three-node cluster at replicas 3:
// every phase runs and prints its figure next to the raw one. It checks no
// figure (timing is the benchmark's business, not a test's).
func TestBenchModesRun(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name    string
		cluster int
		sync    bool
		want    string
	}{
		{"single", 1, false, "server=embedded\n"},
		{"sync-always", 1, true, "server=embedded, sync_interval always"},
		{"cluster", 3, false, "server=embedded cluster of 3, replicas 3"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			var out bytes.Buffer
			err := bench.Run(t.Context(), bench.Config{
				RedisURL: resultstest.URL(), Tasks: 300, Concurrency: 8, RoundTrips: 20, HTTPClients: 4, HTTPTasks: 200,
				Cluster: mode.cluster, SyncAlways: mode.sync,
			}, &out)
			require.NoError(t, err, out.String())
			s := out.String()
			require.Contains(t, s, mode.want)
			for _, row := range []string{
				"raw JetStream consume+ack", "drain, results+events off", "drain, results in Redis, events off",
				"drain, results off, events standard", "drain, results in Redis + events standard (defaults)",
				"drain, results in Redis + every event", "enqueue-and-wait round trip",
				"enqueue over HTTP (defaults)", "enqueue over HTTP, results+events off", "raw HTTP: the same stack, no-op handler",
			} {
				require.Contains(t, s, row)
			}
			require.Contains(t, s, "% of raw consume+ack")
			require.Contains(t, s, "% of raw HTTP no-op")
			require.Contains(t, s, "per request: ")
		})
	}
}
