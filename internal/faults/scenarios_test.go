//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pick returns the monitors of the given roles.
func pick(ms []*readyMon, rs ...*role) []*readyMon {
	var out []*readyMon
	for _, m := range ms {
		for _, r := range rs {
			if m.role == r {
				out = append(out, m)
			}
		}
	}
	return out
}

// Scenario 3a (first in the file: it takes longest): Redis is SIGKILLed for
// 90 s, then started again on the same port. It keeps an append-only file
// so that the states recorded before the outage survive the restart
// (without persistence they are gone, and "every task ends SUCCESS" could
// not be checked). nats.ack_wait keeps its default (30 s), shorter than
// the outage.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	runOutage(t, outage{
		name: "redis-down", prefix: "rd", opts: stackOpts{redisAOF: true, ackWait: 30 * time.Second}, n: 2400, rate: 150, sleepMS: 300, burst: 1200,
		what: "redis-server SIGKILLed", hold: 90 * time.Second,
		breakIt: killServer(redisOf), repair: restartServer(redisOf), affected: allRoles,
		atMostOnce: redisPromise,
	})
}

// Scenario 1: one of two workers is SIGKILLed while the queue drains (more
// than 2,000 tasks still queued or in flight), and started again 3 s later.
// Its running and prefetched tasks come back after ack_wait (5 s) and run
// on the other worker or on it.
func TestWorkerKilledMidDrain(t *testing.T) {
	t.Parallel()
	s := newStack(t, "worker-kill", stackOpts{})
	mons := monitor(s.roles()...)
	defer stopMonitors(mons)

	d := newDriver(s.web.url, mixSpecs("wk", 3200, 200), 0, 0)
	d.start()
	defer d.cancel()
	if !d.wait(time.Now().Add(60 * time.Second)) {
		t.Fatalf("worker-kill: enqueue before the fault failed: %d missing", len(d.missing()))
	}
	time.Sleep(time.Second) // mid-drain: most of the queue is still to run
	backlog := "queue at the kill: " + s.queueStats()
	w1 := s.workers[0]
	down := time.Now()
	if err := w1.kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := w1.start(); err != nil {
		t.Fatal(err)
	}
	back := s.waitRoleReady(w1, 30*time.Second)
	s.verify(check{
		d: d, faults: []fault{{what: "worker1 SIGKILLed", down: down, back: back}},
		unaffected: pick(mons, s.web, s.api, s.workers[1], s.beat),
		restarted:  map[*role]bool{w1: true}, backlog: backlog,
	})
}

// outage is a dependency scenario: load flows, the dependency breaks for
// hold, comes back, and verify checks the promises.
type outage struct {
	name, prefix string
	opts         stackOpts
	n            int
	rate         float64 // enqueues per second
	sleepMS      int
	burst        int // tasks enqueued at once before the fault, the rest at rate
	what         string
	hold         time.Duration
	// breakIt makes the dependency unusable; repair makes it usable
	// again; each returns when that happened.
	breakIt, repair func(t *testing.T, s *stack) time.Time
	// affected roles follow the dependency's readiness; the others stay ready.
	affected   func(s *stack) []*role
	atMostOnce string
	// unaffectedGrace: unaffected roles may be unready this long after
	// the fault began (clients moving to another cluster node).
	unaffectedGrace time.Duration
	// setup runs before the load starts.
	setup func(t *testing.T, s *stack)
	// during runs while the dependency is down (instead of sleeping hold).
	during func(t *testing.T, s *stack, d *driver, down time.Time)
	// after runs after the common checks; repairing is when the repair
	// began, back when the dependency was seen usable again.
	after func(t *testing.T, s *stack, d *driver, down, repairing, back time.Time)
	// note adds to the scenario's summary.
	note func() string
}

