package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/task"
)

// MaxBatch is the most tasks one [Client.EnqueueBatch] takes: the server's
// default limit of messages in one atomic batch (jetstream.limits
// max_batch_size).
const MaxBatch = 1000

// ErrBatchDuplicate means a task of an atomic batch repeats the id or
// idempotency key of a task stored within the dedup window: the server
// refuses the whole batch, and nothing of it is stored.
var ErrBatchDuplicate = errors.New("batch repeats a task id or idempotency key already stored")

// ItemError is the error of request Index of a batch: nothing of the
// batch was stored.
type ItemError struct {
	Index int
	Err   error
}

func (e *ItemError) Error() string { return fmt.Sprintf("tasks[%d]: %v", e.Index, e.Err) }

func (e *ItemError) Unwrap() error { return e.Err }

// Field is the request field at fault, prefixed with the item's index
// ("tasks[3].queue"), or "" when the error names no field.
func (e *ItemError) Field() string {
	var fe *task.FieldError
	if errors.As(e.Err, &fe) {
		return fmt.Sprintf("tasks[%d].%s", e.Index, fe.Field)
	}
	return ""
}

// EnqueueBatch validates every request of rs, records them PENDING and
// publishes them as one atomic batch (JetStream atomic publish): all are
// stored or none. The results are in the order of rs.
// An invalid request is an [*ItemError] naming its index, and nothing is
// stored.
//
// A batch is either all immediate tasks (one atomic batch into TASKS) or
// all delayed ones (into DELAYED): the two streams cannot share one atomic
// batch. Idempotency keys act as task ids do, through the server's dedup
// window only: a key or id that repeats one already stored fails the whole
// batch with [ErrBatchDuplicate].
func (c *Client) EnqueueBatch(ctx context.Context, rs []Request) ([]Result, error) {
	if len(rs) == 0 {
		return nil, task.FieldErrorf("tasks", "is empty; give 1 to %d tasks", MaxBatch)
	}
	if len(rs) > MaxBatch {
		return nil, task.FieldErrorf("tasks", "holds %d tasks; the limit is %d per batch", len(rs), MaxBatch)
	}
	ps := make([]*Prepared, len(rs))
	seen := make(map[string]int, len(rs))
	for i, r := range rs {
		p, err := c.Prepare(r)
		if err != nil {
			return nil, &ItemError{Index: i, Err: err}
		}
		if j, dup := seen[p.msgID]; dup && p.msgID != "" {
			return nil, &ItemError{Index: i, Err: task.FieldErrorf("idempotency_key", "repeats the key of tasks[%d]", j)}
		}
		if j, dup := seen[p.env.ID]; dup {
			return nil, &ItemError{Index: i, Err: task.FieldErrorf("id", "repeats the id of tasks[%d]", j)}
		}
		seen[p.env.ID] = i
		if p.msgID != "" {
			seen[p.msgID] = i
		}
		if i > 0 && p.runAt.IsZero() != ps[0].runAt.IsZero() {
			return nil, &ItemError{Index: i, Err: task.FieldErrorf("countdown",
				"a batch holds tasks that run now or delayed ones, not both (tasks[0] is %s, this one is not)", delayedWord(ps[0]))}
		}
		if err := c.queues.check(ctx, p.env.Queue); err != nil {
			return nil, &ItemError{Index: i, Err: err}
		}
		ps[i] = p
	}

	msgs := make([]*nats.Msg, len(ps))
	for i, p := range ps {
		msgs[i] = c.msg(p, "")
	}
	// PENDING goes to Redis, in one round trip, while the batch's
	// messages go to the server uncommitted; the commit follows only once
	// Redis has every state. So, as with a single enqueue, no task of the
	// batch is stored before its PENDING state, and a Redis failure stores
	// nothing (the batch is aborted). A task whose id the caller chose
	// keeps the state it has (StateIfNew): enqueued before, or a workflow
	// step another worker published first.
	pending := make(chan error, 1)
	go func() {
		_, err := c.recordPendingMany(ctx, ps, chosenID)
		pending <- err
	}()
	pendErr, err := publishBatchWhen(ctx, c.js, msgs, pending)
	if pendErr != nil {
		return nil, pendErr
	}
	if err != nil {
		undo := func() {
			for _, p := range ps {
				c.undo(ctx, p)
			}
		}
		switch {
		case jet.IsAtomicDuplicate(err):
			undo()
			return nil, fmt.Errorf("%w: %v", ErrBatchDuplicate, err)
		case jet.IsAtomicTooManyOpen(err):
			undo()
			return nil, fmt.Errorf("%w: the server has as many atomic batches open as it allows (jetstream.limits max_batch_inflight_per_stream, default 50): %v", ErrUnavailable, err)
		case jet.IsAtomicDisabled(err):
			undo()
			return nil, fmt.Errorf("%w: the stream does not allow atomic batches; run `flotilla streams apply` to update it: %v", ErrUnavailable, err)
		}
		err = translatePublishErr(ps[0].env.ID, ps[0].env.Queue, err)
		if errors.As(err, new(*UnconfirmedError)) {
			// The commit went out unanswered: all or none is stored.
			return nil, &UnconfirmedError{ID: ps[0].env.ID, Err: fmt.Errorf("the batch of %d tasks (%s … %s): %w",
				len(ps), ps[0].env.ID, ps[len(ps)-1].env.ID, err)}
		}
		undo()
		return nil, err
	}
	out := make([]Result, len(ps))
	for i, p := range ps {
		c.sent(p)
		out[i] = Result{ID: p.env.ID, State: task.StatePending}
	}
	return out, nil
}

