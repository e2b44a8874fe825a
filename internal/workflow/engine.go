package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/task"
)

// States of a workflow and of its composite steps, besides the task states.
const (
	StateRunning = "RUNNING"
	// StateWaiting: a step whose turn has not come (not published yet).
	StateWaiting = "WAITING"
)

// Errors.
var (
	// ErrNotFound: no workflow (or group) with that id, or it expired.
	ErrNotFound = errors.New("workflow not found")
	// ErrFinished: the workflow already ended; nothing to cancel.
	ErrFinished = errors.New("workflow already finished")
)

// Producer publishes tasks: the client's atomic batch.
type Producer interface {
	EnqueueBatch(ctx context.Context, rs []client.Request) ([]client.Result, error)
	// Prepare validates one request (task name, queue, options).
	Prepare(r client.Request) (*client.Prepared, error)
}

// CancelFunc cancels one task (revoke.Canceller.Cancel); an error for a
// task already finished or unknown is ignored.
type CancelFunc func(ctx context.Context, id, by string) error

// Engine starts workflows, moves them on as their steps finish, and
// answers their state.
type Engine struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	states *results.Store
	prod   Producer
	cancel CancelFunc
	now    func() time.Time

	mu   sync.Mutex
	defs map[string]*Step // definitions are immutable: cached by id
}

// New returns an engine keeping workflows next to the task states of rs
// and publishing through prod; cancel may be nil (then Cancel only stops
// the workflow from starting further steps).
func New(rs *results.Store, prod Producer, cancel CancelFunc) *Engine {
	return &Engine{rdb: rs.Redis(), prefix: rs.Prefix(), ttl: rs.TTL(), states: rs, prod: prod, cancel: cancel,
		now: time.Now, defs: map[string]*Step{}}
}

func (e *Engine) key(wf string) string { return e.prefix + ":wf:" + wf }

func (e *Engine) doneKey(wf, p string) string { return e.key(wf) + ":d:" + p }

func unavailable(op string, err error) error {
	return fmt.Errorf("%s: %w: %w", op, results.ErrUnavailable, err)
}

// StartOptions of [Engine.Start].
type StartOptions struct {
	// ID of the workflow (A-Z a-z 0-9 _, at most 40): starting the same id
	// again publishes nothing new within the dedup window. Default: a ULID.
	ID string
	// Origin is recorded on its tasks ("web", "beat/<schedule>", ...).
	Origin string
}

// Start records the workflow def and publishes its first tasks; it returns
// the workflow id. Errors: a task.FieldError for a bad definition,
// client errors (unknown task or queue, unavailable) from the publish.
func (e *Engine) Start(ctx context.Context, def Step, o StartOptions) (string, error) {
	if err := def.Validate(); err != nil {
		return "", err
	}
	if err := e.check(&def); err != nil {
		return "", err
	}
	id := o.ID
	if id == "" {
		id = ulid.Make().String()
	} else if !validID(id) {
		return "", task.FieldErrorf("id", "%q is invalid: want 1 to 40 characters of A-Z a-z 0-9 _", id)
	}
	b, err := json.Marshal(def)
	if err != nil {
		return "", err
	}
	k := e.key(id)
	pipe := e.rdb.TxPipeline()
	pipe.HSetNX(ctx, k, "def", b)
	pipe.HSetNX(ctx, k, "state", StateRunning)
	pipe.HSetNX(ctx, k, "created_at", e.now().UTC().Format(time.RFC3339Nano))
	pipe.Expire(ctx, k, e.ttl)
	if _, err := pipe.Exec(ctx); err != nil {
		return "", unavailable("start workflow", err)
	}
	stored, err := e.def(ctx, id)
	if err != nil {
		return "", err
	}
	if err := e.start(ctx, wfRun{id: id, root: stored, origin: o.Origin}, "", stored, nil); err != nil {
		return "", err
	}
	return id, nil
}

