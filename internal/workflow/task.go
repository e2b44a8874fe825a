package workflow

import (
	"context"
	"errors"
	"strings"

	"github.com/flotilla/flotilla/internal/task"
)

// TaskName is the built-in task that starts the workflow its args define
// ({"chain": [...]} and so on): what a beat schedule fires to run a
// workflow periodically. The workflow's id is the task's id (with - as
// _), so a task run twice starts its workflow once.
const TaskName = "sys.workflow"

type ctxKey struct{}

// Middleware gives the handlers of a worker the engine, for TaskName.
func Middleware(e *Engine) task.Middleware {
	return func(next task.HandlerFunc) task.HandlerFunc {
		return func(ctx context.Context, env *task.Envelope) (any, error) {
			return next(context.WithValue(ctx, ctxKey{}, e), env)
		}
	}
}

// Register adds TaskName to r.
func Register(r *task.Registry) {
	r.Handle(TaskName, run)
}

func run(ctx context.Context, env *task.Envelope) (any, error) {
	e, ok := ctx.Value(ctxKey{}).(*Engine)
	if !ok {
		return nil, task.Permanent(errNoEngine)
	}
	def, err := Parse(env.Args)
	if err != nil {
		return nil, task.Permanent(err)
	}
	id := strings.ReplaceAll(env.ID, "-", "_")
	if len(id) > 40 {
		id = id[len(id)-40:]
	}
	id, err = e.Start(ctx, def, StartOptions{ID: id, Origin: env.Origin})
	if err != nil {
		return nil, err
	}
	return map[string]string{"workflow": id}, nil
}

var errNoEngine = errors.New("this worker runs no workflow engine (it needs Redis: tasks.results on)")
