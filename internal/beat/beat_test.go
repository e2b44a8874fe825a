package beat_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/beat"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

type bundle struct {
	natsURL string
	js      jetstream.JetStream
	pgURL   string
	st      *store.Store
	results *results.Store
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{natsURL: jettest.Server(t).ClientURL()}
	_, b.js = jettest.Connect(t, b.natsURL)
	topo, err := jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)
	// No queue consumers: fired tasks stay in TASKS to be counted.
	require.NoError(t, jet.ApplyStreams(t.Context(), b.js, topo))
	b.pgURL = storetest.SchemaURL(t)
	b.st = store.New(pool(t, b.pgURL))
	rdb, prefix := resultstest.Client(t)
	b.results = results.New(rdb, results.Config{Prefix: prefix, TTL: time.Hour})
	t.Cleanup(b.results.Close)
	return b
}

func pool(t *testing.T, u string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(t.Context(), u)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

func fastConfig() beat.Config {
	return beat.Config{
		Elector: beat.ElectorConfig{TTL: 2 * time.Second, Poll: 100 * time.Millisecond, CreateBucket: true},
		Grace:   8 * time.Second, Resync: 2 * time.Second, Flush: 200 * time.Millisecond,
	}
}

type replica struct {
	s    *beat.Scheduler
	nc   *nats.Conn
	stop func()
}

// start runs a scheduler on its own NATS connection and pool.
func (b *bundle) start(t *testing.T, id string, cfg beat.Config, st beat.Store) *replica {
	t.Helper()
	nc, js := jettest.Connect(t, b.natsURL)
	if st == nil {
		st = store.New(pool(t, b.pgURL))
	}
	cfg.Elector.ID = id
	// Fires go through the producer of every role: PENDING states in the
	// bundle's Redis prefix, "sent" events.
	prod := client.New(nc, js, b.results, client.Config{Events: wire.EventsAll})
	s := beat.New(js, st, prod, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("replica", id).Logger())
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	r := &replica{s: s, nc: nc}
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(20 * time.Second):
				t.Error("scheduler did not stop")
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// kill ends a replica abruptly: its connection closes first, so it cannot
// resign and its lease must expire.
func (r *replica) kill() {
	r.nc.Close()
	r.stop()
}

func (b *bundle) create(t *testing.T, sc schedule.Schedule) {
	t.Helper()
	sc.Enabled = true
	_, err := b.st.ScheduleCreate(t.Context(), sc)
	require.NoError(t, err)
}

// fires returns the Msg-Ids in TASKS, in stream order.
func (b *bundle) fires(t *testing.T) []string {
	t.Helper()
	s, err := b.js.Stream(t.Context(), wire.StreamTasks)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	// A work-queue stream admits no ordered consumer; read by sequence
	// (nothing consumes TASKS here, so nothing is deleted).
	var ids []string
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		ids = append(ids, m.Header.Get(wire.HeaderMsgID))
	}
	return ids
}

func (b *bundle) firesOf(t *testing.T, name string) []int64 {
	t.Helper()
	var out []int64
	for _, id := range b.fires(t) {
		rest, ok := strings.CutPrefix(id, "beat:"+name+":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(rest, 10, 64)
		require.NoError(t, err)
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func leaderOf(rs []*replica) *replica {
	for _, r := range rs {
		if r != nil && r.s.IsLeader() {
			return r
		}
	}
	return nil
}

// TestFailoverEveryTickOnce: two beats, a one-second schedule, the leader
// killed abruptly three times during 60 s; every tick is in TASKS exactly
// once and none is missing. Real time: this is the real failover test.
func TestFailoverEveryTickOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, schedule.Schedule{Name: "tick", Task: "sys.ping", Interval: schedule.Duration(time.Second)})
	cfg := fastConfig()
	rs := []*replica{b.start(t, "r0", cfg, nil), b.start(t, "r1", cfg, nil)}
	start := time.Now()
	for kill := 0; kill < 3; kill++ {
		// Let the current leader fire for a while, then kill it.
		var l *replica
		require.Eventually(t, func() bool { l = leaderOf(rs); return l != nil }, 15*time.Second, 20*time.Millisecond)
		waitUntil(start.Add(time.Duration(15*(kill+1)) * time.Second))
		l = leaderOf(rs)
		require.NotNil(t, l, "a replica leads before kill %d", kill+1)
		l.kill()
		for i, r := range rs {
			if r == l {
				rs[i] = b.start(t, fmt.Sprintf("r%d", 2+kill), cfg, nil)
			}
		}
	}
	waitUntil(start.Add(60 * time.Second))
	end := time.Now()
	for _, r := range rs {
		r.stop()
	}
	got := b.firesOf(t, "tick")
	require.NotEmpty(t, got)
	seen := map[int64]int{}
	for _, s := range got {
		seen[s]++
	}
	for s, n := range seen {
		require.Equal(t, 1, n, "tick %d fired %d times", s, n)
	}
	// Every second from the first fire to the last is there.
	first, last := got[0], got[len(got)-1]
	require.LessOrEqual(t, first, start.Unix()+2, "firing started at once")
	require.GreaterOrEqual(t, last, end.Unix()-3, "firing went on to the end")
	for s := first; s <= last; s++ {
		require.Equal(t, 1, seen[s], "tick %d is missing", s)
	}
	t.Logf("%d ticks over %s, 3 leaders killed, none missing or doubled", len(got), end.Sub(start).Round(time.Second))
}

func waitUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		<-time.After(d)
	}
}