// check validates every task of def as an enqueue would (registered
// name, queue, options), so that a workflow is refused at its start rather
// than failing at the step.
func (e *Engine) check(def *Step) error {
	var err error
	walkNamed(def, "", "", func(name, p string, s *Step) {
		if err != nil {
			return
		}
		var reqs []client.Request
		if err = entries("check", s, p, nil, "", &reqs); err != nil {
			err = task.FieldErrorf(name+".args", "%v", err)
			return
		}
		if _, perr := e.prod.Prepare(reqs[0]); perr != nil {
			var fe *task.FieldError
			if errors.As(perr, &fe) {
				err = task.FieldErrorf(name+"."+fe.Field, "%s", fe.Msg)
			} else {
				err = task.FieldErrorf(name+".task", "%v", perr)
			}
		}
	})
	return err
}

// walkNamed calls fn for every task step under s with its name in the
// definition ("chain[1].group[0]") and its path.
func walkNamed(s *Step, name, p string, fn func(name, p string, s *Step)) {
	field := func(f string, i int) string {
		if name == "" {
			return fmt.Sprintf("%s[%d]", f, i)
		}
		return fmt.Sprintf("%s.%s[%d]", name, f, i)
	}
	switch {
	case s.Task != "":
		fn(name, p, s)
	case s.Chain != nil:
		for i := range s.Chain {
			walkNamed(&s.Chain[i], field("chain", i), child(p, i), fn)
		}
	case s.Group != nil:
		for i := range s.Group {
			walkNamed(&s.Group[i], field("group", i), child(p, i), fn)
		}
	case s.Chord != nil:
		for i := range s.Chord.Group {
			walkNamed(&s.Chord.Group[i], field("chord.group", i), child(p, i), fn)
		}
		cb := "chord.callback"
		if name != "" {
			cb = name + "." + cb
		}
		walkNamed(s.Chord.Callback, cb, callback(p), fn)
	}
}

func validID(id string) bool {
	if id == "" || len(id) > 40 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// def is workflow wf's definition.
func (e *Engine) def(ctx context.Context, wf string) (*Step, error) {
	e.mu.Lock()
	d, ok := e.defs[wf]
	e.mu.Unlock()
	if ok {
		return d, nil
	}
	b, err := e.rdb.HGet(ctx, e.key(wf), "def").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, wf)
	}
	if err != nil {
		return nil, unavailable("read workflow "+wf, err)
	}
	d = new(Step)
	if err := json.Unmarshal(b, d); err != nil {
		return nil, fmt.Errorf("workflow %s: stored definition: %w", wf, err)
	}
	e.mu.Lock()
	if len(e.defs) >= 10_000 {
		clear(e.defs)
	}
	e.defs[wf] = d
	e.mu.Unlock()
	return d, nil
}

// wfRun is the workflow a step belongs to: its id, its definition, and the
// origin its tasks carry (the starter's, which a finished step's task
// brings along: no read of the workflow's record for it).
type wfRun struct {
	id     string
	root   *Step
	origin string
}

// start publishes the first tasks of step s at path p of workflow r as
// one atomic batch; prev is the result of the step before it in its chain.
func (e *Engine) start(ctx context.Context, r wfRun, p string, s *Step, prev json.RawMessage) error {
	state, err := e.rdb.HGet(ctx, e.key(r.id), "state").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return unavailable("read workflow "+r.id, err)
	}
	if state == task.StateCancelled {
		return nil
	}
	var reqs []client.Request
	if err := entries(r.id, s, p, prev, r.origin, &reqs); err != nil {
		return e.complete(ctx, r, p, false, nil, err.Error())
	}
	_, err = e.prod.EnqueueBatch(ctx, reqs)
	switch {
	case err == nil, errors.Is(err, client.ErrBatchDuplicate):
		// Published now, or by a worker that got here first.
		return nil
	case errors.Is(err, client.ErrInvalid), errors.Is(err, client.ErrUnknownTask), errors.Is(err, client.ErrUnknownQueue),
		errors.Is(err, client.ErrTooLarge):
		// It can never be published: the step fails.
		return e.complete(ctx, r, p, false, nil, "could not enqueue: "+err.Error())
	}
	return err
}

