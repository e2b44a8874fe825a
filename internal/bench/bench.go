// Package bench measures Flotilla against raw JetStream in one run, on one
// server, with the same payloads: enqueue throughput (Go client and HTTP),
// drain throughput (results and events off, then on), and the
// enqueue-and-wait round trip. It prints ratios so that the overhead Flotilla
// adds is visible regardless of machine noise.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/worker"
)

// Config configures a run.
type Config struct {
	// NATSURL of the server to use; empty starts an embedded one in a temp dir.
	NATSURL string
	// RedisURL for the phases with results on.
	RedisURL string
	// Tasks per throughput phase. Default 100,000.
	Tasks int
	// Concurrency of the worker. Default 64.
	Concurrency int
	// RoundTrips is the number of sequential enqueue-and-wait calls. Default 5,000.
	RoundTrips int
	// HTTPClients and HTTPTasks shape the HTTP enqueue phase. Defaults 64 and 50,000.
	HTTPClients, HTTPTasks int
	// ArgsBytes is the size of each task's JSON args. Default 64.
	ArgsBytes int
	// Phases to run; empty = all. Names: raw, enqueue, drain,
	// drain-results-only, drain-events-only, drain-results, drain-all,
	// roundtrip, http.
	Phases []string
	// Cluster > 1 runs that many embedded servers as a cluster, every
	// stream (the raw loops' too) with that many replicas.
	Cluster int
	// SyncAlways makes the embedded servers fsync every write
	// (sync_interval: always).
	SyncAlways bool
}

func (c *Config) defaults() {
	if c.Tasks <= 0 {
		c.Tasks = 100_000
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.RoundTrips <= 0 {
		c.RoundTrips = 5000
	}
	if c.HTTPClients <= 0 {
		c.HTTPClients = 64
	}
	if c.HTTPTasks <= 0 {
		c.HTTPTasks = 50_000
	}
	if c.ArgsBytes < 16 {
		c.ArgsBytes = 64
	}
	if c.RedisURL == "" {
		c.RedisURL = "redis://127.0.0.1:6379/0"
	}
}

func (c *Config) want(phase string) bool {
	if len(c.Phases) == 0 {
		return true
	}
	for _, p := range c.Phases {
		if p == phase {
			return true
		}
	}
	return false
}

// env is what the phases share.
type env struct {
	cfg    Config
	out    io.Writer
	nc     *nats.Conn
	js     jetstream.JetStream
	rdb    *redis.Client
	prefix string
	reg    *task.Registry
	topo   jet.Topology
	args   []byte
	// replicas of every stream: 1, or the cluster's size.
	replicas int
}

// Run runs the benchmark and prints its report to out.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	cfg.defaults()
	e := &env{cfg: cfg, out: out, reg: task.NewRegistry()}
	systasks.Register(e.reg) // sys.ping is the no-op task, so an external `flotilla worker` can drain bench tasks
	e.args = makeArgs(cfg.ArgsBytes)

	conn, err := connect(ctx, server{url: cfg.NATSURL, cluster: cfg.Cluster, syncAlways: cfg.SyncAlways}, "flotilla-bench", true)
	if err != nil {
		return err
	}
	defer conn.close()
	e.nc, e.js, e.topo, e.replicas = conn.nc, conn.js, conn.topo, conn.replicas
	e.rdb, err = results.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer e.rdb.Close()
	e.prefix = fmt.Sprintf("flotilla-bench-%d", time.Now().UnixNano())
	defer cleanRedis(context.WithoutCancel(ctx), e.rdb, e.prefix)

	fmt.Fprintf(out, "flotilla bench: tasks=%d concurrency=%d args=%dB round_trips=%d http_clients=%d http_tasks=%d server=%s\n\n",
		cfg.Tasks, cfg.Concurrency, cfg.ArgsBytes, cfg.RoundTrips, cfg.HTTPClients, cfg.HTTPTasks, serverKind(cfg))
	r := &report{}
	steps := []struct {
		name string
		fn   func(context.Context, *report) error
	}{
		{"raw", e.raw},
		{"enqueue", e.enqueue},
		{"drain", e.drainOff},
		{"drain-results-only", e.drainResultsOnly},
		{"drain-events-only", e.drainEventsOnly},
		{"drain-results", e.drainOn},
		{"drain-all", e.drainAll},
		{"roundtrip", e.roundTrip},
		{"http", e.httpEnqueue},
	}
	for _, s := range steps {
		if !cfg.want(s.name) {
			continue
		}
		if err := s.fn(ctx, r); err != nil {
			return fmt.Errorf("bench %s: %w", s.name, err)
		}
	}
	r.print(out)
	return nil
}

// conn is the server and connection a benchmark runs on.
type conn struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	topo     jet.Topology
	replicas int
	close    func()
}

// server says where a benchmark runs: on url, or (url empty) on embedded
// servers — one, or a cluster of that many — that fsync every write with
// syncAlways.
type server struct {
	url        string
	cluster    int
	syncAlways bool
}