// TestFiresGoThroughProducer: a fired task is enqueued like any other —
// PENDING with enqueued_at in Redis before a worker takes it (nothing
// consumes here), a "sent" event, the task headers with the schedule's
// origin and its Msg-Id.
func TestFiresGoThroughProducer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	nc, _ := jettest.Connect(t, b.natsURL)
	sent := make(chan wire.Event, 16)
	sub, err := nc.Subscribe("events.sent.>", func(m *nats.Msg) {
		ev, err := wire.DecodeEvent(m.Data)
		require.NoError(t, err)
		sent <- ev
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())

	r := b.start(t, "r0", fastConfig(), nil)
	require.Eventually(t, r.s.IsLeader, 10*time.Second, 10*time.Millisecond)
	b.create(t, schedule.Schedule{Name: "prod", Task: "sys.echo", Queue: "default", Args: []byte(`{"a":1}`), Interval: schedule.Duration(time.Second)})

	var ev wire.Event
	select {
	case ev = <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("no sent event for the fire")
	}
	require.Equal(t, wire.OriginBeat("prod"), ev.Origin)
	require.Equal(t, "sys.echo", ev.Task)
	require.Equal(t, "default", ev.Queue)

	st, err := b.results.Get(t.Context(), ev.ID)
	require.NoError(t, err)
	require.Equal(t, task.StatePending, st.State)
	require.NotNil(t, st.EnqueuedAt)
	require.WithinDuration(t, ev.Time, *st.EnqueuedAt, time.Millisecond)

	s, err := b.js.Stream(t.Context(), wire.StreamTasks)
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(t.Context(), wire.TaskSubject("default", "sys.echo"))
	require.NoError(t, err)
	env, err := wire.DecodeTask(m.Subject, m.Header, m.Data)
	require.NoError(t, err)
	require.Equal(t, wire.OriginBeat("prod"), env.Origin)
	require.False(t, env.EnqueuedAt.IsZero())
	require.True(t, strings.HasPrefix(m.Header.Get(wire.HeaderMsgID), "beat:prod:"))
	require.JSONEq(t, `{"a":1}`, string(m.Data))
}