func runOutage(t *testing.T, o outage) {
	s := newStack(t, o.name, o.opts)
	mons := monitor(s.roles()...)
	defer stopMonitors(mons)
	if o.setup != nil {
		o.setup(t, s)
	}
	d := newDriver(s.web.url, mixSpecs(o.prefix, o.n, o.sleepMS), o.burst, o.rate)
	d.start()
	defer d.cancel()
	d.waitAccepted(o.burst, 60*time.Second)
	backlog := "accepted at the fault " + itoa(d.acceptedCount()) + ", queue " + s.queueStats()
	down := o.breakIt(t, s)
	if o.during != nil {
		o.during(t, s, d, down)
	} else {
		time.Sleep(time.Until(down.Add(o.hold)))
	}
	repairing := time.Now()
	back := o.repair(t, s)
	d.wait(back.Add(finalBound))
	affected := o.affected(s)
	var others []*role
	for _, r := range s.roles() {
		if len(pickRoles(affected, r)) == 0 {
			others = append(others, r)
		}
	}
	if o.note != nil {
		backlog += "; " + o.note()
	}
	s.verify(check{
		d: d, faults: []fault{{what: o.what, down: down, back: back}},
		affected: pick(mons, affected...), unaffected: pick(mons, others...),
		unaffectedGrace: o.unaffectedGrace, atMostOnce: o.atMostOnce, backlog: backlog,
	})
	if o.after != nil {
		o.after(t, s, d, down, repairing, back)
	}
}

func pickRoles(rs []*role, r *role) []*role {
	for _, x := range rs {
		if x == r {
			return []*role{x}
		}
	}
	return nil
}

func itoa(n int) string { return strconv.Itoa(n) }

func allRoles(s *stack) []*role { return s.roles() }

// pgRoles are the roles that use PostgreSQL.
func pgRoles(s *stack) []*role { return []*role{s.web, s.api, s.beat} }

func killServer(srv func(s *stack) *server) func(t *testing.T, s *stack) time.Time {
	return func(t *testing.T, s *stack) time.Time {
		at := time.Now()
		if err := srv(s).kill(); err != nil {
			t.Fatal(err)
		}
		return at
	}
}

func restartServer(srv func(s *stack) *server) func(t *testing.T, s *stack) time.Time {
	return func(t *testing.T, s *stack) time.Time {
		return srv(s).startAndWait(t, 60*time.Second)
	}
}

func signalServer(srv func(s *stack) *server, sig syscall.Signal) func(t *testing.T, s *stack) time.Time {
	return func(t *testing.T, s *stack) time.Time {
		at := time.Now()
		if err := srv(s).signal(sig); err != nil {
			t.Fatal(err)
		}
		return at
	}
}

func natsOf(s *stack) *server  { return &s.nats[0].server }
func redisOf(s *stack) *server { return s.redis }
func pgOf(s *stack) *server    { return s.pg }

// Scenario 2a: the only nats-server is SIGKILLed and started again on the
// same port and store 5 s later.
func TestNATSKilled(t *testing.T) {
	t.Parallel()
	runOutage(t, outage{
		name: "nats-kill", prefix: "nk", n: 2400, rate: 150, sleepMS: 100, burst: 1200,
		what: "nats-server SIGKILLed", hold: 5 * time.Second,
		breakIt: killServer(natsOf), repair: restartServer(natsOf), affected: allRoles,
	})
}

// Scenario 2b: the nats-server is paused (SIGSTOP) for 10 s.
func TestNATSPaused(t *testing.T) {
	t.Parallel()
	runOutage(t, outage{
		name: "nats-pause", prefix: "np", n: 2400, rate: 150, sleepMS: 100, burst: 1200,
		what: "nats-server SIGSTOPped", hold: 10 * time.Second,
		breakIt: signalServer(natsOf, syscall.SIGSTOP), repair: signalServer(natsOf, syscall.SIGCONT), affected: allRoles,
	})
}

// redisPromise is what docs/operations.md says about a Redis outage.
const redisPromise = `docs/operations.md says a worker holds a task whose handler ran until Redis records it, so that an outage "neither runs finished tasks again nor counts their deliveries towards dead-lettering"`

