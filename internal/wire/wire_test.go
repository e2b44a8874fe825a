package wire_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

func TestSubjects(t *testing.T) {
	t.Parallel()
	require.Equal(t, "tasks.default.sys.echo", wire.TaskSubject("default", "sys.echo"))
	q, name, ok := wire.ParseTaskSubject("tasks.default.sys.echo")
	require.True(t, ok)
	require.Equal(t, "default", q)
	require.Equal(t, "sys.echo", name)
	for _, bad := range []string{"tasks.default", "tasks..x", "tasks.q.", "dead.q.x", "delayed.due.1"} {
		_, _, ok := wire.ParseTaskSubject(bad)
		require.False(t, ok, bad)
	}
	q, ok = wire.QueueOfConsumer(wire.ConsumerName("action"))
	require.True(t, ok)
	require.Equal(t, "action", q)
	_, ok = wire.QueueOfConsumer(wire.ConsumerMover)
	require.False(t, ok)
	require.Equal(t, "events.failed.default.sys.fail", wire.EventSubject(wire.EventFailed, "default", "sys.fail"))
	require.Equal(t, "flotilla.exec.sys.echo", wire.ExecSubject("sys.echo"))
	require.Equal(t, "sys_echo", wire.EndpointName("sys.echo"))
	require.Equal(t, "beat/nightly", wire.OriginBeat("nightly"))
}

// TestEventJSON: the hand encoder writes what encoding/json writes, and
// DecodeEvent reads it back.
func TestEventJSON(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	for _, e := range []wire.Event{
		{Kind: wire.EventSent, ID: "01J", Task: "sys.echo", Queue: "default", Time: at, Origin: "beat/nightly"},
		{Kind: wire.EventFailed, ID: "01J", Task: "sys.fail", Queue: "default", Time: at, Attempt: 3, Worker: "h:1 \"quoted\" é",
			Error: "boom\n<tag> & \\", ErrorType: "timeout", RuntimeS: 1.5},
		{Kind: wire.EventRetried, ID: "x", Task: "a", Queue: "q", Time: at, RetryInS: 2.5e-7, RuntimeS: 1e22},
		{Kind: wire.EventSucceeded, ID: "x", Task: "a", Queue: "q", Time: at, RuntimeS: 0.000012},
	} {
		got := e.AppendJSON(nil)
		want, err := json.Marshal(e)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
		back, err := wire.DecodeEvent(got)
		require.NoError(t, err)
		require.True(t, back.Time.Equal(e.Time))
		back.Time = e.Time
		require.Equal(t, e, back)
	}
	e := wire.Event{Kind: wire.EventDead, Task: "Bad Name", Queue: "q"}
	require.Equal(t, "events.dead.q._invalid", e.Subject())
}

// FuzzEventJSON checks the hand encoder against encoding/json.
func FuzzEventJSON(f *testing.F) {
	f.Add("started", "01J", "a.b", "q", "w", "err", 1, 0.5)
	f.Add("failed", "\x00", "\u2028", "\"", "\\", "\xff", -1, 1e-9)
	f.Fuzz(func(t *testing.T, kind, id, name, queue, worker, errMsg string, attempt int, runtime float64) {
		if math.IsNaN(runtime) || math.IsInf(runtime, 0) {
			return
		}
		e := wire.Event{Kind: kind, ID: id, Task: name, Queue: queue, Worker: worker, Error: errMsg,
			Attempt: attempt, RuntimeS: runtime, Time: time.Unix(1700000000, 5).UTC()}
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.AppendJSON(nil); string(got) != string(want) {
			t.Fatalf("AppendJSON = %s, encoding/json = %s", got, want)
		}
	})
}

