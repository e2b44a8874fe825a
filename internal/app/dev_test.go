package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/app"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// TestDevRunsEveryRole runs `flotilla dev` as the README's first command
// does — embedded NATS, PostgreSQL database created and migrated, every role
// in one process — and uses web, api and beat through HTTP.
func TestDevRunsEveryRole(t *testing.T) {
	t.Parallel()
	_, prefix := resultstest.Client(t)
	cfg := config.Default(config.RoleDev)
	cfg.DataDir = t.TempDir()
	cfg.NATS.EmbedAddr = "127.0.0.1:0"
	cfg.Redis.URL = resultstest.URL()
	cfg.Redis.Prefix = prefix
	cfg.Web.Addr, cfg.API.Addr, cfg.Worker.Addr, cfg.Beat.Addr = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	cfg.Log.Level = "warn"
	// dev creates its database if missing: a fresh one, dropped at the end.
	u, err := url.Parse(storetest.URL())
	require.NoError(t, err)
	u.Path = fmt.Sprintf("/flotilla_test_dev_%d", time.Now().UnixNano())
	cfg.Database.URL = u.String()
	t.Cleanup(func() { dropDatabase(t, u.Path[1:]) })

	reg := task.NewRegistry()
	systasks.Register(reg)
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, app.Options{Registry: reg, Stdout: io.Discard}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(40 * time.Second):
			t.Error("dev did not stop")
		}
	})
	web, api := "http://"+cfg.Web.Addr, "http://"+cfg.API.Addr
	require.Eventually(t, func() bool {
		resp, err := http.Get(web + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, 30*time.Second, 50*time.Millisecond, "web ready")

	// A task through web and the worker.
	var enq struct{ ID string }
	post(t, web+"/api/v1/tasks", `{"task":"sys.echo","args":{"dev":true}}`, 202, &enq)
	require.Eventually(t, func() bool {
		var st struct{ State string }
		return get(t, web+"/api/v1/tasks/"+enq.ID, &st) == 200 && st.State == task.StateSuccess
	}, 20*time.Second, 20*time.Millisecond)

	// Sync execution through api and the worker's micro service.
	var ex struct {
		Result map[string]any
		Worker string
	}
	require.Eventually(t, func() bool {
		return post(t, api+"/api/v1/exec/sys.echo", `{"y":2}`, 0, &ex) == 200
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, map[string]any{"y": 2.0}, ex.Result)

	// A schedule created on web fires through beat.
	post(t, web+"/api/v1/schedules", `{"name":"dev-tick","task":"sys.ping","interval":"1s"}`, 201, nil)
	require.Eventually(t, func() bool {
		var sc struct {
			RunCount int64 `json:"run_count"`
		}
		return get(t, web+"/api/v1/schedules/dev-tick", &sc) == 200 && sc.RunCount >= 2
	}, 20*time.Second, 100*time.Millisecond, "beat fired the schedule")
	var leader struct {
		HasLeader bool `json:"has_leader"`
	}
	require.Equal(t, 200, get(t, web+"/api/v1/beat", &leader))
	require.True(t, leader.HasLeader)
	var health map[string]any
	require.Equal(t, 200, get(t, "http://"+cfg.Beat.Addr+"/healthz", &health))
	require.Equal(t, true, health["leader"])

	// A second dev on the same data dir refuses at once and leaves the
	// first one (and its NATS URL file) alone.
	second := cfg
	second.Web.Addr, second.API.Addr, second.Worker.Addr, second.Beat.Addr = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	err = app.Run(t.Context(), second, app.Options{Registry: reg, Stdout: io.Discard})
	require.ErrorContains(t, err, "already uses data_dir")
	_, err = os.Stat(filepath.Join(cfg.DataDir, app.DevURLFile))
	require.NoError(t, err, "the first dev's URL file is still there")
	require.Equal(t, 200, get(t, web+"/readyz", nil))

	// Each role serves its own metrics, even in one process: web and api
	// count their HTTP requests and show nothing of beat's; beat shows its
	// own; the worker shows task metrics.
	webMetrics := metricsText(t, web)
	require.NotContains(t, webMetrics, "flotilla_beat_")
	require.NotContains(t, webMetrics, "flotilla_tasks_total")
	require.Contains(t, webMetrics, `flotilla_http_requests_total{method="POST",route="/api/v1/tasks",status="202"} 1`)
	require.Contains(t, webMetrics, `flotilla_http_request_duration_seconds_count{method="GET",route="/api/v1/tasks/:id"}`)
	apiMetrics := metricsText(t, api)
	require.NotContains(t, apiMetrics, "flotilla_beat_")
	require.Contains(t, apiMetrics, `flotilla_http_requests_total{method="POST",route="/api/v1/exec/:task",status="200"}`)
	beatMetrics := metricsText(t, "http://"+cfg.Beat.Addr)
	require.Contains(t, beatMetrics, "flotilla_beat_leader 1")
	require.NotContains(t, beatMetrics, "flotilla_http_requests_total")
	workerMetrics := metricsText(t, "http://"+cfg.Worker.Addr)
	require.Contains(t, workerMetrics, `flotilla_tasks_total{outcome="success",queue="default",task="sys.echo"} 1`)
	require.NotContains(t, workerMetrics, "flotilla_beat_")
}

func metricsText(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// TestDevAddressTaken: a taken address is the error, before anything is
// started or printed.
func TestDevAddressTaken(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	cfg := config.Default(config.RoleDev)
	cfg.DataDir = t.TempDir()
	cfg.Web.Addr, cfg.API.Addr, cfg.Worker.Addr, cfg.Beat.Addr = freeAddr(t), ln.Addr().String(), freeAddr(t), freeAddr(t)
	var out bytes.Buffer
	start := time.Now()
	err = app.Run(t.Context(), cfg, app.Options{Registry: task.NewRegistry(), Stdout: &out})
	require.ErrorContains(t, err, "api: listen on "+ln.Addr().String()+": the address is already in use")
	require.Less(t, time.Since(start), 2*time.Second)
	require.NotContains(t, out.String(), "Flotilla dev is running")
}

func post(t *testing.T, u, body string, want int, out any) int {
	t.Helper()
	resp, err := http.Post(u, "application/json", bytes.NewBufferString(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	if want != 0 {
		require.Equal(t, want, resp.StatusCode)
	}
	if out != nil && resp.StatusCode < 300 {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	}
	return resp.StatusCode
}

func get(t *testing.T, u string, out any) int {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode == 200 && out != nil {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	}
	return resp.StatusCode
}

func dropDatabase(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, storetest.URL())
	if err != nil {
		t.Errorf("drop database %s: %v", name, err)
		return
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		t.Errorf("drop database %s: %v", name, err)
	}
}
