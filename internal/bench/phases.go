package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/web"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/worker"
)

type report struct {
	rawPub, rawDrain   float64
	rawRTT50, rawRTT99 time.Duration
	enqOff, enqOn      float64
	drainOff, drainOn  float64
	// drainResults: results in Redis, events off; drainEvents: results
	// off, events at the standard level; drainAll: results in Redis, every
	// event (started too).
	drainResults, drainEvents, drainAll float64
	rt50, rt99                          time.Duration
	// httpRate: enqueue over HTTP with results in Redis and events at the
	// standard level; httpBare with both off, httpResults and httpEvents
	// with one of them.
	httpRate, httpBare, httpResults, httpEvents float64
	httpNoop                                    float64 // the same HTTP stack answering a no-op handler
	rssMiB, heapMiB                             float64
	ran                                         map[string]bool
	costs                                       map[string]cost // per drain phase
}

func (r *report) setCost(phase string, c cost) {
	if r.costs == nil {
		r.costs = map[string]cost{}
	}
	r.costs[phase] = c
}

func (r *report) mark(p string) {
	if r.ran == nil {
		r.ran = map[string]bool{}
	}
	r.ran[p] = true
}

// raw measures JetStream alone: async publish, consume-and-ack, core request-reply.
func (e *env) raw(ctx context.Context, r *report) error {
	n := e.cfg.Tasks
	_ = e.js.DeleteStream(ctx, "BENCH_RAW")
	s, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH_RAW", Subjects: []string{"benchraw.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: max(e.replicas, 1)})
	if err != nil {
		return err
	}
	defer e.js.DeleteStream(context.WithoutCancel(ctx), "BENCH_RAW")
	start, st := time.Now(), newStalls()
	for i := 0; i < n; {
		_, err := e.js.PublishAsync("benchraw.default.noop", e.args, jetstream.WithStallWait(client.StallWait))
		switch {
		case err == nil:
			i++
			st.progress()
		case st.retry(err):
			st.pause()
		default:
			return err
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("raw publish did not complete")
	}
	r.rawPub = float64(n) / time.Since(start).Seconds()

	cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000})
	if err != nil {
		return err
	}
	var got atomic.Int64
	done := make(chan struct{})
	start = time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if got.Add(1) == int64(n) {
			close(done)
		}
	}, jetstream.PullMaxMessages(2*e.cfg.Concurrency))
	if err != nil {
		return err
	}
	<-done
	cc.Stop()
	if err := waitEmpty(ctx, s, 5*time.Minute); err != nil {
		return err
	}
	r.rawDrain = float64(n) / time.Since(start).Seconds()

	// Core request-reply, the floor of any round trip.
	sub, err := e.nc.Subscribe("benchraw.rr", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	lat := make([]time.Duration, 0, e.cfg.RoundTrips)
	for i := 0; i < e.cfg.RoundTrips; i++ {
		t := time.Now()
		if _, err := e.nc.Request("benchraw.rr", e.args, 5*time.Second); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	sortDurations(lat)
	r.rawRTT50, r.rawRTT99 = percentile(lat, 0.5), percentile(lat, 0.99)
	r.mark("raw")
	return nil
}

// enqueue measures the Go client (results and events off), leaving the tasks
// for the drain phase.
func (e *env) enqueue(ctx context.Context, r *report) error {
	if err := e.purgeTasks(ctx); err != nil {
		return err
	}
	rate, err := e.fill(ctx, e.client(nil, wire.EventsOff), e.cfg.Tasks)
	if err != nil {
		return err
	}
	r.enqOff = rate
	r.mark("enqueue")
	return nil
}

func (e *env) drainOff(ctx context.Context, r *report) error {
	if !r.ran["enqueue"] {
		if err := e.purgeTasks(ctx); err != nil {
			return err
		}
		if _, err := e.fill(ctx, e.client(nil, wire.EventsOff), e.cfg.Tasks); err != nil {
			return err
		}
	}
	rate, c, err := e.drain(ctx, nil, wire.EventsOff, e.cfg.Tasks)
	if err != nil {
		return err
	}
	r.drainOff = rate
	r.setCost("drain", c)
	e.memory(r)
	r.mark("drain")
	return nil
}

// drainOn enqueues with results and events on (measured), then drains
// with results in Redis and events at the standard level — the defaults
// (measured).
func (e *env) drainOn(ctx context.Context, r *report) error {
	return e.drainWith(ctx, true, wire.EventsStandard, func(enq, drain float64) { r.enqOn, r.drainOn = enq, drain }, r, "drain-results")
}

// drainAll is drainOn with every event (started too).
func (e *env) drainAll(ctx context.Context, r *report) error {
	return e.drainWith(ctx, true, wire.EventsAll, func(_, drain float64) { r.drainAll = drain }, r, "drain-all")
}

// drainResultsOnly enqueues with results on and events off, then drains
// with results in Redis and events off (measured).
func (e *env) drainResultsOnly(ctx context.Context, r *report) error {
	return e.drainWith(ctx, true, wire.EventsOff, func(_, drain float64) { r.drainResults = drain }, r, "drain-results-only")
}

// drainEventsOnly enqueues and drains with results off and events at the
// standard level.
func (e *env) drainEventsOnly(ctx context.Context, r *report) error {
	return e.drainWith(ctx, false, wire.EventsStandard, func(_, drain float64) { r.drainEvents = drain }, r, "drain-events-only")
}

// drainWith enqueues and then drains with results on or off and events at
// a level, and hands set both rates.
func (e *env) drainWith(ctx context.Context, results bool, events wire.EventLevel, set func(enq, drain float64), r *report, phase string) error {
	if err := e.purgeTasks(ctx); err != nil {
		return err
	}
	store := e.store()
	defer store.Close()
	if !results {
		store = nil
	}
	enq, err := e.fill(ctx, e.client(store, events), e.cfg.Tasks)
	if err != nil {
		return err
	}
	rate, c, err := e.drain(ctx, store, events, e.cfg.Tasks)
	if err != nil {
		return err
	}
	r.setCost(phase, c)
	set(enq, rate)
	e.memory(r)
	r.mark(phase)
	return nil
}

func (e *env) memory(r *report) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.heapMiB = max(r.heapMiB, float64(ms.HeapInuse)/(1<<20))
	r.rssMiB = max(r.rssMiB, rssMiB())
}

