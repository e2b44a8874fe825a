// Package revoke cancels tasks, durably (Celery's revoke): a cancellation
// is a key in the KV bucket flotilla_cancel that every worker watches
// ([Watch]), so a cancelled task that reaches any worker later — after a
// restart, from a retry, from DELAYED — is not run, and one that runs has
// its context cancelled. [Canceller] cancels one task by id or every
// pending and delayed task of a name or queue, and records CANCELLED.
package revoke

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// ErrFinished is returned for a task that already reached a final state:
// there is nothing left to cancel.
var ErrFinished = errors.New("task already finished")

// ErrNoFilter is returned by [Canceller.CancelMatching] without a task
// name and without a queue.
var ErrNoFilter = errors.New("a bulk cancel needs a task name, a queue, or both")

// Canceller cancels tasks: web and the CLI use it.
type Canceller struct {
	js     jetstream.JetStream
	rs     *results.Store
	events *jet.Events
	now    func() time.Time
}

// New returns a canceller. events may be nil (no events).
func New(js jetstream.JetStream, rs *results.Store, events *jet.Events) *Canceller {
	return &Canceller{js: js, rs: rs, events: events, now: time.Now}
}

// Outcome is what a cancel did to one task.
type Outcome struct {
	// State is the task's state after the cancel: CANCELLED, or STARTED
	// when a worker runs it — that worker cancels its context and records
	// CANCELLED within a second.
	State results.State
	// Running is true when the task was running: its cancellation is
	// under way.
	Running bool
}

// Cancel cancels task id: a pending, retrying or delayed one never runs
// (state CANCELLED at once); a running one has its context cancelled on
// whichever worker runs it. It returns [results.ErrNotFound] for an unknown
// id and [ErrFinished] (with the state) for a finished task.
func (c *Canceller) Cancel(ctx context.Context, id, by string) (Outcome, error) {
	st, err := c.rs.Get(ctx, id)
	if err != nil {
		return Outcome{}, err
	}
	if task.Final(st.State) {
		return Outcome{State: st}, fmt.Errorf("task %s is %s: %w", id, st.State, ErrFinished)
	}
	now := c.now().UTC()
	if err := c.put(ctx, []string{id}, by, now); err != nil {
		return Outcome{}, err
	}
	if err := c.purgeDelayed(ctx, []string{id}); err != nil {
		return Outcome{}, err
	}
	if st.State == task.StateStarted {
		return Outcome{State: st, Running: true}, nil
	}
	if err := c.record(ctx, []results.State{st}, by, now); err != nil {
		return Outcome{}, err
	}
	st.State, st.Error, st.FinishedAt = task.StateCancelled, cancelledBy(by), &now
	return Outcome{State: st}, nil
}

// Filter selects the tasks of a bulk cancel: by task name, by queue, or
// both.
type Filter struct {
	Task, Queue string
}

