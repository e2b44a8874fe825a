package worker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/oklog/ulid/v2"

	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

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
	for i := range w.cfg.SyncConcurrency {
		svc, err := micro.AddService(w.nc, micro.Config{
			Name: wire.ServiceName, Version: wire.ServiceVersion, QueueGroup: wire.ServiceQueueGroup,
			Description: "Flotilla synchronous task execution: request flotilla.exec.<task> with the JSON args",
			Metadata:    map[string]string{"worker": w.cfg.Name, "instance": fmt.Sprint(i)},
		})
		if err != nil {
			stopAll()
			return nil, fmt.Errorf("micro service %s: %w", wire.ServiceName, err)
		}
		svcs = append(svcs, svc)
		for _, name := range w.reg.Names() {
			def, _ := w.reg.Lookup(name)
			h := func(req micro.Request) { w.handleSync(ctx, def, req) }
			if err := svc.AddEndpoint(wire.EndpointName(name), micro.HandlerFunc(h),
				micro.WithEndpointSubject(wire.ExecSubject(name)),
				micro.WithEndpointMetadata(map[string]string{"task": name}),
			); err != nil {
				stopAll()
				return nil, fmt.Errorf("micro endpoint %s: %w", name, err)
			}
		}
	}
	return svcs, nil
}

// handleSync answers one synchronous execution through the attempt runner,
// which records its state and publishes its events.
func (w *Worker) handleSync(ctx context.Context, def *task.Definition, req micro.Request) {
	env, wait, err := wire.DecodeExecRequest(def.Name, nats.Header(req.Headers()), req.Data(), w.cfg.Now())
	if err != nil {
		_ = req.Error(wire.CodeBadRequest, err.Error(), nil)
		return
	}
	if env.ID == "" {
		env.ID = ulid.Make().String()
	}
	if wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rn := w.running.add(env, w.cfg.Now(), cancel)
	if w.cancels.Has(env.ID) {
		cancel(task.ErrCancelled)
	}
	reply := w.runner.Exec(ctx, def, env)
	w.running.remove(rn, reply.Code != "")
	opt := micro.WithHeaders(micro.Headers(reply.Header()))
	if reply.Code != "" {
		_ = req.Error(reply.Code, reply.Error, nil, opt)
		return
	}
	_ = req.Respond(reply.Result, opt)
}
