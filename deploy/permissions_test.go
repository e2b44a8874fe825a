package deploy_test

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
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla"
	"github.com/flotilla/flotilla/internal/app"
	"github.com/flotilla/flotilla/internal/beat"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// natsUsers are the users of accounts.conf with the environment variable
// of their password.
var natsUsers = map[string]string{
	"web": "NATS_WEB_PASSWORD", "api": "NATS_API_PASSWORD", "worker": "NATS_WORKER_PASSWORD",
	"beat": "NATS_BEAT_PASSWORD", "client": "NATS_CLIENT_PASSWORD", "admin": "NATS_ADMIN_PASSWORD",
	"sys": "NATS_SYS_PASSWORD",
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// shippedServer starts a NATS server from deploy/nats/n1.conf and its
// accounts.conf as shipped, rewritten for one node on free loopback ports
// (no cluster block, the store in a temp dir); the passwords come from the
// environment, as in production. It returns the client URL of user.
func shippedServer(t *testing.T) func(user string) string {
	t.Helper()
	dir := t.TempDir()
	n1, err := os.ReadFile("nats/n1.conf")
	require.NoError(t, err)
	conf := string(n1)
	port := freePort(t)
	conf = regexp.MustCompile(`(?m)^listen:.*$`).ReplaceAllString(conf, fmt.Sprintf("listen: 127.0.0.1:%d", port))
	conf = regexp.MustCompile(`(?m)^http:.*$`).ReplaceAllString(conf, fmt.Sprintf("http: 127.0.0.1:%d", freePort(t)))
	conf = regexp.MustCompile(`(?m)^\s*store_dir:.*$`).ReplaceAllString(conf, "  store_dir: "+strings.ReplaceAll(filepath.Join(dir, "js"), `\`, `/`))
	conf = regexp.MustCompile(`(?s)\ncluster \{.*?\n\}\n`).ReplaceAllString(conf, "\n")
	require.NotContains(t, conf, "cluster {")
	require.Contains(t, conf, "include ./accounts.conf")
	accounts, err := os.ReadFile("nats/accounts.conf")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "accounts.conf"), accounts, 0o600))
	path := filepath.Join(dir, "n1.conf")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))

	passwords := map[string]string{}
	for user, env := range natsUsers {
		passwords[user] = user + "-" + strings.ToLower(env[5:9]) + "-pw"
		t.Setenv(env, passwords[user])
	}
	opts, err := server.ProcessConfigFile(path)
	require.NoError(t, err, "the shipped configuration does not load")
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return func(user string) string {
		return fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", user, url.QueryEscape(passwords[user]), port)
	}
}

// violations connects as a user and records the permission violations the
// server reports.
type violations struct {
	nc  *nats.Conn
	mu  sync.Mutex
	got []string
}

func connectAs(t *testing.T, u, inbox string) *violations {
	t.Helper()
	v := &violations{}
	nc, err := nats.Connect(u, nats.CustomInboxPrefix(inbox), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		v.mu.Lock()
		v.got = append(v.got, err.Error())
		v.mu.Unlock()
	}))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	v.nc = nc
	return v
}

// denied reports whether the server refused op on subject (a publish or a
// subscription) within a second.
func (v *violations) denied(op, subject string) bool {
	want := fmt.Sprintf("permissions violation for %s to %q", op, subject)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		v.mu.Lock()
		for _, e := range v.got {
			if strings.Contains(strings.ToLower(e), strings.ToLower(want)) {
				v.mu.Unlock()
				return true
			}
		}
		v.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// TestShippedPermissions starts NATS from the shipped configuration, runs
// every role as its own user through the whole flow — enqueue (now and
// delayed) and results, sync execution, beat leading and firing, queue
// stats, dead letters listed, requeued (idempotently) and deleted, a Go
// client waiting for a result — and then tries operations each user must
// not do: none may succeed.
func TestShippedPermissions(t *testing.T) {
	userURL := shippedServer(t)
	ctx := t.Context()

	// The admin applies the topology, the lease bucket included.
	adminCfg := config.Default(config.RoleCLI)
	adminCfg.NATS.URL = userURL("admin")
	adminCfg.NATS.ApplyStreams = true
	adminConns, err := app.Open(ctx, adminCfg, app.Needs{})
	require.NoError(t, err)
	require.NoError(t, jet.ApplyQueues(ctx, adminConns.JS, adminConns.Topology, []string{"default"}))
	adminConns.Close()

	_, prefix := resultstest.Client(t)
	dbURL := storetest.SchemaURL(t)
	pool, err := store.Open(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	token, _, err := store.New(pool).TokenCreate(ctx, "perm-test", store.RoleAdmin)
	require.NoError(t, err)

	reg := task.NewRegistry()
	systasks.Register(reg)
	addrs := map[string]string{}
	for _, role := range []string{config.RoleWeb, config.RoleAPI, config.RoleWorker, config.RoleBeat} {
		cfg := config.Default(role)
		cfg.NATS.URL = userURL(role)
		cfg.NATS.ApplyStreams = false
		cfg.Redis.URL, cfg.Redis.Prefix = resultstest.URL(), prefix
		cfg.Database.URL = dbURL
		cfg.Log.Level = "error"
		cfg.Beat.LeaseTTL, cfg.Beat.Grace = 10*time.Second, 20*time.Second
		cfg.Tasks.RetryBackoff = 10 * time.Millisecond
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		addrs[role] = "http://" + addr
		cfg.Web.Addr, cfg.API.Addr, cfg.Worker.Addr, cfg.Beat.Addr = addr, addr, addr, addr
		require.NoError(t, cfg.Validate(), role)
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan error, 1)
		go func() { done <- app.Run(rctx, cfg, app.Options{Registry: reg, Stdout: io.Discard}) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err, role)
			case <-time.After(40 * time.Second):
				t.Errorf("%s did not stop", role)
			}
		})
	}
	for role, base := range addrs {
		require.Eventually(t, func() bool { return status(t, http.MethodGet, base+"/readyz", "", "") == 200 },
			20*time.Second, 50*time.Millisecond, "%s ready as its NATS user", role)
	}
	web, api := addrs[config.RoleWeb], addrs[config.RoleAPI]

	// Enqueue now and delayed on web; the worker runs both.
	var enq struct{ ID string }
	call(t, http.MethodPost, web+"/api/v1/tasks", token, `{"task":"sys.echo","args":{"n":1}}`, 202, &enq)
	var delayed struct{ ID string }
	call(t, http.MethodPost, web+"/api/v1/tasks", token, `{"task":"sys.echo","args":{"n":2},"countdown":"1s"}`, 202, &delayed)
	for _, id := range []string{enq.ID, delayed.ID} {
		require.Eventually(t, func() bool {
			var s struct{ State string }
			return call(t, http.MethodGet, web+"/api/v1/tasks/"+id, token, "", 0, &s) == 200 && s.State == task.StateSuccess
		}, 20*time.Second, 50*time.Millisecond, "task %s runs", id)
	}
	// Sync execution through api: the worker answers with allow_responses.
	var ex struct{ Result map[string]any }
	require.Eventually(t, func() bool {
		return call(t, http.MethodPost, api+"/api/v1/exec/sys.echo", token, `{"y":3}`, 0, &ex) == 200
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, map[string]any{"y": 3.0}, ex.Result)
	// Beat leads in the bucket streams apply created, and fires.
	call(t, http.MethodPost, web+"/api/v1/schedules", token, `{"name":"perm-tick","task":"sys.ping","interval":"1s"}`, 201, nil)
	require.Eventually(t, func() bool {
		var sc struct {
			RunCount int64 `json:"run_count"`
		}
		return call(t, http.MethodGet, web+"/api/v1/schedules/perm-tick", token, "", 0, &sc) == 200 && sc.RunCount >= 2
	}, 30*time.Second, 100*time.Millisecond, "beat leads and fires as its user")
	var leader struct {
		Leader    string `json:"leader"`
		HasLeader bool   `json:"has_leader"`
	}
	call(t, http.MethodGet, web+"/api/v1/beat", token, "", 200, &leader)
	require.True(t, leader.HasLeader)
	// The leader puts its stats into the lease bucket as its user; the web
	// user reads them.
	webJS, err := jetstream.New(connectAs(t, userURL("web"), config.DefaultInboxPrefix("web")).nc)
	require.NoError(t, err)
	var bs wire.BeatStats
	require.Eventually(t, func() bool {
		bs, err = beat.Stats(ctx, webJS)
		return err == nil && bs.Fires >= 1
	}, 20*time.Second, 100*time.Millisecond, "beat publishes its stats, web reads them")
	require.Equal(t, leader.Leader, bs.Leader)
	require.NotEmpty(t, bs.Terms)
	require.Equal(t, leader.Leader, bs.Terms[0].ID)
	call(t, http.MethodGet, web+"/api/v1/queues", token, "", 200, nil)

	// The control plane as the web user: queue figures, pause and resume,
	// cancel (one delayed task, then by name), purge, the workers.
	call(t, http.MethodGet, web+"/api/v1/queues/default", token, "", 200, nil)
	call(t, http.MethodPost, web+"/api/v1/queues/default/pause", token, "", 200, nil)
	call(t, http.MethodPost, web+"/api/v1/queues/default/resume", token, "", 200, nil)
	var later struct{ ID string }
	call(t, http.MethodPost, web+"/api/v1/tasks", token, `{"task":"sys.echo","countdown":"1h"}`, 202, &later)
	call(t, http.MethodPost, web+"/api/v1/tasks/"+later.ID+"/cancel", token, "", 200, nil)
	call(t, http.MethodPost, web+"/api/v1/tasks", token, `{"task":"sys.echo","countdown":"1h"}`, 202, nil)
	var bulk struct{ Cancelled int }
	call(t, http.MethodPost, web+"/api/v1/tasks/cancel", token, `{"task":"sys.echo"}`, 200, &bulk)
	require.Equal(t, 1, bulk.Cancelled)
	call(t, http.MethodPost, web+"/api/v1/queues/default/purge?confirm=default", token, "", 200, nil)
	var workers struct{ Items []wire.WorkerInfo }
	require.Eventually(t, func() bool {
		return call(t, http.MethodGet, web+"/api/v1/workers", token, "", 200, &workers) == 200 && len(workers.Items) == 1
	}, 10*time.Second, 50*time.Millisecond, "the worker announces itself")
	call(t, http.MethodGet, web+"/api/v1/workers/"+url.PathEscape(workers.Items[0].ID), token, "", 200, nil)

	// Dead letters: listed, requeued once (a repeat is 404 and enqueues
	// nothing more), deleted, and a missing one is 404.
	var failed struct{ ID string }
	call(t, http.MethodPost, web+"/api/v1/tasks", token, `{"task":"sys.fail","max_retries":0}`, 202, &failed)
	var dead struct {
		Dead []struct {
			Seq uint64
			ID  string
		}
	}
	require.Eventually(t, func() bool {
		return call(t, http.MethodGet, web+"/api/v1/dead", token, "", 200, &dead) == 200 && len(dead.Dead) == 1
	}, 20*time.Second, 50*time.Millisecond)
	seq := dead.Dead[0].Seq
	call(t, http.MethodPost, fmt.Sprintf("%s/api/v1/dead/%d/requeue", web, seq), token, "", 202, nil)
	call(t, http.MethodPost, fmt.Sprintf("%s/api/v1/dead/%d/requeue", web, seq), token, "", 404, nil)
	require.Eventually(t, func() bool {
		return call(t, http.MethodGet, web+"/api/v1/dead", token, "", 200, &dead) == 200 && len(dead.Dead) == 1 && dead.Dead[0].Seq != seq
	}, 20*time.Second, 50*time.Millisecond, "the requeued task fails again, once")
	call(t, http.MethodDelete, fmt.Sprintf("%s/api/v1/dead/%d", web, dead.Dead[0].Seq), token, "", 204, nil)
	call(t, http.MethodDelete, fmt.Sprintf("%s/api/v1/dead/%d", web, dead.Dead[0].Seq), token, "", 404, nil)
	call(t, http.MethodDelete, web+"/api/v1/dead/999999", token, "", 404, nil)

	// A Go program as the client user waits for a result.
	c, err := flotilla.Dial(ctx, flotilla.ClientOptions{NATSURL: userURL("client"), RedisURL: resultstest.URL(), RedisPrefix: prefix})
	require.NoError(t, err)
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := c.EnqueueAndWait(wctx, "sys.echo", map[string]int{"z": 4}, flotilla.EnqueueOptions{})
	require.NoError(t, err)
	require.Equal(t, task.StateSuccess, res.State)

	// What each user must not do. A publish or subscription the server
	// refuses is reported to the client as a permissions violation.
	type op struct{ user, kind, subject string }
	var forbidden []op
	add := func(user, kind string, subjects ...string) {
		for _, s := range subjects {
			forbidden = append(forbidden, op{user, kind, s})
		}
	}
	const pub, sub = "publish", "subscription"
	for _, producer := range []string{"web", "api", "beat", "client"} {
		add(producer, sub, "_INBOX.>", "_INBOX_worker.>", "flotilla.exec.>", "tasks.>")
		add(producer, pub, "dead.default.sys.echo", "events.dead.default.sys.echo", "flotilla.notify.web.x.y",
			"$JS.API.STREAM.DELETE.TASKS", "$JS.API.STREAM.UPDATE.TASKS",
			"$JS.API.CONSUMER.MSG.NEXT.TASKS.q-default", "$JS.API.CONSUMER.DELETE.TASKS.q-default",
			"$JS.ACK.TASKS.q-default.1.1.1.1.1", "$KV.flotilla_workers.fake")
	}
	for _, producer := range []string{"api", "beat", "client"} {
		// Only web (the control plane) and admin cancel, purge and pause.
		add(producer, pub, "$JS.API.STREAM.PURGE.TASKS", "$KV.flotilla_cancel.x", "$JS.API.CONSUMER.PAUSE.TASKS.q-default")
	}
	add("web", sub, "_INBOX_api.>", "flotilla.notify.api.>")
	add("web", pub, "$KV.flotilla_beat.leader", "$KV.flotilla_beat.stats", "$JS.API.STREAM.CREATE.KV_flotilla_beat", "$JS.API.STREAM.PURGE.DEAD",
		"$JS.API.STREAM.MSG.DELETE.TASKS", "flotilla.exec.sys.echo")
	add("api", sub, "_INBOX_web.>", "flotilla.notify.web.>")
	add("api", pub, "$KV.flotilla_beat.leader", "$JS.API.STREAM.MSG.DELETE.DEAD", "events.started.default.sys.echo")
	add("client", sub, "_INBOX_web.>", "flotilla.notify.web.>")
	add("client", pub, "flotilla.exec.sys.echo", "$KV.flotilla_beat.leader")
	add("beat", sub, "_INBOX_web.>", "$KV.flotilla_beat.>")
	add("beat", pub, "$JS.API.STREAM.DELETE.KV_flotilla_beat", "$JS.API.STREAM.UPDATE.KV_flotilla_beat",
		"$JS.API.STREAM.PURGE.KV_flotilla_beat", "delayed.at.x", "flotilla.exec.sys.echo")
	add("worker", sub, "_INBOX.>", "_INBOX_web.>", "_INBOX_api.>", "flotilla.notify.>", "dead.>")
	add("worker", pub, "_INBOX_web.x", "_INBOX_api.x.y", "$KV.flotilla_beat.leader",
		"$JS.API.STREAM.DELETE.TASKS", "$JS.API.STREAM.PURGE.DEAD", "$JS.API.STREAM.MSG.DELETE.DEAD",
		"$JS.API.CONSUMER.CREATE.TASKS.q-evil", "$JS.API.CONSUMER.DELETE.TASKS.q-default",
		"$JS.API.STREAM.CREATE.EVIL", "$JS.API.STREAM.INFO.DEAD", "$SRV.PING", "$KV.flotilla_cancel.x",
		"$JS.API.STREAM.PURGE.TASKS", "$JS.API.CONSUMER.PAUSE.TASKS.q-default")
	add("web", pub, "$JS.API.STREAM.PURGE.KV_flotilla_cancel", "$JS.API.STREAM.DELETE.KV_flotilla_workers",
		"$JS.API.CONSUMER.CREATE.TASKS.q-evil")
	require.GreaterOrEqual(t, len(forbidden), 40)

	conns := map[string]*violations{}
	for user := range map[string]bool{"web": true, "api": true, "beat": true, "client": true, "worker": true} {
		conns[user] = connectAs(t, userURL(user), config.DefaultInboxPrefix(user))
	}
	for _, o := range forbidden {
		v := conns[o.user]
		if o.kind == pub {
			require.NoError(t, v.nc.Publish(o.subject, []byte("{}")))
		} else {
			_, err := v.nc.SubscribeSync(o.subject)
			require.NoError(t, err)
		}
	}
	allowed := 0
	for _, o := range forbidden {
		if !conns[o.user].denied(o.kind, o.subject) {
			allowed++
			t.Errorf("user %s may %s %s", o.user, o.kind, o.subject)
		}
	}
	t.Logf("%d forbidden operations tried, %d allowed", len(forbidden), allowed)

	// The detector is not vacuous: what a role needs is allowed.
	w := conns["worker"]
	_, err = w.nc.SubscribeSync("_INBOX_worker.x")
	require.NoError(t, err)
	require.NoError(t, w.nc.Publish("events.sent.default.sys.echo", []byte("{}")))
	require.NoError(t, w.nc.Flush())
	require.False(t, w.denied(sub, "_INBOX_worker.x"))
	require.False(t, w.denied(pub, "events.sent.default.sys.echo"))

	// A worker publishes final states only under flotilla.notify.
	evil := conns["web"]
	got, err := evil.nc.SubscribeSync("_INBOX_web.stolen")
	require.NoError(t, err)
	m := nats.NewMsg(wire.TaskSubject("default", "sys.echo"))
	m.Header.Set(wire.HeaderID, "notify-probe")
	m.Header.Set(wire.HeaderTask, "sys.echo")
	m.Header.Set(wire.HeaderNotify, "_INBOX_web.stolen")
	m.Data = []byte(`{}`)
	js, err := jetstream.New(evil.nc)
	require.NoError(t, err)
	_, err = js.PublishMsg(ctx, m)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var s struct{ State string }
		return call(t, http.MethodGet, web+"/api/v1/tasks/notify-probe", token, "", 0, &s) == 200 && s.State == task.StateSuccess
	}, 20*time.Second, 50*time.Millisecond)
	_, err = got.NextMsg(300 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "the worker published into an inbox")
}

func status(t *testing.T, method, u, token, body string) int {
	t.Helper()
	return call(t, method, u, token, body, 0, nil)
}

// call sends one request with token and a JSON body; want 0 accepts any
// status. It decodes a 2xx answer into out when set.
func call(t *testing.T, method, u, token, body string, want int, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, bytes.NewBufferString(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if want != 0 {
			require.NoError(t, err)
		}
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if want != 0 {
		require.Equal(t, want, resp.StatusCode, "%s %s: %s", method, u, b)
	}
	if out != nil && resp.StatusCode < 300 && len(b) > 0 {
		require.NoError(t, json.Unmarshal(b, out), string(b))
	}
	return resp.StatusCode
}
