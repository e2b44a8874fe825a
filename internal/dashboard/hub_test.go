package dashboard

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/wire"
)

// TestHubCountsEvents: events published on a real NATS server are counted
// per second by kind and per queue; other subjects and kinds are ignored.
func TestHubCountsEvents(t *testing.T) {
	t.Parallel()
	nc, _ := jettest.Connect(t, jettest.Server(t).ClientURL())
	h := NewHub(nc, Sources{}, zerolog.Nop())
	var clock atomic.Int64
	clock.Store(1_800_000_000)
	h.now = func() time.Time { return time.Unix(clock.Load(), 0) }
	go h.Run(t.Context())
	time.Sleep(100 * time.Millisecond) // the subscription reaches the server
	pub := func(kind, q string, n int) {
		for i := range n {
			ev := wire.Event{Kind: kind, ID: "T" + string(rune('a'+i%26)), Task: "sys.echo", Queue: q, Time: time.Now()}
			require.NoError(t, nc.Publish(ev.Subject(), ev.AppendJSON(nil)))
		}
	}
	pub(wire.EventSent, "default", 7)
	pub(wire.EventSucceeded, "default", 5)
	pub(wire.EventFailed, "bulk", 2)
	pub(wire.EventStarted, "default", 9) // not counted
	require.NoError(t, nc.Publish("events", []byte("{}")))
	require.NoError(t, nc.Flush())
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.secs[1_800_000_000%window] == Counts{7, 5, 2, 0, 0, 0}
	}, 2*time.Second, 10*time.Millisecond)
	clock.Store(1_800_000_001) // the counted second is complete
	_, s := h.Series(1)
	require.Equal(t, Counts{7, 5, 2, 0, 0, 0}, s[0])
	require.Equal(t, Counts{7, 5, 2, 0, 0, 0}, h.Sum(300))
	clock.Store(1_800_000_010)
	rate := h.QueueRate("default")
	require.Len(t, rate, qBuckets)
	require.Equal(t, uint32(5), rate[len(rate)-1], "finished attempts of the last complete 10 s bucket")
	require.Equal(t, uint32(2), h.QueueRate("bulk")[qBuckets-1])
	// An hour later the slot is reused, not summed.
	clock.Store(1_800_003_601)
	require.Equal(t, Counts{}, h.Sum(300))
}

// TestHubFanOut: every open page gets the updates; one that does not read
// misses them instead of growing; past maxClients a page is refused.
func TestHubFanOut(t *testing.T) {
	t.Parallel()
	h := NewHub(nil, Sources{}, zerolog.Nop())
	fast, ok := h.subscribe()
	require.True(t, ok)
	slow, ok := h.subscribe()
	require.True(t, ok)
	for range 10 {
		h.broadcast()
		<-fast.ch
	}
	require.Len(t, slow.ch, clientBuf, "the slow page holds at most its buffer")
	require.Equal(t, int64(10-clientBuf), h.dropped.Load())
	h.unsubscribe(slow)
	require.Equal(t, 1, h.Clients())
	var all []*client
	for range maxClients - 1 {
		c, ok := h.subscribe()
		require.True(t, ok)
		all = append(all, c)
	}
	_, ok = h.subscribe()
	require.False(t, ok, "more than maxClients pages")
	require.Len(t, all, maxClients-1)
}
