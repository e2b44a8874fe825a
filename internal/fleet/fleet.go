// Package fleet lists the workers that announce themselves in the KV
// bucket flotilla_workers (see worker): who runs, where, on which queues,
// and what each runs now. A worker that stops announcing (killed, hung,
// cut off) drops out after wire.WorkersTTL.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/wire"
)

// ErrUnknownWorker is returned by [Get] for a worker that is not listed.
var ErrUnknownWorker = errors.New("unknown worker")

// List returns the live workers, by id.
func List(ctx context.Context, js jetstream.JetStream) ([]wire.WorkerInfo, error) {
	kv, err := js.KeyValue(ctx, wire.WorkersBucket)
	if err != nil {
		return nil, jet.Wrap("KV bucket "+wire.WorkersBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, jet.Wrap("read workers", err)
	}
	defer func() { _ = w.Stop() }()
	out := []wire.WorkerInfo{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				slices.SortFunc(out, func(a, b wire.WorkerInfo) int { return strings.Compare(a.ID, b.ID) })
				return out, nil
			}
			var info wire.WorkerInfo
			if err := json.Unmarshal(e.Value(), &info); err == nil {
				out = append(out, info)
			}
		case <-ctx.Done():
			return nil, jet.Wrap("read workers", ctx.Err())
		}
	}
}

// Get returns worker id (its name, as listed), or [ErrUnknownWorker].
func Get(ctx context.Context, js jetstream.JetStream, id string) (wire.WorkerInfo, error) {
	kv, err := js.KeyValue(ctx, wire.WorkersBucket)
	if err != nil {
		return wire.WorkerInfo{}, jet.Wrap("KV bucket "+wire.WorkersBucket, err)
	}
	e, err := kv.Get(ctx, wire.WorkerKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return wire.WorkerInfo{}, fmt.Errorf("worker %s: %w (not announced within the last %s)", id, ErrUnknownWorker, wire.WorkersTTL)
	}
	if err != nil {
		return wire.WorkerInfo{}, jet.Wrap("read worker "+id, err)
	}
	var info wire.WorkerInfo
	if err := json.Unmarshal(e.Value(), &info); err != nil {
		return wire.WorkerInfo{}, fmt.Errorf("worker %s: %w", id, err)
	}
	return info, nil
}

// Reader is [List] and [Get] on one JetStream context.
type Reader struct{ JS jetstream.JetStream }

// List is [List].
func (r Reader) List(ctx context.Context) ([]wire.WorkerInfo, error) { return List(ctx, r.JS) }

// Get is [Get].
func (r Reader) Get(ctx context.Context, id string) (wire.WorkerInfo, error) {
	return Get(ctx, r.JS, id)
}
