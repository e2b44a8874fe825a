package results_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
)

// The store starts a writer goroutine; Close must stop it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type bundle struct {
	rdb    *redis.Client
	prefix string
	store  *results.Store
}

func setup(t testing.TB, cfg results.Config) *bundle {
	t.Helper()
	rdb, prefix := resultstest.Client(t)
	cfg.Prefix = prefix
	s := results.New(rdb, cfg)
	t.Cleanup(s.Close) // runs before resultstest's cleanup closes rdb
	return &bundle{rdb: rdb, prefix: prefix, store: s}
}

func ptr(t time.Time) *time.Time { return &t }

func TestSetGet(t *testing.T) {
	t.Parallel()
	enq := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	start := enq.Add(time.Second)
	fin := start.Add(time.Second)
	for _, tc := range []struct {
		name    string
		updates []results.Update
		want    results.State
	}{
		{
			name:    "pending",
			updates: []results.Update{{Task: "email.send", Queue: "emails", State: "PENDING", EnqueuedAt: enq}},
			want:    results.State{Task: "email.send", Queue: "emails", State: "PENDING", EnqueuedAt: ptr(enq)},
		},
		{
			name: "every field",
			updates: []results.Update{{
				Task: "a.b", Queue: "q", State: "FAILURE", Result: json.RawMessage(`{"x":[1]}`), Error: "boom",
				Attempts: 3, EnqueuedAt: enq, StartedAt: start, FinishedAt: fin, Worker: "w1",
			}},
			want: results.State{
				Task: "a.b", Queue: "q", State: "FAILURE", Result: json.RawMessage(`{"x":[1]}`), Error: "boom",
				Attempts: 3, EnqueuedAt: ptr(enq), StartedAt: ptr(start), FinishedAt: ptr(fin), Worker: "w1",
			},
		},
		{
			name: "partial updates merge, zero fields are kept",
			updates: []results.Update{
				{Task: "a.b", Queue: "q", State: "PENDING", EnqueuedAt: enq},
				{State: "STARTED", StartedAt: start, Attempts: 1, Worker: "w1"},
				{State: "SUCCESS", FinishedAt: fin, Result: json.RawMessage(`"pong"`)},
			},
			want: results.State{
				Task: "a.b", Queue: "q", State: "SUCCESS", Result: json.RawMessage(`"pong"`), Attempts: 1,
				EnqueuedAt: ptr(enq), StartedAt: ptr(start), FinishedAt: ptr(fin), Worker: "w1",
			},
		},
		{
			name: "clear error",
			updates: []results.Update{
				{State: "RETRY", Error: "first attempt failed", Attempts: 1},
				{State: "SUCCESS", ClearError: true, Attempts: 2},
			},
			want: results.State{State: "SUCCESS", Attempts: 2},
		},
		{
			name: "a new error wins over ClearError",
			updates: []results.Update{
				{State: "RETRY", Error: "first"},
				{State: "RETRY", Error: "second", ClearError: true},
			},
			want: results.State{State: "RETRY", Error: "second"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, results.Config{})
			id := "task-" + tc.name
			for _, u := range tc.updates {
				require.NoError(t, b.store.Set(t.Context(), id, u))
			}
			got, err := b.store.Get(t.Context(), id)
			require.NoError(t, err)
			tc.want.ID = id
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("state (-want +got):\n%s", diff)
			}
		})
	}
}

func TestKeyLayout(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{})
	require.Equal(t, b.prefix+":task:01J", b.store.Key("01J"))
	require.NoError(t, b.store.Set(t.Context(), "01J", results.Update{State: "PENDING"}))
	m, err := b.rdb.HGetAll(t.Context(), b.prefix+":task:01J").Result()
	require.NoError(t, err)
	require.Equal(t, map[string]string{"id": "01J", "state": "PENDING"}, m)
	enq := time.Now()
	require.NoError(t, b.store.Set(t.Context(), "01K", results.Update{State: "PENDING", EnqueuedAt: enq}))
	tval, err := b.rdb.HGet(t.Context(), b.prefix+":task:01K", "t").Result()
	require.NoError(t, err)
	require.Equal(t, fmt.Sprint(enq.UnixMilli()), tval, "the index score, Unix ms of the enqueue")
}

func TestGetUnknown(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{})
	_, err := b.store.Get(t.Context(), "nope")
	require.ErrorIs(t, err, results.ErrNotFound)
}

func TestDelete(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{})
	require.NoError(t, b.store.Set(t.Context(), "x", results.Update{State: "PENDING"}))
	require.NoError(t, b.store.Delete(t.Context(), "x"))
	_, err := b.store.Get(t.Context(), "x")
	require.ErrorIs(t, err, results.ErrNotFound)
}

