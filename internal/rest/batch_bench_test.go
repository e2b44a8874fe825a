package rest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
)

// BenchmarkBatchVsSingle enqueues 1,000 tasks per iteration one at a time
// and as one atomic batch, in Go (client.Enqueue vs client.EnqueueBatch)
// and over HTTP (1,000 POST /api/v1/tasks on one keep-alive connection vs
// one POST /api/v1/tasks/batch), against an embedded NATS server and the
// local Redis, and reports the time of each and the speed-up — next to the
// raw reference of the same server: 1,000 synchronous JetStream publishes
// against one atomic batch of 1,000 messages.
//
//	go test -run '^$' -bench BenchmarkBatchVsSingle -benchtime 20x ./internal/rest/
func BenchmarkBatchVsSingle(b *testing.B) {
	// tasks.max_body_bytes at its default (1 MiB), as the web and api roles run.
	r := setupRoutesLimit(b, jet.TopologyParams{TaskMaxMsgs: 10_000_000, TaskMaxBytes: 8 << 30}, 1<<20)
	srv := httptest.NewServer(r.e)
	b.Cleanup(srv.Close)
	hc := srv.Client()
	ctx := b.Context()
	const n = client.MaxBatch
	reqs := make([]client.Request, n)
	items := make([]string, n)
	for i := range reqs {
		args := fmt.Sprintf(`{"to":"user%d@example.com"}`, i)
		reqs[i] = client.Request{Task: "email.send", Args: json.RawMessage(args)}
		items[i] = `{"task":"email.send","args":` + args + `}`
	}
	batchBody := `{"tasks":[` + strings.Join(items, ",") + `]}`
	post := func(path, body string) {
		resp, err := hc.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b.Fatalf("POST %s: %s", path, resp.Status)
		}
	}
	var goSingle, goBatch, httpSingle, httpBatch, rawSingle, rawBatch time.Duration
	round := 0
	for b.Loop() {
		// The reference: the same JetStream server storing 1,000 messages
		// with 1,000 synchronous publishes, then with one atomic batch.
		round++
		raw := make([]*nats.Msg, n)
		r0 := time.Now()
		for i := range n {
			m := &nats.Msg{Subject: "tasks.default.email.send", Header: nats.Header{"Nats-Msg-Id": []string{fmt.Sprintf("s%d-%d", round, i)}}, Data: []byte(`{}`)}
			if _, err := r.js.PublishMsg(ctx, m); err != nil {
				b.Fatal(err)
			}
			raw[i] = &nats.Msg{Subject: m.Subject, Header: nats.Header{"Nats-Msg-Id": []string{fmt.Sprintf("b%d-%d", round, i)}}, Data: m.Data}
		}
		r1 := time.Now()
		if _, err := jetstreamext.PublishMsgBatch(ctx, r.js, raw); err != nil {
			b.Fatal(err)
		}
		rawSingle += r1.Sub(r0)
		rawBatch += time.Since(r1)

		t0 := time.Now()
		for _, rq := range reqs {
			if _, err := r.cl.Enqueue(ctx, rq); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		if _, err := r.cl.EnqueueBatch(ctx, reqs); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		for _, it := range items {
			post("/api/v1/tasks", it)
		}
		t3 := time.Now()
		post("/api/v1/tasks/batch", batchBody)
		t4 := time.Now()
		goSingle += t1.Sub(t0)
		goBatch += t2.Sub(t1)
		httpSingle += t3.Sub(t2)
		httpBatch += t4.Sub(t3)
	}
	iters := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / iters }
	b.ReportMetric(ms(goSingle), "go_1000_single_ms")
	b.ReportMetric(ms(goBatch), "go_batch_ms")
	b.ReportMetric(float64(goSingle)/float64(goBatch), "go_speedup")
	b.ReportMetric(ms(httpSingle), "http_1000_single_ms")
	b.ReportMetric(ms(httpBatch), "http_batch_ms")
	b.ReportMetric(float64(httpSingle)/float64(httpBatch), "http_speedup")
	b.ReportMetric(ms(rawSingle), "raw_1000_publish_ms")
	b.ReportMetric(ms(rawBatch), "raw_atomic_batch_ms")
	b.ReportMetric(float64(rawSingle)/float64(rawBatch), "raw_speedup")
}