// TestRuntimeChangesHonoured: add, change, disable and delete a schedule
// while the leader runs; each takes effect without a restart.
func TestRuntimeChangesHonoured(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := fastConfig()
	cfg.Resync = time.Hour // NOTIFY alone must carry the changes
	r := b.start(t, "r0", cfg, nil)
	require.Eventually(t, r.s.IsLeader, 10*time.Second, 10*time.Millisecond)

	b.create(t, schedule.Schedule{Name: "dyn", Task: "sys.ping", Interval: schedule.Duration(time.Second)})
	require.Eventually(t, func() bool { return len(b.firesOf(t, "dyn")) >= 2 }, 5*time.Second, 50*time.Millisecond, "added schedule fires")

	// Change: every 5 s from now on (ticks on multiples of 5).
	sc, err := b.st.ScheduleGet(t.Context(), "dyn")
	require.NoError(t, err)
	sc.Interval = schedule.Duration(5 * time.Second)
	_, err = b.st.ScheduleReplace(t.Context(), sc)
	require.NoError(t, err)
	changedAt := time.Now().Unix() + 1
	require.Eventually(t, func() bool {
		n := 0
		for _, s := range b.firesOf(t, "dyn") {
			if s > changedAt {
				n++
				if s%5 != 0 {
					t.Fatalf("fire at %d after the change to 5s", s)
				}
			}
		}
		return n >= 1
	}, 12*time.Second, 100*time.Millisecond, "changed interval honoured")

	// Disable: no fires after it.
	_, err = b.st.ScheduleSetEnabled(t.Context(), "dyn", false)
	require.NoError(t, err)
	disabledAt := time.Now().Unix()
	waitUntil(time.Now().Add(6 * time.Second))
	for _, s := range b.firesOf(t, "dyn") {
		require.LessOrEqual(t, s, disabledAt+1, "fire at %d after disable", s)
	}

	// Enable with 1 s again, then delete: no fires after the delete.
	_, err = b.st.ScheduleSetEnabled(t.Context(), "dyn", true)
	require.NoError(t, err)
	sc, _ = b.st.ScheduleGet(t.Context(), "dyn")
	sc.Interval = schedule.Duration(time.Second)
	_, err = b.st.ScheduleReplace(t.Context(), sc)
	require.NoError(t, err)
	before := len(b.firesOf(t, "dyn"))
	require.Eventually(t, func() bool { return len(b.firesOf(t, "dyn")) > before }, 5*time.Second, 50*time.Millisecond, "re-enabled fires")
	require.NoError(t, b.st.ScheduleDelete(t.Context(), "dyn"))
	deletedAt := time.Now().Unix()
	waitUntil(time.Now().Add(3 * time.Second))
	for _, s := range b.firesOf(t, "dyn") {
		require.LessOrEqual(t, s, deletedAt+1, "fire at %d after delete", s)
	}
}