// roundTrip: sequential enqueue-and-wait with a running worker, results on.
func (e *env) roundTrip(ctx context.Context, r *report) error {
	if err := e.purgeTasks(ctx); err != nil {
		return err
	}
	store := e.store()
	defer store.Close()
	c := e.client(store, wire.EventsStandard)
	w := worker.New(e.nc, e.js, e.reg, store, zerolog.Nop(), worker.Config{
		Queues: []string{"default"}, Concurrency: e.cfg.Concurrency, Name: "bench", Events: wire.EventsStandard,
	})
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { cancel(); <-done }()
	lat := make([]time.Duration, 0, e.cfg.RoundTrips)
	warm := min(200, e.cfg.RoundTrips/10)
	for i := 0; i < e.cfg.RoundTrips+warm; i++ {
		t := time.Now()
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := c.EnqueueAndWait(cctx, client.Request{Task: "sys.ping", Args: e.args, Origin: "client"})
		ccancel()
		if err != nil {
			return err
		}
		if st.State != "SUCCESS" {
			return fmt.Errorf("round trip ended %s: %s", st.State, st.Error)
		}
		if i >= warm {
			lat = append(lat, time.Since(t))
		}
	}
	sortDurations(lat)
	r.rt50, r.rt99 = percentile(lat, 0.5), percentile(lat, 0.99)
	r.mark("roundtrip")
	return nil
}

