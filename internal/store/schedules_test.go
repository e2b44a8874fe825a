package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/task"
)

type bundle struct {
	store *store.Store
	pool  *pgxpool.Pool
}

func setup(t *testing.T) bundle {
	t.Helper()
	pool := storetest.Pool(t)
	return bundle{store: store.New(pool), pool: pool}
}

func ptr[T any](v T) *T { return &v }

func cronSchedule(name string) schedule.Schedule {
	return schedule.Schedule{
		Name: name, Task: "report.daily", Queue: "reports", Args: json.RawMessage(`{"kind":"sales","n":3}`),
		Cron: "30 2 * * *", Timezone: "Europe/Berlin", Enabled: true, Spread: schedule.Duration(10 * time.Second),
		Misfire: schedule.MisfireCatchUp, CatchUpMax: 5, Description: "daily sales report",
		StartAt:   ptr(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		ExpiresAt: ptr(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)),
	}
}

func intervalSchedule(name string) schedule.Schedule {
	return schedule.Schedule{Name: name, Task: "metrics.collect", Interval: schedule.Duration(90 * time.Second), Enabled: true}
}

// ignoreStored ignores the fields the database sets and compares args as
// JSON values (jsonb reorders keys).
var ignoreStored = cmp.Options{
	cmpopts.IgnoreFields(schedule.Schedule{}, "CreatedAt", "UpdatedAt"),
	cmp.Comparer(func(a, b json.RawMessage) bool {
		var x, y any
		return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && cmp.Equal(x, y)
	}),
}

func TestScheduleCRUD(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)

	in := cronSchedule("sales-daily")
	got, err := b.store.ScheduleCreate(ctx, in)
	require.NoError(t, err)
	want := in
	want.Source = schedule.SourceRuntime
	if d := cmp.Diff(want, got, ignoreStored); d != "" {
		t.Fatalf("created (-want +got):\n%s", d)
	}
	require.False(t, got.CreatedAt.IsZero())
	require.Equal(t, time.UTC, got.CreatedAt.Location())

	iv, err := b.store.ScheduleCreate(ctx, intervalSchedule("collect"))
	require.NoError(t, err)
	require.Equal(t, "default", iv.Queue, "normalized")
	require.JSONEq(t, `{}`, string(iv.Args))
	require.Equal(t, schedule.MisfireOnce, iv.Misfire)
	require.Equal(t, schedule.Duration(90*time.Second), iv.Interval)

	g, err := b.store.ScheduleGet(ctx, "sales-daily")
	require.NoError(t, err)
	if d := cmp.Diff(got, g); d != "" {
		t.Fatalf("get (-create +get):\n%s", d)
	}

	list, err := b.store.ScheduleList(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "collect", list[0].Name, "ordered by name")
	require.Equal(t, "sales-daily", list[1].Name)

	// Replace: switch from cron to interval.
	rep := g
	rep.Cron, rep.Timezone, rep.Interval, rep.Spread = "", "", schedule.Duration(time.Hour), 0
	rep.Description = "hourly now"
	rep.StartAt, rep.ExpiresAt = nil, nil
	replaced, err := b.store.ScheduleReplace(ctx, rep)
	require.NoError(t, err)
	if d := cmp.Diff(rep, replaced, ignoreStored); d != "" {
		t.Fatalf("replaced (-want +got):\n%s", d)
	}
	require.Equal(t, g.CreatedAt, replaced.CreatedAt)
	require.True(t, replaced.UpdatedAt.After(g.UpdatedAt) || replaced.UpdatedAt.Equal(g.UpdatedAt))

	dis, err := b.store.ScheduleSetEnabled(ctx, "sales-daily", false)
	require.NoError(t, err)
	require.False(t, dis.Enabled)

	require.NoError(t, b.store.ScheduleDelete(ctx, "sales-daily"))
	_, err = b.store.ScheduleGet(ctx, "sales-daily")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestScheduleCreateConflict(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	_, err := b.store.ScheduleCreate(ctx, intervalSchedule("dup"))
	require.NoError(t, err)
	_, err = b.store.ScheduleCreate(ctx, cronSchedule("dup"))
	require.ErrorIs(t, err, store.ErrConflict)
	require.ErrorContains(t, err, "schedule dup")
}