// Scenario 3b: Redis is paused (SIGSTOP) for 10 s.
func TestRedisPaused(t *testing.T) {
	t.Parallel()
	runOutage(t, outage{
		name: "redis-pause", prefix: "rp", n: 2400, rate: 150, sleepMS: 300, burst: 1200,
		what: "redis-server SIGSTOPped", hold: 10 * time.Second,
		breakIt: signalServer(redisOf, syscall.SIGSTOP), repair: signalServer(redisOf, syscall.SIGCONT), affected: allRoles,
		atMostOnce: redisPromise,
	})
}

// Scenario 4: PostgreSQL is SIGKILLed (its whole process group) for 30 s.
// Only web's schedule endpoints, token auth and beat use it: enqueues must
// keep answering 202, workers keep running tasks, beat keeps firing the
// schedules it has, /readyz of web, api and beat reports the outage and
// the schedule endpoints answer 503 database_unavailable.
func TestPostgresDown(t *testing.T) {
	t.Parallel()
	const hold = 30 * time.Second
	var sched *getProber
	var ticks *tickCounter
	var duringOK, duringAll int
	runOutage(t, outage{
		name: "pg-down", prefix: "pg", n: 2400, burst: 1200, rate: 60, sleepMS: 100,
		what: "postgres SIGKILLed", hold: hold,
		breakIt: killServer(pgOf), repair: restartServer(pgOf), affected: pgRoles,
		atMostOnce: "workers do not use PostgreSQL (docs/operations.md), so its outage cannot be a reason to run a task again",
		setup: func(t *testing.T, s *stack) {
			ticks = countTicks(t, s.natsURL, "events.succeeded.default.sys.ping")
			s.postJSON(t, "/api/v1/schedules", `{"name":"faults-tick","task":"sys.ping","interval":"1s"}`, http.StatusCreated)
			if !ticks.waitFor(1, 20*time.Second) {
				t.Fatalf("pg-down: beat fired no tick of the 1s schedule within 20 s\n%s", s.beat.tail(20))
			}
			sched = probeGET(s.web.url+"/api/v1/schedules", 250*time.Millisecond)
		},
		during: func(t *testing.T, s *stack, d *driver, down time.Time) {
			time.Sleep(time.Until(down.Add(hold - 2*time.Second)))
			// Tasks accepted during the outage ran: all but the last 3 s.
			now := time.Now()
			ids := d.acceptedBetween(down, now.Add(-3*time.Second))
			states, _ := s.waitFinal(specsOf(d, ids), now)
			var notRun []string
			for _, id := range ids {
				if st := states[id]; st.State != "SUCCESS" {
					notRun = append(notRun, fmt.Sprintf("%s %s", id, st.State))
				}
			}
			duringOK, duringAll = len(ids)-len(notRun), len(ids)
			if len(ids) == 0 || len(notRun) > 0 {
				t.Errorf("pg-down: of %d tasks accepted during the PostgreSQL outage (more than 3 s ago), %d did not succeed yet: %v",
					len(ids), len(notRun), notRun[:min(10, len(notRun))])
			}
			time.Sleep(time.Until(down.Add(hold)))
		},
		note: func() string {
			return fmt.Sprintf("%d of %d tasks accepted during the outage succeeded before it ended", duringOK, duringAll)
		},
		after: func(t *testing.T, s *stack, d *driver, down, repairing, back time.Time) {
			// Enqueue does not need PostgreSQL: only 202s during the outage.
			for _, a := range d.snapshot() {
				if !a.At.Before(down) && a.At.Before(back) && a.Status != http.StatusAccepted {
					t.Errorf("pg-down: enqueue during the PostgreSQL outage answered %s at %s", a, s.since(a.At))
					break
				}
			}
			// Beat kept firing: one tick a second, so at least 20 in the
			// outage's last 25 s.
			n := ticks.between(down.Add(5*time.Second), back)
			if n < 20 {
				t.Errorf("pg-down: beat fired %d ticks of the 1s schedule between %s and %s (PostgreSQL down); want ≥ 20", n,
					s.since(down.Add(5*time.Second)), s.since(back))
			}
			// Schedule endpoints: 200 before, 503 database_unavailable
			// (Retry-After, in time) during, 200 again once PostgreSQL
			// is being started again.
			answers := sched.halt()
			var n503 int
			for _, a := range answers {
				inside := !a.At.Before(down) && a.At.Before(repairing)
				switch {
				case a.Status == http.StatusOK && (!inside || a.At.Before(down.Add(100*time.Millisecond))):
				case a.Status == http.StatusServiceUnavailable && a.Code == "database_unavailable" && a.RetryAfter != "" &&
					a.Latency <= clientTimeout && a.At.After(down.Add(-time.Second)) && a.At.Before(back.Add(readyBound)):
					n503++
				default:
					t.Errorf("pg-down: GET /api/v1/schedules at %s (%+.2fs from the fault, %+.2fs from the return): %s",
						s.since(a.At), a.At.Sub(down).Seconds(), a.At.Sub(back).Seconds(), a)
				}
			}
			if n503 == 0 {
				t.Errorf("pg-down: GET /api/v1/schedules never answered 503 database_unavailable during the outage")
			}
			addSummary(fmt.Sprintf("[pg-down] schedule endpoint: %d answers, %d × 503 database_unavailable; beat ticks during the outage: %d",
				len(answers), n503, ticks.between(down, back)))
		},
	})
}