// httpEnqueue measures enqueue over HTTP (web role with its default
// configuration: HTTPClients keep-alive clients POST /api/v1/tasks to a
// real server on loopback) with results and events on, and with each off,
// next to its reference: the same server — the same echo instance with
// the same middleware every request passes — answering a no-op handler
// that reads the body and answers what an enqueue answers, driven by the
// same clients with the same body. The loops take turns.
func (e *env) httpEnqueue(ctx context.Context, r *report) error {
	if err := e.purgeTasks(ctx); err != nil {
		return err
	}
	defer e.purgeTasks(context.WithoutCancel(ctx))
	store := e.store()
	defer store.Close()
	// The web role's defaults: its body limit and request_timeout (every
	// request's context gets a deadline, as in production).
	def := config.Default(config.RoleWeb)
	wcfg := web.Config{MaxBodyBytes: def.Tasks.MaxBodyBytes, RequestTimeout: def.RequestTimeout}
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	answer := []byte(`{"id":"01JD7Y4T2W9X6V3Q8M5N0R1S2P","state":"PENDING"}`)
	noop := func(c echo.Context) error {
		if _, err := rest.ReadBody(c, wcfg.MaxBodyBytes); err != nil {
			return err
		}
		return c.JSONBlob(http.StatusAccepted, answer)
	}
	// One server a configuration, each with the no-op too; the no-op loop
	// (the first) runs on the defaults' server (the last).
	type loop struct {
		url, cost string // cost: the key of what a request cost
		rate      *float64
	}
	loops := []loop{{rate: &r.httpNoop}}
	var base string
	for _, v := range []struct {
		st     *results.Store
		events wire.EventLevel
		cost   string
		rate   *float64
	}{
		{nil, wire.EventsOff, "http-bare", &r.httpBare},
		{store, wire.EventsOff, "http-results", &r.httpResults},
		{nil, wire.EventsStandard, "http-events", &r.httpEvents},
		{store, wire.EventsStandard, "http", &r.httpRate},
	} {
		h := web.New(wcfg, e.client(v.st, v.events), []rest.Check{}, zerolog.Nop()).Handler()
		h.POST("/bench/noop", noop)
		var stop func()
		var err error
		if base, stop, err = serveLoopback(h); err != nil {
			return err
		}
		stops = append(stops, stop)
		loops = append(loops, loop{base + "/api/v1/tasks", v.cost, v.rate})
	}
	loops[0].url = base + "/bench/noop"
	body := []byte(`{"task":"sys.ping","args":` + string(e.args) + `}`)
	hc, closeIdle := httpClient(e.cfg.HTTPClients)
	defer closeIdle()
	// The loops take turns, a fifth of the requests each time, so that all
	// see the same moments of a shared machine and their ratios do not
	// move with what its neighbours do during one loop and not another.
	rounds := min(httpRounds, e.cfg.HTTPTasks)
	took := make([]time.Duration, len(loops))
	costs := make([]cost, len(loops))
	// Each loop's cost runs from where the one before it settled to where
	// it settles itself.
	prev, err := e.settled(ctx)
	if err != nil {
		return err
	}
	for i := range rounds {
		n := e.cfg.HTTPTasks*(i+1)/rounds - e.cfg.HTTPTasks*i/rounds
		for j, l := range loops {
			d, err := e.post(hc, l.url, body, n)
			if err != nil {
				return err
			}
			after, err := e.settled(ctx)
			if err != nil {
				return err
			}
			took[j] += d
			costs[j] = costs[j].plus(after.since(prev, e.cfg.HTTPTasks))
			prev = after
		}
	}
	for j, l := range loops {
		*l.rate = float64(e.cfg.HTTPTasks) / took[j].Seconds()
		if l.cost != "" {
			r.setCost(l.cost, costs[j])
		}
	}
	r.mark("http")
	return nil
}

// httpRounds is how many turns the HTTP no-op and enqueue loops take.
const httpRounds = 5

// post sends n POSTs of body to url from HTTPClients concurrent callers
// and returns how long they took until every one was answered 202.
func (e *env) post(hc *http.Client, url string, body []byte, n int) (time.Duration, error) {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < e.cfg.HTTPClients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				resp, err := hc.Post(url, "application/json", bytes.NewReader(body))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						err = fmt.Errorf("POST %s answered %s", url, resp.Status)
					}
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), firstErr
}

