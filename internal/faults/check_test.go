//go:build faults

package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bounds the issue sets.
const (
	readyBound = 2 * time.Second  // /readyz follows a dependency within this
	finalBound = 60 * time.Second // every task final after the dependency returns
)

// fault is one dependency outage: unusable from down until back.
type fault struct {
	what       string
	down, back time.Time
}

// check says what verify checks for one scenario.
type check struct {
	d      *driver
	faults []fault
	// affected roles must turn 503 within readyBound of each fault and
	// 200 within readyBound of its end; unaffected ones stay 200.
	affected, unaffected []*readyMon
	// skipDown: the fault need not make the role unready (it started
	// unready).
	skipDown bool
	// unaffectedGrace: unaffected roles may be unready this long after the
	// fault began.
	unaffectedGrace time.Duration
	// atMostOnce: the docs promise that a task that ran (or was running)
	// when this outage began does not run again; it names the promise.
	atMostOnce string
	// restarted workers lost their metrics: the metric count is partial.
	restarted map[*role]bool
	// backlog describes the queue when the fault began.
	backlog string
}

// summaries are printed by TestMain at the end of the run.
var (
	summaryMu sync.Mutex
	summaries []string
)

func addSummary(s string) {
	summaryMu.Lock()
	summaries = append(summaries, s)
	summaryMu.Unlock()
}

