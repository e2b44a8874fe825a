package worker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/logging"
	"github.com/flotilla/flotilla/internal/task"
)

// startMover consumes due delayed tasks (DELAYED, delayed.due.<id>) and
// publishes each into its queue on TASKS, acking only after TASKS acked, so a
// due task is never lost; a full queue leaves it in DELAYED and retries.
func (w *Worker) startMover(ctx context.Context) (jetstream.ConsumeContext, error) {
	c, err := w.js.Consumer(ctx, jet.StreamDelayed, jet.MoverConsumer)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", jet.MoverConsumer, jet.StreamDelayed, err)
	}
	return c.Consume(func(m jetstream.Msg) {
		if err := w.move(ctx, m); err != nil {
			w.log.Warn().Err(err).Str(logging.Subject, m.Subject()).Msg("move delayed task; retrying in 2s")
			_ = m.NakWithDelay(2 * time.Second)
			return
		}
		_ = m.Ack()
	}, jetstream.PullMaxMessages(256))
}

func (w *Worker) move(ctx context.Context, m jetstream.Msg) error {
	in := m.Headers()
	q, name := in.Get(task.HeaderQueue), in.Get(task.HeaderTask)
	if task.ValidateQueue(q) != nil || task.ValidateName(name) != nil {
		q, name = "_invalid", "_invalid"
		if task.ValidateQueue(in.Get(task.HeaderQueue)) == nil {
			q = in.Get(task.HeaderQueue)
		}
	}
	h := nats.Header{}
	for k, v := range in {
		if strings.HasPrefix(k, "Nats-") && k != task.HeaderMsgID {
			continue // schedule headers stay behind
		}
		h[k] = v
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err := w.js.PublishMsg(pctx, &nats.Msg{Subject: jet.TaskSubject(q, name), Header: h, Data: m.Data()})
	return err
}
