package jet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/wire"
)

// ErrDeadNotFound is returned for a DEAD sequence that holds no message.
var ErrDeadNotFound = errors.New("dead letter not found")

// GetDead reads the dead letter at seq.
func GetDead(ctx context.Context, js jetstream.JetStream, seq uint64) (wire.DeadLetter, error) {
	s, err := js.Stream(ctx, wire.StreamDead)
	if err != nil {
		return wire.DeadLetter{}, err
	}
	m, err := s.GetMsg(ctx, seq)
	if isNoMessage(err) {
		return wire.DeadLetter{}, fmt.Errorf("%w: sequence %d", ErrDeadNotFound, seq)
	}
	if err != nil {
		return wire.DeadLetter{}, err
	}
	return wire.DecodeDead(m.Sequence, m.Subject, m.Time, m.Header, m.Data), nil
}

// ListDead returns up to limit dead letters, newest first.
func ListDead(ctx context.Context, js jetstream.JetStream, limit int) ([]wire.DeadLetter, error) {
	s, err := js.Stream(ctx, wire.StreamDead)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []wire.DeadLetter
	for seq := info.State.LastSeq; seq >= info.State.FirstSeq && seq > 0 && len(out) < limit; seq-- {
		m, err := s.GetMsg(ctx, seq)
		if isNoMessage(err) {
			continue // deleted (requeued)
		}
		if err != nil {
			return out, err
		}
		out = append(out, wire.DecodeDead(m.Sequence, m.Subject, m.Time, m.Header, m.Data))
	}
	return out, nil
}

// DeadCount is how many dead letters DEAD holds.
func DeadCount(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(ctx, wire.StreamDead)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// FindDead returns the newest dead letter of task id, which was queued on
// queue as task name (so that only dead.<queue>.<name> is read), or
// [ErrDeadNotFound]. It reads that subject's letters one by one, at most
// the newest 100,000.
func FindDead(ctx context.Context, js jetstream.JetStream, queue, name, id string) (wire.DeadLetter, error) {
	s, err := js.Stream(ctx, wire.StreamDead)
	if err != nil {
		return wire.DeadLetter{}, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return wire.DeadLetter{}, err
	}
	subject := wire.DeadSubject(wire.SafeQueue(queue), wire.SafeTask(name))
	var found *jetstream.RawStreamMsg
	seq := max(info.State.FirstSeq, 1)
	if info.State.LastSeq > 100_000 {
		seq = max(seq, info.State.LastSeq-100_000)
	}
	for seq <= info.State.LastSeq {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if isNoMessage(err) {
			break
		}
		if err != nil {
			return wire.DeadLetter{}, err
		}
		if m.Header.Get(wire.HeaderID) == id {
			found = m
		}
		seq = m.Sequence + 1
	}
	if found == nil {
		return wire.DeadLetter{}, fmt.Errorf("%w: task %s has no dead letter", ErrDeadNotFound, id)
	}
	return wire.DecodeDead(found.Sequence, found.Subject, found.Time, found.Header, found.Data), nil
}

// DeleteDead removes the dead letter at seq; [ErrDeadNotFound] when it
// holds none (already deleted or requeued).
func DeleteDead(ctx context.Context, js jetstream.JetStream, seq uint64) error {
	s, err := js.Stream(ctx, wire.StreamDead)
	if err != nil {
		return err
	}
	if err := s.DeleteMsg(ctx, seq); isNoMessage(err) {
		return fmt.Errorf("%w: sequence %d", ErrDeadNotFound, seq)
	} else if err != nil {
		return err
	}
	return nil
}

// Orphan is a queue whose tasks wait in TASKS with no consumer to take them.
type Orphan struct {
	Queue string
	Tasks uint64
}

// Orphans lists the queues of TASKS that hold tasks but have no consumer
// q-<queue>: tasks enqueued for a queue no worker serves, waiting forever.
func Orphans(ctx context.Context, js jetstream.JetStream) ([]Orphan, error) {
	s, err := js.Stream(ctx, wire.StreamTasks)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(wire.TaskSubject("*", ">")))
	if err != nil {
		return nil, err
	}
	served := map[string]bool{}
	names := s.ConsumerNames(ctx)
	for n := range names.Name() {
		if q, ok := wire.QueueOfConsumer(n); ok {
			served[q] = true
		}
	}
	if err := names.Err(); err != nil {
		return nil, err
	}
	byQueue := map[string]uint64{}
	for subject, n := range info.State.Subjects {
		if q, _, ok := wire.ParseTaskSubject(subject); ok && !served[q] {
			byQueue[q] += n
		}
	}
	out := make([]Orphan, 0, len(byQueue))
	for _, q := range slices.Sorted(maps.Keys(byQueue)) {
		out = append(out, Orphan{Queue: q, Tasks: byQueue[q]})
	}
	return out, nil
}
