package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/store/storetest"
)

func TestDoctor(t *testing.T) {
	t.Parallel()
	natsURL := jettest.Server(t).ClientURL()
	dbURL := storetest.SchemaURL(t)
	run := func(args ...string) (string, error) {
		root := newRoot(Env{})
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(args, "--nats-url", natsURL, "--database-url", dbURL, "--redis-url", resultstest.URL()))
		err := root.Execute()
		return out.String(), err
	}
	out, err := run("doctor")
	require.ErrorContains(t, err, "checks failed")
	require.Contains(t, out, "FAIL  stream TASKS")
	require.Contains(t, out, "run `flotilla streams apply`")

	_, err = run("streams", "apply")
	require.NoError(t, err)
	out, err = run("doctor")
	require.NoError(t, err, out)
	require.NotContains(t, out, "FAIL")
	for _, want := range []string{"stream TASKS", "stream DELAYED", "consumer q-default", "postgresql migrations", "redis version", "beat lease", "queues without consumer"} {
		require.True(t, strings.Contains(out, want), "doctor output lacks %q:\n%s", want, out)
	}

	// A task for a queue nobody consumes is reported.
	_, js := jettest.Connect(t, natsURL)
	_, err = js.Publish(t.Context(), "tasks.orphan.sys.ping", []byte(`{}`))
	require.NoError(t, err)
	out, err = run("doctor")
	require.Error(t, err)
	require.Contains(t, out, "FAIL  queues without consumer")
	require.Contains(t, out, "orphan: 1 tasks")
}
