package flotilla

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/workflow"
)

// Workflow is a step of a workflow: a task ([Call]), or a [Chain], [Group]
// or [Chord] of steps. Its JSON form is what POST /api/v1/workflows takes.
type Workflow = workflow.Step

// WorkflowState is a workflow and the state of every step; GroupState a
// group or chord read as one.
type (
	WorkflowState = workflow.State
	GroupState    = workflow.Group
)

// CallOptions are the options of a task step.
type CallOptions struct {
	Queue      string
	MaxRetries *int
	Timeout    time.Duration
	// PassResult gives the step the result of the step before it in its
	// chain, as its args' "previous" (a list for a group before it).
	PassResult bool
}

// Call is a task step: taskName with args (a value that encodes as a JSON
// object, json.RawMessage, or nil).
func Call(taskName string, args any, o ...CallOptions) Workflow {
	s := Workflow{Task: taskName}
	switch a := args.(type) {
	case nil:
	case json.RawMessage:
		s.Args = a
	default:
		b, err := json.Marshal(a)
		if err != nil {
			// Validate reports it: args must be a JSON object.
			b = []byte(fmt.Sprintf("%q", err.Error()))
		}
		s.Args = b
	}
	for _, opt := range o {
		s.Queue, s.MaxRetries, s.PassResult = opt.Queue, opt.MaxRetries, opt.PassResult
		if opt.Timeout > 0 {
			s.Timeout = opt.Timeout.String()
		}
	}
	return s
}

// Chain runs steps one after another; a step that fails (after its
// retries) stops it.
func Chain(steps ...Workflow) Workflow { return Workflow{Chain: steps} }

// Group runs steps in parallel; its result is the list of theirs, in order.
func Group(steps ...Workflow) Workflow { return Workflow{Group: steps} }

// Chord runs group, then callback once with the members' results (its
// args' "results", in order). A failed member fails the chord without the
// callback unless runOnFailure, which runs it anyway with the failures in
// its args' "errors".
func Chord(group []Workflow, callback Workflow, runOnFailure ...bool) Workflow {
	c := &workflow.Chord{Group: group, Callback: &callback}
	if len(runOnFailure) > 0 && runOnFailure[0] {
		c.CallbackOnFailure = workflow.OnFailureRun
	}
	return Workflow{Chord: c}
}

var errNoResults = errors.New("flotilla: workflows need the task states in Redis (ClientOptions.NoResults is set)")

func (c *Client) engine() (*workflow.Engine, error) {
	if c.store == nil {
		return nil, errNoResults
	}
	return workflow.New(c.store, c.c, nil), nil
}

// StartWorkflow validates w, publishes its first tasks and returns its id.
// Workers move it on as its steps finish.
func (c *Client) StartWorkflow(ctx context.Context, w Workflow) (string, error) {
	e, err := c.engine()
	if err != nil {
		return "", err
	}
	return e.Start(ctx, w, workflow.StartOptions{Origin: wire.OriginClient})
}

// GetWorkflow returns workflow id and the state of every step.
func (c *Client) GetWorkflow(ctx context.Context, id string) (WorkflowState, error) {
	e, err := c.engine()
	if err != nil {
		return WorkflowState{}, err
	}
	return e.Get(ctx, id)
}

// GetGroup returns a group or chord read as one: a workflow id, or a step
// id <workflow id>-<path>.
func (c *Client) GetGroup(ctx context.Context, id string) (GroupState, error) {
	e, err := c.engine()
	if err != nil {
		return GroupState{}, err
	}
	return e.Group(ctx, id)
}
