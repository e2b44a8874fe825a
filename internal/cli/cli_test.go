package cli

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// TestFlagsOverrideConfig checks that flags reach the configuration, both a
// command's own (--queues, --concurrency) and inherited ones (--log-level).
func TestFlagsOverrideConfig(t *testing.T) {
	t.Parallel()
	root := newRoot(Env{})
	var out bytes.Buffer
	root.SetOut(&out)
	// config print has no role flags of its own, so use the worker command's
	// flag set through load() directly.
	worker, _, err := root.Find([]string{"worker"})
	require.NoError(t, err)
	require.NoError(t, worker.ParseFlags([]string{"--queues", "default,action", "--concurrency", "7", "--log-level", "debug"}))
	cfg, err := load(worker, &rootFlags{}, "worker", map[string]string{"queues": "worker.queues", "concurrency": "worker.concurrency"})
	require.NoError(t, err)
	require.Equal(t, []string{"default", "action"}, cfg.Worker.Queues)
	require.Equal(t, 7, cfg.Worker.Concurrency)
	require.Equal(t, "debug", cfg.Log.Level)

	root = newRoot(Env{})
	out.Reset()
	root.SetOut(&out)
	root.SetArgs([]string{"config", "print", "--role", "api", "--database-url", "postgres://u:secret@db:5432/x"})
	require.NoError(t, root.Execute())
	var m map[string]any
	require.NoError(t, yaml.Unmarshal(out.Bytes(), &m))
	require.Equal(t, "postgres://u:xxxxx@db:5432/x", m["database"].(map[string]any)["url"])
	require.NotContains(t, out.String(), "secret")
}
