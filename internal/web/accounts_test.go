package web_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/queues"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/revoke"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/storetest"
	"github.com/flotilla/flotilla/internal/systasks"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/web"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/workflow"
)

// accounts is a web role with users, sessions, tokens and the audit log,
// as app wires it outside dev.
type accounts struct {
	t     *testing.T
	url   string
	st    *store.Store
	now   *atomic.Int64 // the sessions' clock, Unix seconds
	token map[string]string
	// sessions is the web role's session store.
	sessions *auth.Sessions
	natsURL  string
	js       jetstream.JetStream
	rs       *results.Store
	reg      *task.Registry
}

func newAccounts(t *testing.T) *accounts {
	t.Helper()
	natsURL := jettest.Server(t).ClientURL()
	nc, js := jettest.Connect(t, natsURL)
	topo, err := jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)
	require.NoError(t, jet.ApplyStreams(t.Context(), js, topo))
	require.NoError(t, jet.ApplyQueues(t.Context(), js, topo, []string{"default"}))
	rdb, prefix := resultstest.Client(t)
	rs := results.New(rdb, results.Config{Prefix: prefix, TTL: time.Hour})
	t.Cleanup(rs.Close)
	reg := task.NewRegistry()
	systasks.Register(reg)
	cl := client.New(nc, js, rs, client.Config{Registry: reg, CheckRegistered: true})
	st := store.New(storetest.Pool(t))
	a := &accounts{t: t, st: st, now: &atomic.Int64{}, token: map[string]string{}, natsURL: natsURL, js: js, rs: rs, reg: reg}
	a.now.Store(time.Now().Unix())
	for name, role := range map[string]string{"ada": store.RoleAdmin, "oscar": store.RoleOperator, "vera": store.RoleViewer} {
		hash, err := auth.HashPassword(name + "-secret")
		require.NoError(t, err)
		_, err = st.UserCreate(t.Context(), name, hash, role)
		require.NoError(t, err)
		tok, _, err := st.TokenCreate(t.Context(), name+"-token", role)
		require.NoError(t, err)
		a.token[role] = tok
	}
	limit := auth.FailureLimit{Redis: rdb, Prefix: prefix, Limit: 8, Window: time.Minute}
	a.sessions = auth.NewSessions(auth.SessionConfig{
		Redis: rdb, Prefix: prefix, Idle: 2 * time.Second, Max: time.Hour, Failures: limit,
		Now: func() time.Time { return time.Unix(a.now.Load(), 0) },
	}, st, zerolog.Nop())
	cn := revoke.New(js, rs, jet.NewEvents(nc, wire.EventsAll))
	srv := httptest.NewServer(web.New(web.Config{
		MaxBodyBytes: 1 << 20, Schedules: st, Registry: reg, RequestTimeout: 5 * time.Second,
		Auth: auth.AuthRequired, Verify: auth.StoreVerifier(st), Sessions: a.sessions, Failures: limit, Audit: st,
		Queues: queues.New(js), Workers: fleet.Reader{JS: js}, Canceller: cn,
		Workflows: workflow.New(rs, cl, func(ctx context.Context, id, by string) error { _, err := cn.Cancel(ctx, id, by); return err }),
	}, cl, nil, zerolog.Nop()).Handler())
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

// browser is one person's cookie jar.
type browser struct {
	a    *accounts
	http *http.Client
	csrf string
}

func (a *accounts) browser() *browser {
	jar, err := cookiejar.New(nil)
	require.NoError(a.t, err)
	return &browser{a: a, http: &http.Client{Jar: jar}}
}

// do sends a request; auth is "csrf" (send the session's CSRF token),
// "Bearer <token>" or "".
func (b *browser) do(method, path, body, auth string) (int, map[string]any, http.Header) {
	t := b.a.t
	t.Helper()
	req, err := http.NewRequest(method, b.a.url+path, strings.NewReader(body))
	require.NoError(t, err)
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json") // with a body or without, see rest.RequireJSON
	}
	switch {
	case auth == "csrf":
		req.Header.Set("X-CSRF-Token", b.csrf)
	case auth != "":
		req.Header.Set("Authorization", auth)
	}
	resp, err := b.http.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	if len(raw) > 0 && raw[0] == '{' {
		require.NoError(t, json.Unmarshal(raw, &out), string(raw))
	}
	return resp.StatusCode, out, resp.Header
}

func (b *browser) login(name, password string) (int, map[string]any, http.Header) {
	code, out, h := b.do(http.MethodPost, "/api/v1/login", `{"name":"`+name+`","password":"`+password+`"}`, "")
	if code == http.StatusOK {
		b.csrf, _ = out["csrf_token"].(string)
	}
	return code, out, h
}