// CancelMatching cancels every task that f selects and that is waiting now
// — in its queue (pending or waiting for a retry) or in DELAYED — and
// returns how many. Tasks enqueued after it started are not affected. A
// running task that f selects is cancelled too (its message is still in
// its queue until it is acked).
func (c *Canceller) CancelMatching(ctx context.Context, f Filter, by string) (int, error) {
	if f.Task == "" && f.Queue == "" {
		return 0, ErrNoFilter
	}
	var filter string
	switch {
	case f.Task == "":
		filter = wire.QueueFilter(f.Queue) // task names have dots: tasks.<queue>.>
	case f.Queue == "":
		filter = wire.TaskSubject("*", f.Task)
	default:
		filter = wire.TaskSubject(f.Queue, f.Task)
	}
	tasks, err := c.js.Stream(ctx, wire.StreamTasks)
	if err != nil {
		return 0, jet.Wrap("stream "+wire.StreamTasks, err)
	}
	last := tasks.CachedInfo().State.LastSeq
	var states []results.State
	seen := map[string]bool{}
	err = scan(ctx, tasks, filter, last, func(m *jetstream.RawStreamMsg) {
		if id := m.Header.Get(wire.HeaderID); id != "" && !seen[id] {
			seen[id] = true
			qq, nn, _ := wire.ParseTaskSubject(m.Subject)
			states = append(states, results.State{ID: id, Task: nn, Queue: qq})
		}
	})
	if err != nil {
		return 0, err
	}
	delayed, err := c.js.Stream(ctx, wire.StreamDelayed)
	if err != nil {
		return 0, jet.Wrap("stream "+wire.StreamDelayed, err)
	}
	var delayedIDs []string
	err = scan(ctx, delayed, wire.DelayedFilter, delayed.CachedInfo().State.LastSeq, func(m *jetstream.RawStreamMsg) {
		id, qq, nn := m.Header.Get(wire.HeaderID), m.Header.Get(wire.HeaderQueue), m.Header.Get(wire.HeaderTask)
		if id == "" || seen[id] || (f.Task != "" && nn != f.Task) || (f.Queue != "" && qq != f.Queue) {
			return
		}
		seen[id] = true
		delayedIDs = append(delayedIDs, id)
		states = append(states, results.State{ID: id, Task: nn, Queue: qq})
	})
	if err != nil {
		return 0, err
	}
	if len(states) == 0 {
		return 0, nil
	}
	ids := make([]string, len(states))
	for i, st := range states {
		ids[i] = st.ID
	}
	now := c.now().UTC()
	// Workers learn first, so that none starts what is about to go.
	if err := c.put(ctx, ids, by, now); err != nil {
		return 0, err
	}
	if err := tasks.Purge(ctx, jetstream.WithPurgeSubject(filter), jetstream.WithPurgeSequence(last+1)); err != nil {
		return 0, jet.Wrap("purge cancelled tasks from "+wire.StreamTasks, err)
	}
	if err := c.purgeDelayed(ctx, delayedIDs); err != nil {
		return 0, err
	}
	return len(ids), c.record(ctx, states, by, now)
}

// scan calls fn for every message of stream on subject filter up to
// sequence last, one direct request per message.
func scan(ctx context.Context, stream jetstream.Stream, filter string, last uint64, fn func(*jetstream.RawStreamMsg)) error {
	for seq := uint64(1); seq <= last; {
		m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return jet.Wrap("read "+filter, err)
		}
		if m.Sequence > last {
			return nil
		}
		fn(m)
		seq = m.Sequence + 1
	}
	return nil
}

// put writes the cancellation of ids into the bucket, asynchronously, and
// waits for every acknowledgement.
func (c *Canceller) put(ctx context.Context, ids []string, by string, at time.Time) error {
	futures := make([]jetstream.PubAckFuture, 0, len(ids))
	for _, id := range ids {
		b, _ := json.Marshal(wire.CancelRecord{ID: id, At: at, By: by})
		f, err := c.js.PublishAsync(wire.CancelSubject(id), b)
		if err != nil {
			return jet.Wrap("cancel "+id, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return jet.Wrap("cancel "+ids[i], err)
		case <-ctx.Done():
			return fmt.Errorf("cancel %s: %w", ids[i], ctx.Err())
		}
	}
	return nil
}

// purgeDelayed removes the delayed messages of ids: their schedules never
// fire.
func (c *Canceller) purgeDelayed(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	s, err := c.js.Stream(ctx, wire.StreamDelayed)
	if err != nil {
		return jet.Wrap("stream "+wire.StreamDelayed, err)
	}
	for _, id := range ids {
		if err := s.Purge(ctx, jetstream.WithPurgeSubject(wire.DelayedIDFilter(id))); err != nil {
			return jet.Wrap("purge delayed task "+id, err)
		}
	}
	return nil
}

// record writes CANCELLED for every task of states that is not final yet
// and publishes its cancelled event.
func (c *Canceller) record(ctx context.Context, states []results.State, by string, at time.Time) error {
	ids := make([]string, len(states))
	for i, st := range states {
		ids[i] = st.ID
	}
	if err := c.rs.Cancel(ctx, ids, cancelledBy(by), at); err != nil {
		return err
	}
	for _, st := range states {
		c.events.Emit(&wire.Event{Kind: wire.EventCancelled, ID: st.ID, Task: st.Task, Queue: st.Queue, Time: at, Attempt: st.Attempts, Error: cancelledBy(by)})
	}
	return nil
}

func cancelledBy(by string) string {
	if by == "" {
		return "cancelled"
	}
	return "cancelled by " + by
}
