package schedule

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/task"
)

func tp(t time.Time) *time.Time { return &t }

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := func() Schedule {
		s := Schedule{Name: "cache.refresh", Task: "sys.ping", Cron: "*/5 * * * *", Enabled: true}
		s.Normalize()
		return s
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Schedule)
		field string
	}{
		{"valid cron", func(*Schedule) {}, ""},
		{"valid six-field cron", func(s *Schedule) { s.Cron = "*/10 * * * * *" }, ""},
		{"valid interval", func(s *Schedule) { s.Cron, s.Timezone, s.Interval = "", "", Duration(time.Minute) }, ""},
		{"bad cron", func(s *Schedule) { s.Cron = "61 * * * *" }, "cron"},
		{"cron with TZ prefix", func(s *Schedule) { s.Cron = "CRON_TZ=UTC * * * * *" }, "cron"},
		{"unknown zone", func(s *Schedule) { s.Timezone = "Mars/Olympus" }, "timezone"},
		{"both cron and interval", func(s *Schedule) { s.Interval = Duration(time.Minute) }, "interval"},
		{"neither", func(s *Schedule) { s.Cron, s.Timezone = "", "" }, "cron"},
		{"interval below 1s", func(s *Schedule) { s.Cron, s.Timezone, s.Interval = "", "", Duration(500*time.Millisecond) }, "interval"},
		{"negative interval", func(s *Schedule) { s.Cron, s.Timezone, s.Interval = "", "", Duration(-time.Minute) }, "interval"},
		{"valid @every", func(s *Schedule) { s.Cron = "@every 90s" }, ""},
		{"negative @every", func(s *Schedule) { s.Cron = "@every -1s" }, "cron"},
		{"sub-second @every", func(s *Schedule) { s.Cron = "@every 100ms" }, "cron"},
		{"catch_up_max over the cap", func(s *Schedule) { s.CatchUpMax = 100_000_000 }, "catch_up_max"},
		{"negative catch_up_max", func(s *Schedule) { s.CatchUpMax = -1 }, "catch_up_max"},
		{"array args", func(s *Schedule) { s.Args = json.RawMessage(`[1]`) }, "args"},
		{"bad name", func(s *Schedule) { s.Name = "no spaces" }, "name"},
		{"bad task", func(s *Schedule) { s.Task = "Bad-Task" }, "task"},
		{"bad queue", func(s *Schedule) { s.Queue = "a.b" }, "queue"},
		{"bad misfire", func(s *Schedule) { s.Misfire = "sometimes" }, "misfire"},
		{"spread over period", func(s *Schedule) { s.Spread = Duration(10 * time.Minute) }, "spread"},
		{"expiry before start", func(s *Schedule) {
			s.StartAt, s.ExpiresAt = tp(time.Unix(100, 0)), tp(time.Unix(50, 0))
		}, "expires_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := ok()
			tc.edit(&s)
			err := s.Validate()
			if tc.field == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, task.ErrInvalid)
			var fe *task.FieldError
			require.True(t, errors.As(err, &fe))
			require.Equal(t, tc.field, fe.Field, "error: %v", err)
		})
	}
}

func TestSpreadOffsetStableAndWithinPeriod(t *testing.T) {
	t.Parallel()
	seen := map[time.Duration]int{}
	for i := 0; i < 10000; i++ {
		name := fmt.Sprintf("job-%d", i)
		s := Schedule{Name: name, Task: "sys.ping", Cron: "* * * * *", Spread: Duration(time.Minute)}
		c1, err := Compile(s)
		require.NoError(t, err)
		c2, _ := Compile(s)
		require.Equal(t, c1.Offset(), c2.Offset(), "stable across compiles (and replicas)")
		require.GreaterOrEqual(t, c1.Offset(), time.Duration(0))
		require.Less(t, c1.Offset(), time.Minute)
		seen[c1.Offset()/time.Second]++
	}
	// 10,000 jobs spread over 60 seconds: no second holds more than 3× its share.
	require.Len(t, seen, 60)
	for sec, n := range seen {
		require.Less(t, n, 3*10000/60, "second %d holds %d fires", sec, n)
	}
	// Fires land on the tick plus the offset.
	s := Schedule{Name: "job-1", Task: "sys.ping", Cron: "* * * * *", Spread: Duration(time.Minute)}
	c, _ := Compile(s)
	next, ok := c.Next(time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC))
	require.True(t, ok)
	require.Equal(t, c.Offset(), next.Sub(next.Truncate(time.Minute)))
}

func TestIntervalAnchored(t *testing.T) {
	t.Parallel()
	c, err := Compile(Schedule{Name: "i", Interval: Duration(15 * time.Second)})
	require.NoError(t, err)
	n, ok := c.Next(time.Date(2026, 1, 1, 10, 0, 7, 0, time.UTC))
	require.True(t, ok)
	require.Equal(t, time.Date(2026, 1, 1, 10, 0, 15, 0, time.UTC), n)
	start := time.Date(2026, 1, 1, 10, 0, 3, 0, time.UTC)
	c, _ = Compile(Schedule{Name: "i", Interval: Duration(15 * time.Second), StartAt: &start})
	n, _ = c.Next(time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC))
	require.Equal(t, start, n, "first fire at start_at")
	n, _ = c.Next(start)
	require.Equal(t, start.Add(15*time.Second), n)
}

