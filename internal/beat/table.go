package beat

import (
	"container/heap"
	"encoding/json"
	"hash/maphash"

	"github.com/flotilla/flotilla/internal/schedule"
)

// table holds the enabled schedules in memory, about 100 bytes each
// including the name, and — what matters for a million of them — without
// a single pointer: the rows, the names' arena, the name index and the
// heap of next fires are plain numbers, so the garbage collector never
// scans them (it would otherwise walk every schedule on every cycle, and
// the firing path allocates enough to run a cycle every second or two).
// The few distinct timings and targets the rows share sit in small
// reference-counted lists. The table is not safe for concurrent use: the
// scheduler's mutex guards it.
type table struct {
	rows  []row
	free  []int32 // unused rows
	names []byte  // every row's name, back to back
	waste int     // bytes of names no row uses any more
	// index maps a name's hash to its first row; rows with an equal hash
	// chain through row.chain.
	index map[uint64]int32
	seed  maphash.Seed
	// hashFn replaces the name hash in tests (to force chains).
	hashFn func(string) uint64
	heap   []int32 // rows in the heap, by next fire
	n      int     // rows in use

	timings shared[*schedule.Timing]
	targets shared[*target]
}

// row is one schedule. Times are Unix nanoseconds, 0 for none.
type row struct {
	nameOff uint32
	nameLen uint16
	used    bool
	timing  int32 // into table.timings.vals
	target  int32 // into table.targets.vals
	chain   int32 // next row with the same name hash; -1 for none
	hidx    int32 // position in table.heap; -1 when not queued
	offset  int64 // spread offset, ns
	created int64
	next    int64
	last    int64 // latest fire known (database or local)
	runs    int64 // run count known (database or local)
	seen    int64 // when the data last applied to it was read
	updated int64 // when its definition last changed (updated_at)
}

// target is what a fire publishes; schedules with the same task, queue and
// args share one.
type target struct {
	task, queue string
	args        json.RawMessage
}

func newTable() *table {
	return &table{index: map[uint64]int32{}, seed: maphash.MakeSeed()}
}

// len is the number of schedules held.
func (t *table) len() int { return t.n }

func (t *table) hash(name string) uint64 {
	if t.hashFn != nil {
		return t.hashFn(name)
	}
	return maphash.String(t.seed, name)
}

func (t *table) nameOf(r *row) []byte { return t.names[r.nameOff : r.nameOff+uint32(r.nameLen)] }

// name returns row i's name (a copy).
func (t *table) name(i int32) string { return string(t.nameOf(&t.rows[i])) }

// get returns the row called name.
func (t *table) get(name string) (int32, bool) {
	i, ok := t.index[t.hash(name)]
	for ok && i >= 0 {
		if string(t.nameOf(&t.rows[i])) == name {
			return i, true
		}
		i = t.rows[i].chain
	}
	return -1, false
}

// add returns a new row called name (which must not exist), using timing
// tm and target tg (see [table.timing], [table.target]).
func (t *table) add(name string, tm, tg int32) int32 {
	var i int32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		t.rows = append(t.rows, row{})
		i = int32(len(t.rows) - 1)
	}
	h := t.hash(name)
	chain := int32(-1)
	if first, ok := t.index[h]; ok {
		chain = first
	}
	t.index[h] = i
	off := uint32(len(t.names))
	t.names = append(t.names, name...)
	t.rows[i] = row{nameOff: off, nameLen: uint16(len(name)), used: true, timing: tm, target: tg, chain: chain, hidx: -1}
	t.timings.retain(tm)
	t.targets.retain(tg)
	t.n++
	return i
}

// setShared points row i at timing tm and target tg, releasing the old ones.
func (t *table) setShared(i, tm, tg int32) {
	r := &t.rows[i]
	if r.timing != tm {
		t.timings.retain(tm)
		t.timings.release(r.timing)
		r.timing = tm
	}
	if r.target != tg {
		t.targets.retain(tg)
		t.targets.release(r.target)
		r.target = tg
	}
}

// remove drops row i (and its place in the heap).
func (t *table) remove(i int32) {
	r := &t.rows[i]
	if !r.used {
		return
	}
	if r.hidx >= 0 {
		heap.Remove((*fireHeap)(t), int(r.hidx))
	}
	h := t.hash(string(t.nameOf(r)))
	if first := t.index[h]; first == i {
		if r.chain >= 0 {
			t.index[h] = r.chain
		} else {
			delete(t.index, h)
		}
	} else {
		for j := first; j >= 0; j = t.rows[j].chain {
			if t.rows[j].chain == i {
				t.rows[j].chain = r.chain
				break
			}
		}
	}
	t.waste += int(r.nameLen)
	t.timings.release(r.timing)
	t.targets.release(r.target)
	*r = row{chain: -1, hidx: -1}
	t.free = append(t.free, i)
	t.n--
	t.compact()
}