func TestTTL(t *testing.T) {
	t.Parallel()
	const ttl = time.Hour
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, s *results.Store, id string)
	}{
		{"Set", func(t *testing.T, s *results.Store, id string) {
			require.NoError(t, s.Set(t.Context(), id, results.Update{State: "PENDING"}))
		}},
		{"SetMany", func(t *testing.T, s *results.Store, id string) {
			require.NoError(t, s.SetMany(t.Context(), []string{id}, []results.Update{{State: "PENDING"}}))
		}},
		{"SetAsync", func(t *testing.T, s *results.Store, id string) {
			s.SetAsync(id, results.Update{State: "PENDING"})
			s.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, results.Config{TTL: ttl})
			tc.write(t, b.store, "ttl")
			got, err := b.rdb.TTL(t.Context(), b.store.Key("ttl")).Result()
			require.NoError(t, err)
			require.Greater(t, got, ttl-time.Minute)
			require.LessOrEqual(t, got, ttl)
		})
	}

	t.Run("default is a day and every write renews it", func(t *testing.T) {
		t.Parallel()
		b := setup(t, results.Config{})
		key := b.store.Key("renew")
		require.NoError(t, b.store.Set(t.Context(), "renew", results.Update{State: "PENDING"}))
		require.NoError(t, b.rdb.Expire(t.Context(), key, time.Minute).Err())
		require.NoError(t, b.store.Set(t.Context(), "renew", results.Update{State: "STARTED"}))
		got, err := b.rdb.TTL(t.Context(), key).Result()
		require.NoError(t, err)
		require.Greater(t, got, 23*time.Hour)
	})
}

func TestSetAsyncOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{MaxBatch: 7}) // many small batches
	const n = 1000
	for i := 1; i <= n; i++ {
		b.store.SetAsync("one", results.Update{State: "RETRY", Attempts: i, Result: json.RawMessage(strconv.Itoa(i))})
	}
	require.Eventually(t, func() bool {
		st, err := b.store.Get(t.Context(), "one")
		return err == nil && st.Attempts == n
	}, 10*time.Second, 10*time.Millisecond)
	st, err := b.store.Get(t.Context(), "one")
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(n), string(st.Result), "the last queued write wins")
}

func TestConcurrentSet(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{MaxBatch: 16})
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = b.store.Set(t.Context(), fmt.Sprintf("t%d", i), results.Update{State: "SUCCESS", Attempts: i + 1})
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "set %d", i)
	}
	for i := range n {
		st, err := b.store.Get(t.Context(), fmt.Sprintf("t%d", i))
		require.NoError(t, err)
		require.Equal(t, i+1, st.Attempts)
		require.Equal(t, "SUCCESS", st.State)
	}
}

func TestSetMany(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{})
	ids := make([]string, 300)
	us := make([]results.Update, len(ids))
	for i := range ids {
		ids[i] = fmt.Sprintf("m%d", i)
		us[i] = results.Update{Task: "a.b", State: "PENDING", Attempts: i + 1}
	}
	require.NoError(t, b.store.SetMany(t.Context(), ids, us))
	for i, id := range ids {
		st, err := b.store.Get(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, i+1, st.Attempts)
	}
}

func TestSetContextCanceled(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := b.store.Set(ctx, "x", results.Update{State: "PENDING"})
	if err != nil {
		require.ErrorIs(t, err, context.Canceled)
	}
}

func TestCloseFlushes(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{MaxBatch: 3})
	const n = 2000
	for i := range n {
		b.store.SetAsync(fmt.Sprintf("c%d", i), results.Update{State: "PENDING", Attempts: i + 1})
	}
	b.store.Close()
	b.store.Close() // idempotent
	for i := range n {
		st, err := b.store.Get(t.Context(), fmt.Sprintf("c%d", i))
		require.NoError(t, err, "write %d was lost", i)
		require.Equal(t, i+1, st.Attempts)
	}
}

// TestWritesAfterClose: a write racing with shutdown is neither lost nor
// stuck; it goes straight to Redis.
func TestWritesAfterClose(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{})
	b.store.Close()
	for i := range 50 {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err := b.store.Set(ctx, fmt.Sprintf("s%d", i), results.Update{State: "SUCCESS"})
		cancel()
		require.NoError(t, err, "Set %d after Close", i)
		b.store.SetAsync(fmt.Sprintf("a%d", i), results.Update{State: "SUCCESS"})
	}
	for i := range 50 {
		_, err := b.store.Get(t.Context(), fmt.Sprintf("s%d", i))
		require.NoError(t, err)
		_, err = b.store.Get(t.Context(), fmt.Sprintf("a%d", i))
		require.NoError(t, err, "SetAsync %d after Close was lost", i)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t, results.Config{})

	got, err := b.store.ClaimIdempotencyKey(ctx, "order-1", "A", time.Minute)
	require.NoError(t, err)
	require.Equal(t, "A", got, "first claim binds the key")

	got, err = b.store.ClaimIdempotencyKey(ctx, "order-1", "B", time.Minute)
	require.NoError(t, err)
	require.Equal(t, "A", got, "second claim returns the first id")

	ttl, err := b.rdb.TTL(ctx, b.prefix+":idem:order-1").Result()
	require.NoError(t, err)
	require.Greater(t, ttl, 50*time.Second)
	require.LessOrEqual(t, ttl, time.Minute)

	// Release by someone else's id leaves the binding alone.
	require.NoError(t, b.store.ReleaseIdempotencyKey(ctx, "order-1", "B"))
	got, err = b.store.ClaimIdempotencyKey(ctx, "order-1", "C", time.Minute)
	require.NoError(t, err)
	require.Equal(t, "A", got)

	// Release by the owner frees the key.
	require.NoError(t, b.store.ReleaseIdempotencyKey(ctx, "order-1", "A"))
	got, err = b.store.ClaimIdempotencyKey(ctx, "order-1", "D", time.Minute)
	require.NoError(t, err)
	require.Equal(t, "D", got)

	// Releasing an unknown key is not an error.
	require.NoError(t, b.store.ReleaseIdempotencyKey(ctx, "never", "X"))
}