// verify checks every promise of the issue for one scenario and records
// its numbers.
func (s *stack) verify(c check) {
	t := s.t
	t.Helper()
	var sum strings.Builder
	fmt.Fprintf(&sum, "[%s]", s.name)
	for _, f := range c.faults {
		fmt.Fprintf(&sum, " %s %s..%s (%.1fs);", f.what, s.since(f.down), s.since(f.back), f.back.Sub(f.down).Seconds())
	}
	first, last := c.faults[0], c.faults[len(c.faults)-1]

	// 1. Every task was accepted in the end.
	if miss := c.d.missing(); len(miss) > 0 {
		var ex []string
		for _, id := range miss[:min(10, len(miss))] {
			a, _ := c.d.lastAnswer(id)
			ex = append(ex, a.String())
		}
		t.Errorf("%s: %d of %d tasks never accepted (driver stopped at %s); last answers:\n  %s",
			s.name, len(miss), len(c.d.specs), s.since(time.Now()), strings.Join(ex, "\n  "))
	}

	// 2. Every answer: 202, or 503 with Retry-After and a stable code,
	// within the deadline.
	answers := c.d.snapshot()
	var maxLat time.Duration
	var maxLatA answer
	codes := map[string]int{}
	problems := map[string][]answer{}
	before, during, after := 0, 0, 0
	for _, a := range answers {
		if a.Latency > maxLat {
			maxLat, maxLatA = a.Latency, a
		}
		k := strconv.Itoa(a.Status)
		if a.Code != "" {
			k += " " + a.Code
		}
		if a.Status == 0 {
			k = "no answer"
		}
		codes[k]++
		if p := a.problem(); p != "" {
			problems[p] = append(problems[p], a)
		}
		if a.Status == http.StatusAccepted {
			switch end := a.At.Add(a.Latency); {
			case end.Before(first.down):
				before++
			case end.Before(last.back):
				during++
			default:
				after++
			}
		}
	}
	for p, as := range problems {
		var ex []string
		for _, a := range as[:min(5, len(as))] {
			ex = append(ex, fmt.Sprintf("%s at %s (%+.2fs from the fault)", a, s.since(a.At), a.At.Sub(first.down).Seconds()))
		}
		t.Errorf("%s: %d enqueue answers: %s; e.g.\n  %s", s.name, len(as), p, strings.Join(ex, "\n  "))
	}
	fmt.Fprintf(&sum, " tasks %d (accepted before/during/after the fault %d/%d/%d); %s; answers %s; max latency %s (%s at %s)",
		len(c.d.specs), before, during, after, c.backlog, fmtCounts(codes), maxLat.Round(time.Millisecond), maxLatA.ID, s.since(maxLatA.At))

	// 3. Every accepted task ends SUCCESS with its result, within
	// finalBound of the dependency's return.
	deadline := last.back.Add(finalBound)
	states, finalAt := s.waitFinal(c.d.specs, deadline)
	var notDone, bad []string
	attemptsOver1, lost := 0, 0
	for _, sp := range c.d.specs {
		st, ok := states[sp.ID]
		switch {
		case !ok || st.http == http.StatusNotFound:
			lost++
			notDone = append(notDone, fmt.Sprintf("%s: no state (404: unknown or lost)", sp.ID))
		case st.State != "SUCCESS" && st.State != "FAILURE" && st.State != "EXPIRED":
			notDone = append(notDone, fmt.Sprintf("%s: still %s (attempts %d, worker %q, error %q)", sp.ID, st.State, st.Attempts, st.Worker, st.Error))
		case st.State != "SUCCESS":
			bad = append(bad, fmt.Sprintf("%s: %s attempts %d error %q", sp.ID, st.State, st.Attempts, st.Error))
		default:
			if p := resultProblem(sp, st.Result); p != "" {
				bad = append(bad, fmt.Sprintf("%s: SUCCESS but %s", sp.ID, p))
			}
		}
		if st.Attempts > 1 {
			attemptsOver1++
		}
	}
	if len(notDone) > 0 {
		t.Errorf("%s: %d tasks (%d without any state) not final %s after the dependency returned at %s (checked until %s):\n  %s",
			s.name, len(notDone), lost, finalBound, s.since(last.back), s.since(deadline), strings.Join(notDone[:min(15, len(notDone))], "\n  "))
	}
	if len(bad) > 0 {
		t.Errorf("%s: %d tasks did not succeed as asked:\n  %s", s.name, len(bad), strings.Join(bad[:min(15, len(bad))], "\n  "))
	}
	if !finalAt.IsZero() {
		fmt.Fprintf(&sum, "; all final %.1fs after the return", finalAt.Sub(last.back).Seconds())
	}

	// 4. Nothing dead-lettered.
	dead, err := s.deadLetters()
	switch {
	case err != nil:
		t.Errorf("%s: GET /api/v1/dead: %v", s.name, err)
	case len(dead) > 0:
		var ex []string
		for _, d := range dead[:min(10, len(dead))] {
			ex = append(ex, fmt.Sprintf("seq %d id %s task %s attempts %d at %s: %s", d.Seq, d.ID, d.Task, d.Attempts, s.since(d.Time), d.Error))
		}
		t.Errorf("%s: DEAD holds %d dead letters:\n  %s", s.name, len(dead), strings.Join(ex, "\n  "))
	}

	// 5. Readiness follows the dependency.
	end := time.Now()
	for _, m := range c.affected {
		for i, f := range c.faults {
			if !c.skipDown {
				down, ok := m.firstAfter(f.down, isNotReady)
				switch {
				case !ok || down.start.After(f.back):
					t.Errorf("%s: %s /readyz never answered 503 while %s (%s..%s); transitions: %s",
						s.name, m.role.name, f.what, s.since(f.down), s.since(f.back), m.transitions(s.start))
				case down.end.Sub(f.down) > readyBound:
					t.Errorf("%s: %s /readyz turned %d only %.2fs after %s (bound %s); transitions: %s",
						s.name, m.role.name, down.status, down.end.Sub(f.down).Seconds(), f.what, readyBound, m.transitions(s.start))
				}
			}
			up, ok := m.firstAfter(f.back, isReady)
			if !ok {
				t.Errorf("%s: %s /readyz not 200 again after %s ended at %s; transitions: %s",
					s.name, m.role.name, f.what, s.since(f.back), m.transitions(s.start))
				continue
			}
			if up.end.Sub(f.back) > readyBound {
				t.Errorf("%s: %s /readyz 200 again only %.2fs after %s ended (bound %s); transitions: %s",
					s.name, m.role.name, up.end.Sub(f.back).Seconds(), f.what, readyBound, m.transitions(s.start))
			}
			until := end
			if i+1 < len(c.faults) {
				until = c.faults[i+1].down
			}
			if flaps := m.notReadyBetween(up.end.Add(time.Millisecond), until); len(flaps) > 0 {
				t.Errorf("%s: %s /readyz answered %d at %s, after it was ready again at %s: %s",
					s.name, m.role.name, flaps[0].status, s.since(flaps[0].end), s.since(up.end), flaps[0].body)
			}
		}
		fmt.Fprintf(&sum, "; %s readyz", m.role.name)
		for _, f := range c.faults {
			if down, ok := m.firstAfter(f.down, isNotReady); ok && !down.start.After(f.back) {
				fmt.Fprintf(&sum, " %d %.2fs after the fault,", down.status, down.end.Sub(f.down).Seconds())
			}
			if up, ok := m.firstAfter(f.back, isReady); ok {
				fmt.Fprintf(&sum, " 200 %.2fs after the return", up.end.Sub(f.back).Seconds())
			}
		}
		fmt.Fprintf(&sum, " [%s]", m.transitions(first.down))
	}
	for _, m := range c.unaffected {
		if nr := m.notReadyBetween(first.down.Add(c.unaffectedGrace), end); len(nr) > 0 {
			t.Errorf("%s: %s /readyz should stay 200 (from %s after the fault) but answered %d at %s (%d such answers): %s",
				s.name, m.role.name, c.unaffectedGrace, nr[0].status, s.since(nr[0].end), len(nr), nr[0].body)
		}
		if c.unaffectedGrace > 0 {
			fmt.Fprintf(&sum, "; %s readyz [%s]", m.role.name, m.transitions(first.down))
		}
	}

	// 6. No role died.
	var skip []*role
	for r := range c.restarted {
		skip = append(skip, r)
	}
	s.checkAlive(skip...)

	// 7. How often each task ran: started events per id (EVENTS keeps
	// what workers published), and the workers' own counters.
	time.Sleep(500 * time.Millisecond) // let the last events reach EVENTS
	var events map[string][]event
	for try := 0; ; try++ {
		events, err = readEvents(s.natsURL, "started", "succeeded")
		if err == nil || try == 10 {
			break
		}
		time.Sleep(time.Second) // e.g. a restarted node still catching up
	}
	if err != nil {
		t.Errorf("%s: count events: %v", s.name, err)
	}
	// Tasks that ran more than once fall in two classes: a first run
	// that started before the dependency returned (running or held when
	// the fault hit), or every run after the return (copies a worker had
	// buffered while the fault lasted, redelivered meanwhile).
	extra, noEvent := 0, 0
	var multi, rerun, rerunEx, lateEx []string
	for _, sp := range c.d.specs {
		var starts []time.Time
		for _, ev := range events[sp.ID] {
			if ev.Kind == "started" {
				starts = append(starts, ev.Time)
			}
		}
		n := len(starts)
		if n == 0 {
			noEvent++
		}
		if n < 2 {
			continue
		}
		extra += n - 1
		multi = append(multi, fmt.Sprintf("%s×%d", sp.ID, n))
		sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
		var evs []string
		for _, ev := range events[sp.ID] {
			evs = append(evs, ev.at(s))
		}
		st := states[sp.ID]
		ex := fmt.Sprintf("%s (state: attempts %d, worker %s): %s", sp.ID, st.Attempts, st.Worker, strings.Join(evs, "; "))
		if starts[0].Before(last.back) {
			rerun = append(rerun, sp.ID)
			if len(rerunEx) < 2 {
				rerunEx = append(rerunEx, ex)
			}
		} else if len(lateEx) < 2 {
			lateEx = append(lateEx, ex)
		}
	}
	sort.Strings(multi)
	runs, partial := 0.0, false
	for _, w := range s.workers {
		if c.restarted[w] {
			partial = true
		}
		m, err := scrapeTasksTotal(w.url + "/metrics")
		if err != nil {
			partial = true
			continue
		}
		for k, v := range m {
			if strings.HasSuffix(k, "/sys.echo") || strings.HasSuffix(k, "/sys.sleep") {
				runs += v
			}
		}
	}
	metric := fmt.Sprintf("%.0f", runs)
	if partial {
		metric += " (partial: a worker restarted)"
	}
	fmt.Fprintf(&sum, "; runs: %d extra by started events (%d tasks ran more than once: %d had started before the return, %d ran only after it, twice; %d without a started event), flotilla_tasks_total %s for %d tasks, %d tasks with attempts > 1",
		extra, len(multi), len(rerun), len(multi)-len(rerun), noEvent, metric, len(c.d.specs), attemptsOver1)
	if len(multi) > 0 {
		fmt.Fprintf(&sum, "; e.g. %s", strings.Join(append(rerunEx, lateEx...), " | "))
	}
	// An enqueue answered publish_unconfirmed and repeated with its id
	// "runs at most once" (README): count those that ran more.
	uncMulti, unc := 0, 0
	c.d.mu.Lock()
	for id := range c.d.unconfirmed {
		unc++
		n := 0
		for _, ev := range events[id] {
			if ev.Kind == "started" {
				n++
			}
		}
		if n > 1 {
			uncMulti++
		}
	}
	c.d.mu.Unlock()
	if unc > 0 {
		fmt.Fprintf(&sum, "; of %d tasks answered publish_unconfirmed and sent again, %d ran more than once", unc, uncMulti)
	}
	if c.atMostOnce != "" && len(rerun) > 0 {
		t.Errorf("%s: %d tasks that started before the dependency returned ran again, though %s; e.g. %s",
			s.name, len(rerun), c.atMostOnce, strings.Join(rerunEx, " | "))
	}
	t.Log(sum.String())
	addSummary(sum.String())
}

func fmtCounts(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// taskState is GET /api/v1/tasks/{id}.
type taskState struct {
	http     int
	State    string          `json:"state"`
	Result   json.RawMessage `json:"result"`
	Error    string          `json:"error"`
	Attempts int             `json:"attempts"`
	Worker   string          `json:"worker"`
}

func isFinal(st taskState) bool {
	return st.State == "SUCCESS" || st.State == "FAILURE" || st.State == "EXPIRED"
}

// waitFinal polls the states of specs until all are final or deadline;
// it returns the last states and when the last one became final.
func (s *stack) waitFinal(specs []spec, deadline time.Time) (map[string]taskState, time.Time) {
	states := map[string]taskState{}
	pending := make([]string, 0, len(specs))
	for _, sp := range specs {
		pending = append(pending, sp.ID)
	}
	var mu sync.Mutex
	for {
		ids := make(chan string)
		var wg sync.WaitGroup
		var still []string
		for range 8 {
			wg.Go(func() {
				for id := range ids {
					st := taskState{}
					code, body, err := httpGet(s.web.url+"/api/v1/tasks/"+id, 3*time.Second)
					st.http = code
					if err == nil && code == http.StatusOK {
						_ = json.Unmarshal(body, &st)
					}
					mu.Lock()
					if prev, ok := states[id]; !ok || code == http.StatusOK || prev.http != http.StatusOK {
						states[id] = st
					}
					if !isFinal(states[id]) {
						still = append(still, id)
					}
					mu.Unlock()
				}
			})
		}
		for _, id := range pending {
			ids <- id
		}
		close(ids)
		wg.Wait()
		pending = still
		if len(pending) == 0 {
			return states, time.Now()
		}
		if time.Now().After(deadline) {
			return states, time.Time{}
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// resultProblem checks a SUCCESS result against what the task was asked.
func resultProblem(sp spec, res json.RawMessage) string {
	var got any
	if err := json.Unmarshal(res, &got); err != nil {
		return fmt.Sprintf("result %q is not JSON", res)
	}
	var want any
	switch sp.Task {
	case "sys.echo":
		b, _ := json.Marshal(sp.Args)
		_ = json.Unmarshal(b, &want)
	case "sys.sleep":
		_ = json.Unmarshal([]byte(fmt.Sprintf(`{"slept_ms":%v}`, sp.Args["ms"])), &want)
	default:
		return ""
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Sprintf("result %s, want %v", res, want)
	}
	return ""
}

type deadLetter struct {
	Seq      uint64    `json:"seq"`
	ID       string    `json:"id"`
	Task     string    `json:"task"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	Time     time.Time `json:"time"`
}

func (s *stack) deadLetters() ([]deadLetter, error) {
	code, body, err := httpGet(s.web.url+"/api/v1/dead?limit=1000", 5*time.Second)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", code, body)
	}
	var v struct {
		Dead []deadLetter `json:"dead"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	return v.Dead, nil
}

// event is a lifecycle event read back from EVENTS.
type event struct {
	Kind    string    `json:"kind"`
	ID      string    `json:"id"`
	Attempt int       `json:"attempt"`
	Worker  string    `json:"worker"`
	Time    time.Time `json:"time"`
}

func (e event) at(s *stack) string {
	return fmt.Sprintf("%s attempt %d on %s at %s", e.Kind, e.Attempt, e.Worker, s.since(e.Time))
}

// readEvents returns the events of the given kinds per task id from EVENTS.
func readEvents(natsURL string, kinds ...string) (map[string][]event, error) {
	nc, err := nats.Connect(natsURL, nats.Timeout(3*time.Second))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var subjects []string
	for _, k := range kinds {
		subjects = append(subjects, "events."+k+".>")
	}
	cons, err := js.OrderedConsumer(ctx, "EVENTS", jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	if err != nil {
		return nil, err
	}
	out := map[string][]event{}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return out, err
		}
		n, pending := 0, uint64(1)
		for m := range batch.Messages() {
			n++
			var ev event
			if json.Unmarshal(m.Data(), &ev) == nil {
				out[ev.ID] = append(out[ev.ID], ev)
			}
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		if n == 0 || pending == 0 {
			return out, batch.Error()
		}
	}
	return out, ctx.Err()
}

// scrapeTasksTotal sums flotilla_tasks_total per "outcome/task" on a
// /metrics page.
func scrapeTasksTotal(url string) (map[string]float64, error) {
	code, body, err := httpGet(url, 3*time.Second)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("status %d", code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "flotilla_tasks_total{") {
			continue
		}
		j := strings.LastIndex(line, " ")
		if j < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[j+1:], 64)
		if err == nil {
			out[label(line, "outcome")+"/"+label(line, "task")] += v
		}
	}
	return out, nil
}

// label is the value of label name in a Prometheus text line.
func label(line, name string) string {
	i := strings.Index(line, name+`="`)
	if i < 0 {
		return ""
	}
	v := line[i+len(name)+2:]
	if j := strings.Index(v, `"`); j >= 0 {
		return v[:j]
	}
	return v
}
