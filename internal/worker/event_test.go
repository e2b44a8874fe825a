package worker

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/task"
)

func TestAppendEventIsJSON(t *testing.T) {
	t.Parallel()
	a := &attempt{env: &task.Envelope{ID: "01ABC", Name: "sys.echo", Queue: "default", Attempt: 2}}
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	b := appendEvent(nil, a, `host"1:2`, now, "bad \"quote\"\n\x00", 0.25)
	var got map[string]any
	require.NoError(t, json.Unmarshal(b, &got), string(b))
	require.Equal(t, map[string]any{
		"id": "01ABC", "task": "sys.echo", "queue": "default", "attempt": 2.0, "worker": `host"1:2`,
		"time": "2026-01-02T03:04:05.000000006Z", "error": "bad \"quote\"\n\x00", "runtime_s": 0.25,
	}, got)
	b = appendEvent(nil, a, "w", now, "", 0)
	require.NoError(t, json.Unmarshal(b, &got))
	require.NotContains(t, string(b), "error")
}
