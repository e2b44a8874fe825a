// Package jet owns Flotilla's use of NATS and JetStream: connecting, the
// embedded dev server, applying the streams/ topology, publishing lifecycle
// events, reading and deleting dead letters, queue statistics, and turning
// JetStream's error codes into answers. Message shapes and names are package
// wire's; jet does not run handlers or store results.
package jet

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/redact"
)

// Connect dials url (comma-separated servers) and returns the connection and
// its JetStream context. It reconnects forever once connected. inboxPrefix,
// when set, replaces _INBOX for replies (see config nats.inbox_prefix).
func Connect(ctx context.Context, url, name, inboxPrefix string) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
	}
	if inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(inboxPrefix))
	}
	if dl, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(dl)))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", redact.URL(url), err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}