// TestMisfirePolicies: schedules whose last run was 5 minutes ago, a new
// leader on a fixed clock between ticks: skip fires nothing, once the latest
// missed tick, catch_up up to its cap.
func TestMisfirePolicies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Date(2026, 6, 1, 10, 5, 30, 0, time.UTC)
	last := now.Add(-5 * time.Minute)
	for _, p := range []struct {
		name, misfire string
		max           int
	}{{"m-skip", schedule.MisfireSkip, 0}, {"m-once", schedule.MisfireOnce, 0}, {"m-catch", schedule.MisfireCatchUp, 3}} {
		_, err := b.st.ScheduleCreate(t.Context(), schedule.Schedule{
			Name: p.name, Task: "sys.ping", Cron: "* * * * *", Misfire: p.misfire, CatchUpMax: p.max, Enabled: true,
		})
		require.NoError(t, err)
		require.NoError(t, b.st.ScheduleRecordRuns(t.Context(), []schedule.Run{{Name: p.name, FiredAt: last, Count: 1}}))
	}
	cfg := fastConfig()
	cfg.Now = func() time.Time { return now }
	r := b.start(t, "r0", cfg, nil)
	require.Eventually(t, r.s.IsLeader, 10*time.Second, 10*time.Millisecond)
	min := func(m int) int64 { return time.Date(2026, 6, 1, 10, m, 0, 0, time.UTC).Unix() }
	require.Eventually(t, func() bool {
		return len(b.firesOf(t, "m-once")) == 1 && len(b.firesOf(t, "m-catch")) == 3
	}, 10*time.Second, 50*time.Millisecond)
	require.Empty(t, b.firesOf(t, "m-skip"))
	require.Equal(t, []int64{min(5)}, b.firesOf(t, "m-once"))
	require.Equal(t, []int64{min(3), min(4), min(5)}, b.firesOf(t, "m-catch"))
	// Bookkeeping follows.
	require.Eventually(t, func() bool {
		sc, err := b.st.ScheduleGet(t.Context(), "m-catch")
		return err == nil && sc.RunCount == 4 && sc.LastRunAt != nil && sc.LastRunAt.Unix() == min(5)
	}, 10*time.Second, 50*time.Millisecond)
}

func TestOneOffAndExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.start(t, "r0", fastConfig(), nil)
	require.Eventually(t, r.s.IsLeader, 10*time.Second, 10*time.Millisecond)
	b.create(t, schedule.Schedule{Name: "once", Task: "sys.ping", Interval: schedule.Duration(time.Second), OneOff: true})
	exp := time.Now().Add(2500 * time.Millisecond)
	b.create(t, schedule.Schedule{Name: "short", Task: "sys.ping", Interval: schedule.Duration(time.Second), ExpiresAt: &exp})
	require.Eventually(t, func() bool {
		sc, err := b.st.ScheduleGet(t.Context(), "once")
		return err == nil && !sc.Enabled && sc.RunCount == 1
	}, 10*time.Second, 50*time.Millisecond, "one-off disables itself after firing")
	waitUntil(exp.Add(2 * time.Second))
	require.Len(t, b.firesOf(t, "once"), 1)
	short := b.firesOf(t, "short")
	require.NotEmpty(t, short)
	require.LessOrEqual(t, short[len(short)-1], exp.Unix(), "no fire after expires_at")
}

// TestPostgresOutage cuts the leader's database connections under it:
// firing goes on from memory and the bookkeeping catches up afterwards.
func TestPostgresOutage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, schedule.Schedule{Name: "steady", Task: "sys.ping", Interval: schedule.Duration(time.Second)})
	px := newProxy(t, b.pgURL)
	cfg := fastConfig()
	r := b.start(t, "r0", cfg, store.New(pool(t, px.url)))
	require.Eventually(t, r.s.IsLeader, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return len(b.firesOf(t, "steady")) >= 2 }, 5*time.Second, 50*time.Millisecond)

	px.cut()
	before := len(b.firesOf(t, "steady"))
	waitUntil(time.Now().Add(4 * time.Second))
	during := len(b.firesOf(t, "steady"))
	require.GreaterOrEqual(t, during-before, 3, "firing continues with PostgreSQL unreachable")
	px.restore()

	require.Eventually(t, func() bool {
		sc, err := b.st.ScheduleGet(t.Context(), "steady")
		fired := len(b.firesOf(t, "steady"))
		return err == nil && sc.RunCount >= int64(fired-1) && sc.RunCount <= int64(fired)
	}, 15*time.Second, 100*time.Millisecond, "bookkeeping caught up")
}

