package jet

import (
	"fmt"
	"net"
	"strconv"
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
