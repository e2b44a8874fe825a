package results

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAttemptJSON: the hand-written encoding is encoding/json's, byte for
// byte, and the history field name sorts by time as %020d did.
func TestAttemptJSON(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	start := time.Date(2026, 12, 6, 10, 0, 0, 123456789, time.UTC)
	for _, a := range []Attempt{
		{Attempt: 1, Worker: "host:1", StartedAt: start, FinishedAt: start.Add(time.Millisecond), Outcome: "success"},
		{Attempt: 3, Worker: "wörker <&>", StartedAt: start.In(berlin), FinishedAt: start.Add(time.Second).In(berlin), Outcome: "retry",
			Error: "boom: \"quoted\"\n\ttab \x01", ErrorType: "panic", Traceback: "goroutine 1 [running]:\nmain.main()\n\t/x.go:3 +0x1d"},
		{},
	} {
		want, err := json.Marshal(&a)
		require.NoError(t, err)
		require.Equal(t, string(want), string(a.appendJSON(nil)))
	}
	for _, ts := range []time.Time{start, time.Unix(0, 5), time.Unix(1<<33, 0)} {
		require.Equal(t, fmt.Sprintf("h.%020d", ts.UnixNano()), historyField(ts))
	}
}