// entries appends the requests that start step s at path p.
func entries(wf string, s *Step, p string, prev json.RawMessage, origin string, out *[]client.Request) error {
	switch {
	case s.Chain != nil:
		return entries(wf, &s.Chain[0], child(p, 0), prev, origin, out)
	case s.Group != nil || s.Chord != nil:
		for i, m := range s.members() {
			if err := entries(wf, &m, child(p, i), prev, origin, out); err != nil {
				return err
			}
		}
		return nil
	}
	args := s.Args
	if string(args) == "null" {
		args = nil
	}
	if s.PassResult {
		if prev == nil {
			prev = json.RawMessage("null")
		}
		var err error
		if args, err = withField(args, "previous", prev); err != nil {
			return err
		}
	}
	r := client.Request{
		ID: TaskID(wf, p), Task: s.Task, Queue: s.Queue, Args: args, MaxRetries: s.MaxRetries,
		Origin: origin, Workflow: wf, Step: p,
	}
	if s.Timeout != "" {
		r.Timeout, _ = time.ParseDuration(s.Timeout) // validated
	}
	*out = append(*out, r)
	return nil
}

// withField returns the JSON object args with field k set to v.
func withField(args json.RawMessage, k string, v json.RawMessage) (json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if len(args) > 0 {
		if err := json.Unmarshal(args, &m); err != nil {
			return nil, fmt.Errorf("args: %w", err)
		}
	}
	m[k] = v
	return json.Marshal(m)
}

// Advance moves the workflow of env's task on after the task ended in
// state (SUCCESS, or FAILURE, EXPIRED, CANCELLED) with result or errMsg.
// Workers call it after recording the state and before acking the task,
// and retry it while it fails: every step is idempotent. A task of no
// workflow, or of one that expired, is nothing to do.
func (e *Engine) Advance(ctx context.Context, env *task.Envelope, state string, result json.RawMessage, errMsg string) error {
	if env.Workflow == "" {
		return nil
	}
	def, err := e.def(ctx, env.Workflow)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	ok := state == task.StateSuccess
	if !ok && errMsg == "" {
		errMsg = strings.ToLower(state)
	}
	return e.complete(ctx, wfRun{id: env.Workflow, root: def, origin: env.Origin}, env.Step, ok, result, errMsg)
}