func delayedWord(p *Prepared) string {
	if p.runAt.IsZero() {
		return "immediate"
	}
	return "delayed"
}

// publishBatchWhen publishes msgs as one atomic batch whose commit waits
// for ready: the messages before the last go out while the caller works,
// and the last one, which commits, only when ready yields nil. When ready
// yields an error (readyErr) the batch is aborted and nothing is stored;
// err is the publish's own error. It always waits for ready.
func publishBatchWhen(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg, ready <-chan error) (readyErr, err error) {
	bp, err := jetstreamext.NewBatchPublisher(js)
	if err != nil {
		return <-ready, err
	}
	last := len(msgs) - 1
	sent := 0
	for _, m := range msgs[:last] {
		select {
		case readyErr = <-ready:
			if readyErr != nil {
				abortBatch(js.Conn(), msgs[0], sent)
				return readyErr, nil
			}
			ready = nil // a nil channel: the select no longer sees it
		default:
		}
		if err = bp.AddMsg(m); err != nil {
			if ready != nil {
				readyErr = <-ready
			}
			abortBatch(js.Conn(), msgs[0], sent+1)
			return readyErr, err
		}
		sent++
	}
	if ready != nil {
		if readyErr = <-ready; readyErr != nil {
			abortBatch(js.Conn(), msgs[0], sent)
			return readyErr, nil
		}
	}
	_, err = bp.CommitMsg(ctx, msgs[last])
	return nil, err
}

// abortBatch makes the server drop the open atomic batch of first (which
// carries its id) after sent messages, at once rather than at its
// timeout (10 s, during which it counts against the stream's 50 open
// batches): a commit header other than "1" or "eob" makes the server
// discard the batch. Nothing of the batch was stored.
func abortBatch(nc *nats.Conn, first *nats.Msg, sent int) {
	id := first.Header.Get(jetstreamext.BatchIDHeader)
	if id == "" || sent == 0 {
		return // no message reached the server
	}
	m := nats.NewMsg(first.Subject)
	m.Header.Set(jetstreamext.BatchIDHeader, id)
	m.Header.Set(jetstreamext.BatchSeqHeader, strconv.Itoa(sent+1))
	m.Header.Set(jetstreamext.BatchCommitHeader, "abort")
	_ = nc.PublishMsg(m)
}
