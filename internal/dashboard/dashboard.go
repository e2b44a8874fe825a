// Package dashboard is the web role's dashboard at /: server-rendered
// pages (html/template, embedded with the static files), a small script of
// Flotilla's own and uPlot for the charts, both vendored, and live figures
// over Server-Sent Events from one [Hub] per process. Pages read through
// the same services as the REST API; every change a page makes is a call
// of the REST API under /api/v1 with the session's CSRF token, so roles,
// validation and the audit log apply as they do for programs.
package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/queues"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// CSP is the dashboard's Content-Security-Policy: scripts, styles and
// connections of its own origin only, no inline script or style.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Tasks reads task states (implemented by client.Client).
type Tasks interface {
	Get(ctx context.Context, id string) (results.State, error)
	Search(ctx context.Context, q results.Query) (results.Page, error)
}

// Schedules reads schedules (implemented by store.Store).
type Schedules interface {
	ScheduleList(ctx context.Context) ([]schedule.Schedule, error)
	ScheduleGet(ctx context.Context, name string) (schedule.Schedule, error)
}

// Config configures the dashboard; nil sources hide their pages' data.
type Config struct {
	Hub       *Hub
	Tasks     Tasks
	Schedules Schedules
	// Dead lists the newest dead letters.
	Dead func(ctx context.Context, limit int) ([]wire.DeadLetter, error)
	// Registry names the tasks for the forms' suggestions.
	Registry *task.Registry
	// AuthOff shows the banner of web.auth=none.
	AuthOff bool
	// NextRun computes a schedule's next fire (web.WithNextRun).
	NextRun func(schedule.Schedule, time.Time) schedule.Schedule
	Now     func() time.Time
}

// Dashboard serves the pages.
type Dashboard struct {
	cfg Config
	log zerolog.Logger
}

// New returns the dashboard.
func New(cfg Config, log zerolog.Logger) *Dashboard {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Dashboard{cfg: cfg, log: log}
}

// Mount adds the pages, /static/ and /ui/live to e. Pages need the viewer
// role (auth.Auth sends people who are not logged in to /login).
func (d *Dashboard) Mount(e *echo.Echo) {
	viewer := []echo.MiddlewareFunc{pageHeaders, auth.Require(store.RoleViewer)}
	e.GET("/", d.overview, viewer...)
	e.GET("/queues", d.queues, viewer...)
	e.GET("/tasks", d.tasks, viewer...)
	e.GET("/tasks/:id", d.task, viewer...)
	e.GET("/schedules", d.schedules, viewer...)
	e.GET("/schedules/new", d.scheduleForm, append(viewer, auth.Require(store.RoleOperator))...)
	e.GET("/schedules/:name/edit", d.scheduleForm, append(viewer, auth.Require(store.RoleOperator))...)
	e.GET("/dead", d.dead, viewer...)
	e.GET("/workers", d.workers, viewer...)
	e.GET("/beat", d.beat, viewer...)
	e.GET(auth.LoginPage, d.login, pageHeaders)
	e.GET("/ui/live", d.live, auth.Require(store.RoleViewer))
	e.GET(auth.StaticPrefix+"*", d.static)
}

// pageHeaders sets the dashboard's CSP over the JSON one of every answer.
func pageHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("Cache-Control", "no-store")
		return next(c)
	}
}