func TestScheduleNotFound(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	tests := []struct {
		name string
		call func() error
	}{
		{"get", func() error { _, err := b.store.ScheduleGet(ctx, "nope"); return err }},
		{"replace", func() error { _, err := b.store.ScheduleReplace(ctx, intervalSchedule("nope")); return err }},
		{"delete", func() error { return b.store.ScheduleDelete(ctx, "nope") }},
		{"set enabled", func() error { _, err := b.store.ScheduleSetEnabled(ctx, "nope", true); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			require.ErrorIs(t, err, store.ErrNotFound)
			require.ErrorContains(t, err, "nope")
		})
	}
}

func TestScheduleCreateInvalid(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	tests := []struct {
		name  string
		edit  func(*schedule.Schedule)
		field string
	}{
		{"both cron and interval", func(s *schedule.Schedule) { s.Cron = "* * * * *" }, "interval"},
		{"bad cron", func(s *schedule.Schedule) { s.Interval = 0; s.Cron = "61 * * * *" }, "cron"},
		{"bad name", func(s *schedule.Schedule) { s.Name = "has space" }, "name"},
		{"catch_up_max too large", func(s *schedule.Schedule) { s.CatchUpMax = 1 << 40 }, "catch_up_max"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := intervalSchedule("x")
			tt.edit(&sc)
			_, err := b.store.ScheduleCreate(ctx, sc)
			require.ErrorIs(t, err, task.ErrInvalid)
			var fe *task.FieldError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, tt.field, fe.Field)
		})
	}
}

func TestScheduleFromCode(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	code := cronSchedule("code-report")
	require.NoError(t, b.store.ScheduleSyncCode(ctx, []schedule.Schedule{code}))

	got, err := b.store.ScheduleGet(ctx, "code-report")
	require.NoError(t, err)
	require.Equal(t, schedule.SourceCode, got.Source)

	err = b.store.ScheduleDelete(ctx, "code-report")
	require.ErrorIs(t, err, store.ErrFromCode)

	changed := got
	changed.Description = "edited at runtime"
	_, err = b.store.ScheduleReplace(ctx, changed)
	require.ErrorIs(t, err, store.ErrFromCode)

	// PUT of the same definition with only enabled changed is allowed.
	same := got
	same.Enabled = false
	r, err := b.store.ScheduleReplace(ctx, same)
	require.NoError(t, err)
	require.False(t, r.Enabled)
	require.Equal(t, schedule.SourceCode, r.Source)

	e, err := b.store.ScheduleSetEnabled(ctx, "code-report", true)
	require.NoError(t, err)
	require.True(t, e.Enabled)
}

func TestScheduleSyncCodeKeepsEnabledAndBookkeeping(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	a, c := intervalSchedule("code-a"), intervalSchedule("code-c")
	require.NoError(t, b.store.ScheduleSyncCode(ctx, []schedule.Schedule{a, c}))
	_, err := b.store.ScheduleSetEnabled(ctx, "code-a", false)
	require.NoError(t, err)
	fired := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, []schedule.Run{{Name: "code-a", FiredAt: fired, Count: 7}}))
	before, err := b.store.ScheduleGet(ctx, "code-c")
	require.NoError(t, err)

	// A runtime schedule named like a code schedule becomes a code schedule.
	rt, err := b.store.ScheduleCreate(ctx, cronSchedule("was-runtime"))
	require.NoError(t, err)
	_, err = b.store.ScheduleSetEnabled(ctx, rt.Name, false)
	require.NoError(t, err)

	// Restart with a changed definition of code-a, the same code-c.
	a.Task = "metrics.collect_v2"
	wr := intervalSchedule("was-runtime")
	require.NoError(t, b.store.ScheduleSyncCode(ctx, []schedule.Schedule{a, c, wr}))

	got, err := b.store.ScheduleGet(ctx, "code-a")
	require.NoError(t, err)
	require.Equal(t, "metrics.collect_v2", got.Task, "definition from code")
	require.False(t, got.Enabled, "runtime disable survives a re-sync")
	require.Equal(t, int64(7), got.RunCount)
	require.Equal(t, fired, *got.LastRunAt)

	after, err := b.store.ScheduleGet(ctx, "code-c")
	require.NoError(t, err)
	require.Equal(t, before.UpdatedAt, after.UpdatedAt, "an unchanged code schedule is not rewritten")

	w, err := b.store.ScheduleGet(ctx, "was-runtime")
	require.NoError(t, err)
	require.Equal(t, schedule.SourceCode, w.Source)
	require.Equal(t, "metrics.collect", w.Task)
	require.Empty(t, w.Cron)
	require.False(t, w.Enabled)
	require.Equal(t, rt.CreatedAt, w.CreatedAt)
}

