package worker_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/task"
)

// BenchmarkWaitFor measures GET /api/v1/tasks/{id}?wait='s engine: how long
// after a task's recorded finish Client.WaitFor returns (a worker records
// the state, publishes the final event, the waiter re-reads Redis), and
// reports p50 and p99 in ms. Each iteration enqueues a 20 ms sys.sleep and
// waits for it.
//
//	go test -run '^$' -bench BenchmarkWaitFor -benchtime 300x ./internal/worker/
func BenchmarkWaitFor(b *testing.B) {
	bd := setup(b, setupOpts{})
	bd.start(b, bd.cfg())
	var lag []time.Duration
	for b.Loop() {
		res, err := bd.cl.Enqueue(b.Context(), client.Request{Task: "sys.sleep", Args: json.RawMessage(`{"ms":20}`)})
		if err != nil {
			b.Fatal(err)
		}
		st, err := bd.cl.WaitFor(b.Context(), res.ID, 10*time.Second)
		now := time.Now()
		if err != nil || st.State != task.StateSuccess || st.FinishedAt == nil {
			b.Fatalf("%v %+v", err, st)
		}
		lag = append(lag, now.Sub(*st.FinishedAt))
	}
	slices.Sort(lag)
	p50, p99 := lag[len(lag)/2], lag[len(lag)*99/100]
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50_ms_after_finish")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99_ms_after_finish")
}
