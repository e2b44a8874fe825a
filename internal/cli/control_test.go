package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/queues"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/store"
)

// TestControlCommands: task cancel (one, --all), queue ls, pause, resume,
// purge and worker ls, with their errors, each change in the audit log.
func TestControlCommands(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ns := jettest.Server(t)
	_, prefix := resultstest.Client(t)
	cfgFile := filepath.Join(t.TempDir(), "flotilla.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("redis:\n  prefix: "+prefix+"\n"), 0o600))
	b.extra = append(b.extra, "--config", cfgFile, "--nats-url", ns.ClientURL(), "--redis-url", resultstest.URL())
	b.mustRun(t, "streams", "apply", "--queues", "default,metrics")

	send := func(args ...string) string {
		var res struct{ ID string }
		require.NoError(t, json.Unmarshal([]byte(b.mustRun(t, append([]string{"task", "send"}, args...)...)), &res))
		return res.ID
	}
	one := send("report.daily")
	send("report.daily")
	send("metrics.collect", "--countdown", "1h")
	send("metrics.collect")

	require.Equal(t, "cancelled task "+one+"\n", b.mustRun(t, "task", "cancel", one))
	_, err := b.run(t, "task", "cancel", one)
	require.ErrorContains(t, err, "already finished")
	_, err = b.run(t, "task", "cancel", "nope")
	require.ErrorContains(t, err, "task nope: not found")
	for args, want := range map[string]string{
		"--all":              "--all needs --task NAME, --queue Q, or both",
		"x --all --task a.b": "give an ID or --all, not both",
		"x --task a.b":       "--task and --queue select tasks for --all",
		"--all --queue Bad":  "--queue:",
		"":                   "give one task ID",
	} {
		_, err := b.run(t, append([]string{"task", "cancel"}, strings.Fields(args)...)...)
		require.ErrorContains(t, err, want, args)
	}
	require.Equal(t, "cancelled 2 tasks\n", b.mustRun(t, "task", "cancel", "--all", "--task", "report.daily"),
		"the one cancelled by id still waits in the queue: counted again, recorded once")

	var qs []queues.Stats
	require.NoError(t, json.Unmarshal([]byte(b.mustRun(t, "queue", "ls", "--json")), &qs))
	require.Len(t, qs, 2)
	require.Equal(t, "metrics", qs[1].Queue)
	require.EqualValues(t, 1, qs[1].Pending)
	require.EqualValues(t, 1, *qs[1].Delayed)
	require.Regexp(t, `(?m)^metrics\s+1\s+0\s+0\s+1\s+\S+\s+0\s+no$`, b.mustRun(t, "queue", "ls"))

	require.Equal(t, "queue metrics: paused, 1 pending\n", b.mustRun(t, "queue", "pause", "metrics"))
	require.Regexp(t, `queue metrics: paused until \d{4}-`, b.mustRun(t, "queue", "pause", "metrics", "--until", "2099-01-01T00:00:00Z"))
	require.Equal(t, "queue metrics: running, 1 pending\n", b.mustRun(t, "queue", "resume", "metrics"))
	_, err = b.run(t, "queue", "pause", "metrics", "--until", "2001-01-01T00:00:00Z")
	require.ErrorContains(t, err, "not in the future")
	_, err = b.run(t, "queue", "pause", "nope")
	require.ErrorContains(t, err, "unknown queue")
	_, err = b.run(t, "queue", "purge", "metrics")
	require.ErrorContains(t, err, "--confirm metrics")
	require.Equal(t, "purged queue metrics: 2 tasks cancelled\n", b.mustRun(t, "queue", "purge", "metrics", "--confirm", "metrics"))

	var page struct {
		Items []struct{ ID, State, Queue string }
		Next  string
	}
	require.NoError(t, json.Unmarshal([]byte(b.mustRun(t, "task", "ls", "--json", "--state", "CANCELLED")), &page))
	require.Len(t, page.Items, 4, "two report.daily, two metrics.collect")
	require.Equal(t, "metrics", page.Items[0].Queue, "newest first")
	require.Regexp(t, `(?m)^ID\s+TASK\s+QUEUE\s+STATE`, b.mustRun(t, "task", "ls", "--queue", "metrics", "--since", "1h"))
	_, err = b.run(t, "task", "ls", "--state", "DONE")
	require.ErrorContains(t, err, `--state: "DONE" is not one of`)

	require.Equal(t, "[]\n", b.mustRun(t, "worker", "ls", "--json"))
	require.Regexp(t, `^ID\s+HOST\s+PID`, b.mustRun(t, "worker", "ls"))

	var es []store.AuditEntry
	require.NoError(t, json.Unmarshal([]byte(b.mustRun(t, "audit", "ls", "--json")), &es))
	var got []string
	for _, e := range es {
		got = append(got, e.Action+" "+e.Result)
	}
	require.Equal(t, []string{"queue.purge ok", "queue.pause error", "queue.resume ok", "queue.pause ok", "queue.pause ok",
		"task.cancel_bulk ok", "task.cancel not_found", "task.cancel finished", "task.cancel ok"}, got)
}