const echoTask = `{"task":"sys.echo","args":{"x":1}}`

// TestAccountsSessions: a person logs in, acts with the CSRF token, is
// refused without it, logs out; sessions end after the idle and the
// absolute limits; wrong passwords lock the user out.
func TestAccountsSessions(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	b := a.browser()

	code, _, _ := b.do(http.MethodGet, "/api/v1/schedules", "", "")
	require.Equal(t, http.StatusUnauthorized, code)
	code, out, _ := b.login("ada", "wrong password")
	require.Equal(t, http.StatusUnauthorized, code)
	require.Equal(t, "invalid_credentials", out["code"])
	code, _, _ = b.do(http.MethodPost, "/api/v1/login", `{"name":"ada"}`, "")
	require.Equal(t, http.StatusBadRequest, code)

	code, out, h := b.login("ada", "ada-secret")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "admin", out["role"])
	require.NotEmpty(t, b.csrf)
	cookie := h.Get("Set-Cookie")
	require.Contains(t, cookie, "flotilla_web=")
	require.Contains(t, cookie, "HttpOnly")
	require.Contains(t, cookie, "SameSite=Lax")
	require.NotContains(t, cookie, "Secure", "plain HTTP and not configured")

	code, out, _ = b.do(http.MethodGet, "/api/v1/me", "", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ada", out["name"])
	require.Equal(t, b.csrf, out["csrf_token"])

	// A state change by cookie needs the CSRF token; a read does not.
	code, out, _ = b.do(http.MethodPost, "/api/v1/tasks", echoTask, "")
	require.Equal(t, http.StatusForbidden, code)
	require.Equal(t, "csrf", out["code"])
	b2 := *b
	b2.csrf = "forged"
	code, _, _ = b2.do(http.MethodPost, "/api/v1/tasks", echoTask, "csrf")
	require.Equal(t, http.StatusForbidden, code)
	code, _, _ = b.do(http.MethodPost, "/api/v1/tasks", echoTask, "csrf")
	require.Equal(t, http.StatusAccepted, code)
	code, _, _ = b.do(http.MethodGet, "/api/v1/schedules", "", "")
	require.Equal(t, http.StatusOK, code)

	// Idle expiry: no request for longer than Idle (2 s here).
	time.Sleep(2500 * time.Millisecond)
	code, _, _ = b.do(http.MethodGet, "/api/v1/schedules", "", "")
	require.Equal(t, http.StatusUnauthorized, code, "idle session must have ended")

	// Absolute expiry: used all along, but Max after the login.
	code, _, _ = b.login("ada", "ada-secret")
	require.Equal(t, http.StatusOK, code)
	a.now.Add(int64(time.Hour/time.Second) + 1)
	code, _, _ = b.do(http.MethodGet, "/api/v1/schedules", "", "")
	require.Equal(t, http.StatusUnauthorized, code, "session past its maximum age")
	a.now.Store(time.Now().Unix())

	// Logout ends the session on the server, not only the cookie.
	code, _, _ = b.login("ada", "ada-secret")
	require.Equal(t, http.StatusOK, code)
	req, _ := http.NewRequest(http.MethodGet, a.url, nil)
	kept := b.http.Jar.Cookies(req.URL)
	code, _, _ = b.do(http.MethodPost, "/api/v1/logout", "", "csrf")
	require.Equal(t, http.StatusNoContent, code)
	b.http.Jar.SetCookies(req.URL, kept) // a stolen copy of the cookie
	code, _, _ = b.do(http.MethodGet, "/api/v1/schedules", "", "")
	require.Equal(t, http.StatusUnauthorized, code)

	// Ending a user's sessions (what `flotilla user rm|passwd|role` do)
	// logs out every browser of that user at once.
	o1, o2 := a.browser(), a.browser()
	for _, o := range []*browser{o1, o2} {
		code, _, _ = o.login("oscar", "oscar-secret")
		require.Equal(t, http.StatusOK, code)
	}
	require.NoError(t, a.sessions.EndUser(t.Context(), "oscar"))
	for _, o := range []*browser{o1, o2} {
		code, _, _ = o.do(http.MethodGet, "/api/v1/schedules", "", "")
		require.Equal(t, http.StatusUnauthorized, code)
	}
}

