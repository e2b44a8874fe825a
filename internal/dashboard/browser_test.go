package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/flotilla/flotilla/internal/app"
	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
)

// The users every browser test logs in as.
const (
	adminName, adminPassword   = "ada", "admin-password-1"
	viewerName, viewerPassword = "vera", "viewer-password-1"
)

// failOnce is a task of these tests that fails its first run of each task
// id and succeeds afterwards: a dead letter of it succeeds when retried.
// (sys.fail counts the deliveries of one message, and a retried dead letter
// is a fresh message whose deliveries start again at 1, so sys.fail with
// {"times":1} would fail its retried run too.)
const failOnce = "dashtest.fail_once"

// TestDashboardInBrowser drives the dashboard in headless Chromium against
// the real roles (web with web.auth=required, worker and beat, each started
// by app.Run as in production) on an embedded NATS server, a PostgreSQL
// schema and a Redis key prefix of its own: it logs in, watches the
// overview follow 200 tasks live, creates a schedule through the form,
// pauses and resumes a queue, cancels a pending task, retries a dead letter,
// then checks what a viewer may see and do, and takes screenshots of every
// page in light and dark mode.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	b := newBrowser(t, s.base)
	shots := newShooter(t, b)

	// The login page, then logging in as the admin.
	b.do(t, "open /", chromedp.Navigate(s.base+"/"))
	b.do(t, "login page", chromedp.WaitVisible(chromedp.ID("login-form")))
	if loc := b.location(t); !strings.Contains(loc, "/login?next=%2F") {
		t.Fatalf("/ without a session went to %s, want /login?next=%%2F", loc)
	}
	shots.take(t, "login", nil)
	b.login(t, adminName, adminPassword)
	b.do(t, "overview after login", chromedp.WaitVisible(chromedp.ID("v-enq5")))
	if loc := b.location(t); loc != s.base+"/" {
		t.Fatalf("after login the browser is at %s, want %s/", loc, s.base)
	}

	// Overview: the cards and the 5-minute chart follow 200 tasks live.
	b.poll(t, "live updates connected", `document.getElementById("live").classList.contains("on")`, 10*time.Second)
	before := b.evalFloat(t, chartSum)
	if before < 0 {
		t.Fatal("the overview has no 5-minute chart (window.flotillaCharts[1])")
	}
	s.enqueueMany(t, 200, `{"task":"sys.echo","args":{"n":1}}`)
	b.poll(t, "cards count the 200 tasks", `Number(document.getElementById("v-enq5").textContent) >= 200 && Number(document.getElementById("v-ok5").textContent) >= 200`, 15*time.Second)
	b.poll(t, "5-minute chart shows the tasks", chartSum+` > `+strconv.FormatFloat(before, 'f', -1, 64), 10*time.Second)
	t.Logf("5-minute chart: enqueued+succeeded %v before, %v after; cards %s enqueued, %s succeeded", before, b.evalFloat(t, chartSum),
		b.text(t, "#v-enq5"), b.text(t, "#v-ok5"))

	// Schedules: the form shows the API's message next to the cron field,
	// then creates the schedule once the cron is fixed.
	b.do(t, "open /schedules", chromedp.Navigate(s.base+"/schedules"))
	clickLoad(t, b, "click New schedule", chromedp.CSS(`a[href="/schedules/new"]`))
	b.do(t, "fill the schedule form",
		chromedp.SendKeys(chromedp.ID("s-name"), "nightly-echo"),
		chromedp.SendKeys(chromedp.ID("s-task"), "sys.echo"),
		chromedp.SendKeys(chromedp.ID("s-cron"), "61 * * * *"),
		chromedp.Click(chromedp.CSS(`form.edit button[type=submit]`)),
	)
	b.poll(t, "cron field error", `document.querySelector('.field-error[data-for="cron"]').textContent.includes("61")`, 5*time.Second)
	if msg := b.text(t, `.field-error[data-for="cron"]`); !strings.Contains(msg, "61 * * * *") {
		t.Fatalf("cron field error = %q, want the API's message about %q", msg, "61 * * * *")
	}
	if inv := b.evalString(t, `document.getElementById("s-cron").getAttribute("aria-invalid") || ""`); inv != "true" {
		t.Fatalf("the cron input has aria-invalid=%q, want true", inv)
	}
	shots.takeHere(t, "schedule-form-error")
	// As a person does: to the end of the field, erase, type.
	b.do(t, "fix the cron", chromedp.SendKeys(chromedp.ID("s-cron"), kb.End+strings.Repeat(kb.Backspace, len("61 * * * *"))+"*/5 * * * *"))
	clickLoad(t, b, "click Create", chromedp.CSS(`form.edit button[type=submit]`))
	b.do(t, "back on /schedules with the new schedule", chromedp.WaitVisible(chromedp.CSS(`a[href="/schedules/nightly-echo/edit"]`)))
	if loc := b.location(t); loc != s.base+"/schedules" {
		t.Fatalf("after Create the browser is at %s, want /schedules", loc)
	}
	if row := b.text(t, `tbody tr`); !strings.Contains(row, "nightly-echo") || !strings.Contains(row, "*/5 * * * *") || !strings.Contains(row, "enabled") {
		t.Fatalf("schedules row = %q, want nightly-echo, */5 * * * *, enabled", row)
	}

	// Queues: pause default, enqueue, see the tasks wait, cancel one of
	// them on its page, resume, see the others succeed. /queues shows the
	// hub's snapshot (taken every 2 s), which may still be from before the
	// click when the page reloads after it.
	b.clickAct(t, "/queues", "POST /api/v1/queues/default/pause")
	b.waitPage(t, "/queues", "#q-default .badge", "paused", 10*time.Second)
	b.do(t, "queue paused", chromedp.Navigate(s.base+"/queues"),
		chromedp.WaitVisible(chromedp.CSS(`button[data-act="POST /api/v1/queues/default/resume"]`)))
	var ids []string
	for i := range 4 {
		ids = append(ids, s.enqueue(t, fmt.Sprintf(`{"task":"sys.echo","args":{"paused":%d}}`, i)))
	}
	// The queue page counts them pending once the hub has taken a
	// snapshot after the enqueues (every 2 s): by then the worker would
	// long have run them, were the queue not paused.
	b.waitPage(t, "/queues", "#q-default td:nth-child(2)", "4", 10*time.Second)
	b.do(t, "tasks waiting", chromedp.Navigate(s.base+"/tasks?state=PENDING"))
	for _, id := range ids {
		if st := b.text(t, `a[href="/tasks/`+id+`"]`); st != id {
			t.Fatalf("/tasks?state=PENDING does not list %s", id)
		}
	}
	shots.take(t, "tasks", nil) // the pending ones
	for _, id := range ids {
		b.wantState(t, id, task.StatePending)
	}

	cancelled := ids[0]
	b.do(t, "open a pending task", chromedp.Navigate(s.base+"/tasks/"+cancelled))
	b.acceptDialogs(t) // Cancel asks confirm()
	clickLoad(t, b, "click Cancel", chromedp.CSS(`button[data-act="POST /api/v1/tasks/`+cancelled+`/cancel"]`))
	b.do(t, "task cancelled", chromedp.WaitVisible(chromedp.CSS(`h1 .badge.CANCELLED`)))
	if n := b.dialogs(); n != 1 {
		t.Fatalf("%d dialogs were answered, want the one confirm() of Cancel", n)
	}

	b.clickAct(t, "/queues", "POST /api/v1/queues/default/resume")
	b.waitPage(t, "/queues", "#q-default .badge", "running", 10*time.Second)
	b.do(t, "queue resumed", chromedp.Navigate(s.base+"/queues"),
		chromedp.WaitVisible(chromedp.CSS(`button[data-act="POST /api/v1/queues/default/pause"]`)))
	// A resumed queue delivers when the worker issues its next pull
	// request (at most worker.PullExpiry, 3 s, later): nats-server 2.15.2
	// does not wake the waiting pulls of a consumer resumed through the
	// pause API.
	for _, id := range ids[1:] {
		b.waitPage(t, "/tasks/"+id, "h1 .badge", task.StateSuccess, 15*time.Second)
		b.wantState(t, id, task.StateSuccess)
	}
	b.wantState(t, cancelled, task.StateCancelled) // not run after the resume

	// Dead letters: a task that fails its first run is dead (max_retries
	// 0); Retry on /dead runs it again and it succeeds. A second one that
	// always fails stays, for the screenshots.
	s.enqueue(t, `{"task":"sys.fail","args":{},"max_retries":0}`)
	dead := s.enqueue(t, `{"task":"`+failOnce+`","args":{"ticket":42},"max_retries":0}`)
	b.waitPage(t, "/dead", "td.mono a", dead, 10*time.Second)
	b.wantState(t, dead, task.StateFailure)
	b.do(t, "open /dead", chromedp.Navigate(s.base+"/dead"))
	row := `[...document.querySelectorAll("tbody tr")].find(r => r.querySelector('a[href="/tasks/` + dead + `"]'))`
	b.do(t, "show the letters of the group", chromedp.Click(chromedp.JSPath(row+`.closest("details").querySelector("summary")`)))
	clickLoad(t, b, "click Retry of the letter", chromedp.JSPath(row+`.querySelector('button[data-act$="/requeue"]')`))
	b.do(t, "the letter left /dead", chromedp.WaitNotPresent(chromedp.CSS(`a[href="/tasks/`+dead+`"]`)))
	b.waitPage(t, "/tasks/"+dead, "h1 .badge", task.StateSuccess, 10*time.Second)
	b.wantState(t, dead, task.StateSuccess)
	if res := b.text(t, "main pre"); !strings.Contains(res, `"ticket": 42`) {
		t.Fatalf("retried task's page shows %q, want its args", res)
	}

	// Screenshots of every page as the admin, light and dark.
	shots.take(t, "task", func() { b.do(t, "task page", chromedp.Navigate(s.base+"/tasks/"+dead)) })
	for _, p := range []struct{ name, path, ready string }{
		{"overview", "/", liveUpdated},
		{"queues", "/queues", ""},
		{"schedules", "/schedules", ""},
		{"dead", "/dead", ""},
		{"workers", "/workers", ""},
		{"beat", "/beat", ""},
	} {
		shots.take(t, p.name, func() {
			b.do(t, "open "+p.path, chromedp.Navigate(s.base+p.path), chromedp.WaitVisible(chromedp.CSS("main h1")))
			if p.ready != "" {
				b.poll(t, p.name+" ready", p.ready, 10*time.Second)
			}
		})
	}
	shots.take(t, "tasks-all", func() { b.do(t, "tasks page", chromedp.Navigate(s.base+"/tasks")) })

	// Log out, log in as the viewer: no buttons that change anything, no
	// New schedule, and the API refuses what the page would not offer.
	clickLoad(t, b, "click Log out", chromedp.CSS(`button[data-act="POST /api/v1/logout"]`))
	b.do(t, "logged out", chromedp.WaitVisible(chromedp.ID("login-form")))
	if loc := b.location(t); !strings.HasSuffix(loc, "/login") {
		t.Fatalf("after Log out the browser is at %s, want /login", loc)
	}
	b.do(t, "open /tasks", chromedp.Navigate(s.base+"/tasks"))
	b.do(t, "sent to log in", chromedp.WaitVisible(chromedp.ID("login-form")))
	b.login(t, viewerName, viewerPassword)
	b.do(t, "back on /tasks", chromedp.WaitVisible(chromedp.ID("f-state")))
	if who := b.text(t, "header .user"); !strings.Contains(who, viewerName) || !strings.Contains(who, store.RoleViewer) {
		t.Fatalf("header shows %q, want %s (viewer)", who, viewerName)
	}
	for _, path := range []string{"/", "/queues", "/tasks", "/tasks?state=PENDING", "/tasks/" + cancelled, "/tasks/" + dead, "/schedules", "/dead", "/workers", "/beat"} {
		b.do(t, "open "+path, chromedp.Navigate(s.base+path), chromedp.WaitVisible(chromedp.CSS("main h1")))
		// Log out is the one action a viewer has.
		if acts := b.evalString(t, `[...document.querySelectorAll("[data-act]")].map(e => e.dataset.act).filter(a => a !== "POST /api/v1/logout").join(", ")`); acts != "" {
			t.Errorf("viewer sees action buttons on %s: %s", path, acts)
		}
		if n := b.evalFloat(t, `[...document.querySelectorAll("a")].filter(a => a.getAttribute("href") === "/schedules/new" || a.textContent.includes("New schedule")).length`); n != 0 {
			t.Errorf("viewer sees a New schedule link on %s", path)
		}
	}
	b.do(t, "open /dead", chromedp.Navigate(s.base+"/dead"), chromedp.WaitVisible(chromedp.CSS("main h1")))
	for _, act := range []string{
		"POST /api/v1/queues/default/pause",
		"POST /api/v1/tasks/" + dead + "/retry",
		"DELETE /api/v1/schedules/nightly-echo",
		"POST /api/v1/dead/requeue",
	} {
		method, url, _ := strings.Cut(act, " ")
		got := b.evalString(t, `(async () => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const r = await fetch(`+jsString(url)+`, {method: `+jsString(method)+`, credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: `+jsString(method)+` === "DELETE" ? undefined : '{"seqs":[1]}'});
  const body = await r.json().catch(() => ({}));
  return r.status + " " + (body.code || "") + " csrf=" + (csrf.length > 0);
})()`)
		if got != "403 forbidden csrf=true" {
			t.Errorf("viewer's %s with the CSRF token: %s, want 403 forbidden", act, got)
		}
	}
	shots.finish(t)
}

