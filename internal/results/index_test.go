package results_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/results"
)

// TestSearch: filters by state, task, queue and time, newest first,
// keyset-paged without gaps or repeats; states move between the state
// sets; expired states are skipped.
func TestSearch(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{TTL: time.Hour})
	ctx := t.Context()
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Millisecond)
	var ids []string
	for i := range 30 {
		id := fmt.Sprintf("T%02d", i)
		ids = append(ids, id)
		name, q := "report.build", "default"
		if i%3 == 0 {
			name = "mail.send"
		}
		if i%5 == 0 {
			q = "bulk"
		}
		// Two tasks per millisecond: ties are paged by id.
		require.NoError(t, b.store.Set(ctx, id, results.Update{Task: name, Queue: q, State: "PENDING", EnqueuedAt: base.Add(time.Duration(i/2) * time.Millisecond)}))
	}
	for i, id := range ids {
		if i%4 == 0 {
			require.NoError(t, b.store.Set(ctx, id, results.Update{State: "STARTED", Worker: "w"}))
			require.NoError(t, b.store.Set(ctx, id, results.Update{State: "SUCCESS",
				Attempt: &results.Attempt{Attempt: 1, Worker: "w", Outcome: "success"}}))
		}
	}

	ids2 := func(p results.Page) []string {
		var out []string
		for _, st := range p.Items {
			out = append(out, st.ID)
		}
		return out
	}
	// Everything, in pages of 7: newest first, each id once.
	var all []string
	q := results.Query{Limit: 7}
	for {
		p, err := b.store.Search(ctx, q)
		require.NoError(t, err)
		all = append(all, ids2(p)...)
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	require.Len(t, all, 30)
	require.Equal(t, "T29", all[0])
	require.Equal(t, "T28", all[1], "a tie, by id descending")
	require.Equal(t, "T00", all[29])

	p, err := b.store.Search(ctx, results.Query{State: "SUCCESS", Limit: 100})
	require.NoError(t, err)
	require.Equal(t, []string{"T28", "T24", "T20", "T16", "T12", "T08", "T04", "T00"}, ids2(p))
	require.Empty(t, p.Next)
	p, err = b.store.Search(ctx, results.Query{State: "PENDING", Task: "mail.send", Queue: "bulk"})
	require.NoError(t, err)
	require.Equal(t, []string{"T15"}, ids2(p), "T00 and T... are SUCCESS; T15 is the only pending mail.send on bulk")
	p, err = b.store.Search(ctx, results.Query{Queue: "bulk", Since: base.Add(5 * time.Millisecond), Until: base.Add(10 * time.Millisecond)})
	require.NoError(t, err)
	require.Equal(t, []string{"T20", "T15", "T10"}, ids2(p))

	// An expired state is skipped.
	require.NoError(t, b.store.Delete(ctx, "T29"))
	p, err = b.store.Search(ctx, results.Query{Limit: 1})
	require.NoError(t, err)
	require.Equal(t, []string{"T28"}, ids2(p))
	_, err = b.store.Search(ctx, results.Query{Cursor: "garbage!"})
	require.ErrorIs(t, err, results.ErrBadCursor)

	// The attempt history comes with the state.
	st, err := b.store.Get(ctx, "T04")
	require.NoError(t, err)
	require.Len(t, st.History, 1)
	require.Equal(t, "success", st.History[0].Outcome)

	// Cancel moves unfinished tasks to CANCELLED, and only those.
	require.NoError(t, b.store.Cancel(ctx, []string{"T01", "T04", "nope"}, "cancelled by test", time.Now()))
	p, err = b.store.Search(ctx, results.Query{State: "CANCELLED"})
	require.NoError(t, err)
	require.Equal(t, []string{"T01"}, ids2(p))
	_, err = b.store.Get(ctx, "nope")
	require.ErrorIs(t, err, results.ErrNotFound, "a cancel creates no state")
}

// TestTrim: entries older than the TTL leave the index.
func TestTrim(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{TTL: time.Hour})
	ctx := t.Context()
	require.NoError(t, b.store.Set(ctx, "old", results.Update{Task: "a.b", Queue: "q", State: "PENDING", EnqueuedAt: time.Now().Add(-2 * time.Hour)}))
	require.NoError(t, b.store.Set(ctx, "new", results.Update{Task: "a.b", Queue: "q", State: "PENDING", EnqueuedAt: time.Now()}))
	require.NoError(t, b.store.Trim(ctx))
	for _, key := range []string{"all", "s:PENDING", "t:a.b", "q:q"} {
		ids, err := b.rdb.ZRange(ctx, b.prefix+":idx:"+key, 0, -1).Result()
		require.NoError(t, err)
		require.Equal(t, []string{"new"}, ids, key)
	}
}

// TestSearchOff: with the index off, writes are plain and Search says so.
func TestSearchOff(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{NoIndex: true})
	require.NoError(t, b.store.Set(t.Context(), "x", results.Update{State: "PENDING"}))
	_, err := b.store.Search(t.Context(), results.Query{})
	require.ErrorContains(t, err, "tasks.index=false")
	n, err := b.rdb.Exists(t.Context(), b.prefix+":idx:all").Result()
	require.NoError(t, err)
	require.Zero(t, n)
}

// TestSearchTaskNamedAsQueue: a task whose name is also its queue's is
// found by either filter (each has its own index set).
func TestSearchTaskNamedAsQueue(t *testing.T) {
	t.Parallel()
	b := setup(t, results.Config{TTL: time.Hour})
	ctx := t.Context()
	require.NoError(t, b.store.Set(ctx, "R1", results.Update{Task: "report", Queue: "report", State: "PENDING", EnqueuedAt: time.Now()}))
	for _, q := range []results.Query{{Task: "report"}, {Queue: "report"}} {
		p, err := b.store.Search(ctx, q)
		require.NoError(t, err)
		require.Len(t, p.Items, 1, "query %+v", q)
		require.Equal(t, "R1", p.Items[0].ID)
	}
}
