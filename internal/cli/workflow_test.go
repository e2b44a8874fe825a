package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results/resultstest"
)

// TestWorkflowCommands: workflow start (from a file), get, group and
// cancel, with their errors; no worker runs, so the workflow waits at its
// first step until cancelled.
func TestWorkflowCommands(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ns := jettest.Server(t)
	_, prefix := resultstest.Client(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "flotilla.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("redis:\n  prefix: "+prefix+"\n"), 0o600))
	b.extra = append(b.extra, "--config", cfgFile, "--nats-url", ns.ClientURL(), "--redis-url", resultstest.URL())
	b.mustRun(t, "streams", "apply", "--queues", "default")

	def := filepath.Join(dir, "wf.json")
	require.NoError(t, os.WriteFile(def, []byte(`{"chain": [{"group": [{"task": "report.daily"}, {"task": "report.daily"}]}, {"task": "report.daily", "pass_result": true}]}`), 0o600))
	var started struct{ ID, State string }
	require.NoError(t, json.Unmarshal([]byte(b.mustRun(t, "workflow", "start", def)), &started))
	require.Equal(t, "RUNNING", started.State)

	var st struct {
		State string
		Root  struct {
			Steps []struct{ ID, Kind, State string }
		}
	}
	require.NoError(t, json.Unmarshal([]byte(b.mustRun(t, "workflow", "get", started.ID)), &st))
	require.Equal(t, "RUNNING", st.State)
	require.Equal(t, "group", st.Root.Steps[0].Kind)
	require.Equal(t, "RUNNING", st.Root.Steps[0].State)
	require.Equal(t, "WAITING", st.Root.Steps[1].State)

	var g struct{ Size, Finished int }
	require.NoError(t, json.Unmarshal([]byte(b.mustRun(t, "workflow", "group", started.ID+"-0")), &g))
	require.Equal(t, 2, g.Size)
	require.Zero(t, g.Finished)
	_, err := b.run(t, "workflow", "group", started.ID+"-1")
	require.ErrorContains(t, err, "not a group")

	require.Contains(t, b.mustRun(t, "workflow", "cancel", started.ID), "2 waiting tasks cancelled")
	_, err = b.run(t, "workflow", "cancel", started.ID)
	require.ErrorContains(t, err, "already finished")

	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"chain": [{"task": "report.daily", "args": [1]}]}`), 0o600))
	_, err = b.run(t, "workflow", "start", bad)
	require.ErrorContains(t, err, "chain[0].args: must be a JSON object")
	_, err = b.run(t, "workflow", "get", "nope")
	require.ErrorContains(t, err, "workflow not found")
}
