package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/wire"
)

// announcer puts this worker's [wire.WorkerInfo] into the workers bucket
// every wire.WorkersHeartbeat until stopped, then deletes it: a worker
// that dies without stopping disappears after wire.WorkersTTL.
type announcer struct {
	kv      jetstream.KeyValue
	key     string
	info    wire.WorkerInfo
	w       *Worker
	log     zerolog.Logger
	stop    chan struct{}
	stopped chan struct{}
}

// announce starts the announcements; the first is put before it returns.
func (w *Worker) announce(ctx context.Context) (*announcer, error) {
	kv, err := w.js.KeyValue(ctx, wire.WorkersBucket)
	if err != nil {
		return nil, fmt.Errorf("KV bucket %s: %w (run `flotilla streams apply`)", wire.WorkersBucket, err)
	}
	host, _ := os.Hostname()
	a := &announcer{
		kv: kv, key: wire.WorkerKey(w.cfg.Name), w: w,
		log:  w.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: time.Minute}),
		stop: make(chan struct{}), stopped: make(chan struct{}),
		info: wire.WorkerInfo{
			ID: w.cfg.Name, Host: host, PID: os.Getpid(), Version: w.cfg.Version,
			Queues: w.cfg.Queues, Concurrency: w.cfg.Concurrency, StartedAt: w.cfg.Now().UTC(),
		},
	}
	if err := a.put(ctx); err != nil {
		return nil, err
	}
	go a.loop()
	return a, nil
}

func (a *announcer) put(ctx context.Context) error {
	info := a.info
	info.Running = a.w.running.snapshot()
	info.Processed, info.Failed = a.w.running.processed.Load(), a.w.running.failed.Load()
	info.LastSeen = a.w.cfg.Now().UTC()
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, wire.WorkersHeartbeat)
	defer cancel()
	if _, err := a.kv.Put(ctx, a.key, b); err != nil {
		return fmt.Errorf("announce worker %s in %s: %w", a.info.ID, wire.WorkersBucket, err)
	}
	return nil
}

func (a *announcer) loop() {
	defer close(a.stopped)
	t := time.NewTicker(wire.WorkersHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = a.kv.Delete(ctx, a.key)
			cancel()
			return
		case <-t.C:
			if err := a.put(context.Background()); err != nil {
				a.log.Warn().Err(err).Msg("worker announcement failed; retrying (logged at most every minute)")
			}
		}
	}
}

// close stops the announcements and removes this worker from the bucket.
func (a *announcer) close() {
	close(a.stop)
	<-a.stopped
}