func (r *report) print(w io.Writer) {
	row := func(name, value, note string) { fmt.Fprintf(w, "%-58s %14s  %s\n", name, value, note) }
	rate := func(v float64) string { return fmt.Sprintf("%.0f/s", v) }
	if r.ran["raw"] {
		row("raw JetStream async publish", rate(r.rawPub), "")
		row("raw JetStream consume+ack", rate(r.rawDrain), "")
		row("raw core request-reply p50 / p99", fmt.Sprintf("%s / %s", ms(r.rawRTT50), ms(r.rawRTT99)), "")
	}
	if r.ran["enqueue"] {
		row("enqueue, Go client (results+events off)", rate(r.enqOff), ratio(r.enqOff, r.rawPub, "raw publish"))
	}
	if r.ran["drain"] {
		row("drain, results+events off", rate(r.drainOff), ratio(r.drainOff, r.rawDrain, "raw consume+ack"))
		r.costRow(w, "drain")
	}
	if r.ran["drain-results-only"] {
		row("drain, results in Redis, events off", rate(r.drainResults), ratio(r.drainResults, r.rawDrain, "raw consume+ack"))
		r.costRow(w, "drain-results-only")
	}
	if r.ran["drain-events-only"] {
		row("drain, results off, events standard", rate(r.drainEvents), ratio(r.drainEvents, r.rawDrain, "raw consume+ack"))
		r.costRow(w, "drain-events-only")
	}
	if r.ran["drain-results"] {
		row("enqueue, Go client (results in Redis, events standard)", rate(r.enqOn), ratio(r.enqOn, r.rawPub, "raw publish"))
		row("drain, results in Redis + events standard (defaults)", rate(r.drainOn), ratio(r.drainOn, r.rawDrain, "raw consume+ack"))
		r.costRow(w, "drain-results")
	}
	if r.ran["drain-all"] {
		row("drain, results in Redis + every event (started too)", rate(r.drainAll), ratio(r.drainAll, r.rawDrain, "raw consume+ack"))
		r.costRow(w, "drain-all")
	}
	if r.ran["roundtrip"] {
		row("enqueue-and-wait round trip p50 / p99", fmt.Sprintf("%s / %s", ms(r.rt50), ms(r.rt99)), ratioD(r.rt50, r.rawRTT50))
	}
	if r.ran["http"] {
		row("raw HTTP: the same stack, no-op handler", rate(r.httpNoop), "")
		noop := func(v float64) string { return ratio(v, r.httpNoop, "raw HTTP no-op") }
		row("enqueue over HTTP, results+events off", rate(r.httpBare), noop(r.httpBare))
		r.costRow(w, "http-bare")
		row("enqueue over HTTP, results in Redis, events off", rate(r.httpResults), noop(r.httpResults))
		r.costRow(w, "http-results")
		row("enqueue over HTTP, results off, events standard", rate(r.httpEvents), noop(r.httpEvents))
		r.costRow(w, "http-events")
		row("enqueue over HTTP (defaults), concurrent clients", rate(r.httpRate), noop(r.httpRate))
		r.costRow(w, "http")
	}
	if r.rssMiB > 0 {
		row("process RSS after drains (bench+worker+server)", fmt.Sprintf("%.0f MiB", r.rssMiB), fmt.Sprintf("Go heap in use %.0f MiB", r.heapMiB))
	}
}

// costRow prints what a task of the phase cost: a drained task, or an
// HTTP request (its allocations include the load generator's).
func (r *report) costRow(w io.Writer, phase string) {
	c, ok := r.costs[phase]
	if !ok {
		return
	}
	what := "task drained"
	if strings.HasPrefix(phase, "http") {
		what = "request"
	}
	fmt.Fprintf(w, "  per %s: %.1f msgs stored, %.1f Redis cmds (%.1f µs Redis CPU), %.0f allocs\n", what, c.msgs, c.cmds, c.redisCPUus, c.allocs)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d.Microseconds())/1000) }

func ratio(v, raw float64, what string) string {
	if raw == 0 {
		return ""
	}
	return fmt.Sprintf("%.0f%% of %s", 100*v/raw, what)
}

func ratioD(v, raw time.Duration) string {
	if raw == 0 {
		return ""
	}
	return fmt.Sprintf("%.1fx raw request-reply p50", float64(v)/float64(raw))
}