// connect connects to srv.url, or when it is empty starts embedded
// JetStream servers in a temporary directory (removed by close), and
// applies the streams (TASKS unbounded, replicated on every node of a
// cluster) and, with queue, the consumer of queue default.
func connect(ctx context.Context, srv server, name string, queue bool) (*conn, error) {
	stop := func() {}
	url, replicas := srv.url, 1
	if url == "" {
		dir, err := os.MkdirTemp("", "flotilla-bench-")
		if err != nil {
			return nil, err
		}
		if srv.cluster > 1 {
			ss, err := jet.StartCluster(srv.cluster, dir, srv.syncAlways)
			if err != nil {
				_ = os.RemoveAll(dir)
				return nil, err
			}
			var urls []string
			for _, ns := range ss {
				urls = append(urls, ns.ClientURL())
			}
			url, replicas = strings.Join(urls, ","), srv.cluster
			stop = func() {
				for _, ns := range ss {
					ns.Shutdown()
					ns.WaitForShutdown()
				}
				_ = os.RemoveAll(dir)
			}
		} else {
			ns, err := jet.StartEmbedded(jet.EmbedConfig{Addr: "127.0.0.1:0", StoreDir: filepath.Join(dir, "js"), Name: "flotilla-bench", SyncAlways: srv.syncAlways})
			if err != nil {
				_ = os.RemoveAll(dir)
				return nil, err
			}
			url = ns.ClientURL()
			stop = func() { ns.Shutdown(); ns.WaitForShutdown(); _ = os.RemoveAll(dir) }
		}
	}
	c := &conn{replicas: replicas}
	var err error
	c.nc, c.js, err = jet.Connect(ctx, url, name, "")
	if err != nil {
		stop()
		return nil, err
	}
	c.close = func() { c.nc.Close(); stop() }
	if c.topo, err = jet.LoadTopology(jet.TopologyParams{Replicas: replicas, TaskMaxMsgs: -1, TaskMaxBytes: -1}); err == nil {
		if err = jet.ApplyStreams(ctx, c.js, c.topo); err == nil && queue {
			err = jet.ApplyQueues(ctx, c.js, c.topo, []string{"default"})
		}
	}
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// url is the client URL of the server c is connected to.
func (c *conn) url() string { return c.nc.ConnectedUrl() }

// serveLoopback serves h on a free loopback port and returns its base URL.
func serveLoopback(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: h}
	go func() { _ = hs.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = hs.Close() }, nil
}

// httpClient is a keep-alive client for n concurrent callers.
func httpClient(n int) (*http.Client, func()) {
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, tr.CloseIdleConnections
}