// compact rewrites the names' arena once most of it is unused.
func (t *table) compact() {
	if t.waste < 1<<20 || t.waste < len(t.names)/2 {
		return
	}
	names := make([]byte, 0, len(t.names)-t.waste)
	for i := range t.rows {
		r := &t.rows[i]
		if !r.used {
			continue
		}
		off := uint32(len(names))
		names = append(names, t.nameOf(r)...)
		r.nameOff = off
	}
	t.names, t.waste = names, 0
}

// timing returns the index of the shared timing of sc, compiling it the
// first time its key is seen. The caller passes it to add or setShared.
func (t *table) timing(sc *schedule.Schedule) (int32, error) {
	key := schedule.TimingKey(*sc)
	if i, ok := t.timings.find(key); ok {
		return i, nil
	}
	tm, err := schedule.CompileTiming(*sc)
	if err != nil {
		return -1, err
	}
	return t.timings.put(key, tm), nil
}

// target returns the index of the shared target of sc.
func (t *table) target(sc *schedule.Schedule) int32 {
	key := sc.Task + "\x00" + sc.Queue + "\x00" + string(sc.Args)
	if i, ok := t.targets.find(key); ok {
		return i
	}
	return t.targets.put(key, &target{task: sc.Task, queue: sc.Queue, args: sc.Args})
}

// shared is a list of values that many rows use, by index, each found by
// its key and counted: one whose count drops to zero is forgotten and its
// slot reused.
type shared[T any] struct {
	vals []T
	keys []string
	refs []int32
	free []int32
	at   map[string]int32
}

func (s *shared[T]) find(key string) (int32, bool) {
	i, ok := s.at[key]
	return i, ok
}

// put adds v under key with no users yet (add or setShared count them).
func (s *shared[T]) put(key string, v T) int32 {
	if s.at == nil {
		s.at = map[string]int32{}
	}
	var i int32
	if n := len(s.free); n > 0 {
		i = s.free[n-1]
		s.free = s.free[:n-1]
		s.vals[i], s.keys[i] = v, key
	} else {
		s.vals, s.keys, s.refs = append(s.vals, v), append(s.keys, key), append(s.refs, 0)
		i = int32(len(s.vals) - 1)
	}
	s.at[key] = i
	return i
}

func (s *shared[T]) retain(i int32) { s.refs[i]++ }

func (s *shared[T]) release(i int32) {
	if s.refs[i]--; s.refs[i] > 0 {
		return
	}
	delete(s.at, s.keys[i])
	var zero T
	s.vals[i], s.keys[i] = zero, ""
	s.free = append(s.free, i)
}

// push queues row i at its next fire, or moves it there.
func (t *table) push(i int32) {
	if r := &t.rows[i]; r.hidx >= 0 {
		heap.Fix((*fireHeap)(t), int(r.hidx))
		return
	}
	heap.Push((*fireHeap)(t), i)
}

// unqueue takes row i out of the heap; the row stays.
func (t *table) unqueue(i int32) {
	if r := &t.rows[i]; r.hidx >= 0 {
		heap.Remove((*fireHeap)(t), int(r.hidx))
	}
}

// top returns the row with the earliest next fire.
func (t *table) top() (int32, bool) {
	if len(t.heap) == 0 {
		return -1, false
	}
	return t.heap[0], true
}

// clearHeap takes every row out of the heap; the rows stay.
func (t *table) clearHeap() {
	for _, i := range t.heap {
		t.rows[i].hidx = -1
	}
	t.heap = t.heap[:0]
}

// fireHeap orders a table's heap by next fire (container/heap).
type fireHeap table

func (h *fireHeap) Len() int { return len(h.heap) }
func (h *fireHeap) Less(i, j int) bool {
	return h.rows[h.heap[i]].next < h.rows[h.heap[j]].next
}

func (h *fireHeap) Swap(i, j int) {
	h.heap[i], h.heap[j] = h.heap[j], h.heap[i]
	h.rows[h.heap[i]].hidx = int32(i)
	h.rows[h.heap[j]].hidx = int32(j)
}

func (h *fireHeap) Push(x any) {
	i := x.(int32)
	h.rows[i].hidx = int32(len(h.heap))
	h.heap = append(h.heap, i)
}

func (h *fireHeap) Pop() any {
	n := len(h.heap) - 1
	i := h.heap[n]
	h.heap = h.heap[:n]
	h.rows[i].hidx = -1
	return i
}
