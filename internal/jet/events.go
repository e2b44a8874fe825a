package jet

import (
	"slices"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/flotilla/flotilla/internal/wire"
)

// Events publishes lifecycle events ([wire.Event]) with core NATS, best
// effort: EVENTS captures them, and a slow or missing stream never slows a
// task down — the states in Redis and the streams are the record. A nil
// *Events publishes nothing (events turned off).
type Events struct {
	nc    *nats.Conn
	level wire.EventLevel
	buf   sync.Pool
}

// NewEvents returns a publisher on nc of the events level publishes
// ([wire.EventLevel]), or nil for none (off, or an empty level).
func NewEvents(nc *nats.Conn, level wire.EventLevel) *Events {
	if nc == nil || !slices.Contains(wire.EventLevels, level) || level == wire.EventsOff {
		return nil
	}
	return &Events{nc: nc, level: level, buf: sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}}
}

// Publishes reports whether events of kind go out.
func (e *Events) Publishes(kind string) bool { return e != nil && e.level.Publishes(kind) }

// Emit publishes ev on its subject, if its kind is published.
func (e *Events) Emit(ev *wire.Event) {
	if e == nil || ev.ID == "" || !e.level.Publishes(ev.Kind) {
		return
	}
	bp := e.buf.Get().(*[]byte)
	b := ev.AppendJSON((*bp)[:0])
	_ = e.nc.Publish(ev.Subject(), b) // copies b into the connection's buffer
	*bp = b
	e.buf.Put(bp)
}
