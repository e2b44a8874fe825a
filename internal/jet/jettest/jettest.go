// Package jettest starts in-process NATS servers with JetStream for tests:
// one server on a random port, or a three-node cluster.
package jettest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/jet"
)

// Server starts a JetStream server on a random port with a temp store and
// returns it; it is shut down when the test ends.
func Server(t testing.TB) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, MaxPayload: 8 << 20,
	})
	if err != nil {
		t.Fatalf("jettest: new server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("jettest: server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// Connect opens a client connection to url, closed when the test ends.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("jettest: connect %s: %v", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jettest: jetstream: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// Cluster is a three-node JetStream cluster in this process.
type Cluster struct {
	Servers []*server.Server
}

// URLs returns the client URLs of every running node, comma-separated.
func (c *Cluster) URLs() string {
	s := ""
	for _, ns := range c.Servers {
		if ns == nil || !ns.Running() {
			continue
		}
		if s != "" {
			s += ","
		}
		s += ns.ClientURL()
	}
	return s
}

// Stop shuts node i down.
func (c *Cluster) Stop(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
}

// NewCluster starts three clustered JetStream nodes (jet.StartCluster)
// and waits until the JetStream meta group has a leader.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	ss, err := jet.StartCluster(3, t.TempDir(), false)
	if err != nil {
		t.Fatalf("jettest: %v", err)
	}
	t.Cleanup(func() {
		for _, ns := range ss {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
	})
	return &Cluster{Servers: ss}
}