func TestScheduleSyncCodeInvalid(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	bad := intervalSchedule("bad-one")
	bad.Interval = schedule.Duration(time.Millisecond)
	err := b.store.ScheduleSyncCode(ctx, []schedule.Schedule{intervalSchedule("good-one"), bad})
	require.ErrorIs(t, err, task.ErrInvalid)
	require.ErrorContains(t, err, "bad-one")
	list, err := b.store.ScheduleList(ctx)
	require.NoError(t, err)
	require.Empty(t, list, "nothing written")
}

func TestScheduleRecordRuns(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	for _, sc := range []schedule.Schedule{intervalSchedule("a"), intervalSchedule("b")} {
		_, err := b.store.ScheduleCreate(ctx, sc)
		require.NoError(t, err)
	}
	once := intervalSchedule("once")
	once.OneOff = true
	_, err := b.store.ScheduleCreate(ctx, once)
	require.NoError(t, err)

	t0 := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, []schedule.Run{
		{Name: "a", FiredAt: t0, Count: 1},
		{Name: "b", FiredAt: t0.Add(time.Minute), Count: 2},
		{Name: "a", FiredAt: t0.Add(2 * time.Minute), Count: 4}, // same name twice: highest count and latest fire win
		{Name: "once", FiredAt: t0, Count: 1, OneOff: true},
		{Name: "deleted-meanwhile", FiredAt: t0, Count: 1},
	}))
	// OneOff on a recurring schedule's run disables nothing.
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, []schedule.Run{{Name: "a", FiredAt: t0, Count: 1, OneOff: true}}))
	// An older batch arriving late moves neither field back, and writing a
	// batch twice (a lost commit acknowledgement, retried) changes nothing.
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, []schedule.Run{{Name: "b", FiredAt: t0, Count: 1}}))
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, []schedule.Run{{Name: "b", FiredAt: t0.Add(time.Minute), Count: 3}}))
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, []schedule.Run{{Name: "b", FiredAt: t0.Add(time.Minute), Count: 3}}))
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, nil))

	tests := []struct {
		name    string
		last    time.Time
		count   int64
		enabled bool
	}{
		{"a", t0.Add(2 * time.Minute), 4, true},
		{"b", t0.Add(time.Minute), 3, true},
		{"once", t0, 1, false},
	}
	for _, tt := range tests {
		got, err := b.store.ScheduleGet(ctx, tt.name)
		require.NoError(t, err)
		require.NotNil(t, got.LastRunAt, tt.name)
		require.Equal(t, tt.last, *got.LastRunAt, tt.name)
		require.Equal(t, tt.count, got.RunCount, tt.name)
		require.Equal(t, tt.enabled, got.Enabled, tt.name)
	}
}

// TestScheduleBookkeepingGoesWithSchedule: the bookkeeping row of a
// deleted schedule goes too, so a new schedule of the same name starts
// without it; replacing and enabling return it.
func TestScheduleBookkeepingGoesWithSchedule(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	sc := intervalSchedule("again")
	_, err := b.store.ScheduleCreate(ctx, sc)
	require.NoError(t, err)
	t0 := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, []schedule.Run{{Name: "again", FiredAt: t0, Count: 9}}))
	got, err := b.store.ScheduleSetEnabled(ctx, "again", false)
	require.NoError(t, err)
	require.Equal(t, int64(9), got.RunCount)
	require.Equal(t, t0, *got.LastRunAt)
	sc.Description = "changed"
	got, err = b.store.ScheduleReplace(ctx, sc)
	require.NoError(t, err)
	require.Equal(t, int64(9), got.RunCount)

	require.NoError(t, b.store.ScheduleDelete(ctx, "again"))
	var n int
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM schedule_runs").Scan(&n))
	require.Zero(t, n)
	created, err := b.store.ScheduleCreate(ctx, sc)
	require.NoError(t, err)
	require.Nil(t, created.LastRunAt)
	require.Zero(t, created.RunCount)
}

