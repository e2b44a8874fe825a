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