func TestIdempotencyKeyConcurrentClaims(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{})
	const n = 50
	got := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			got[i], errs[i] = b.store.ClaimIdempotencyKey(t.Context(), "race", fmt.Sprintf("id%d", i), time.Minute)
		})
	}
	wg.Wait()
	winners := 0
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, got[0], got[i], "every claimer sees the one winner")
		if got[i] == fmt.Sprintf("id%d", i) {
			winners++
		}
	}
	require.Equal(t, 1, winners)
}

func TestOpen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		url     string
		wantErr string
	}{
		{name: "reachable", url: resultstest.URL()},
		{name: "bad url", url: "http://x", wantErr: "redis.url"},
		{name: "unreachable, password hidden", url: "redis://:s3cret@127.0.0.1:1/0", wantErr: "127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rdb, err := results.Open(t.Context(), tc.url)
			if tc.wantErr == "" {
				require.NoError(t, err)
				require.NoError(t, rdb.Close())
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
			require.NotContains(t, err.Error(), "s3cret")
		})
	}
}

// TestUnavailable: every command against a Redis that is not there fails
// fast with an error matching ErrUnavailable (never ErrNotFound), so
// callers answer "retry later".
func TestUnavailable(t *testing.T) {
	t.Parallel()
	rdb, err := results.Dial("redis://127.0.0.1:1/0")
	require.NoError(t, err)
	defer rdb.Close()
	s := results.New(rdb, results.Config{Prefix: "x"})
	defer s.Close()
	ctx := t.Context()
	start := time.Now()
	for name, err := range map[string]error{
		"set":        s.Set(ctx, "a", results.Update{State: "PENDING"}),
		"set many":   s.SetMany(ctx, []string{"a"}, []results.Update{{State: "PENDING"}}),
		"set absent": s.SetIfAbsent(ctx, "a", results.Update{State: "PENDING"}),
		"get":        func() error { _, err := s.Get(ctx, "a"); return err }(),
		"delete":     s.Delete(ctx, "a"),
		"claim":      func() error { _, err := s.ClaimIdempotencyKey(ctx, "k", "a", time.Minute); return err }(),
		"release":    s.ReleaseIdempotencyKey(ctx, "k", "a"),
		"mark":       s.MarkUnconfirmed(ctx, "a"),
		"unmark":     s.ClearUnconfirmed(ctx, "a"),
	} {
		require.ErrorIs(t, err, results.ErrUnavailable, name)
		require.NotErrorIs(t, err, results.ErrNotFound, name)
	}
	require.Less(t, time.Since(start), 5*time.Second)
}

// TestStateIfNew: a PENDING written with StateIfNew after a worker's state
// (an atomic batch records its states alongside the publish) leaves the
// worker's state; on a new task it is the state. With and without the index.
func TestStateIfNew(t *testing.T) {
	t.Parallel()
	for _, noIndex := range []bool{false, true} {
		b := setup(t, results.Config{NoIndex: noIndex})
		ctx := t.Context()
		now := time.Now()
		require.NoError(t, b.store.Set(ctx, "ran", results.Update{State: "SUCCESS", Result: json.RawMessage(`1`)}))
		pending := results.Update{Task: "sys.ping", Queue: "default", State: "PENDING", EnqueuedAt: now, StateIfNew: true}
		require.NoError(t, b.store.SetMany(ctx, []string{"ran", "new"}, []results.Update{pending, pending}))
		ran, err := b.store.Get(ctx, "ran")
		require.NoError(t, err)
		require.Equal(t, "SUCCESS", ran.State, "noIndex=%v", noIndex)
		require.Equal(t, "sys.ping", ran.Task)
		fresh, err := b.store.Get(ctx, "new")
		require.NoError(t, err)
		require.Equal(t, "PENDING", fresh.State)
		if !noIndex {
			page, err := b.store.Search(ctx, results.Query{State: "PENDING"})
			require.NoError(t, err)
			require.Len(t, page.Items, 1, "the lingering PENDING entry of the task that ran is skipped")
			require.Equal(t, "new", page.Items[0].ID)
		}
	}
}