func TestExecRoundTrip(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	req := wire.NewExecRequest("sys.echo", json.RawMessage(`{"x":1}`), wire.ExecMeta{
		ID: "01J", Traceparent: "00-aa-bb-01", Timeout: 2 * time.Second, Wait: 3 * time.Second})
	require.Equal(t, "flotilla.exec.sys.echo", req.Subject)
	env, wait, err := wire.DecodeExecRequest("sys.echo", req.Header, req.Data, now)
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, wait)
	want := &task.Envelope{ID: "01J", Name: "sys.echo", Queue: wire.SyncQueue, Args: json.RawMessage(`{"x":1}`),
		Attempt: 1, Timeout: 2 * time.Second, EnqueuedAt: now, Origin: wire.OriginSync, Traceparent: "00-aa-bb-01"}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}

	bad := wire.NewExecRequest("sys.echo", json.RawMessage(`[1]`), wire.ExecMeta{ID: "1"})
	_, _, err = wire.DecodeExecRequest("sys.echo", bad.Header, bad.Data, now)
	require.ErrorContains(t, err, "JSON object")
	bad.Header.Set(wire.HeaderWait, "soon")
	_, _, err = wire.DecodeExecRequest("sys.echo", bad.Header, []byte(`{}`), now)
	require.ErrorContains(t, err, wire.HeaderWait)

	ok := wire.ExecReply{ID: "01J", Worker: "w", Started: now, Finished: now.Add(time.Millisecond)}
	got := wire.DecodeExecReply(&nats.Msg{Header: ok.Header(), Data: []byte(`{"x":1}`)})
	require.Equal(t, `{"x":1}`, string(got.Result))
	require.Equal(t, "w", got.Worker)
	require.Equal(t, time.Millisecond, got.Finished.Sub(got.Started))
	require.Empty(t, got.Code)

	failed := wire.ExecReply{ID: "01J", Worker: "w", Started: now, Finished: now, ErrorType: "panic"}
	h := failed.Header()
	h.Set(micro.ErrorHeader, "panic: boom")
	h.Set(micro.ErrorCodeHeader, wire.CodeHandlerError)
	got = wire.DecodeExecReply(&nats.Msg{Header: h})
	require.Equal(t, wire.CodeHandlerError, got.Code)
	require.Equal(t, "panic: boom", got.Error)
	require.Equal(t, "panic", got.ErrorType)
	require.Nil(t, got.Result)
}

func TestDeadAndRequeue(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	orig := wire.NewTaskMsg(wire.TaskSubject("default", "sys.fail"), &task.Envelope{
		ID: "01J", Name: "sys.fail", Queue: "default", MaxRetries: 2, EnqueuedAt: now.Add(-time.Hour),
		Expires: now.Add(time.Hour), Origin: "web"}, "idem-1", "_INBOX.x.y")
	dm := wire.NewDeadMsg(orig.Header, orig.Data, "default", "sys.fail", "boom", 3)
	require.Equal(t, "dead.default.sys.fail", dm.Subject)
	require.Equal(t, "boom", dm.Header.Get(wire.HeaderError))
	require.Equal(t, "3", dm.Header.Get(wire.HeaderAttempts))
	require.Equal(t, "web", dm.Header.Get(wire.HeaderOrigin), "original headers kept")
	// A task published in an atomic batch carries the batch's headers;
	// they would make the dead letter a broken batch of DEAD.
	orig.Header.Set("Nats-Batch-Id", "b1")
	orig.Header.Set("Nats-Batch-Sequence", "7")
	batched := wire.NewDeadMsg(orig.Header, orig.Data, "default", "sys.fail", "boom", 3)
	require.Empty(t, batched.Header.Get("Nats-Batch-Id"))
	require.Empty(t, batched.Header.Get("Nats-Batch-Sequence"))
	require.Equal(t, "idem-1", batched.Header.Get(wire.HeaderMsgID))

	d := wire.DecodeDead(7, dm.Subject, now, dm.Header, dm.Data)
	require.Equal(t, wire.DeadLetter{Seq: 7, Subject: dm.Subject, ID: "01J", Task: "sys.fail", Queue: "default",
		Error: "boom", Attempts: 3, Time: now, Args: dm.Data, Header: dm.Header}, d)

	rq, err := wire.NewRequeueMsg(d, now)
	require.NoError(t, err)
	require.Equal(t, "tasks.default.sys.fail", rq.Subject)
	require.Equal(t, wire.RequeueMsgID("01J", 7), rq.Header.Get(wire.HeaderMsgID))
	for _, gone := range []string{wire.HeaderError, wire.HeaderAttempts, wire.HeaderNotify, wire.HeaderExpires} {
		require.Empty(t, rq.Header.Get(gone), gone)
	}
	env, err := wire.DecodeTask(rq.Subject, rq.Header, rq.Data)
	require.NoError(t, err)
	require.Equal(t, now, env.EnqueuedAt)
	require.Equal(t, 2, env.MaxRetries)

	odd := wire.NewDeadMsg(orig.Header, []byte("x"), "Bad Queue", "", "undecodable", 1)
	require.Equal(t, "dead._invalid._invalid", odd.Subject)
	_, err = wire.NewRequeueMsg(wire.DecodeDead(8, odd.Subject, now, odd.Header, odd.Data), now)
	require.ErrorContains(t, err, "cannot be requeued")
}

