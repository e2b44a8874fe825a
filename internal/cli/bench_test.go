package cli_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/cli"
)

// TestBenchFlags: every documented flag of bench and bench beat exists
// (and --help lists it); a bad shape is refused before anything starts.
func TestBenchFlags(t *testing.T) {
	t.Parallel()
	help := func(args ...string) string {
		var out bytes.Buffer
		require.NoError(t, cli.Run(t.Context(), cli.Env{Stdout: &out, Stderr: &out}, append(args, "--help")))
		return out.String()
	}
	h := help("bench")
	for _, f := range []string{"--server", "--tasks", "--concurrency", "--phases", "--cluster", "--sync", "--cpuprofile"} {
		require.Contains(t, h, f)
	}
	h = help("bench", "beat")
	for _, f := range []string{"--schedules", "--duration", "--warmup", "--no-results", "--no-events", "--memprofile", "--cpuprofile"} {
		require.Contains(t, h, f)
	}
	var out bytes.Buffer
	err := cli.Run(t.Context(), cli.Env{Stdout: &out, Stderr: &out}, []string{"bench", "--cluster", "0"})
	require.ErrorContains(t, err, "--cluster: 0; want 1 or more")
}