// TestScheduleReadsForBeat: the paged, changed-since and by-name reads
// beat uses return schedules with their bookkeeping.
func TestScheduleReadsForBeat(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	var names []string
	for i := range 7 {
		sc := intervalSchedule(fmt.Sprintf("p-%d", i))
		_, err := b.store.ScheduleCreate(ctx, sc)
		require.NoError(t, err)
		names = append(names, sc.Name)
	}
	t0 := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, []schedule.Run{{Name: "p-3", FiredAt: t0, Count: 2}}))

	var got []string
	after := ""
	for {
		page, err := b.store.ScheduleListPage(ctx, after, 3)
		require.NoError(t, err)
		for _, sc := range page {
			got = append(got, sc.Name)
			if sc.Name == "p-3" {
				require.Equal(t, int64(2), sc.RunCount)
				require.Equal(t, t0, *sc.LastRunAt)
			}
		}
		if len(page) < 3 {
			break
		}
		after = page[len(page)-1].Name
	}
	require.Equal(t, names, got)

	named, err := b.store.ScheduleListNamed(ctx, []string{"p-3", "p-5", "missing"})
	require.NoError(t, err)
	require.Len(t, named, 2)
	require.Equal(t, int64(2), named[0].RunCount)

	mark := time.Now()
	changedNames := func(after string, limit int) []string {
		t.Helper()
		changed, err := b.store.ScheduleListChanged(ctx, mark, after, limit)
		require.NoError(t, err)
		names := []string{}
		for _, sc := range changed {
			names = append(names, sc.Name)
		}
		return names
	}
	require.Empty(t, changedNames("", 100))
	// Bookkeeping is not a change of definition; an edit is.
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, []schedule.Run{{Name: "p-1", FiredAt: time.Now(), Count: 1}}))
	_, err = b.store.ScheduleSetEnabled(ctx, "p-6", false)
	require.NoError(t, err)
	require.Equal(t, []string{"p-6"}, changedNames("", 100))
	// Pages: after bounds the names, limit the count.
	_, err = b.store.ScheduleSetEnabled(ctx, "p-2", false)
	require.NoError(t, err)
	require.Equal(t, []string{"p-2"}, changedNames("", 1))
	require.Equal(t, []string{"p-6"}, changedNames("p-2", 1))
	require.Empty(t, changedNames("p-6", 1))
}

// TestMigrateKeepsBookkeeping: bookkeeping written before migration 5
// (columns of schedules) is in schedule_runs after it.
func TestMigrateKeepsBookkeeping(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	m, ok, err := store.MigrateDown(ctx, b.pool)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(5), m.Version)
	_, err = b.pool.Exec(ctx, `INSERT INTO schedules (name, task, "interval", last_run_at, run_count) VALUES
		('old-fired', 'sys.ping', '1 minute', '2026-05-01T08:00:00Z', 12), ('old-new', 'sys.ping', '1 minute', NULL, 0)`)
	require.NoError(t, err)
	_, err = store.MigrateUp(ctx, b.pool)
	require.NoError(t, err)
	got, err := b.store.ScheduleGet(ctx, "old-fired")
	require.NoError(t, err)
	require.Equal(t, int64(12), got.RunCount)
	require.Equal(t, time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC), *got.LastRunAt)
	got, err = b.store.ScheduleGet(ctx, "old-new")
	require.NoError(t, err)
	require.Nil(t, got.LastRunAt)
}

// TestScheduleUpdatedAtTrigger checks that plain-SQL changes bump
// updated_at and bookkeeping does not.
func TestScheduleUpdatedAtTrigger(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	created, err := b.store.ScheduleCreate(ctx, intervalSchedule("touch"))
	require.NoError(t, err)
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, []schedule.Run{{Name: "touch", FiredAt: time.Now(), Count: 1}}))
	got, err := b.store.ScheduleGet(ctx, "touch")
	require.NoError(t, err)
	require.Equal(t, created.UpdatedAt, got.UpdatedAt)

	_, err = b.pool.Exec(ctx, "UPDATE schedules SET description = 'by hand' WHERE name = 'touch'")
	require.NoError(t, err)
	got, err = b.store.ScheduleGet(ctx, "touch")
	require.NoError(t, err)
	require.True(t, got.UpdatedAt.After(created.UpdatedAt))
}

// TestScheduleConstraints checks that the table refuses rows beat could
// never fire when they are written with plain SQL.
func TestScheduleConstraints(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	tests := []struct {
		name, values, constraint string
	}{
		{"neither cron nor interval", `('n1', 'a.b', NULL, NULL, '{}')`, "schedules_cron_check"},
		{"both", `('n2', 'a.b', '* * * * *', '1 minute', '{}')`, "schedules_cron_check"},
		{"short interval", `('n3', 'a.b', NULL, '10 milliseconds', '{}')`, "schedules_interval_check"},
		{"args not an object", `('n4', 'a.b', NULL, '1 minute', '[1]')`, "schedules_args_check"},
		{"bad task", `('n5', 'A B', NULL, '1 minute', '{}')`, "schedules_task_check"},
		{"bad name", `('n 6', 'a.b', NULL, '1 minute', '{}')`, "schedules_name_check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.pool.Exec(ctx, `INSERT INTO schedules (name, task, cron, "interval", args) VALUES `+tt.values)
			require.ErrorContains(t, err, tt.constraint)
		})
	}
	_, err := b.pool.Exec(ctx, `INSERT INTO schedules (name, task, "interval") VALUES ('ok', 'a.b', '1 minute')`)
	require.NoError(t, err)
	got, err := b.store.ScheduleGet(ctx, "ok")
	require.NoError(t, err)
	require.Equal(t, schedule.SourceRuntime, got.Source)
	require.Equal(t, schedule.Duration(time.Minute), got.Interval)
	require.NoError(t, got.Validate())
}

