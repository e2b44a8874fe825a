//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// server is a dependency the scenarios break: a proc plus a readiness probe.
type server struct {
	*proc
	addr  string
	ready func(ctx context.Context) error
}

// startAndWait starts s and waits until its probe passes; it returns when
// the server became usable.
func (s *server) startAndWait(t testing.TB, within time.Duration) time.Time {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	return s.waitReady(t, within)
}

// waitReady polls the probe every 25 ms.
func (s *server) waitReady(t testing.TB, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		if done, err := s.exited(); done {
			t.Fatalf("%s exited while starting: %v\n%s", s.name, err, s.tail(30))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		last = s.ready(ctx)
		cancel()
		if last == nil {
			return time.Now()
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("%s not ready within %s: %v\n%s", s.name, within, last, s.tail(30))
	return time.Time{}
}

// --- NATS ---------------------------------------------------------------

// natsNode is one nats-server with JetStream, started from a config file.
type natsNode struct {
	server
	serverName string
	url        string
}

type natsConfig struct {
	name        string // server_name
	port        int
	storeDir    string
	clusterPort int   // 0: no cluster
	routes      []int // cluster ports of all nodes
}

func (c natsConfig) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\n", c.name, c.port)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}\n", c.storeDir)
	if c.clusterPort != 0 {
		fmt.Fprintf(&b, "cluster {\n  name: c\n  listen: 127.0.0.1:%d\n  routes: [\n", c.clusterPort)
		for _, p := range c.routes {
			fmt.Fprintf(&b, "    nats-route://127.0.0.1:%d\n", p)
		}
		b.WriteString("  ]\n}\n")
	}
	return b.String()
}

func newNATSNode(t testing.TB, dir string, c natsConfig) *natsNode {
	t.Helper()
	if err := os.MkdirAll(c.storeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, c.name+".conf")
	if err := os.WriteFile(conf, []byte(c.render()), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &natsNode{serverName: c.name, url: fmt.Sprintf("nats://127.0.0.1:%d", c.port)}
	n.addr = fmt.Sprintf("127.0.0.1:%d", c.port)
	n.proc = &proc{name: "nats-" + c.name, path: natsBin, args: []string{"-c", conf}, env: baseEnv(), dir: dir,
		log: filepath.Join(dir, "nats-"+c.name+".log")}
	n.ready = func(ctx context.Context) error { return jsReady(ctx, n.url) }
	return n
}

// jsReady connects to url and asks JetStream for the account info: it
// fails until the server (and, clustered, its meta leader) serves JetStream.
func jsReady(ctx context.Context, url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.MaxReconnects(0))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	_, err = js.AccountInfo(ctx)
	return err
}

// startNATS starts one nats-server with JetStream on a free port.
func startNATS(t testing.TB, dir string) *natsNode {
	t.Helper()
	n := newNATSNode(t, dir, natsConfig{name: "n1", port: freePort(t), storeDir: filepath.Join(dir, "js-n1")})
	n.startAndWait(t, 20*time.Second)
	t.Cleanup(func() { _ = n.kill() })
	return n
}

// startNATSCluster starts three clustered nodes and waits for JetStream.
func startNATSCluster(t testing.TB, dir string) []*natsNode {
	t.Helper()
	var ports, cports []int
	for range 3 {
		ports = append(ports, freePort(t))
		cports = append(cports, freePort(t))
	}
	var nodes []*natsNode
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		n := newNATSNode(t, dir, natsConfig{name: name, port: ports[i], storeDir: filepath.Join(dir, "js-"+name),
			clusterPort: cports[i], routes: cports})
		if err := n.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.kill() })
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		n.waitReady(t, 60*time.Second)
	}
	return nodes
}

// --- Redis --------------------------------------------------------------

// startRedis starts redis-server without persistence (as the brief's
// servers run), or with an append-only file when aof is set so that the
// states survive a restart.
func newRedis(t testing.TB, dir string, aof bool) *server {
	t.Helper()
	port := freePort(t)
	data := filepath.Join(dir, "redis")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no", "--dir", data}
	if aof {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	} else {
		args = append(args, "--appendonly", "no")
	}
	s := &server{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	s.proc = &proc{name: "redis", path: "redis-server", args: args, env: baseEnv(), dir: data, log: filepath.Join(dir, "redis.log")}
	s.ready = func(ctx context.Context) error {
		c := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1, DialTimeout: time.Second})
		defer c.Close()
		return c.Ping(ctx).Err()
	}
	t.Cleanup(func() { _ = s.kill() })
	return s
}

