package jet

import (
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/flotilla/flotilla/internal/wire"
)

// Events publishes lifecycle events ([wire.Event]) with core NATS, best
// effort: EVENTS captures them, and a slow or missing stream never slows a
// task down — the states in Redis and the streams are the record. A nil
// *Events publishes nothing (events turned off).
type Events struct {
	nc  *nats.Conn
	buf sync.Pool
}

// NewEvents returns a publisher on nc, or nil when on is false.
func NewEvents(nc *nats.Conn, on bool) *Events {
	if !on || nc == nil {
		return nil
	}
	return &Events{nc: nc, buf: sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}}
}

// Emit publishes ev on its subject.
func (e *Events) Emit(ev *wire.Event) {
	if e == nil || ev.ID == "" {
		return
	}
	bp := e.buf.Get().(*[]byte)
	b := ev.AppendJSON((*bp)[:0])
	_ = e.nc.Publish(ev.Subject(), b) // copies b into the connection's buffer
	*bp = b
	e.buf.Put(bp)
}