// waitEmpty waits until stream s holds no message, for at most limit.
func waitEmpty(ctx context.Context, s jetstream.Stream, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs == 0 {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("stream %s not empty after %s", s.CachedInfo().Config.Name, limit)
}

func serverKind(cfg Config) string {
	kind := cfg.NATSURL
	if kind == "" {
		kind = "embedded"
		if cfg.Cluster > 1 {
			kind = fmt.Sprintf("embedded cluster of %d, replicas %d", cfg.Cluster, cfg.Cluster)
		}
	}
	if cfg.SyncAlways {
		kind += ", sync_interval always"
	}
	return kind
}

func makeArgs(n int) []byte {
	// {"payload":"xxxx..."} of exactly n bytes.
	pad := n - len(`{"payload":""}`)
	return []byte(`{"payload":"` + strings.Repeat("x", pad) + `"}`)
}

// cleanRedis deletes every key under prefix.
func cleanRedis(ctx context.Context, rdb *redis.Client, prefix string) {
	iter := rdb.Scan(ctx, 0, prefix+":*", 5000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 5000 {
			rdb.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		rdb.Unlink(ctx, keys...)
	}
}

func (e *env) purgeTasks(ctx context.Context) error {
	s, err := e.js.Stream(ctx, wire.StreamTasks)
	if err != nil {
		return err
	}
	return s.Purge(ctx)
}

func (e *env) store() *results.Store {
	return results.New(e.rdb, results.Config{Prefix: e.prefix, TTL: 10 * time.Minute})
}

func (e *env) client(store *results.Store, events wire.EventLevel) *client.Client {
	return client.New(e.nc, e.js, store, client.Config{Registry: e.reg, CheckRegistered: true, Events: events})
}

// fill enqueues n tasks through the Go client in batches and returns the
// rate; a task refused as unavailable goes again (see stalls).
func (e *env) fill(ctx context.Context, c *client.Client, n int) (float64, error) {
	const batch = 10000
	reqs := make([]client.Request, 0, batch)
	start, st := time.Now(), newStalls()
	for done := 0; done < n; {
		reqs = reqs[:0]
		for i := 0; i < batch && done+i < n; i++ {
			reqs = append(reqs, client.Request{Task: "sys.ping", Args: e.args, Origin: "client"})
		}
		for len(reqs) > 0 {
			_, errs := c.EnqueueEach(ctx, reqs)
			again := reqs[:0]
			for i, err := range errs {
				switch {
				case err == nil:
					done++
					st.progress()
				case st.retry(err):
					again = append(again, reqs[i])
				default:
					return 0, err
				}
			}
			if reqs = again; len(reqs) > 0 {
				st.pause()
			}
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// stalls is the bench's patience with a publish refused because the server
// holds every ack for longer than the client's StallWait (with fsync
// always, a slow disk): such a publish stored nothing and goes again,
// until a minute passes without one stored.
type stalls struct{ last time.Time }

func newStalls() *stalls { return &stalls{last: time.Now()} }

// progress notes a stored message.
func (s *stalls) progress() { s.last = time.Now() }

// retry says whether the publish that failed with err goes again.
func (s *stalls) retry(err error) bool {
	stalled := errors.Is(err, jetstream.ErrTooManyStalledMsgs) || errors.Is(err, client.ErrUnavailable)
	return stalled && time.Since(s.last) < time.Minute
}

// pause waits a little before a retry, so that a server that refuses at
// once (not after StallWait) is not asked again in a tight loop.
func (s *stalls) pause() { time.Sleep(100 * time.Millisecond) }

// drain runs a worker until TASKS is empty and returns the rate and what
// each task cost.
func (e *env) drain(ctx context.Context, store *results.Store, events wire.EventLevel, n int) (float64, cost, error) {
	before, err := e.snapshot(ctx)
	if err != nil {
		return 0, cost{}, err
	}
	w := worker.New(e.nc, e.js, e.reg, store, zerolog.Nop(), worker.Config{
		Queues: []string{"default"}, Concurrency: e.cfg.Concurrency, Name: "bench", MaxRetries: 3,
		Events: events, ShutdownTimeout: 10 * time.Second,
	})
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- w.Run(wctx) }()
	err = e.waitEmpty(ctx, 5*time.Minute)
	elapsed := time.Since(start)
	cancel()
	if werr := <-done; err == nil {
		err = werr
	}
	if err != nil {
		return 0, cost{}, err
	}
	after, err := e.snapshot(ctx)
	return float64(n) / elapsed.Seconds(), after.since(before, n), err
}

// cost is what one task took, on average, in a drain: messages the server
// stored (TASKS, EVENTS, DEAD), Redis commands and Redis CPU, and heap
// allocations of this process (worker, client and, when embedded, the
// servers).
type cost struct {
	msgs, cmds, redisCPUus, allocs float64
}

type snapshot struct {
	seqs, cmds, mallocs uint64
	redisCPU            float64 // seconds
}

func (e *env) snapshot(ctx context.Context) (snapshot, error) {
	var s snapshot
	var err error
	if s.seqs, err = e.seqs(ctx); err != nil {
		return s, err
	}
	info, err := e.rdb.Info(ctx, "stats", "cpu").Result()
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "total_commands_processed":
			s.cmds, _ = strconv.ParseUint(v, 10, 64)
		case "used_cpu_sys", "used_cpu_user":
			f, _ := strconv.ParseFloat(v, 64)
			s.redisCPU += f
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.mallocs = ms.Mallocs
	return s, nil
}

// seqs is the sum of the last sequences of the streams a task writes to.
func (e *env) seqs(ctx context.Context) (uint64, error) {
	var n uint64
	for _, name := range []string{wire.StreamTasks, wire.StreamEvents, wire.StreamDead} {
		st, err := e.js.Stream(ctx, name)
		if err != nil {
			return 0, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return 0, err
		}
		n += info.State.LastSeq
	}
	return n, nil
}

// settled is the snapshot once the streams have stopped growing (for up to
// 5s): events are published without waiting, so the server may still be
// storing those of the loop that has just ended, which they belong to.
func (e *env) settled(ctx context.Context) (snapshot, error) {
	last, err := e.seqs(ctx)
	for end := time.Now().Add(5 * time.Second); err == nil && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
		var now uint64
		if now, err = e.seqs(ctx); now == last {
			break
		}
		last = now
	}
	if err != nil {
		return snapshot{}, err
	}
	return e.snapshot(ctx)
}

// plus is c and d together.
func (c cost) plus(d cost) cost {
	return cost{msgs: c.msgs + d.msgs, cmds: c.cmds + d.cmds, redisCPUus: c.redisCPUus + d.redisCPUus, allocs: c.allocs + d.allocs}
}

func (s snapshot) since(b snapshot, n int) cost {
	f := float64(n)
	return cost{
		msgs: float64(s.seqs-b.seqs) / f, cmds: float64(s.cmds-b.cmds) / f,
		redisCPUus: (s.redisCPU - b.redisCPU) * 1e6 / f, allocs: float64(s.mallocs-b.mallocs) / f,
	}
}

func (e *env) waitEmpty(ctx context.Context, limit time.Duration) error {
	s, err := e.js.Stream(ctx, wire.StreamTasks)
	if err != nil {
		return err
	}
	return waitEmpty(ctx, s, limit)
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func sortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }
