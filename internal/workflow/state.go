package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/task"
)

// State is a workflow as GET /api/v1/workflows/{id} shows it.
type State struct {
	ID    string `json:"id"`
	State string `json:"state"` // RUNNING, SUCCESS, FAILURE, CANCELLED
	// Error names the step that failed the workflow.
	Error      string          `json:"error,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	CreatedAt  *time.Time      `json:"created_at"`
	FinishedAt *time.Time      `json:"finished_at"`
	Root       Node            `json:"root"`
}

// Node is one step of a workflow and its state: a task's state as the
// task API shows it (WAITING while its turn has not come), a composite's
// SUCCESS or FAILURE once it ended, else RUNNING or WAITING.
type Node struct {
	Path   string          `json:"path"`
	ID     string          `json:"id"` // the task id; for a composite, its group id
	Kind   string          `json:"kind"`
	Task   string          `json:"task,omitempty"`
	State  string          `json:"state"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	// Steps are a chain's steps or a group's or chord's members.
	Steps    []Node `json:"steps,omitempty"`
	Callback *Node  `json:"callback,omitempty"`
}

// Get returns workflow wf with the state of every step.
func (e *Engine) Get(ctx context.Context, wf string) (State, error) {
	if !validID(wf) {
		return State{}, fmt.Errorf("%w: %s", ErrNotFound, wf)
	}
	m, err := e.rdb.HGetAll(ctx, e.key(wf)).Result()
	if err != nil {
		return State{}, unavailable("read workflow "+wf, err)
	}
	if len(m) == 0 || m["def"] == "" {
		return State{}, fmt.Errorf("%w: %s", ErrNotFound, wf)
	}
	var def Step
	if err := json.Unmarshal([]byte(m["def"]), &def); err != nil {
		return State{}, fmt.Errorf("workflow %s: stored definition: %w", wf, err)
	}
	var leaves []string
	walkTasks(&def, "", func(p string, _ *Step) { leaves = append(leaves, TaskID(wf, p)) })
	states := map[string]*results.State{}
	for i := 0; i < len(leaves); i += 1000 {
		batch := leaves[i:min(i+1000, len(leaves))]
		got, err := e.states.GetMany(ctx, batch)
		if err != nil {
			return State{}, err
		}
		for j, st := range got {
			if st != nil {
				states[batch[j]] = st
			}
		}
	}
	out := State{ID: wf, State: m["state"], Error: m["error"], CreatedAt: results.ParseTime(m["created_at"]), FinishedAt: results.ParseTime(m["finished_at"])}
	if r := m["result"]; r != "" {
		out.Result = json.RawMessage(r)
	}
	out.Root = node(wf, &def, "", m, states)
	return out, nil
}

// walkTasks calls fn for every task step under s (at path p).
func walkTasks(s *Step, p string, fn func(string, *Step)) {
	if s.Task != "" {
		fn(p, s)
		return
	}
	for i := range s.members() {
		walkTasks(&s.members()[i], child(p, i), fn)
	}
	if s.Chord != nil {
		walkTasks(s.Chord.Callback, callback(p), fn)
	}
}

// node is the state of step s at path p; m is the workflow's hash, states
// the task states by id.
func node(wf string, s *Step, p string, m map[string]string, states map[string]*results.State) Node {
	n := Node{Path: p, ID: wf, Kind: s.Kind(), Task: s.Task}
	if p != "" {
		n.ID = TaskID(wf, p)
	}
	if s.Task != "" {
		if st, ok := states[n.ID]; ok {
			n.State, n.Result, n.Error = st.State, st.Result, st.Error
		} else if rec := m["s:"+p]; rec != "" {
			// The task's state expired, or it could never be enqueued.
			n.State, n.Error = rec, m["e:"+p]
		} else {
			n.State = StateWaiting
		}
		return n
	}
	started := false
	for i := range s.members() {
		c := node(wf, &s.members()[i], child(p, i), m, states)
		started = started || c.State != StateWaiting
		n.Steps = append(n.Steps, c)
	}
	if s.Chord != nil {
		c := node(wf, s.Chord.Callback, callback(p), m, states)
		n.Callback = &c
	}
	switch rec := m["s:"+p]; {
	case rec != "":
		n.State, n.Error = rec, m["e:"+p]
		if r := m["r:"+p]; r != "" && r != "null" {
			n.Result = json.RawMessage(r)
		}
	case started:
		n.State = StateRunning
	default:
		n.State = StateWaiting
	}
	if p == "" && m["state"] == task.StateCancelled && n.State == StateRunning {
		n.State = task.StateCancelled
	}
	return n
}