// TestDashboardNoConsoleErrors opens every page as the admin and fails on
// any uncaught exception, console.error call or error entry of the browser
// log: that is where CSP violations appear ("Refused to …", or in Chromium
// 156 "Executing inline script violates the following Content Security
// Policy directive …") and failed loads such as a missing favicon.
func TestDashboardNoConsoleErrors(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	b := newBrowser(t, s.base)

	var mu sync.Mutex
	var problems []string
	if err := chromedp.Listen(b.ctx, func(ev any) {
		var p string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			p = "exception: " + d.Text
			if d.Exception != nil {
				p += " " + d.Exception.Description
			}
			p += fmt.Sprintf(" (%s:%d)", d.URL, d.LineNumber+1)
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			var args []string
			for _, a := range ev.Args {
				if len(a.Value) > 0 {
					args = append(args, string(a.Value))
				} else {
					args = append(args, a.Description)
				}
			}
			p = "console.error: " + strings.Join(args, " ")
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level != cdplog.EntryLevelError {
				return
			}
			p = fmt.Sprintf("log %s: %s (%s:%d)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL, ev.Entry.LineNumber)
		default:
			return
		}
		mu.Lock()
		problems = append(problems, p)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}

	// Something on every page: a task, a schedule, a dead letter.
	id := s.enqueue(t, `{"task":"sys.echo","args":{"x":1}}`)
	s.enqueue(t, `{"task":"sys.fail","args":{},"max_retries":0}`)
	s.api(t, "POST", "/api/v1/schedules", `{"name":"every-minute","task":"sys.ping","cron":"* * * * *"}`, http.StatusCreated)

	b.do(t, "open /login", chromedp.Navigate(s.base+"/login"))
	b.settle(t)
	b.login(t, adminName, adminPassword)
	b.do(t, "overview", chromedp.WaitVisible(chromedp.ID("v-enq5")))
	// An update over SSE runs onUpdate and moves the charts.
	b.poll(t, "a live update", liveUpdated, 10*time.Second)
	b.settle(t)
	for _, path := range []string{"/queues", "/tasks", "/tasks?state=SUCCESS&since=1h", "/tasks/" + id, "/schedules", "/schedules/new",
		"/schedules/every-minute/edit", "/dead", "/workers", "/beat"} {
		b.do(t, "open "+path, chromedp.Navigate(s.base+path), chromedp.WaitVisible(chromedp.CSS("main h1")))
		b.settle(t)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser console: %s", p)
	}
}

// chartSum adds the enqueued and succeeded series of the overview's
// 5-minute chart (its uPlot data), or is -1 without the chart.
const chartSum = `(() => {
  const c = window.flotillaCharts && window.flotillaCharts[1];
  if (!c) return -1;
  const sum = (k) => c.data[k].reduce((a, v) => a + (v || 0), 0);
  return sum(1) + sum(2);
})()`

// liveUpdated is true once the overview has applied an update from
// /ui/live: the 5-minute chart's last second moved on since the first
// evaluation (kept in the page's window for the next ones).
const liveUpdated = `(() => {
  const c = window.flotillaCharts && window.flotillaCharts[1];
  if (!c) return false;
  const last = c.data[0][c.data[0].length - 1];
  if (window.flotillaTestFirst === undefined) window.flotillaTestFirst = last;
  return last > window.flotillaTestFirst;
})()`

// stack is the roles under test and what the tests use them with.
type stack struct {
	base  string // web's URL
	token string // an admin API token, for enqueues
	http  *http.Client
}

// startStack runs web (web.auth=required), worker and beat with app.Run,
// each with its configuration from config.Load, on an embedded NATS server
// (streams applied first, as `flotilla streams apply` does), a migrated
// PostgreSQL schema and a Redis key prefix of this test; it creates the
// admin and the viewer and an API token.
func startStack(t *testing.T) *stack {
	t.Helper()
	ns := jettest.Server(t)
	dbURL := storetest.SchemaURL(t)
	_, prefix := resultstest.Client(t)
	webAddr, workerAddr, beatAddr := localAddr(t), localAddr(t), localAddr(t)
	env := []string{
		"FLOTILLA_NATS_URL=" + ns.ClientURL(),
		"FLOTILLA_NATS_APPLY_STREAMS=false",
		"FLOTILLA_REDIS_URL=" + resultstest.URL(),
		"FLOTILLA_REDIS_PREFIX=" + prefix,
		"FLOTILLA_DATABASE_URL=" + dbURL,
		"FLOTILLA_WEB_ADDR=" + webAddr,
		"FLOTILLA_WORKER_ADDR=" + workerAddr,
		"FLOTILLA_BEAT_ADDR=" + beatAddr,
		"FLOTILLA_WEB_AUTH=required",
		"FLOTILLA_LOG_LEVEL=warn",
		"FLOTILLA_SHUTDOWN_TIMEOUT=5s",
	}
	cfgs := map[string]config.Config{}
	for _, role := range []string{config.RoleWeb, config.RoleWorker, config.RoleBeat} {
		// worker.name names the worker, and beat's replica in the lease.
		cfg, err := config.Load(role, config.LoadOptions{Environ: slices.Concat(env, []string{"FLOTILLA_WORKER_NAME=" + role + "-1"})})
		if err != nil {
			t.Fatalf("config for %s: %v", role, err)
		}
		cfgs[role] = cfg
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, js := jettest.Connect(t, ns.ClientURL())
	topo, err := jet.LoadTopology(app.TopologyParams(cfgs[config.RoleWorker]))
	if err != nil {
		t.Fatal(err)
	}
	if err := jet.ApplyStreams(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	if err := jet.ApplyQueues(ctx, js, topo, cfgs[config.RoleWorker].Worker.Queues); err != nil {
		t.Fatal(err)
	}

	reg := task.NewRegistry()
	systasks.Register(reg)
	var seen sync.Map // task ids that ran once
	reg.Handle(failOnce, func(_ context.Context, env *task.Envelope) (any, error) {
		if _, again := seen.LoadOrStore(env.ID, true); !again {
			return nil, errors.New("fails its first run, as asked")
		}
		return map[string]bool{"succeeded": true}, nil
	})

	logs := &lockedBuffer{}
	runCtx, stop := context.WithCancel(context.Background())
	errs := make(chan error, 3)
	for role, cfg := range cfgs {
		go func() {
			err := app.Run(runCtx, cfg, app.Options{Registry: reg, Stdout: logs, Version: "browser-test"})
			if err != nil {
				err = fmt.Errorf("%s: %w", role, err)
			}
			errs <- err
		}()
	}
	t.Cleanup(func() {
		stop()
		deadline := time.After(30 * time.Second)
		for range cfgs {
			select {
			case err := <-errs:
				if err != nil {
					t.Errorf("role stopped with: %v", err)
				}
			case <-deadline:
				t.Error("the roles did not stop within 30 s")
				return
			}
		}
		if t.Failed() {
			t.Logf("role logs (warn and above):\n%s", logs.String())
		}
	})

	s := &stack{base: "http://" + webAddr, http: &http.Client{Timeout: 10 * time.Second}}
	for _, addr := range []string{webAddr, workerAddr, beatAddr} {
		s.waitReady(t, "http://"+addr+"/readyz", errs)
	}

	pool, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st := store.New(pool)
	for _, u := range []struct{ name, password, role string }{{adminName, adminPassword, store.RoleAdmin}, {viewerName, viewerPassword, store.RoleViewer}} {
		hash, err := auth.HashPassword(u.password)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.UserCreate(ctx, u.name, hash, u.role); err != nil {
			t.Fatalf("create user %s: %v", u.name, err)
		}
	}
	if s.token, _, err = st.TokenCreate(ctx, "browser-test", store.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stack) waitReady(t *testing.T, url string, errs <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := s.http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 30 s (last: %v)", url, err)
		}
		select {
		case err := <-errs:
			t.Fatalf("a role stopped before %s was ready: %v", url, err)
		case <-tick.C:
		}
	}
}

// api calls web's REST API with the admin token and returns the answer's
// JSON object after checking its status.
func (s *stack) api(t *testing.T, method, path, body string, want int) map[string]any {
	t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %s %s, want %d", method, path, resp.Status, b, want)
	}
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// enqueue enqueues body through the REST API and returns the task id.
func (s *stack) enqueue(t *testing.T, body string) string {
	t.Helper()
	id, _ := s.api(t, "POST", "/api/v1/tasks", body, http.StatusAccepted)["id"].(string)
	if id == "" {
		t.Fatalf("enqueue %s: no id", body)
	}
	return id
}

// enqueueMany enqueues body n times, 16 at once.
func (s *stack) enqueueMany(t *testing.T, n int, body string) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req, _ := http.NewRequest("POST", s.base+"/api/v1/tasks", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+s.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := s.http.Do(req)
			if err != nil {
				errs <- err
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				errs <- fmt.Errorf("enqueue: %s", resp.Status)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// browser is one headless Chromium with one tab.
type browser struct {
	ctx  context.Context
	base string

	mu       sync.Mutex
	answered int
	listened bool
	wg       sync.WaitGroup
}

// chromiumPath is the browser the tests run: $FLOTILLA_CHROMIUM or the
// Debian package's /usr/bin/chromium.
func chromiumPath() string {
	if p := os.Getenv("FLOTILLA_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// newBrowser starts headless Chromium with a fresh profile; it is closed
// when the test ends.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	path := chromiumPath()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("Chromium is needed for the dashboard's browser tests and is not at %s (%v): install it with "+
			"`apt-get update && apt-get install -y chromium`, or set FLOTILLA_CHROMIUM to its path", path, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // the tests run as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	b := &browser{ctx: ctx, base: base}
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
		b.wg.Wait()
	})
	// The first run starts the browser; its life is ctx's, not a step's.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium (%s): %v", path, err)
	}
	b.do(t, "viewport", chromedp.EmulateViewport(1280, 800))
	return b
}

// stepTimeout bounds one step of a test in the browser.
const stepTimeout = 10 * time.Second

// do runs actions within stepTimeout.
func (b *browser) do(t *testing.T, step string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v (page %s)", step, err, b.locationOr())
	}
}

func runStep[T any](t *testing.T, b *browser, step string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v (page %s)", step, err, b.locationOr())
	}
	return v
}

