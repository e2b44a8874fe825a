package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/cli"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

type bundle struct {
	dbURL string
	reg   *task.Registry
	extra []string // flags added to every command
}

func setup(t *testing.T) *bundle {
	t.Helper()
	reg := task.NewRegistry()
	noop := func(context.Context, *task.Envelope) (any, error) { return nil, nil }
	reg.Handle("report.daily", noop)
	reg.Handle("metrics.collect", noop, task.WithQueue("metrics"))
	u := storetest.SchemaURL(t)
	return &bundle{dbURL: u, reg: reg, extra: []string{"--database-url", u}}
}

// run runs the command line args and returns stdout.
func (b *bundle) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := cli.Run(t.Context(), cli.Env{Registry: b.reg, Stdout: &out, Stderr: &errOut}, append(args, b.extra...))
	return out.String(), err
}

func (b *bundle) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := b.run(t, args...)
	require.NoError(t, err, "flotilla %s", strings.Join(args, " "))
	return out
}

func (b *bundle) store(t *testing.T) *store.Store {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), b.dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return store.New(pool)
}

func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	b := setup(t) // migrated already

	out := b.mustRun(t, "migrate")
	require.Equal(t, "database is up to date\n", out)
	out = b.mustRun(t, "migrate", "status")
	require.Regexp(t, `(?m)^1\s+00001_schedules.sql\s+applied\s+\d{4}-`, out)
	require.Regexp(t, `(?m)^2\s+00002_api_tokens.sql\s+applied\s+\d{4}-`, out)
	require.Regexp(t, `(?m)^3\s+00003_accounts.sql\s+applied\s+\d{4}-`, out)
	require.Regexp(t, `(?m)^4\s+00004_outbox.sql\s+applied\s+\d{4}-`, out)
	require.Regexp(t, `(?m)^5\s+00005_schedule_runs.sql\s+applied\s+\d{4}-`, out)

	out = b.mustRun(t, "migrate", "down")
	require.Contains(t, out, "rolled back 00005_schedule_runs.sql")
	out = b.mustRun(t, "migrate", "down")
	require.Contains(t, out, "rolled back 00004_outbox.sql")
	out = b.mustRun(t, "migrate", "down")
	require.Contains(t, out, "rolled back 00003_accounts.sql")
	out = b.mustRun(t, "migrate", "down")
	require.Contains(t, out, "rolled back 00002_api_tokens.sql")
	out = b.mustRun(t, "migrate", "down")
	require.Contains(t, out, "rolled back 00001_schedules.sql")
	out = b.mustRun(t, "migrate", "status")
	require.Regexp(t, `(?m)^1\s+00001_schedules.sql\s+pending\s+-`, out)
	_, err := b.run(t, "schedule", "ls")
	require.ErrorContains(t, err, "schedules", "no table after down")

	out = b.mustRun(t, "migrate", "up")
	require.Contains(t, out, "applied 00001_schedules.sql")
	require.Contains(t, out, "applied 00002_api_tokens.sql")
	require.Contains(t, out, "applied 00003_accounts.sql")
	require.Contains(t, out, "applied 00004_outbox.sql")
	require.Contains(t, out, "applied 00005_schedule_runs.sql")

	_, err = b.run(t, "migrate", "sideways")
	require.ErrorContains(t, err, `invalid argument "sideways"`)
}