// complete records that the step at path p ended and does what follows:
// the next step of its chain, the end of its group, its chord's callback,
// or the end of the workflow.
func (e *Engine) complete(ctx context.Context, r wfRun, p string, ok bool, result json.RawMessage, errMsg string) error {
	st := task.StateSuccess
	if !ok {
		st = task.StateFailure
	}
	k := e.key(r.id)
	pipe := e.rdb.TxPipeline()
	pipe.HSet(ctx, k, "s:"+p, st, "r:"+p, string(orNull(result)), "e:"+p, errMsg)
	pipe.Expire(ctx, k, e.ttl)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("record workflow step", err)
	}
	if p == "" {
		return e.finish(ctx, r.id, st, result, errMsg)
	}
	pp, last := parent(p)
	par, err := r.root.at(pp)
	if err != nil {
		return fmt.Errorf("workflow %s: %w", r.id, err)
	}
	switch {
	case par.Chain != nil:
		i, _ := strconv.Atoi(last)
		switch {
		case !ok:
			return e.complete(ctx, r, pp, false, nil, fmt.Sprintf("step %d (%s) failed: %s", i, par.Chain[i].describe(), errMsg))
		case i+1 < len(par.Chain):
			return e.start(ctx, r, child(pp, i+1), &par.Chain[i+1], result)
		}
		return e.complete(ctx, r, pp, true, result, "")
	case par.Chord != nil && last == callbackToken:
		if !ok {
			errMsg = fmt.Sprintf("callback (%s) failed: %s", par.Chord.Callback.Task, errMsg)
		}
		return e.complete(ctx, r, pp, ok, result, errMsg)
	}

	// A member of a group or chord: the last one to finish ends it.
	members := par.members()
	dk := e.doneKey(r.id, pp)
	pipe = e.rdb.TxPipeline()
	pipe.SAdd(ctx, dk, last)
	pipe.Expire(ctx, dk, e.ttl)
	n := pipe.SCard(ctx, dk)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("record group member", err)
	}
	if int(n.Val()) < len(members) {
		return nil
	}
	res, fails, err := e.gather(ctx, r.id, pp, len(members))
	if err != nil {
		return err
	}
	list, _ := json.Marshal(res)
	if par.Group != nil {
		if len(fails) > 0 {
			return e.complete(ctx, r, pp, false, list, fmt.Sprintf("%d of %d members failed; first, member %d (%s): %s",
				len(fails), len(members), fails[0].Index, members[fails[0].Index].describe(), fails[0].Error))
		}
		return e.complete(ctx, r, pp, true, list, "")
	}
	if len(fails) > 0 && par.Chord.CallbackOnFailure != OnFailureRun {
		return e.complete(ctx, r, pp, false, list, fmt.Sprintf("%d of %d members failed, callback not run; first, member %d (%s): %s",
			len(fails), len(members), fails[0].Index, members[fails[0].Index].describe(), fails[0].Error))
	}
	cb := *par.Chord.Callback
	if cb.Args, err = withField(cb.Args, "results", list); err != nil {
		return e.complete(ctx, r, pp, false, nil, "callback: "+err.Error())
	}
	if len(fails) > 0 {
		errs, _ := json.Marshal(fails)
		if cb.Args, err = withField(cb.Args, "errors", errs); err != nil {
			return e.complete(ctx, r, pp, false, nil, "callback: "+err.Error())
		}
	}
	cb.PassResult = false
	return e.start(ctx, r, callback(pp), &cb, nil)
}

// MemberError is a failed member in a chord callback's "errors".
type MemberError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// gather reads the results of the n members under p, in order, and the
// members that failed.
func (e *Engine) gather(ctx context.Context, wf, p string, n int) ([]json.RawMessage, []MemberError, error) {
	fields := make([]string, 0, 3*n)
	for i := range n {
		c := child(p, i)
		fields = append(fields, "s:"+c, "r:"+c, "e:"+c)
	}
	vals, err := e.rdb.HMGet(ctx, e.key(wf), fields...).Result()
	if err != nil {
		return nil, nil, unavailable("read group results", err)
	}
	str := func(v any) string { s, _ := v.(string); return s }
	res := make([]json.RawMessage, n)
	var fails []MemberError
	for i := range n {
		res[i] = orNull(json.RawMessage(str(vals[3*i+1])))
		if str(vals[3*i]) != task.StateSuccess {
			fails = append(fails, MemberError{Index: i, Error: str(vals[3*i+2])})
		}
	}
	return res, fails, nil
}

func orNull(r json.RawMessage) json.RawMessage {
	if len(r) == 0 {
		return json.RawMessage("null")
	}
	return r
}

// finish records the end of workflow wf, unless it was cancelled.
func (e *Engine) finish(ctx context.Context, wf, state string, result json.RawMessage, errMsg string) error {
	k := e.key(wf)
	cur, err := e.rdb.HGet(ctx, k, "state").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return unavailable("read workflow "+wf, err)
	}
	if cur == task.StateCancelled {
		return nil
	}
	pipe := e.rdb.TxPipeline()
	pipe.HSet(ctx, k, "state", state, "result", string(orNull(result)), "error", errMsg,
		"finished_at", e.now().UTC().Format(time.RFC3339Nano))
	pipe.Expire(ctx, k, e.ttl)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("finish workflow "+wf, err)
	}
	return nil
}
