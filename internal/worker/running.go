package worker

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// running is what this worker runs now, by task id, so that a cancel can
// reach an attempt and the worker's announcement can list them; plus the
// counters of finished attempts.
type running struct {
	mu        sync.Mutex
	m         map[string]*run
	processed atomic.Int64
	failed    atomic.Int64
}

// run is one attempt in progress.
type run struct {
	id, task, queue string
	started         time.Time
	cancel          context.CancelCauseFunc
}

func newRunning() *running { return &running{m: map[string]*run{}} }

// add registers an attempt of env started at start, cancelled by cancel.
func (r *running) add(env *task.Envelope, start time.Time, cancel context.CancelCauseFunc) *run {
	x := &run{id: env.ID, task: env.Name, queue: env.Queue, started: start, cancel: cancel}
	r.mu.Lock()
	r.m[env.ID] = x
	r.mu.Unlock()
	return x
}

// remove unregisters x and counts the attempt (failed or not).
func (r *running) remove(x *run, failed bool) {
	r.mu.Lock()
	if r.m[x.id] == x {
		delete(r.m, x.id)
	}
	r.mu.Unlock()
	r.processed.Add(1)
	if failed {
		r.failed.Add(1)
	}
}

// cancel cancels the attempt of task id if it runs here.
func (r *running) cancel(id string) bool {
	r.mu.Lock()
	x := r.m[id]
	r.mu.Unlock()
	if x == nil {
		return false
	}
	x.cancel(task.ErrCancelled)
	return true
}

// snapshot lists the attempts in progress, oldest first.
func (r *running) snapshot() []wire.RunningTask {
	r.mu.Lock()
	out := make([]wire.RunningTask, 0, len(r.m))
	for _, x := range r.m {
		out = append(out, wire.RunningTask{ID: x.id, Task: x.task, Queue: x.queue, StartedAt: x.started.UTC()})
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b wire.RunningTask) int { return a.StartedAt.Compare(b.StartedAt) })
	return out
}