// locationOr describes where the browser is, for a failure's message: the
// URL and the messages the page shows (toast, form and field errors).
func (b *browser) locationOr() string {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + [...document.querySelectorAll("#toast, .form-error, .field-error")]
  .filter((e) => e.textContent.trim() !== "").map((e) => " | " + (e.id || e.className) + ": " + e.textContent.trim()).join("")`))
	if err != nil {
		return "unknown"
	}
	return loc
}

func (b *browser) location(t *testing.T) string {
	t.Helper()
	return runStep(t, b, "location", chromedp.Location())
}

func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	return strings.TrimSpace(runStep(t, b, "text of "+sel, chromedp.TextContent(chromedp.CSS(sel))))
}

func (b *browser) evalString(t *testing.T, expr string) string {
	t.Helper()
	return runStep(t, b, "evaluate", chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
}

func (b *browser) evalFloat(t *testing.T, expr string) float64 {
	t.Helper()
	return runStep(t, b, "evaluate", chromedp.Evaluate[float64](expr, chromedp.EvalAwaitPromise))
}

// poll waits until the JavaScript expression expr is truthy in the page.
func (b *browser) poll(t *testing.T, what, expr string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d+2*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(d))); err != nil {
		t.Fatalf("waiting for %s: %v (page %s)", what, err, b.locationOr())
	}
}

// settle waits until the page has loaded and its deferred scripts ran.
func (b *browser) settle(t *testing.T) {
	t.Helper()
	b.poll(t, "page loaded", `document.readyState === "complete"`, 5*time.Second)
}

// waitPage waits until the page at path, as the browser gets it with its
// session, has an element sel whose text contains want: the pages do not
// refresh themselves, so this stands for the person reloading.
func (b *browser) waitPage(t *testing.T, path, sel, want string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d+2*time.Second)
	defer cancel()
	expr := fmt.Sprintf(`(async (path, sel, want, ms) => {
  const end = Date.now() + ms;
  for (;;) {
    const r = await fetch(path, {credentials: "same-origin", cache: "no-store"});
    if (r.ok) {
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      if ([...doc.querySelectorAll(sel)].some((e) => e.textContent.trim().includes(want))) return true;
    }
    if (Date.now() > end) return false;
    await new Promise((res) => setTimeout(res, 100));
  }
})(%s, %s, %s, %d)`, jsString(path), jsString(sel), jsString(want), d.Milliseconds())
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr, chromedp.EvalAwaitPromise))
	if err != nil || !ok {
		t.Fatalf("waiting for %q in %s of %s: %v", want, sel, path, err)
	}
}

// wantState opens task id's page and checks its state badge.
func (b *browser) wantState(t *testing.T, id, state string) {
	t.Helper()
	b.do(t, "open task "+id, chromedp.Navigate(b.base+"/tasks/"+id), chromedp.WaitVisible(chromedp.CSS("h1 .badge")))
	if got := b.text(t, "h1 .badge"); got != state {
		t.Fatalf("task %s shows %s, want %s", id, got, state)
	}
}

// clickLoad clicks sel and waits for the page load it leads to: every
// button of the dashboard reloads the page, or goes to another, once the
// API has answered.
func clickLoad[S chromedp.Selectable](t *testing.T, b *browser, step string, sel S) {
	t.Helper()
	runStep(t, b, step, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(sel)))
}

// clickAct opens path and clicks the button that calls act.
func (b *browser) clickAct(t *testing.T, path, act string) {
	t.Helper()
	b.do(t, "open "+path, chromedp.Navigate(b.base+path))
	clickLoad(t, b, "click "+act, chromedp.CSS(`button[data-act="`+act+`"]`))
}

// login fills the login form, which is open.
func (b *browser) login(t *testing.T, name, password string) {
	t.Helper()
	b.do(t, "log in as "+name,
		chromedp.WaitVisible(chromedp.ID("login-form")),
		chromedp.SendKeys(chromedp.ID("name"), name),
		chromedp.SendKeys(chromedp.ID("password"), password),
	)
	clickLoad(t, b, "click Log in", chromedp.CSS(`#login-form button[type=submit]`))
}