// proxy is a loopback TCP proxy to PostgreSQL whose connections can be cut.
type proxy struct {
	url    string
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newProxy(t *testing.T, rawURL string) *proxy {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: u.Host}
	u.Host = ln.Addr().String()
	p.url = u.String()
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); p.cut(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			down := p.down
			p.mu.Unlock()
			if down {
				_ = c.Close()
				continue
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(s, c); _ = s.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(c, s); _ = c.Close() }()
		}
	}()
	return p
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func TestDedupWindowCheck(t *testing.T) {
	t.Parallel()
	b := setup(t)
	err := beat.CheckDedupWindow(t.Context(), b.js, 10*time.Minute, 30*time.Second)
	require.Error(t, err)
	require.Contains(t, err.Error(), "refusing to lead")
	require.NoError(t, beat.CheckDedupWindow(t.Context(), b.js, 10*time.Second, 30*time.Second))
}

// deaf is a store whose notifications never arrive (but the first "",
// as a LISTEN that starts reports): only beat's safety nets see changes.
type deaf struct{ *store.Store }

func (deaf) ScheduleListen(ctx context.Context, fn func(string)) error {
	fn("")
	<-ctx.Done()
	return nil
}

// TestPagesAndSafetyNets: a leader loads its schedules in pages of 3 and
// fires them all; with every notification lost, new schedules and a
// disabled one are picked up by the re-read of changed schedules (in pages
// of 3 as well), and a deleted one (which changes no updated_at) by the
// check of everything.
func TestPagesAndSafetyNets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 10 {
		b.create(t, schedule.Schedule{Name: fmt.Sprintf("p%02d", i), Task: "sys.ping", Interval: schedule.Duration(time.Second)})
	}
	cfg := fastConfig()
	cfg.PageSize = 3
	cfg.Resync = 500 * time.Millisecond
	cfg.FullResync = 2 * time.Second
	var mu sync.Mutex
	reads := map[string]int{}
	cfg.Loaded = func(kind string, _, _ time.Time, n int) {
		mu.Lock()
		defer mu.Unlock()
		reads[kind] = n
	}
	r := b.start(t, "r0", cfg, deaf{store.New(pool(t, b.pgURL))})
	require.Eventually(t, r.s.IsLeader, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		for i := range 10 {
			if len(b.firesOf(t, fmt.Sprintf("p%02d", i))) < 2 {
				return false
			}
		}
		return true
	}, 10*time.Second, 100*time.Millisecond, "every schedule of every page fires")
	mu.Lock()
	require.Equal(t, 10, reads["catch-up"], "the catch-up load read all ten")
	mu.Unlock()

	for _, name := range []string{"late", "late2", "late3"} {
		b.create(t, schedule.Schedule{Name: name, Task: "sys.ping", Interval: schedule.Duration(time.Second)})
	}
	_, err := b.st.ScheduleSetEnabled(t.Context(), "p01", false)
	require.NoError(t, err)
	require.NoError(t, b.st.ScheduleDelete(t.Context(), "p02"))
	changedAt := time.Now().Unix()
	require.Eventually(t, func() bool { return len(b.firesOf(t, "late3")) >= 2 }, 10*time.Second, 100*time.Millisecond, "a new schedule without its notification fires")
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return reads["changed"] == 4 // late, late2, late3 and p01: two pages
	}, 10*time.Second, 100*time.Millisecond)
	// Give the check (every 2 s) time to run, then no fire of either may
	// come after a second or two of slack.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return reads["check"] == 11 // p00..p09 without p01 and p02, with late, late2, late3
	}, 10*time.Second, 100*time.Millisecond)
	waitUntil(time.Now().Add(3 * time.Second))
	stopAt := time.Now().Unix()
	for _, name := range []string{"p01", "p02"} {
		fires := b.firesOf(t, name)
		require.NotEmpty(t, fires)
		require.LessOrEqual(t, fires[len(fires)-1], changedAt+4, "%s fired after it was disabled or deleted (until %d)", name, stopAt)
	}
	// One read: p00 goes on firing, so a second read may be longer.
	p00 := b.firesOf(t, "p00")
	require.NotEmpty(t, p00)
	require.GreaterOrEqual(t, p00[len(p00)-1], stopAt-2, "the others go on firing")
}
