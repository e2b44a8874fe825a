package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/oklog/ulid/v2"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/logging"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/task"
)

// Names of the synchronous execution service.
const (
	ServiceName    = "flotilla"
	ServiceVersion = "0.1.0"
	// ServiceQueueGroup is shared by every worker, so one of them answers.
	ServiceQueueGroup = "flotilla"
)

// EndpointName turns a task name into a micro endpoint name (dots are not
// allowed there); the subject keeps the task name: flotilla.exec.<task>.
func EndpointName(taskName string) string { return strings.ReplaceAll(taskName, ".", "_") }

// serve exposes every registered task as an endpoint of the micro service
// "flotilla" on subject flotilla.exec.<task>, in one queue group. A micro
// endpoint handles its requests one at a time (which keeps the service's
// stats — requests, errors, average processing time — exact), so the
// worker adds SyncConcurrency instances of the service, like a prefork
// pool: up to that many requests of one task run at once per process.
func (w *Worker) serve(ctx context.Context) ([]micro.Service, error) {
	var svcs []micro.Service
	stopAll := func() {
		for _, s := range svcs {
			_ = s.Stop()
		}
	}
	for i := 0; i < w.cfg.SyncConcurrency; i++ {
		svc, err := micro.AddService(w.nc, micro.Config{
			Name: ServiceName, Version: ServiceVersion, QueueGroup: ServiceQueueGroup,
			Description: "Flotilla synchronous task execution: request flotilla.exec.<task> with the JSON args",
			Metadata:    map[string]string{"worker": w.cfg.Name, "instance": fmt.Sprint(i)},
		})
		if err != nil {
			stopAll()
			return nil, fmt.Errorf("micro service %s: %w", ServiceName, err)
		}
		svcs = append(svcs, svc)
		for _, name := range w.reg.Names() {
			def, _ := w.reg.Lookup(name)
			h := func(req micro.Request) { w.handleSync(ctx, def, req) }
			if err := svc.AddEndpoint(EndpointName(name), micro.HandlerFunc(h),
				micro.WithEndpointSubject(jet.ExecSubject(name)),
				micro.WithEndpointMetadata(map[string]string{"task": name}),
			); err != nil {
				stopAll()
				return nil, fmt.Errorf("micro endpoint %s: %w", name, err)
			}
		}
	}
	return svcs, nil
}

func (w *Worker) handleSync(ctx context.Context, def *task.Definition, req micro.Request) {
	h := req.Headers()
	start := w.cfg.Now()
	env := &task.Envelope{
		ID: nats.Header(h).Get(task.HeaderID), Name: def.Name, Queue: "sync", Args: req.Data(),
		Attempt: 1, MaxRetries: 0, EnqueuedAt: start,
		Origin: nats.Header(h).Get(task.HeaderOrigin), Traceparent: nats.Header(h).Get(task.HeaderTraceparent),
	}
	if env.ID == "" {
		env.ID = ulid.Make().String()
	}
	if env.Origin == "" {
		env.Origin = "api"
	}
	log := w.log.With().Str(logging.TaskID, env.ID).Str(logging.TaskName, env.Name).
		Str(logging.Queue, env.Queue).Int(logging.Attempt, 1).Logger()
	if !task.IsJSONObject(env.Args) {
		_ = req.Error(jet.CodeBadRequest, "args must be a JSON object", nil)
		return
	}
	timeout := def.Options.Timeout
	if timeout <= 0 {
		timeout = w.cfg.Timeout
	}
	if v := nats.Header(h).Get(task.HeaderTimeout); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 && d < timeout {
			timeout = d
		}
	}
	hctx, cancel := context.WithTimeout(log.WithContext(ctx), timeout)
	res, err := task.Call(hctx, def.Handler, env, w.mw...)
	timedOut := errors.Is(hctx.Err(), context.DeadlineExceeded)
	cancel()
	end := w.cfg.Now()
	record := w.store != nil && !def.Options.NoResult
	out := nats.Header{}
	out.Set(task.HeaderID, env.ID)
	out.Set(jet.HeaderWorker, w.cfg.Name)
	out.Set(jet.HeaderStarted, start.UTC().Format(time.RFC3339Nano))
	out.Set(jet.HeaderFinished, end.UTC().Format(time.RFC3339Nano))
	if err != nil {
		typ := task.ErrorType(err)
		if timedOut {
			typ = "timeout"
			err = fmt.Errorf("timed out after %s: %w", timeout, err)
		}
		out.Set(jet.HeaderErrorType, typ)
		code := jet.CodeHandlerError
		if typ == "timeout" {
			code = jet.CodeTimeout
		}
		if record {
			// Reply first; the record follows in the batching writer.
			defer w.store.SetAsync(env.ID, results.Update{
				Task: env.Name, Queue: env.Queue, State: task.StateFailure, Error: err.Error(), Attempts: 1,
				EnqueuedAt: start, StartedAt: start, FinishedAt: end, Worker: w.cfg.Name,
			})
		}
		w.metrics.observe(env, outDead, end.Sub(start))
		log.Warn().Err(err).Str("error_type", typ).Msg("sync task failed")
		_ = req.Error(code, err.Error(), nil, micro.WithHeaders(micro.Headers(out)))
		return
	}
	if record {
		defer w.store.SetAsync(env.ID, results.Update{
			Task: env.Name, Queue: env.Queue, State: task.StateSuccess, Result: res, Attempts: 1,
			EnqueuedAt: start, StartedAt: start, FinishedAt: end, Worker: w.cfg.Name,
		})
	}
	w.metrics.observe(env, outSuccess, end.Sub(start))
	log.Debug().Dur("runtime", end.Sub(start)).Msg("sync task succeeded")
	_ = req.Respond(res, micro.WithHeaders(micro.Headers(out)))
}
