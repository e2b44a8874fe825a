package attempt_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/attempt"
	"github.com/flotilla/flotilla/internal/task"
)

// BenchmarkRun measures what the runner adds to a no-op handler: the
// attempt's context, its goroutine and the outcome.
func BenchmarkRun(b *testing.B) {
	r := attempt.New(attempt.Config{Timeout: time.Minute}, zerolog.Nop())
	d := &task.Definition{Name: "t.x", Handler: func(context.Context, *task.Envelope) (any, error) { return "pong", nil }}
	e := &task.Envelope{ID: "01J", Name: "t.x", Queue: "default", Attempt: 1}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if o, _ := r.Run(ctx, d, e, zerolog.Nop(), nil); o.Err != nil {
			b.Fatal(o.Err)
		}
	}
}

// BenchmarkCall is the same handler called directly, for comparison.
func BenchmarkCall(b *testing.B) {
	h := func(context.Context, *task.Envelope) (any, error) { return "pong", nil }
	e := &task.Envelope{ID: "01J", Name: "t.x", Queue: "default", Attempt: 1}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c, cancel := context.WithTimeout(ctx, time.Minute)
		if _, err := task.Call(c, h, e); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}