func TestScheduleCommands(t *testing.T) {
	t.Parallel()
	b := setup(t)

	out := b.mustRun(t, "schedule", "add", "collect", "--task", "metrics.collect", "--interval", "90s", "--spread", "10s", "--args", `{"source":"a"}`)
	var sc schedule.Schedule
	require.NoError(t, json.Unmarshal([]byte(out), &sc), out)
	require.Equal(t, "metrics", sc.Queue, "the task's registered queue")
	require.Equal(t, schedule.Duration(90*time.Second), sc.Interval)
	require.True(t, sc.Enabled)
	require.NotNil(t, sc.NextRunAt)

	b.mustRun(t, "schedule", "add", "nightly", "--task", "report.daily", "--cron", "30 2 * * *", "--timezone", "Europe/Berlin",
		"--misfire", "catch_up", "--catch-up-max", "3", "--description", "nightly report", "--disabled",
		"--start-at", "2026-01-01T00:00:00Z", "--expires-at", "2099-01-01T00:00:00Z", "--one-off")

	errTests := []struct {
		name string
		args []string
		want string
	}{
		{"bad cron", []string{"add", "x", "--task", "report.daily", "--cron", "61 * * * *"}, "--cron: "},
		{"both", []string{"add", "x", "--task", "report.daily", "--cron", "* * * * *", "--interval", "1m"}, "--interval: "},
		{"bad interval", []string{"add", "x", "--task", "report.daily", "--interval", "often"}, `--interval: "often" is not a Go duration`},
		{"bad start", []string{"add", "x", "--task", "report.daily", "--interval", "1m", "--start-at", "soon"}, "--start-at: "},
		{"bad catch-up-max", []string{"add", "x", "--task", "report.daily", "--interval", "1m", "--catch-up-max", "-1"}, "--catch-up-max: "},
		{"bad name", []string{"add", "a b", "--task", "report.daily", "--interval", "1m"}, "NAME: "},
		{"no task", []string{"add", "x", "--interval", "1m"}, `"task" not set`},
		{"unknown task", []string{"add", "x", "--task", "no.such", "--interval", "1m"}, `--task: unknown task "no.such"`},
		{"exists", []string{"add", "collect", "--task", "report.daily", "--interval", "1m"}, "schedule collect: already exists"},
		{"rm missing", []string{"rm", "nope"}, "schedule nope: not found"},
		{"enable missing", []string{"enable", "nope"}, "schedule nope: not found"},
	}
	for _, tt := range errTests {
		_, err := b.run(t, append([]string{"schedule"}, tt.args...)...)
		require.ErrorContains(t, err, tt.want, tt.name)
	}

	out = b.mustRun(t, "schedule", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	require.Regexp(t, `^NAME\s+TASK\s+QUEUE\s+SCHEDULE\s+TZ\s+ENABLED\s+SOURCE\s+LAST RUN\s+NEXT RUN$`, lines[0])
	require.Regexp(t, `^collect\s+metrics.collect\s+metrics\s+every 1m30s\s+-\s+true\s+runtime\s+-\s+\d{4}-`, lines[1])
	require.Regexp(t, `^nightly\s+report.daily\s+default\s+30 2 \* \* \*\s+Europe/Berlin\s+false\s+runtime\s+-\s+-$`, lines[2])

	out = b.mustRun(t, "schedule", "ls", "--json")
	var list []schedule.Schedule
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	require.Len(t, list, 2)
	require.Equal(t, schedule.MisfireCatchUp, list[1].Misfire)
	require.Equal(t, 3, list[1].CatchUpMax)
	require.True(t, list[1].OneOff)

	require.Equal(t, "disabled schedule collect\n", b.mustRun(t, "schedule", "disable", "collect"))
	require.Regexp(t, `^enabled schedule nightly; next run \d{4}-`, b.mustRun(t, "schedule", "enable", "nightly"))
	require.Equal(t, "deleted schedule collect\n", b.mustRun(t, "schedule", "rm", "collect"))

	// Code schedules can be disabled, not removed.
	st := b.store(t)
	require.NoError(t, st.ScheduleSyncCode(t.Context(), []schedule.Schedule{{Name: "code", Task: "report.daily", Interval: schedule.Duration(time.Hour), Enabled: true}}))
	_, err := b.run(t, "schedule", "rm", "code")
	require.ErrorContains(t, err, "schedule code: declared in code: it can be disabled but not deleted or changed")
	b.mustRun(t, "schedule", "disable", "code")
	got, err := st.ScheduleGet(t.Context(), "code")
	require.NoError(t, err)
	require.False(t, got.Enabled)
}

func TestScheduleRunCommand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ns := jettest.Server(t)
	_, prefix := resultstest.Client(t)
	cfgFile := filepath.Join(t.TempDir(), "flotilla.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("redis:\n  prefix: "+prefix+"\n"), 0o600))
	b.extra = append(b.extra, "--config", cfgFile, "--nats-url", ns.ClientURL(), "--redis-url", resultstest.URL())

	b.mustRun(t, "streams", "apply", "--queues", "default,metrics")
	b.mustRun(t, "schedule", "add", "collect", "--task", "metrics.collect", "--interval", "1h", "--args", `{"n":1}`, "--disabled")

	out := b.mustRun(t, "schedule", "run", "collect")
	var res struct{ ID, State string }
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.NotEmpty(t, res.ID)
	require.Equal(t, task.StatePending, res.State)

	_, js := jettest.Connect(t, ns.ClientURL())
	s, err := js.Stream(t.Context(), wire.StreamTasks)
	require.NoError(t, err)
	msg, err := s.GetLastMsgForSubject(t.Context(), wire.TaskSubject("metrics", "metrics.collect"))
	require.NoError(t, err)
	require.Equal(t, "beat/collect", msg.Header.Get(wire.HeaderOrigin))
	require.Equal(t, res.ID, msg.Header.Get(wire.HeaderID))
	require.JSONEq(t, `{"n":1}`, string(msg.Data))

	_, err = b.run(t, "schedule", "run", "nope")
	require.ErrorContains(t, err, "schedule nope: not found")
}