func TestDueToTask(t *testing.T) {
	t.Parallel()
	env := &task.Envelope{ID: "01J", Name: "email.send", Queue: "emails", MaxRetries: -1, Args: json.RawMessage(`{"to":"x"}`)}
	due := wire.NewTaskMsg(wire.DueSubject(env.Queue, env.ID), env, "", "")
	due.Header.Set("Nats-Schedule", "@at 2026-01-02T03:04:05Z")
	m := wire.DueToTask(due.Header, due.Data)
	require.Equal(t, "tasks.emails.email.send", m.Subject)
	require.Empty(t, m.Header.Get("Nats-Schedule"))
	require.Equal(t, "01J", m.Header.Get(wire.HeaderMsgID))
	got, err := wire.DecodeTask(m.Subject, m.Header, m.Data)
	require.NoError(t, err)
	require.Equal(t, env.Name, got.Name)
	require.Equal(t, "emails", got.Queue)

	due.Header.Set(wire.HeaderQueue, "BAD")
	require.Equal(t, "tasks._invalid.email.send", wire.DueToTask(due.Header, due.Data).Subject)
}

func TestBeatMsgID(t *testing.T) {
	t.Parallel()
	require.Equal(t, "beat:cache.refresh:1767225600", wire.BeatMsgID("cache.refresh", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)))
}

func TestNotifySubjects(t *testing.T) {
	t.Parallel()
	require.Equal(t, "flotilla.notify.web.", wire.NotifyPrefix("_INBOX_web"))
	require.Equal(t, "flotilla.notify.default.", wire.NotifyPrefix("_INBOX"))
	for _, ok := range []string{"flotilla.notify.web.abc.tok", wire.NotifyPrefix("_INBOX_api") + "x"} {
		require.True(t, wire.ValidNotify(ok), ok)
	}
	for _, bad := range []string{"", "tasks.default.sys.echo", "_INBOX_web.abc", "flotilla.notify.web", "flotilla.notify.web.",
		"flotilla.notify.*.x", "flotilla.notify.web.>", "flotilla.notify..x", "events.sent.default.x"} {
		require.False(t, wire.ValidNotify(bad), bad)
	}
}

func TestEventLevels(t *testing.T) {
	t.Parallel()
	want := map[wire.EventLevel][]string{
		wire.EventsOff:      nil,
		wire.EventsOutcomes: {wire.EventSucceeded, wire.EventFailed, wire.EventRetried, wire.EventDead, wire.EventExpired, wire.EventCancelled},
		wire.EventsStandard: {wire.EventSent, wire.EventSucceeded, wire.EventFailed, wire.EventRetried, wire.EventDead, wire.EventExpired, wire.EventCancelled},
		wire.EventsAll:      wire.EventKinds,
		"":                  nil,
		"bogus":             nil,
	}
	for level, kinds := range want {
		var got []string
		for _, k := range wire.EventKinds {
			if level.Publishes(k) {
				got = append(got, k)
			}
		}
		require.ElementsMatch(t, kinds, got, "level %q", level)
	}
}
