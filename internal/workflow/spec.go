// Package workflow composes tasks: a chain runs its steps one after
// another, a group runs its members in parallel, a chord runs a group and
// then a callback with the members' results. A workflow is started by
// publishing its first tasks; the worker that finishes a step calls
// [Engine.Advance], which publishes what comes next. Every step is a task
// whose id is derived from the workflow id and the step's path, and every
// publish uses that id as its Nats-Msg-Id, so a step published twice (two
// workers finishing a group's last members at once, a worker killed after
// it published the next step and before it acked) is stored once.
//
// The definition and the progress of a workflow live in Redis next to the
// task states (<prefix>:wf:<id>), for as long as the task states do.
package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/task"
)

// Limits of a workflow definition.
const (
	// MaxDepth is how deeply composites nest: a chain of groups of chains
	// is depth 3.
	MaxDepth = 3
	// MaxFanOut is the most tasks one step publishes at once (one atomic
	// batch): the first tasks of a group's or chord's members.
	MaxFanOut = 1000
	// MaxTasks is the most tasks one workflow holds.
	MaxTasks = 10_000
)

// Callback policies of a chord whose members failed.
const (
	// OnFailureFail ends the chord FAILURE without running the callback.
	OnFailureFail = "fail"
	// OnFailureRun runs the callback anyway; it gets the errors too.
	OnFailureRun = "run"
)

// Step is one step of a workflow: a task (Task set) or a composite (one of
// Chain, Group, Chord). Its JSON form is an enqueue body
// ({"task": ..., "args": ..., "queue": ..., "max_retries": ...,
// "timeout": ...}, plus "pass_result") or {"chain": [...]}, {"group":
// [...]}, {"chord": {"group": [...], "callback": {...}}}.
type Step struct {
	Task       string          `json:"task,omitempty"`
	Args       json.RawMessage `json:"args,omitempty"`
	Queue      string          `json:"queue,omitempty"`
	MaxRetries *int            `json:"max_retries,omitempty"`
	Timeout    string          `json:"timeout,omitempty"`
	// PassResult: the step's args get the result of the step before it in
	// its chain as "previous" (for a group before it, the list of its
	// members' results).
	PassResult bool `json:"pass_result,omitempty"`

	Chain []Step `json:"chain,omitempty"`
	Group []Step `json:"group,omitempty"`
	Chord *Chord `json:"chord,omitempty"`
}

// Chord is a group and the callback that runs once every member finished.
type Chord struct {
	Group    []Step `json:"group"`
	Callback *Step  `json:"callback"`
	// CallbackOnFailure is OnFailureFail (the default) or OnFailureRun.
	CallbackOnFailure string `json:"callback_on_failure,omitempty"`
}

// Kind names what a step is: "task", "chain", "group" or "chord".
func (s *Step) Kind() string {
	switch {
	case s.Chain != nil:
		return "chain"
	case s.Group != nil:
		return "group"
	case s.Chord != nil:
		return "chord"
	}
	return "task"
}

// Parse decodes a workflow definition strictly (an unknown field is an
// error naming it) and validates it.
func Parse(b []byte) (Step, error) {
	var s Step
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Step{}, task.FieldErrorf("workflow", "%v", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return Step{}, task.FieldErrorf("workflow", "holds more than one JSON value")
	}
	return s, s.Validate()
}

// Validate checks a definition: the root is a composite, every step is
// exactly one thing, names and options are valid, and the limits hold.
// Errors are task.FieldErrors naming the step ("chain[1].group[3].task").
func (s *Step) Validate() error {
	if s.Kind() == "task" {
		if s.Task == "" {
			return task.FieldErrorf("workflow", `want {"chain": [...]}, {"group": [...]} or {"chord": {...}}`)
		}
		return task.FieldErrorf("workflow", "a single task is not a workflow: enqueue it with POST /api/v1/tasks, or wrap it in a chain")
	}
	n, err := s.check("", 1)
	if err != nil {
		return err
	}
	if n > MaxTasks {
		return task.FieldErrorf("workflow", "holds %d tasks; the limit is %d", n, MaxTasks)
	}
	return nil
}

