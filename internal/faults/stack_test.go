//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// role is one Flotilla role process with its HTTP address.
type role struct {
	*proc
	kind string // web, api, worker, beat
	url  string // http://127.0.0.1:port
}

func (r *role) readyz() string { return r.url + "/readyz" }

// stackOpts shape one scenario's deployment.
type stackOpts struct {
	workers     int // worker processes (default 2)
	concurrency int // handlers per worker (default 16)
	cluster     bool
	redisAOF    bool          // persist Redis across a restart
	ackWait     time.Duration // nats.ack_wait; default 5s
	noBeat      bool
	// redisLate / pgLate: the dependency is down when the roles start
	// (Redis never started; PostgreSQL stopped after the migrations).
	redisLate, pgLate bool
}

// stack is one scenario's servers and roles, all its own.
type stack struct {
	t       *testing.T
	name    string
	dir     string
	start   time.Time
	nats    []*natsNode
	natsURL string
	redis   *server
	pg      *server
	pgURL   string
	web     *role
	api     *role // serves the same enqueue; only its readiness is watched
	beat    *role
	workers []*role
	procs   []*proc
	env     []string
	// rolesStarted is when the role processes were started.
	rolesStarted time.Time
}

func newStack(t *testing.T, name string, o stackOpts) *stack {
	t.Helper()
	if o.workers == 0 {
		o.workers = 2
	}
	if o.concurrency == 0 {
		o.concurrency = 16
	}
	if o.ackWait == 0 {
		o.ackWait = 5 * time.Second
	}
	s := &stack{t: t, name: name, dir: t.TempDir(), start: time.Now()}
	// On failure, show what every process said last.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range s.procs {
			t.Logf("--- %s: last lines of %s (pid %d) ---\n%s", name, p.name, p.pid(), p.tail(25))
		}
	})
	replicas := 1
	if o.cluster {
		s.nats = startNATSCluster(t, s.dir)
		replicas = 3
	} else {
		s.nats = []*natsNode{startNATS(t, s.dir)}
	}
	var urls []string
	for _, n := range s.nats {
		urls = append(urls, n.url)
		s.procs = append(s.procs, n.proc)
	}
	s.natsURL = strings.Join(urls, ",")
	s.redis = newRedis(t, s.dir, o.redisAOF)
	s.procs = append(s.procs, s.redis.proc)
	if !o.redisLate {
		s.redis.startAndWait(t, 10*time.Second)
	}
	s.pg, s.pgURL = newPostgres(t, s.dir, name)
	s.procs = append(s.procs, s.pg.proc)
	s.pg.startAndWait(t, 30*time.Second)

	s.env = append(baseEnv(),
		"FLOTILLA_ENV=dev", // web without tokens
		"FLOTILLA_NATS_URL="+s.natsURL,
		"FLOTILLA_REDIS_URL=redis://"+s.redis.addr+"/0",
		"FLOTILLA_DATABASE_URL="+s.pgURL,
		"FLOTILLA_REDIS_PREFIX=faults",
		"FLOTILLA_LOG_FORMAT=json",
		"FLOTILLA_LOG_LEVEL=warn",
		"FLOTILLA_TASKS_RETRY_BACKOFF=100ms",
		// The checks count attempts by their started events.
		"FLOTILLA_TASKS_EVENTS=all",
		"FLOTILLA_NATS_ACK_WAIT="+o.ackWait.String(),
		"FLOTILLA_NATS_REPLICAS="+strconv.Itoa(replicas),
		"FLOTILLA_DATA_DIR="+filepath.Join(s.dir, "var"),
		"FLOTILLA_WORKER_CONCURRENCY="+strconv.Itoa(o.concurrency),
		"FLOTILLA_SHUTDOWN_TIMEOUT=10s",
	)
	s.admin("migrate", "up")
	s.admin("streams", "apply", "--queues", "default")
	if o.pgLate {
		if err := s.pg.stop(syscall.SIGINT, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	s.web = s.newRole("web", "web", "FLOTILLA_WEB_ADDR")
	s.api = s.newRole("api", "api", "FLOTILLA_API_ADDR")
	for i := range o.workers {
		s.workers = append(s.workers, s.newRole(fmt.Sprintf("worker%d", i+1), "worker", "FLOTILLA_WORKER_ADDR",
			fmt.Sprintf("FLOTILLA_WORKER_NAME=%s-w%d", name, i+1)))
	}
	if !o.noBeat {
		s.beat = s.newRole("beat", "beat", "FLOTILLA_BEAT_ADDR")
	}
	s.rolesStarted = time.Now()
	for _, r := range s.roles() {
		if err := r.start(); err != nil {
			t.Fatal(err)
		}
	}
	if !o.redisLate && !o.pgLate {
		for _, r := range s.roles() {
			s.waitRoleReady(r, 30*time.Second)
		}
	}
	return s
}

// admin runs an admin command of the built binary against the stack.
func (s *stack) admin(args ...string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, flotillaBin, args...)
	cmd.Env = s.env
	cmd.Dir = s.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("%s: flotilla %s: %v\n%s", s.name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (s *stack) newRole(name, kind, addrVar string, extra ...string) *role {
	port := freePort(s.t)
	env := append(append([]string{}, s.env...), fmt.Sprintf("%s=127.0.0.1:%d", addrVar, port))
	env = append(env, extra...)
	r := &role{kind: kind, url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	r.proc = &proc{name: name, path: flotillaBin, args: []string{kind}, env: env, dir: s.dir,
		log: filepath.Join(s.dir, name+".log")}
	s.procs = append(s.procs, r.proc)
	s.t.Cleanup(func() { _ = r.stop(syscall.SIGKILL, 5*time.Second) })
	return r
}

func (s *stack) roles() []*role {
	rs := []*role{s.web, s.api}
	rs = append(rs, s.workers...)
	if s.beat != nil {
		rs = append(rs, s.beat)
	}
	return rs
}

// waitRoleReady waits until r's /readyz answers 200.
func (s *stack) waitRoleReady(r *role, within time.Duration) time.Time {
	s.t.Helper()
	deadline := time.Now().Add(within)
	last := ""
	for time.Now().Before(deadline) {
		if done, err := r.exited(); done {
			s.t.Fatalf("%s: %s exited: %v\n%s", s.name, r.name, err, r.tail(30))
		}
		st, body, err := httpGet(r.readyz(), 2*time.Second)
		if err == nil && st == http.StatusOK {
			return time.Now()
		}
		last = fmt.Sprintf("%d %s %v", st, body, err)
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("%s: %s not ready within %s: %s\n%s", s.name, r.name, within, last, r.tail(30))
	return time.Time{}
}

// since formats the time of at relative to the scenario start.
func (s *stack) since(at time.Time) string {
	return fmt.Sprintf("t+%.2fs", at.Sub(s.start).Seconds())
}

// checkAlive fails for every role that exited without being told to.
func (s *stack) checkAlive(skip ...*role) {
	s.t.Helper()
outer:
	for _, r := range s.roles() {
		for _, k := range skip {
			if k == r {
				continue outer
			}
		}
		if done, err := r.exited(); done {
			s.t.Errorf("%s: role %s exited during the scenario (%v); last lines:\n%s", s.name, r.name, err, r.tail(20))
		}
	}
}

// queueStats reads GET /api/v1/queues of web.
func (s *stack) queueStats() string {
	st, body, err := httpGet(s.web.url+"/api/v1/queues", 3*time.Second)
	if err != nil || st != http.StatusOK {
		return fmt.Sprintf("(queues: %d %v)", st, err)
	}
	var v struct {
		Queues []struct {
			Queue       string `json:"queue"`
			Pending     uint64 `json:"pending"`
			InFlight    int    `json:"in_flight"`
			Redelivered int    `json:"redelivered"`
		} `json:"queues"`
	}
	if json.Unmarshal(body, &v) != nil {
		return string(body)
	}
	var parts []string
	for _, q := range v.Queues {
		parts = append(parts, fmt.Sprintf("%s: pending %d, in flight %d, redelivered %d", q.Queue, q.Pending, q.InFlight, q.Redelivered))
	}
	return strings.Join(parts, "; ")
}

var plainClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// httpGet GETs url with a timeout.
func httpGet(url string, timeout time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