func TestScheduleListen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)
	// Channels are per database: tests of this package running in parallel
	// notify too, so names are unique and others are ignored.
	prefix := fmt.Sprintf("listen-%d", time.Now().UnixNano())
	name := func(s string) string { return prefix + "-" + s }

	got := make(chan string, 100)
	var errs []error
	var mu sync.Mutex
	b.store.ListenErrorFunc = func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.store.ScheduleListen(lctx, func(n string) {
			if n == "" || len(n) > len(prefix) && n[:len(prefix)] == prefix {
				got <- n
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("ScheduleListen did not return after cancel")
		}
	})
	next := func() string {
		t.Helper()
		select {
		case n := <-got:
			return n
		case <-time.After(10 * time.Second):
			t.Fatal("no notification within 10s")
			return ""
		}
	}
	require.Equal(t, "", next(), "resync after LISTEN is established")

	// Plain SQL reaches listeners.
	_, err := b.pool.Exec(ctx, `INSERT INTO schedules (name, task, "interval") VALUES ($1, 'a.b', '1 minute')`, name("sql"))
	require.NoError(t, err)
	require.Equal(t, name("sql"), next())

	// Bookkeeping does not; the sentinel change after it proves nothing
	// came in between (notifications arrive in commit order).
	require.NoError(t, b.store.ScheduleRecordRuns(ctx, []schedule.Run{{Name: name("sql"), FiredAt: time.Now(), Count: 1}}))
	_, err = b.store.ScheduleCreate(ctx, intervalSchedule(name("sentinel")))
	require.NoError(t, err)
	require.Equal(t, name("sentinel"), next())

	// Through the store: disable, and delete.
	_, err = b.store.ScheduleSetEnabled(ctx, name("sql"), false)
	require.NoError(t, err)
	require.Equal(t, name("sql"), next())
	require.NoError(t, b.store.ScheduleDelete(ctx, name("sql")))
	require.Equal(t, name("sql"), next())

	// A killed connection is re-established and announced with "".
	_, err = b.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, store.ListenApplicationName)
	require.NoError(t, err)
	require.Equal(t, "", next(), "resync after reconnect")
	_, err = b.store.ScheduleCreate(ctx, intervalSchedule(name("after")))
	require.NoError(t, err)
	require.Equal(t, name("after"), next())
	mu.Lock()
	require.NotEmpty(t, errs, "the lost connection was reported")
	mu.Unlock()
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := storetest.Pool(t)
	// A second, empty schema in the same database.
	schema := fmt.Sprintf("t_mig_%d", time.Now().UnixNano())
	_, err := pool.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	cfg := pool.Config().Copy()
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	empty, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(empty.Close)

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = store.Migrate(ctx, empty) }()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))

	st, err := store.MigrateStatus(ctx, empty)
	require.NoError(t, err)
	require.NotEmpty(t, st)
	for _, m := range st {
		require.True(t, m.Applied, m.Source)
	}
	require.Equal(t, "00001_schedules.sql", st[0].Source)

	// Down then up again round-trips.
	m, ok, err := store.MigrateDown(ctx, empty)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, st[len(st)-1].Version, m.Version)
	for range len(st) - 1 {
		_, _, err := store.MigrateDown(ctx, empty)
		require.NoError(t, err)
	}
	_, ok, err = store.MigrateDown(ctx, empty)
	require.NoError(t, err)
	require.False(t, ok, "nothing left to roll back")
	var n int
	require.NoError(t, empty.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'schedules'", schema).Scan(&n))
	require.Zero(t, n)
	applied, err := store.MigrateUp(ctx, empty)
	require.NoError(t, err)
	require.Len(t, applied, len(st))
	again, err := store.MigrateUp(ctx, empty)
	require.NoError(t, err)
	require.Empty(t, again)
}