// check validates s at path p (for messages) and depth d, and counts its tasks.
func (s *Step) check(p string, d int) (int, error) {
	kinds := 0
	for _, set := range []bool{s.Task != "", s.Chain != nil, s.Group != nil, s.Chord != nil} {
		if set {
			kinds++
		}
	}
	name := func(f string) string {
		if p == "" {
			return f
		}
		return p + "." + f
	}
	if kinds != 1 {
		return 0, task.FieldErrorf(orRoot(p), `a step is exactly one of a task ("task"), "chain", "group" or "chord"`)
	}
	if s.Task != "" {
		if err := task.ValidateName(s.Task); err != nil {
			return 0, task.FieldErrorf(name("task"), "%v", err)
		}
		if s.Queue != "" {
			if err := task.ValidateQueue(s.Queue); err != nil {
				return 0, task.FieldErrorf(name("queue"), "%v", err)
			}
		}
		if len(s.Args) > 0 && !task.IsJSONObject(s.Args) && string(s.Args) != "null" {
			return 0, task.FieldErrorf(name("args"), "must be a JSON object")
		}
		if s.Timeout != "" {
			if d, err := time.ParseDuration(s.Timeout); err != nil || d <= 0 {
				return 0, task.FieldErrorf(name("timeout"), "%q is not a positive Go duration such as 30s", s.Timeout)
			}
		}
		return 1, nil
	}
	if s.Args != nil || s.Queue != "" || s.MaxRetries != nil || s.Timeout != "" {
		return 0, task.FieldErrorf(orRoot(p), "args, queue, max_retries and timeout belong to a task, not to a %s", s.Kind())
	}
	if d > MaxDepth {
		return 0, task.FieldErrorf(orRoot(p), "nests deeper than %d levels of chain, group and chord", MaxDepth)
	}
	var members []Step
	field := s.Kind()
	switch {
	case s.Chain != nil:
		members = s.Chain
	case s.Group != nil:
		members = s.Group
	default:
		if s.Chord.Callback == nil {
			return 0, task.FieldErrorf(name("chord.callback"), "required: the task that runs after the group")
		}
		if s.Chord.Callback.Task == "" {
			return 0, task.FieldErrorf(name("chord.callback"), "must be a task")
		}
		switch s.Chord.CallbackOnFailure {
		case "", OnFailureFail, OnFailureRun:
		default:
			return 0, task.FieldErrorf(name("chord.callback_on_failure"), "is %q; want %q or %q", s.Chord.CallbackOnFailure, OnFailureFail, OnFailureRun)
		}
		members = s.Chord.Group
		field = "chord.group"
	}
	if len(members) == 0 {
		return 0, task.FieldErrorf(name(field), "is empty")
	}
	total := 0
	for i := range members {
		n, err := members[i].check(fmt.Sprintf("%s[%d]", name(field), i), d+1)
		if err != nil {
			return 0, err
		}
		total += n
	}
	if s.Chord != nil {
		n, err := s.Chord.Callback.check(name("chord.callback"), d+1)
		if err != nil {
			return 0, err
		}
		total += n
	}
	if s.Chain == nil {
		if n := s.fanOut(); n > MaxFanOut {
			return 0, task.FieldErrorf(name(field), "starts %d tasks at once; the limit is %d", n, MaxFanOut)
		}
	}
	return total, nil
}

func orRoot(p string) string {
	if p == "" {
		return "workflow"
	}
	return p
}

// fanOut is how many tasks starting s publishes.
func (s *Step) fanOut() int {
	switch {
	case s.Chain != nil:
		return s.Chain[0].fanOut()
	case s.Group != nil || s.Chord != nil:
		members := s.Group
		if s.Chord != nil {
			members = s.Chord.Group
		}
		n := 0
		for i := range members {
			n += members[i].fanOut()
		}
		return n
	}
	return 1
}

// Paths: the root is "", member i of a composite at p is p-i ("i" under
// the root), a chord's callback p-cb. A step's task id is <workflow id>-<path>.
const callbackToken = "cb"

func child(p string, i int) string { return join(p, strconv.Itoa(i)) }

func callback(p string) string { return join(p, callbackToken) }

func join(p, tok string) string {
	if p == "" {
		return tok
	}
	return p + "-" + tok
}

// parent splits p into its parent's path and its last token.
func parent(p string) (string, string) {
	i := strings.LastIndexByte(p, '-')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// TaskID is the id of the task at path p of workflow wf.
func TaskID(wf, p string) string { return wf + "-" + p }

// errNoStep: a path that names no step of the definition.
var errNoStep = errors.New("no such step")

// at is the step at path p.
func (s *Step) at(p string) (*Step, error) {
	cur := s
	if p == "" {
		return cur, nil
	}
	for _, tok := range strings.Split(p, "-") {
		if tok == callbackToken {
			if cur.Chord == nil {
				return nil, fmt.Errorf("%w: %s", errNoStep, p)
			}
			cur = cur.Chord.Callback
			continue
		}
		i, err := strconv.Atoi(tok)
		if err != nil || i < 0 {
			return nil, fmt.Errorf("%w: %s", errNoStep, p)
		}
		members := cur.members()
		if i >= len(members) {
			return nil, fmt.Errorf("%w: %s", errNoStep, p)
		}
		cur = &members[i]
	}
	return cur, nil
}

// members are the steps under a composite: a chain's steps, a group's or
// chord's members (not the callback).
func (s *Step) members() []Step {
	switch {
	case s.Chain != nil:
		return s.Chain
	case s.Group != nil:
		return s.Group
	case s.Chord != nil:
		return s.Chord.Group
	}
	return nil
}

// describe names a step for messages: its task, or its kind.
func (s *Step) describe() string {
	if s.Task != "" {
		return s.Task
	}
	return s.Kind()
}