func (d *Dashboard) static(c echo.Context) error {
	p := path.Clean("/" + c.Param("*"))
	b, err := fs.ReadFile(staticFS, "static"+p)
	if err != nil {
		return echo.ErrNotFound
	}
	ct := mime.TypeByExtension(path.Ext(p))
	if ct == "" {
		ct = "application/octet-stream"
	}
	h := c.Response().Header()
	if c.QueryParam("v") != "" {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	return c.Blob(http.StatusOK, ct, b)
}

// navItem is one link of the menu.
type navItem struct {
	Href, Label string
	Current     bool
}

// page is what every page's template gets.
type page struct {
	Title      string
	Nav        []navItem
	User       auth.Principal
	CSRF       string
	CanOperate bool
	IsAdmin    bool
	CanLogout  bool
	AuthOff    bool
	Live       bool
	Errors     []string
}

func (d *Dashboard) base(c echo.Context, current, title string) page {
	p, _ := auth.From(c)
	pg := page{Title: title, User: p, CSRF: p.CSRF, CanOperate: auth.Allows(p.Role, store.RoleOperator),
		IsAdmin: auth.Allows(p.Role, store.RoleAdmin), CanLogout: p.Session != "", AuthOff: d.cfg.AuthOff}
	for _, n := range [][2]string{{"/", "Overview"}, {"/queues", "Queues"}, {"/tasks", "Tasks"}, {"/schedules", "Schedules"},
		{"/dead", "Dead letters"}, {"/workers", "Workers"}, {"/beat", "Beat"}} {
		pg.Nav = append(pg.Nav, navItem{Href: n[0], Label: n[1], Current: n[0] == current})
	}
	if d.cfg.Hub != nil {
		for name := range d.cfg.Hub.Snapshot().Errors {
			pg.Errors = append(pg.Errors, name)
		}
		slices.Sort(pg.Errors)
	}
	return pg
}

func (d *Dashboard) render(c echo.Context, name string, data any) error {
	var b bytes.Buffer
	t := pages[name]
	root := "layout"
	if name == "login" {
		root = "login"
	}
	if err := t.ExecuteTemplate(&b, root, data); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	return c.HTMLBlob(http.StatusOK, b.Bytes())
}

func (d *Dashboard) hub() *Hub {
	if d.cfg.Hub == nil {
		d.cfg.Hub = NewHub(nil, Sources{}, d.log)
	}
	return d.cfg.Hub
}

func (d *Dashboard) overview(c echo.Context) error {
	h := d.hub()
	snap := h.Snapshot()
	start, series := h.Series(window - 1)
	sj, _ := json.Marshal(map[string]any{"start": start, "counts": series})
	last5 := h.Sum(300)
	data := struct {
		page
		Snap        *Snapshot
		Last5m      Counts
		FailureRate string
		Running     int
		LagP99      string
		MaxDepth    uint64
		SeriesJSON  template.JS
	}{page: d.base(c, "/", "Overview"), Snap: snap, Last5m: last5, SeriesJSON: template.JS(sj), LagP99: "–"} // json.Marshal escapes <, > and &
	data.Live = true
	if done := last5[1] + last5[2]; done > 0 {
		data.FailureRate = fmt.Sprintf("%.1f %%", 100*float64(last5[2])/float64(done))
	} else {
		data.FailureRate = "–"
	}
	for _, w := range snap.Workers {
		data.Running += len(w.Running)
	}
	for _, q := range snap.Queues {
		data.MaxDepth = max(data.MaxDepth, q.Pending)
	}
	data.MaxDepth = max(data.MaxDepth, 1)
	if st := snap.Beat.Stats; st != nil {
		data.LagP99 = fmt.Sprintf("%.1f ms", st.LagP99MS)
	}
	return d.render(c, "overview", data)
}

// queueRow is one queue with its finished-attempts history.
type queueRow struct {
	Stats queues.Stats
	Rate  []uint32
}

func (d *Dashboard) queues(c echo.Context) error {
	h := d.hub()
	data := struct {
		page
		Queues []queueRow
	}{page: d.base(c, "/queues", "Queues")}
	for _, q := range h.Snapshot().Queues {
		data.Queues = append(data.Queues, queueRow{Stats: q, Rate: h.QueueRate(q.Queue)})
	}
	return d.render(c, "queues", data)
}

func (d *Dashboard) tasks(c echo.Context) error {
	q := results.Query{State: c.QueryParam("state"), Task: c.QueryParam("task"), Queue: c.QueryParam("queue"), Cursor: c.QueryParam("cursor"), Limit: 50}
	data := struct {
		page
		Q                     results.Query
		Since, Until          string
		States                []string
		TaskNames, QueueNames []string
		Page                  results.Page
		Cursor                string
		NextURL, FirstURL     string
		Error                 string
	}{page: d.base(c, "/tasks", "Tasks"), Q: q, Since: c.QueryParam("since"), Until: c.QueryParam("until"), States: task.States, Cursor: q.Cursor}
	if d.cfg.Registry != nil {
		data.TaskNames = d.cfg.Registry.Names()
	}
	for _, s := range d.hub().Snapshot().Queues {
		data.QueueNames = append(data.QueueNames, s.Queue)
	}
	var err error
	if data.Since != "" {
		if q.Since, err = rest.ParseTimeOrAgo(data.Since, d.cfg.Now()); err != nil {
			data.Error = "since: " + err.Error()
		}
	}
	if data.Until != "" && data.Error == "" {
		if q.Until, err = rest.ParseTimeOrAgo(data.Until, d.cfg.Now()); err != nil {
			data.Error = "until: " + err.Error()
		}
	}
	if data.Error == "" && d.cfg.Tasks != nil {
		data.Page, err = d.cfg.Tasks.Search(c.Request().Context(), q)
		if err != nil {
			data.Error = rest.Translate(err).Body.Error
		}
	}
	v := c.QueryParams()
	v.Del("cursor")
	data.FirstURL = "/tasks?" + v.Encode()
	if data.Page.Next != "" {
		v.Set("cursor", data.Page.Next)
		data.NextURL = "/tasks?" + v.Encode()
	}
	return d.render(c, "tasks", data)
}

func (d *Dashboard) task(c echo.Context) error {
	if d.cfg.Tasks == nil {
		return echo.ErrNotFound
	}
	st, err := d.cfg.Tasks.Get(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	data := struct {
		page
		T     results.State
		Final bool
	}{page: d.base(c, "/tasks", "Task "+st.ID), T: st, Final: task.Final(st.State)}
	return d.render(c, "task", data)
}

// maxSchedules bounds the schedules one page lists.
const maxSchedules = 500

func (d *Dashboard) schedules(c echo.Context) error {
	filter := strings.TrimSpace(c.QueryParam("q"))
	data := struct {
		page
		Filter    string
		Schedules []schedule.Schedule
		Total     int
		More      bool
	}{page: d.base(c, "/schedules", "Schedules"), Filter: filter}
	if d.cfg.Schedules != nil {
		all, err := d.cfg.Schedules.ScheduleList(c.Request().Context())
		if err != nil {
			return err
		}
		now := d.cfg.Now()
		for _, sc := range all {
			if filter != "" && !strings.Contains(sc.Name, filter) && !strings.Contains(sc.Task, filter) {
				continue
			}
			data.Total++
			if len(data.Schedules) < maxSchedules {
				if d.cfg.NextRun != nil {
					sc = d.cfg.NextRun(sc, now)
				}
				data.Schedules = append(data.Schedules, sc)
			}
		}
		data.More = data.Total > len(data.Schedules)
	}
	return d.render(c, "schedules", data)
}

func (d *Dashboard) scheduleForm(c echo.Context) error {
	data := struct {
		page
		New       bool
		S         schedule.Schedule
		Misfires  []string
		TaskNames []string
	}{page: d.base(c, "/schedules", "Schedule"), New: c.Param("name") == "",
		S: schedule.Schedule{Enabled: true, Misfire: schedule.MisfireOnce}, Misfires: []string{schedule.MisfireOnce, schedule.MisfireSkip, schedule.MisfireCatchUp}}
	if d.cfg.Registry != nil {
		data.TaskNames = d.cfg.Registry.Names()
	}
	if !data.New {
		if d.cfg.Schedules == nil {
			return echo.ErrNotFound
		}
		sc, err := d.cfg.Schedules.ScheduleGet(c.Request().Context(), c.Param("name"))
		if err != nil {
			return err
		}
		data.S, data.Title = sc, "Schedule "+sc.Name
	}
	return d.render(c, "schedule_form", data)
}

// deadGroup is the dead letters of one task with one error.
type deadGroup struct {
	Task, Error string
	Sample      json.RawMessage
	Letters     []wire.DeadLetter
	Seqs        string
}

// maxDead bounds the dead letters one page reads.
const maxDead = 1000

func (d *Dashboard) dead(c echo.Context) error {
	data := struct {
		page
		Groups  []*deadGroup
		Shown   int
		Total   uint64
		AllSeqs string
	}{page: d.base(c, "/dead", "Dead letters"), Total: d.hub().Snapshot().Dead}
	if d.cfg.Dead != nil {
		ls, err := d.cfg.Dead(c.Request().Context(), maxDead)
		if err != nil {
			return err
		}
		data.Shown = len(ls)
		data.Total = max(data.Total, uint64(len(ls)))
		by := map[string]*deadGroup{}
		var all []string
		for _, l := range ls {
			errText, _, _ := strings.Cut(l.Error, "\n")
			key := l.Task + "\x00" + errText
			g := by[key]
			if g == nil {
				g = &deadGroup{Task: l.Task, Error: l.Error, Sample: l.Args}
				by[key] = g
				data.Groups = append(data.Groups, g)
			}
			g.Letters = append(g.Letters, l)
			s := strconv.FormatUint(l.Seq, 10)
			if g.Seqs != "" {
				g.Seqs += ","
			}
			g.Seqs += s
			all = append(all, s)
		}
		slices.SortStableFunc(data.Groups, func(a, b *deadGroup) int { return len(b.Letters) - len(a.Letters) })
		data.AllSeqs = strings.Join(all, ",")
	}
	return d.render(c, "dead", data)
}

func (d *Dashboard) workers(c echo.Context) error {
	data := struct {
		page
		Workers []wire.WorkerInfo
	}{page: d.base(c, "/workers", "Workers"), Workers: d.hub().Snapshot().Workers}
	return d.render(c, "workers", data)
}

func (d *Dashboard) beat(c echo.Context) error {
	data := struct {
		page
		Beat BeatView
	}{page: d.base(c, "/beat", "Beat"), Beat: d.hub().Snapshot().Beat}
	return d.render(c, "beat", data)
}

func (d *Dashboard) login(c echo.Context) error {
	next := c.QueryParam("next")
	// Only a path of this site: never an open redirect.
	if u, err := url.Parse(next); err != nil || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || u.Host != "" {
		next = "/"
	}
	return d.render(c, "login", struct{ Next string }{next})
}

// live streams one update per second to an open page (Server-Sent
// Events); a page that reads slowly misses updates, and past maxClients
// open pages it is a 503.
func (d *Dashboard) live(c echo.Context) error {
	h := d.hub()
	cl, ok := h.subscribe()
	if !ok {
		e := rest.NewError(http.StatusServiceUnavailable, "too_many_dashboards", "", fmt.Sprintf("more than %d dashboards are open on this web process", maxClients))
		e.RetryAfter = rest.RetryAfter
		return e
	}
	defer h.unsubscribe(cl)
	w := c.Response()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("retry: 3000\n\n"))
	w.Flush()
	ctx := c.Request().Context()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-cl.ch:
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return nil
			}
			w.Flush()
		case <-keep.C:
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
				return nil
			}
			w.Flush()
		}
	}
}