// acceptDialogs answers every JavaScript dialog (confirm()) of the tab
// with OK from now on. A dialog blocks the page, and with it the click that
// opened it, so the answer comes from another goroutine.
func (b *browser) acceptDialogs(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.listened {
		return
	}
	b.listened = true
	err := chromedp.Listen(b.ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); !ok {
			return
		}
		// Listen's func runs in the tab's event loop: no command here.
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
			defer cancel()
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err == nil {
				b.mu.Lock()
				b.answered++
				b.mu.Unlock()
			}
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (b *browser) dialogs() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.answered
}

// shooter takes the screenshots: 1280×800 PNGs in light and dark mode,
// written to $FLOTILLA_ARTIFACTS (relative to the repository root; default
// artifacts/dashboard, git-ignored); with FLOTILLA_UPDATE_SCREENSHOTS=1 also
// overview-light.png and queues-dark.png to docs/screenshots/ for the
// README.
type shooter struct {
	b     *browser
	dir   string
	docs  string
	taken []string
}

func newShooter(t *testing.T, b *browser) *shooter {
	t.Helper()
	root := repoRoot(t)
	dir := os.Getenv("FLOTILLA_ARTIFACTS")
	switch {
	case dir == "":
		dir = filepath.Join(root, "artifacts", "dashboard")
	case !filepath.IsAbs(dir):
		dir = filepath.Join(root, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &shooter{b: b, dir: dir}
	if os.Getenv("FLOTILLA_UPDATE_SCREENSHOTS") == "1" {
		s.docs = filepath.Join(root, "docs", "screenshots")
		if err := os.MkdirAll(s.docs, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// forDocs are the screenshots the README shows.
var forDocs = map[string]bool{"overview-light.png": true, "queues-dark.png": true}

// take shoots name in light then dark mode, running open before each (to
// load the page in that mode: the charts take their colors at load);
// nil open shoots the page as it is, switching the mode in place.
func (s *shooter) take(t *testing.T, name string, open func()) {
	t.Helper()
	for _, mode := range []string{"light", "dark"} {
		s.media(t, mode)
		if open != nil {
			open()
			s.b.settle(t)
		}
		s.save(t, name+"-"+mode+".png")
	}
	s.media(t, "light")
}

// takeHere shoots the page as it is, without reloading it.
func (s *shooter) takeHere(t *testing.T, name string) { s.take(t, name, nil) }

func (s *shooter) media(t *testing.T, scheme string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.b.ctx, stepTimeout)
	defer cancel()
	_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
	})
	if err != nil {
		t.Fatalf("emulate prefers-color-scheme: %s: %v", scheme, err)
	}
}

func (s *shooter) save(t *testing.T, file string) {
	t.Helper()
	png := runStep(t, s.b, "screenshot "+file, chromedp.CaptureScreenshot())
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s is not a PNG", file)
	}
	if err := os.WriteFile(filepath.Join(s.dir, file), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if s.docs != "" && forDocs[file] {
		if err := os.WriteFile(filepath.Join(s.docs, file), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.taken = append(s.taken, file)
}

// finish checks that every page was shot.
func (s *shooter) finish(t *testing.T) {
	t.Helper()
	for _, name := range []string{"overview", "queues", "tasks", "task", "schedules", "schedule-form-error", "dead", "workers", "beat", "login"} {
		for _, mode := range []string{"light", "dark"} {
			found := false
			for _, f := range s.taken {
				found = found || f == name+"-"+mode+".png"
			}
			if !found {
				t.Errorf("no screenshot %s-%s.png", name, mode)
			}
		}
	}
	t.Logf("%d screenshots in %s", len(s.taken), s.dir)
}

// repoRoot is the directory of go.mod above the test's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func localAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// lockedBuffer collects the roles' logs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