// Scenario 5: a three-node cluster with replicas 3; the node leading
// TASKS is SIGKILLed while tasks flow, and started again 10 s later.
func TestNATSClusterLeaderKilled(t *testing.T) {
	t.Parallel()
	var killed *natsNode
	var oldLeader, newLeader string
	var elected time.Duration
	runOutage(t, outage{
		name: "cluster", prefix: "cl", opts: stackOpts{cluster: true}, n: 2400, burst: 1200, rate: 150, sleepMS: 100,
		what: "node leading TASKS SIGKILLed", hold: 10 * time.Second,
		breakIt: func(t *testing.T, s *stack) time.Time {
			oldLeader = streamLeader(s.natsURL, "TASKS", "")
			for _, n := range s.nats {
				if n.serverName == oldLeader {
					killed = n
				}
			}
			if killed == nil {
				t.Fatalf("cluster: no node leads TASKS (leader %q)", oldLeader)
			}
			at := time.Now()
			if err := killed.kill(); err != nil {
				t.Fatal(err)
			}
			for time.Since(at) < 20*time.Second {
				if l := streamLeader(s.natsURL, "TASKS", oldLeader); l != "" {
					newLeader, elected = l, time.Since(at)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			return at
		},
		repair:   func(t *testing.T, s *stack) time.Time { return killed.startAndWait(t, 60*time.Second) },
		affected: func(*stack) []*role { return nil }, unaffectedGrace: readyBound,
		note: func() string {
			return fmt.Sprintf("killed %s (TASKS leader), new leader %q elected within %.2fs", oldLeader, newLeader, elected.Seconds())
		},
	})
}

// Scenario 6a: the roles start while Redis is not running; it starts 8 s later.
func TestStartWhileRedisDown(t *testing.T) {
	t.Parallel()
	runLate(t, "redis-late", "rl", stackOpts{redisLate: true}, redisOf, allRoles, "Redis not running at the roles' start")
}

// Scenario 6b: the roles start while PostgreSQL is stopped; it starts 8 s later.
func TestStartWhilePostgresDown(t *testing.T) {
	t.Parallel()
	runLate(t, "pg-late", "pl", stackOpts{pgLate: true}, pgOf, pgRoles, "PostgreSQL stopped at the roles' start")
}

func runLate(t *testing.T, name, prefix string, o stackOpts, srv func(*stack) *server, affectedFn func(*stack) []*role, what string) {
	s := newStack(t, name, o)
	affected := affectedFn(s)
	var others []*role
	for _, r := range s.roles() {
		if len(pickRoles(affected, r)) == 0 {
			others = append(others, r)
		}
	}
	mons := monitor(s.roles()...)
	defer stopMonitors(mons)
	// Every role starts anyway and answers: affected ones 503, others 200.
	deadline := time.Now().Add(20 * time.Second)
	for _, r := range s.roles() {
		want := http.StatusServiceUnavailable
		if len(pickRoles(affected, r)) == 0 {
			want = http.StatusOK
		}
		last := ""
		for {
			if done, err := r.exited(); done {
				t.Fatalf("%s: %s exited although roles must start while a dependency is down: %v\n%s", name, r.name, err, r.tail(20))
			}
			code, body, err := httpGet(r.readyz(), 2*time.Second)
			if code == want {
				break
			}
			last = fmt.Sprintf("%d %s %v", code, body, err)
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s /readyz did not answer %d within 20 s of its start (%s): %s\n%s", name, r.name, want, what, last, r.tail(20))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	down := time.Now()
	var answering []string
	for _, m := range mons {
		if first, ok := m.firstAfter(s.rolesStarted, func(r readySample) bool { return r.status != 0 }); ok {
			answering = append(answering, fmt.Sprintf("%s %d after %.2fs", m.role.name, first.status, first.end.Sub(s.rolesStarted).Seconds()))
		}
	}
	d := newDriver(s.web.url, mixSpecs(prefix, 2000, 100), 0, 150)
	d.start()
	defer d.cancel()
	time.Sleep(8 * time.Second)
	back := srv(s).startAndWait(t, 60*time.Second)
	d.wait(back.Add(finalBound))
	s.verify(check{
		d: d, faults: []fault{{what: what, down: down, back: back}},
		affected: pick(mons, affected...), unaffected: pick(mons, others...), skipDown: true,
		backlog: "first /readyz answers after the roles' start: " + strings.Join(answering, ", "),
	})
}

// --- helpers of the scenarios -------------------------------------------

// specsOf returns the specs of ids.
func specsOf(d *driver, ids []string) []spec {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var out []spec
	for _, sp := range d.specs {
		if want[sp.ID] {
			out = append(out, sp)
		}
	}
	return out
}

// postJSON POSTs body to web and requires status.
func (s *stack) postJSON(t *testing.T, path, body string, status int) {
	t.Helper()
	resp, err := plainClient.Post(s.web.url+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s: POST %s: %v", s.name, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("%s: POST %s: %d %s, want %d", s.name, path, resp.StatusCode, b, status)
	}
}

// getProber GETs a URL every interval and records the answers.
type getProber struct {
	mu      sync.Mutex
	answers []answer
	stop    chan struct{}
	done    chan struct{}
}

func probeGET(url string, every time.Duration) *getProber {
	p := &getProber{stop: make(chan struct{}), done: make(chan struct{})}
	hc := &http.Client{Timeout: clientTimeout}
	go func() {
		defer close(p.done)
		for {
			a := answer{ID: "GET " + url, At: time.Now()}
			resp, err := hc.Get(url)
			a.Latency = time.Since(a.At)
			if err != nil {
				a.Err = err.Error()
			} else {
				var v struct {
					Code string `json:"code"`
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				_ = json.Unmarshal(b, &v)
				a.Status, a.Code, a.RetryAfter = resp.StatusCode, v.Code, resp.Header.Get("Retry-After")
			}
			p.mu.Lock()
			p.answers = append(p.answers, a)
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	return p
}

func (p *getProber) halt() []answer {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]answer(nil), p.answers...)
}

// tickCounter records when messages arrive on a core NATS subject.
type tickCounter struct {
	mu    sync.Mutex
	times []time.Time
}

func countTicks(t *testing.T, natsURL, subject string) *tickCounter {
	t.Helper()
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c := &tickCounter{}
	if _, err := nc.Subscribe(subject, func(*nats.Msg) {
		c.mu.Lock()
		c.times = append(c.times, time.Now())
		c.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *tickCounter) between(from, to time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, at := range c.times {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

func (c *tickCounter) waitFor(n int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		got := len(c.times)
		c.mu.Unlock()
		if got >= n {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// streamLeader is the server name leading stream, or "" when it cannot be
// told (or is not); it asks the cluster through any node but skip.
func streamLeader(natsURL, stream, skip string) string {
	nc, err := nats.Connect(natsURL, nats.Timeout(time.Second), nats.MaxReconnects(0))
	if err != nil {
		return ""
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return ""
	}
	info, err := st.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == skip {
		return ""
	}
	return info.Cluster.Leader
}
