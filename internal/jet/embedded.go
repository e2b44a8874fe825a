package jet

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbedConfig configures the dev role's in-process NATS server.
type EmbedConfig struct {
	// Addr is host:port to listen on; if the port is taken a free one is used.
	Addr string
	// StoreDir holds JetStream's file store.
	StoreDir string
	// Name of the server (defaults to "flotilla-dev").
	Name string
	// SyncAlways makes JetStream fsync every write (sync_interval: always)
	// instead of every two minutes.
	SyncAlways bool
}

// StartEmbedded starts a NATS server with JetStream in this process and
// returns it once it accepts connections. Shut it down with Shutdown and
// WaitForShutdown.
func StartEmbedded(cfg EmbedConfig) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("nats.embed_addr %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats.embed_addr %q: bad port", cfg.Addr)
	}
	if port == 0 || !portFree(host, port) {
		port = -1 // RANDOM_PORT: the server picks a free one (0 would mean 4222).
	}
	name := cfg.Name
	if name == "" {
		name = "flotilla-dev"
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
		SyncAlways: cfg.SyncAlways,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS server did not become ready within 15s (store %s)", cfg.StoreDir)
	}
	return ns, nil
}

func portFree(host string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// StartCluster starts n clustered JetStream servers in this process, each
// storing under dir/n<i>, on free loopback ports, and returns them once
// they accept connections and the JetStream meta group has a leader that
// sees every node online. Shut each down when done.
func StartCluster(n int, dir string, syncAlways bool) ([]*server.Server, error) {
	// The route ports are found free and then bound by the servers: another
	// process may take one in between, and that node never comes up. Try
	// again on fresh ports then.
	var err error
	for try := 1; try <= 3; try++ {
		var ss []*server.Server
		if ss, err = startCluster(n, filepath.Join(dir, fmt.Sprintf("try%d", try)), syncAlways); err == nil {
			return ss, nil
		}
	}
	return nil, err
}

func startCluster(n int, dir string, syncAlways bool) ([]*server.Server, error) {
	var routes []string
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i]))
	}
	var ss []*server.Server
	stop := func() {
		for _, ns := range ss {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
	}
	for i := range n {
		ns, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			NoLog: true, NoSigs: true, MaxPayload: 8 << 20, SyncAlways: syncAlways,
			Cluster: server.ClusterOpts{Name: "flotilla", Host: "127.0.0.1", Port: ports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("cluster node %d: %w", i+1, err)
		}
		go ns.Start()
		ss = append(ss, ns)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, ns := range ss {
		if !ns.ReadyForConnections(time.Until(deadline)) {
			stop()
			return nil, fmt.Errorf("cluster node %s not ready within 20s", ns.Name())
		}
	}
	// A leader alone is not enough: a stream of n replicas is refused
	// ("no suitable peers for placement") until it has heard from every peer.
	for time.Now().Before(deadline) {
		for _, ns := range ss {
			if ns.JetStreamIsLeader() && len(ns.JetStreamClusterPeers()) == n {
				return ss, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return nil, fmt.Errorf("no JetStream meta leader with all %d peers online within 20s", n)
}