func TestExpiryStopsFiring(t *testing.T) {
	t.Parallel()
	exp := time.Date(2026, 1, 1, 10, 2, 30, 0, time.UTC)
	c, _ := Compile(Schedule{Name: "e", Cron: "* * * * *", ExpiresAt: &exp})
	n, ok := c.Next(time.Date(2026, 1, 1, 10, 1, 0, 0, time.UTC))
	require.True(t, ok)
	require.Equal(t, time.Date(2026, 1, 1, 10, 2, 0, 0, time.UTC), n)
	_, ok = c.Next(n)
	require.False(t, ok, "no fire after expires_at")
}

func TestDST(t *testing.T) {
	t.Parallel()
	loc, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	// Spring forward (2026-03-08 02:00 → 03:00): 02:30 does not exist that
	// day and robfig/cron skips it.
	c, _ := Compile(Schedule{Name: "d", Cron: "30 2 * * *", Timezone: "America/New_York"})
	var got []string
	at := time.Date(2026, 3, 6, 12, 0, 0, 0, loc)
	for i := 0; i < 3; i++ {
		at, _ = c.Next(at)
		got = append(got, at.In(loc).Format("01-02 15:04 MST"))
	}
	require.Equal(t, []string{"03-07 02:30 EST", "03-09 02:30 EDT", "03-10 02:30 EDT"}, got)
	// Fall back (2026-11-01 02:00 → 01:00): 01:30 happens twice and fires twice.
	c, _ = Compile(Schedule{Name: "d", Cron: "30 1 * * *", Timezone: "America/New_York"})
	got = nil
	at = time.Date(2026, 10, 31, 12, 0, 0, 0, loc)
	for i := 0; i < 3; i++ {
		at, _ = c.Next(at)
		got = append(got, at.In(loc).Format("01-02 15:04 MST"))
	}
	require.Equal(t, []string{"11-01 01:30 EDT", "11-01 01:30 EST", "11-02 01:30 EST"}, got)
}

func TestDueMisfirePolicies(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 10, 5, 0, 0, time.UTC)
	last := now.Add(-5 * time.Minute) // a 5-minute outage of an every-minute job
	grace := 30 * time.Second
	for _, tc := range []struct {
		misfire string
		max     int
		want    []time.Time
	}{
		{MisfireSkip, 0, []time.Time{now}},
		{MisfireOnce, 0, []time.Time{now}},
		{MisfireCatchUp, 0, []time.Time{now.Add(-4 * time.Minute), now.Add(-3 * time.Minute), now.Add(-2 * time.Minute), now.Add(-time.Minute), now}},
		{MisfireCatchUp, 2, []time.Time{now.Add(-2 * time.Minute), now.Add(-time.Minute), now}},
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.misfire, tc.max), func(t *testing.T) {
			t.Parallel()
			c, _ := Compile(Schedule{Name: "m", Cron: "* * * * *", Misfire: tc.misfire, CatchUpMax: tc.max})
			require.Equal(t, tc.want, c.Due(last, now, grace))
		})
	}
	// Between ticks, once fires the latest missed tick; skip fires nothing.
	mid := now.Add(30*time.Second + time.Second)
	c, _ := Compile(Schedule{Name: "m", Cron: "* * * * *", Misfire: MisfireOnce})
	require.Equal(t, []time.Time{now}, c.Due(last, mid, time.Second))
	c, _ = Compile(Schedule{Name: "m", Cron: "* * * * *", Misfire: MisfireSkip})
	require.Empty(t, c.Due(last, mid, time.Second))
	// Every tick within grace is on time, whatever the policy (a failover).
	c, _ = Compile(Schedule{Name: "s", Interval: Duration(time.Second), Misfire: MisfireSkip})
	require.Len(t, c.Due(now.Add(-10*time.Second), now, 15*time.Second), 10)
}

func TestDueLongOutageIsBounded(t *testing.T) {
	t.Parallel()
	c, _ := Compile(Schedule{Name: "x", Interval: Duration(time.Second), Misfire: MisfireCatchUp, CatchUpMax: 5})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	due := c.Due(now.AddDate(0, -1, 0), now, 0)
	// Five missed ticks (the cap) plus the one due now.
	require.Len(t, due, 6)
	require.Equal(t, now.Add(-5*time.Second), due[0])
	require.Equal(t, now, due[5])
}

func TestDurationJSON(t *testing.T) {
	t.Parallel()
	var s Schedule
	require.NoError(t, json.Unmarshal([]byte(`{"interval":"90s","spread":""}`), &s))
	require.Equal(t, Duration(90*time.Second), s.Interval)
	b, err := json.Marshal(s.Interval)
	require.NoError(t, err)
	require.Equal(t, `"1m30s"`, string(b))
	require.Error(t, json.Unmarshal([]byte(`{"interval":"soon"}`), &s))
}

func FuzzCron(f *testing.F) {
	for _, s := range []string{"* * * * *", "*/5 * * * * *", "@daily", "0 0 31 2 *", "61 * * * *", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		c, err := Compile(Schedule{Name: "f", Cron: expr})
		if err != nil {
			return
		}
		from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		if n, ok := c.Next(from); ok && !n.After(from) {
			t.Fatalf("Next(%v) = %v, not after", from, n)
		}
	})
}
