// Package resultstest gives tests a Redis client and a key prefix of their
// own, deleted when the test ends (never FLUSHDB).
package resultstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// URL is the test Redis: FLOTILLA_TEST_REDIS_URL or the local server.
func URL() string {
	if u := os.Getenv("FLOTILLA_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// Client returns a Redis client and a unique key prefix. The test fails (not
// skips) when Redis is unreachable.
func Client(t testing.TB) (*redis.Client, string) {
	t.Helper()
	opt, err := redis.ParseURL(URL())
	if err != nil {
		t.Fatalf("resultstest: %v", err)
	}
	opt.PoolSize = 128
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("resultstest: Redis at %s is not reachable: %v (start it: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no)", opt.Addr, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "flotillatest-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == 1000 {
				rdb.Del(ctx, keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		_ = rdb.Close()
	})
	return rdb, prefix
}

// Own starts a redis-server of the test's own on a free loopback port (so
// that the test can stop or pause it by its PID, never the shared one) and
// returns a client of it and the PID. The server is killed when the test
// ends.
func Own(t testing.TB) (*redis.Client, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("resultstest: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("resultstest: start redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), ReadTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	for deadline := time.Now().Add(10 * time.Second); rdb.Ping(context.Background()).Err() != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("resultstest: the test's redis-server on port %d did not answer within 10s", port)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return rdb, cmd.Process.Pid
}
