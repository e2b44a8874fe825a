package jet

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/task"
)

// ErrDeadNotFound is returned for a DEAD sequence that holds no message.
var ErrDeadNotFound = errors.New("dead letter not found")

// DeadLetter is one message of the DEAD stream.
type DeadLetter struct {
	Seq      uint64      `json:"seq"`
	Subject  string      `json:"subject"`
	ID       string      `json:"id"`
	Task     string      `json:"task"`
	Queue    string      `json:"queue"`
	Error    string      `json:"error"`
	Attempts int         `json:"attempts"`
	Time     time.Time   `json:"time"`
	Args     []byte      `json:"-"`
	Header   nats.Header `json:"-"`
}

// GetDead reads the dead letter at seq.
func GetDead(ctx context.Context, js jetstream.JetStream, seq uint64) (DeadLetter, error) {
	s, err := js.Stream(ctx, StreamDead)
	if err != nil {
		return DeadLetter{}, err
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("%w: sequence %d", ErrDeadNotFound, seq)
	}
	if err != nil {
		return DeadLetter{}, err
	}
	return deadLetter(m), nil
}

func deadLetter(m *jetstream.RawStreamMsg) DeadLetter {
	d := DeadLetter{Seq: m.Sequence, Subject: m.Subject, Time: m.Time, Args: m.Data, Header: m.Header,
		ID: m.Header.Get(task.HeaderID), Task: m.Header.Get(task.HeaderTask), Error: m.Header.Get(task.HeaderError)}
	d.Attempts, _ = strconv.Atoi(m.Header.Get(task.HeaderAttempts))
	d.Queue = queueOf(m.Subject, "dead.")
	return d
}

// ListDead returns up to limit dead letters, newest first.
func ListDead(ctx context.Context, js jetstream.JetStream, limit int) ([]DeadLetter, error) {
	s, err := js.Stream(ctx, StreamDead)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for seq := info.State.LastSeq; seq >= info.State.FirstSeq && seq > 0 && len(out) < limit; seq-- {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted (requeued)
		}
		if err != nil {
			return out, err
		}
		out = append(out, deadLetter(m))
	}
	return out, nil
}

// DeleteDead removes the dead letter at seq.
func DeleteDead(ctx context.Context, js jetstream.JetStream, seq uint64) error {
	s, err := js.Stream(ctx, StreamDead)
	if err != nil {
		return err
	}
	err = s.DeleteMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) || isNoMessage(err) {
		return fmt.Errorf("%w: sequence %d", ErrDeadNotFound, seq)
	}
	return err
}

func isNoMessage(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound
}

// QueueInfo describes the consumer group of one queue.
type QueueInfo struct {
	Queue    string `json:"queue"`
	Consumer string `json:"consumer"`
	// Pending tasks not yet delivered; InFlight delivered but not acked;
	// Redelivered counts tasks delivered more than once; Waiting pull requests.
	Pending     uint64 `json:"pending"`
	InFlight    int    `json:"in_flight"`
	Redelivered int    `json:"redelivered"`
	Waiting     int    `json:"waiting"`
}

// Queues lists the queue consumers (q-<queue>) of TASKS.
func Queues(ctx context.Context, js jetstream.JetStream) ([]QueueInfo, error) {
	s, err := js.Stream(ctx, StreamTasks)
	if err != nil {
		return nil, err
	}
	var out []QueueInfo
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		q, ok := strings.CutPrefix(ci.Name, "q-")
		if !ok {
			continue
		}
		out = append(out, QueueInfo{Queue: q, Consumer: ci.Name, Pending: ci.NumPending, InFlight: ci.NumAckPending,
			Redelivered: ci.NumRedelivered, Waiting: ci.NumWaiting})
	}
	return out, l.Err()
}
