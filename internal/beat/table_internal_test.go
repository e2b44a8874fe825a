package beat

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/schedule"
)

// TestTable checks the pointer-free table against a map: names found,
// added and removed in random order, with hash chains forced (a hash of
// the name's last character), the heap ordered, and the shared timings
// and targets released when no row uses them.
func TestTable(t *testing.T) {
	t.Parallel()
	tb := newTable()
	tb.hashFn = func(name string) uint64 { return uint64(name[len(name)-1] % 7) }
	want := map[string]int64{} // name → next
	rng := rand.New(rand.NewPCG(1, 2))
	sc := func(name string, k int) *schedule.Schedule {
		return &schedule.Schedule{Name: name, Task: "sys.ping", Queue: "default", Args: []byte(fmt.Sprintf(`{"k":%d}`, k%3)),
			Interval: schedule.Duration(time.Duration(1+k%4) * time.Second)}
	}
	check := func() {
		t.Helper()
		require.Equal(t, len(want), tb.len())
		for name := range want {
			i, ok := tb.get(name)
			require.True(t, ok, name)
			require.Equal(t, name, tb.name(i))
			require.Equal(t, want[name], tb.rows[i].next)
		}
		// The heap pops in order of next fire.
		prev := int64(-1)
		h := append([]int32(nil), tb.heap...)
		for _, i := range h {
			require.Equal(t, int32(i), tb.heap[tb.rows[i].hidx])
		}
		order := make([]int64, 0, len(h))
		cp := &table{rows: append([]row(nil), tb.rows...), heap: h}
		for len(cp.heap) > 0 {
			i := heapPop(cp)
			order = append(order, cp.rows[i].next)
		}
		for _, n := range order {
			require.GreaterOrEqual(t, n, prev)
			prev = n
		}
		require.Len(t, order, len(want))
	}
	for step := 0; step < 5000; step++ {
		name := fmt.Sprintf("s-%d", rng.IntN(400))
		if _, ok := want[name]; ok && rng.IntN(3) == 0 {
			i, _ := tb.get(name)
			tb.remove(i)
			delete(want, name)
			_, ok := tb.get(name)
			require.False(t, ok)
			continue
		}
		s := sc(name, rng.IntN(12))
		tm, err := tb.timing(s)
		require.NoError(t, err)
		tg := tb.target(s)
		i, ok := tb.get(name)
		if ok {
			tb.setShared(i, tm, tg)
		} else {
			i = tb.add(name, tm, tg)
		}
		next := rng.Int64N(1_000_000)
		tb.rows[i].next = next
		tb.push(i)
		want[name] = next
		if step%500 == 0 {
			check()
		}
	}
	check()
	for name := range want {
		i, _ := tb.get(name)
		tb.remove(i)
	}
	require.Zero(t, tb.len())
	require.Empty(t, tb.index)
	require.Empty(t, tb.heap)
	require.Empty(t, tb.timings.at, "timings released")
	require.Empty(t, tb.targets.at, "targets released")
}

func heapPop(t *table) int32 {
	h := (*fireHeap)(t)
	n := len(t.heap) - 1
	h.Swap(0, n)
	// sift down over [0, n)
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && h.Less(r, l) {
			j = r
		}
		if !h.Less(j, i) {
			break
		}
		h.Swap(i, j)
		i = j
	}
	return h.Pop().(int32)
}

// TestTableCompacts: removing most rows rewrites the names' arena.
func TestTableCompacts(t *testing.T) {
	t.Parallel()
	tb := newTable()
	s := &schedule.Schedule{Name: "x", Task: "sys.ping", Queue: "default", Args: []byte(`{}`), Interval: schedule.Duration(time.Second)}
	tm, err := tb.timing(s)
	require.NoError(t, err)
	tg := tb.target(s)
	for i := 0; i < 40_000; i++ {
		tb.add(fmt.Sprintf("a-fairly-long-schedule-name-%06d", i), tm, tg)
	}
	full := len(tb.names)
	for i := 0; i < 39_000; i++ {
		j, ok := tb.get(fmt.Sprintf("a-fairly-long-schedule-name-%06d", i))
		require.True(t, ok)
		tb.remove(j)
	}
	require.Less(t, len(tb.names), full/2, "arena compacted")
	for i := 39_000; i < 40_000; i++ {
		j, ok := tb.get(fmt.Sprintf("a-fairly-long-schedule-name-%06d", i))
		require.True(t, ok)
		require.Equal(t, fmt.Sprintf("a-fairly-long-schedule-name-%06d", i), tb.name(j))
	}
}