// --- PostgreSQL ---------------------------------------------------------

var (
	pgOnce     sync.Once
	pgErr      error
	pgBase     string // 0755 directory holding every data dir
	pgTemplate string // initialised and migrated data dir, copied per scenario
	pgBinDir   string
	pgCred     *syscall.Credential
)

func cleanupPG() {
	if pgBase != "" {
		os.RemoveAll(pgBase)
	}
}

// pgSetup runs initdb once, applies Flotilla's migrations with the built
// binary and stops the server; scenarios copy the result.
func pgSetup() error {
	pgOnce.Do(func() { pgErr = pgInit() })
	return pgErr
}

func pgInit() error {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		return fmt.Errorf("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
	}
	sort.Strings(bins)
	pgBinDir = filepath.Dir(bins[len(bins)-1])
	var uid, gid int = os.Getuid(), os.Getgid()
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		pgCred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	base, err := os.MkdirTemp("", "flotilla-faults-pg-")
	if err != nil {
		return err
	}
	pgBase = base
	if err := os.Chmod(base, 0o755); err != nil {
		return err
	}
	tmpl := filepath.Join(base, "template")
	if err := mkdirOwned(tmpl, uid, gid); err != nil {
		return err
	}
	initdb := exec.Command(filepath.Join(pgBinDir, "initdb"), "-D", tmpl, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale", "C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: pgCred}
	initdb.Dir = base
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	port, err := anyPort()
	if err != nil {
		return err
	}
	p := pgProc(tmpl, port, filepath.Join(base, "template.log"))
	if err := p.start(); err != nil {
		return err
	}
	defer func() { _ = p.stop(syscall.SIGINT, 20*time.Second) }()
	url := pgURL(port, "postgres")
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := pgPing(ctx, url)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("template PostgreSQL not ready: %v\n%s", err, p.tail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	mig := exec.Command(flotillaBin, "migrate", "up", "--create-database")
	mig.Env = append(baseEnv(), "FLOTILLA_DATABASE_URL="+pgURL(port, "flotilla"), "FLOTILLA_LOG_LEVEL=warn")
	mig.Dir = base
	if out, err := mig.CombinedOutput(); err != nil {
		return fmt.Errorf("flotilla migrate up: %v\n%s", err, out)
	}
	pgTemplate = tmpl
	return nil
}

func mkdirOwned(dir string, uid, gid int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chown(dir, uid, gid)
}

func pgURL(port int, db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable&connect_timeout=2", port, db)
}

func pgPing(ctx context.Context, url string) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return c.Ping(ctx)
}

func pgProc(dataDir string, port int, log string) *proc {
	return &proc{
		name: "postgres", path: filepath.Join(pgBinDir, "postgres"),
		args: []string{"-D", dataDir, "-p", strconv.Itoa(port), "-k", dataDir,
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
			"-c", "full_page_writes=off", "-c", "max_connections=60", "-c", "shared_buffers=16MB"},
		env: baseEnv(), dir: filepath.Dir(dataDir), cred: pgCred, log: log,
	}
}

// newPostgres copies the migrated template into a new data dir; start it
// with startAndWait. Its URL names the database flotilla.
func newPostgres(t testing.TB, dir, name string) (*server, string) {
	t.Helper()
	if err := pgSetup(); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(pgBase, name)
	if out, err := exec.Command("cp", "-a", pgTemplate, data).CombinedOutput(); err != nil {
		t.Fatalf("copy PostgreSQL template: %v\n%s", err, out)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	port := freePort(t)
	s := &server{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	s.proc = pgProc(data, port, filepath.Join(dir, "postgres.log"))
	url := pgURL(port, "flotilla")
	s.ready = func(ctx context.Context) error { return pgPing(ctx, url) }
	t.Cleanup(func() { _ = s.kill() })
	return s, url
}
