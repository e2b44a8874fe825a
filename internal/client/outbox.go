package client

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/flotilla/flotilla/internal/wire"
)

// StoredMsg returns the message that carries p exactly as [Client.Enqueue]
// publishes it — subject, headers with Nats-Msg-Id (the task id or the
// idempotency key), for a delayed task the server schedule's headers, and
// the args as body — for the transactional outbox, whose relay publishes
// it as it is. It has no notify subject: nobody waits on an outbox task.
func (c *Client) StoredMsg(p *Prepared) *nats.Msg { return c.msg(p, "") }

// Relayed is a message the outbox relay published (a [Client.StoredMsg])
// with the server's answer.
type Relayed struct {
	Msg *nats.Msg
	// Duplicate: the server dropped it, having stored a message with the
	// same Nats-Msg-Id within the duplicate window.
	Duplicate bool
}

// RecordRelayed does for messages the outbox relay published what Enqueue
// does around its publish. It records each task's PENDING state only where
// the task has none yet (a relay that publishes a row again must never
// reset a task that ran or runs), and not for a duplicate whose
// Nats-Msg-Id is an idempotency key (its task id never runs); then it
// emits the "sent" event of every message that was not a duplicate. A
// message that does not decode as a task is skipped (the worker
// dead-letters it). It waits for the state writes and returns their
// error; the tasks are in the stream regardless, and the worker records
// their states when it runs them.
func (c *Client) RecordRelayed(ctx context.Context, rs []Relayed) error {
	ps := make([]*Prepared, 0, len(rs))
	pending := make([]*Prepared, 0, len(rs))
	for _, r := range rs {
		env, err := wire.DecodeTask(r.Msg.Subject, r.Msg.Header, r.Msg.Data)
		if err != nil {
			continue
		}
		p := &Prepared{env: env, msgID: r.Msg.Header.Get(wire.HeaderMsgID)}
		if c.cfg.Registry != nil {
			if d, err := c.cfg.Registry.Lookup(env.Name); err == nil && d.Options.NoResult {
				p.noRes = true
			}
		}
		if !r.Duplicate {
			ps = append(ps, p)
		}
		if c.recordsResults(p) && (!r.Duplicate || p.msgID == env.ID) {
			pending = append(pending, p)
		}
	}
	err := c.recordPendingIfAbsent(ctx, pending)
	for _, p := range ps {
		c.sent(p)
	}
	return err
}

// recordPendingIfAbsent writes the PENDING state of every task of ps that
// has none (results.Update.StateIfNew), in one round trip.
func (c *Client) recordPendingIfAbsent(ctx context.Context, ps []*Prepared) error {
	// A task that ran keeps its state.
	if n, err := c.recordPendingMany(ctx, ps, always); err != nil {
		return fmt.Errorf("record PENDING of %d relayed tasks: %w", n, err)
	}
	return nil
}
