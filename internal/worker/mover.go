package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/logging"
	"github.com/flotilla/flotilla/internal/wire"
)

// startMover consumes due delayed tasks (DELAYED, delayed.due.<id>) and
// publishes each into its queue on TASKS, acking only after TASKS acked, so a
// due task is never lost; a full queue leaves it in DELAYED and retries.
func (w *Worker) startMover(ctx context.Context) (jetstream.ConsumeContext, error) {
	c, err := w.js.Consumer(ctx, wire.StreamDelayed, wire.ConsumerMover)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", wire.ConsumerMover, wire.StreamDelayed, err)
	}
	return c.Consume(func(m jetstream.Msg) {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := jet.Publish(pctx, w.js, wire.DueToTask(m.Headers(), m.Data())); err != nil {
			w.log.Warn().Err(err).Str(logging.Subject, m.Subject()).Msg("move delayed task; retrying in 2s")
			_ = m.NakWithDelay(2 * time.Second)
			return
		}
		_ = m.Ack()
	}, jetstream.PullMaxMessages(256))
}