// Group is a group or chord of a workflow, read as one.
type Group struct {
	ID       string `json:"id"`
	Workflow string `json:"workflow"`
	Kind     string `json:"kind"` // group or chord
	State    string `json:"state"`
	Size     int    `json:"size"`
	// Finished counts the members that ended, Succeeded and Failed how.
	Finished  int `json:"finished"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	// Results are the members' results in order (null where none yet).
	Results  []json.RawMessage `json:"results"`
	Members  []Node            `json:"members"`
	Callback *Node             `json:"callback,omitempty"`
	Error    string            `json:"error,omitempty"`
}

// Group returns the group or chord with id: a workflow id (its root) or a
// step id <workflow id>-<path>.
func (e *Engine) Group(ctx context.Context, id string) (Group, error) {
	wf, p, _ := strings.Cut(id, "-")
	st, err := e.Get(ctx, wf)
	if err != nil {
		return Group{}, err
	}
	n := &st.Root
	if p != "" {
		for _, tok := range strings.Split(p, "-") {
			next := (*Node)(nil)
			if tok == callbackToken {
				next = n.Callback
			} else {
				for i := range n.Steps {
					if n.Steps[i].Path == join(n.Path, tok) {
						next = &n.Steps[i]
					}
				}
			}
			if next == nil {
				return Group{}, fmt.Errorf("%w: %s", ErrNotFound, id)
			}
			n = next
		}
	}
	if n.Kind != "group" && n.Kind != "chord" {
		return Group{}, fmt.Errorf("%w: %s is a %s, not a group", ErrNotFound, id, n.Kind)
	}
	g := Group{ID: id, Workflow: wf, Kind: n.Kind, State: n.State, Size: len(n.Steps), Members: n.Steps, Callback: n.Callback, Error: n.Error}
	for _, m := range n.Steps {
		r := m.Result
		if len(r) == 0 {
			r = json.RawMessage("null")
		}
		g.Results = append(g.Results, r)
		switch m.State {
		case task.StateSuccess:
			g.Finished++
			g.Succeeded++
		case task.StateFailure, task.StateExpired, task.StateCancelled:
			g.Finished++
			g.Failed++
		}
	}
	return g, nil
}

// Cancel stops workflow wf: no further step starts, and every task of it
// still waiting (or running) is cancelled. It returns how many tasks were
// told; [ErrFinished] when the workflow already ended.
func (e *Engine) Cancel(ctx context.Context, wf, by string) (int, error) {
	st, err := e.Get(ctx, wf)
	if err != nil {
		return 0, err
	}
	if st.State != StateRunning {
		return 0, fmt.Errorf("%w: %s is %s", ErrFinished, wf, st.State)
	}
	k := e.key(wf)
	if err := e.rdb.HSet(ctx, k, "state", task.StateCancelled, "finished_at", e.now().UTC().Format(time.RFC3339Nano)).Err(); err != nil {
		return 0, unavailable("cancel workflow "+wf, err)
	}
	if e.cancel == nil {
		return 0, nil
	}
	n := 0
	var firstErr error
	var visit func(x *Node)
	visit = func(x *Node) {
		if x.Kind == "task" {
			switch x.State {
			case task.StatePending, task.StateStarted, task.StateRetry:
				err := e.cancel(ctx, x.ID, by)
				if err == nil {
					n++
				} else if firstErr == nil && errors.Is(err, results.ErrUnavailable) {
					firstErr = err
				}
			}
			return
		}
		for i := range x.Steps {
			visit(&x.Steps[i])
		}
		if x.Callback != nil {
			visit(x.Callback)
		}
	}
	visit(&st.Root)
	return n, firstErr
}