// TestAccountsRoles: viewers read, operators change tasks and schedules,
// admins also delete dead letters and read the audit log; tokens carry a
// role like users; every state change lands in the audit log.
func TestAccountsRoles(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	bearer := func(role string) string { return "Bearer " + a.token[role] }
	anon := a.browser()

	sched := `{"name":"nightly","task":"sys.echo","interval":"1h"}`
	for _, c := range []struct {
		who          string
		method, path string
		body         string
		want         int
	}{
		{store.RoleViewer, http.MethodGet, "/api/v1/schedules", "", http.StatusOK},
		{store.RoleViewer, http.MethodPost, "/api/v1/tasks", echoTask, http.StatusForbidden},
		{store.RoleViewer, http.MethodPost, "/api/v1/schedules", sched, http.StatusForbidden},
		{store.RoleViewer, http.MethodGet, "/api/v1/audit", "", http.StatusForbidden},
		{store.RoleOperator, http.MethodPost, "/api/v1/tasks", echoTask, http.StatusAccepted},
		{store.RoleOperator, http.MethodPost, "/api/v1/schedules", sched, http.StatusCreated},
		{store.RoleOperator, http.MethodPost, "/api/v1/schedules", sched, http.StatusConflict},
		{store.RoleOperator, http.MethodGet, "/api/v1/audit", "", http.StatusForbidden},
		{store.RoleAdmin, http.MethodDelete, "/api/v1/schedules/nightly", "", http.StatusNoContent},
		{store.RoleAdmin, http.MethodDelete, "/api/v1/schedules/nightly", "", http.StatusNotFound},
		{store.RoleAdmin, http.MethodGet, "/api/v1/audit?limit=0", "", http.StatusBadRequest},
	} {
		code, out, _ := anon.do(c.method, c.path, c.body, bearer(c.who))
		require.Equal(t, c.want, code, "%s %s %s: %v", c.who, c.method, c.path, out)
		if code == http.StatusForbidden {
			require.Equal(t, "forbidden", out["code"])
			require.Contains(t, out["error"], "role "+c.who)
		}
	}

	// A viewer's session is refused a change as well, CSRF token or not.
	v := a.browser()
	code, _, _ := v.login("vera", "vera-secret")
	require.Equal(t, http.StatusOK, code)
	code, _, _ = v.do(http.MethodPost, "/api/v1/tasks", echoTask, "csrf")
	require.Equal(t, http.StatusForbidden, code)

	// The audit log: who did what to what, and how it ended — refusals too.
	code, out, _ := anon.do(http.MethodGet, "/api/v1/audit", "", bearer(store.RoleAdmin))
	require.Equal(t, http.StatusOK, code)
	type entry struct{ actor, kind, action, target, result string }
	var got []entry
	for _, e := range out["entries"].([]any) {
		m := e.(map[string]any)
		got = append(got, entry{m["actor"].(string), m["actor_kind"].(string), m["action"].(string), m["target"].(string), m["result"].(string)})
	}
	require.Subset(t, got, []entry{
		{"vera-token", "token", "schedule.create", "", "forbidden"},
		{"oscar-token", "token", "schedule.create", "nightly", "ok"},
		{"oscar-token", "token", "schedule.create", "nightly", "conflict"},
		{"ada-token", "token", "schedule.delete", "nightly", "ok"},
		{"ada-token", "token", "schedule.delete", "nightly", "not_found"},
		{"vera", "user", "user.login", "vera", "ok"},
	})
	code, out, _ = anon.do(http.MethodGet, "/api/v1/audit?action=schedule.delete&limit=1", "", bearer(store.RoleAdmin))
	require.Equal(t, http.StatusOK, code)
	require.Len(t, out["entries"], 1)
	require.NotNil(t, out["next"], "a full page names the next")
}

// TestLoginLimit: eight wrong passwords lock the user out, even with the
// right password, until the window ends (and, from one address, that
// address too).
func TestLoginLimit(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	v := a.browser()
	for range 8 {
		code, out, _ := v.login("vera", "guess-guess")
		require.Equal(t, http.StatusUnauthorized, code)
		require.Equal(t, "invalid_credentials", out["code"])
	}
	code, out, h := v.login("vera", "vera-secret")
	require.Equal(t, http.StatusTooManyRequests, code)
	require.Equal(t, "too_many_failures", out["code"])
	require.NotEmpty(t, h.Get("Retry-After"))
	code, _, _ = v.do(http.MethodGet, "/api/v1/schedules", "", "Bearer "+a.token[store.RoleAdmin])
	require.Equal(t, http.StatusTooManyRequests, code, "the address is locked out too")
	es, err := a.st.AuditList(t.Context(), store.AuditFilter{Action: "user.login"})
	require.NoError(t, err)
	require.Len(t, es, 9)
	require.Equal(t, "too_many_failures", es[0].Result)
	require.Equal(t, "invalid_credentials", es[1].Result)
}
