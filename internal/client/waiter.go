package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// finalEvents are the subjects of the events after which a task may be
// final: the wait re-reads its state when one names it.
var finalEvents = []string{
	wire.EventSubject(wire.EventSucceeded, "*", ">"), wire.EventSubject(wire.EventDead, "*", ">"),
	wire.EventSubject(wire.EventExpired, "*", ">"), wire.EventSubject(wire.EventCancelled, "*", ">"),
	wire.EventSubject(wire.EventFailed, wire.SyncQueue, ">"),
}

// waits are the callers of [Client.WaitFor], by task id, woken by the
// final events of their task.
type waits struct {
	once sync.Once
	err  error
	mu   sync.Mutex
	m    map[string]map[chan struct{}]bool
}

// subscribe follows the final events, once per client.
func (c *Client) subscribeWaits() error {
	w := &c.waits
	w.once.Do(func() {
		w.m = map[string]map[chan struct{}]bool{}
		for _, subj := range finalEvents {
			if _, err := c.nc.Subscribe(subj, func(m *nats.Msg) { c.wake(wire.EventID(m.Data)) }); err != nil {
				w.err = fmt.Errorf("follow events %s: %w", subj, err)
				return
			}
		}
		// The server has the subscriptions before anyone waits on them.
		w.err = c.nc.Flush()
	})
	return w.err
}

func (c *Client) wake(id string) {
	w := &c.waits
	w.mu.Lock()
	for ch := range w.m[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	w.mu.Unlock()
}

// WaitFor returns task id's state once it is final, or when d has passed
// (then the state as it is, not final), or ctx ends. It reads Redis when
// it starts and after each final event that names the task (events must
// be on, tasks.events), never in a loop.
func (c *Client) WaitFor(ctx context.Context, id string, d time.Duration) (results.State, error) {
	st, err := c.Get(ctx, id)
	if err != nil || task.Final(st.State) || d <= 0 {
		return st, err
	}
	if err := c.subscribeWaits(); err != nil {
		return st, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	ch := make(chan struct{}, 1)
	w := &c.waits
	w.mu.Lock()
	if w.m[id] == nil {
		w.m[id] = map[chan struct{}]bool{}
	}
	w.m[id][ch] = true
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.m[id], ch)
		if len(w.m[id]) == 0 {
			delete(w.m, id)
		}
		w.mu.Unlock()
	}()
	// It may have finished between the first read and the registration.
	if st, err = c.Get(ctx, id); err != nil || task.Final(st.State) {
		return st, err
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-ch:
			if st, err = c.Get(ctx, id); err != nil || task.Final(st.State) {
				return st, err
			}
		case <-timer.C:
			return st, nil
		case <-ctx.Done():
			return st, ctx.Err()
		}
	}
}

// Search returns the tasks q selects from the task index (see
// results.Store.Search).
func (c *Client) Search(ctx context.Context, q results.Query) (results.Page, error) {
	if c.store == nil {
		return results.Page{}, errors.New("results are turned off (tasks.results=false)")
	}
	return c.store.Search(ctx, q)
}
