package wire_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

func fullEnvelope() *task.Envelope {
	return &task.Envelope{
		ID:          "01J00000000000000000000000",
		Name:        "monitor.update_metric_list",
		Queue:       "emails",
		Args:        json.RawMessage(`{"host":"a","n":[1,2]}`),
		MaxRetries:  4,
		Timeout:     90 * time.Second,
		EnqueuedAt:  time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC),
		Expires:     time.Date(2026, 1, 2, 4, 4, 5, 0, time.UTC),
		Origin:      "beat/nightly",
		Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
}

func TestTaskMsgRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		subject string
		env     func() *task.Envelope
		msgID   string
		notify  string
		headers map[string]string // expected; "" = absent
		body    string
		// decodedQueue, when set, is the queue DecodeTask finds.
		decodedQueue string
	}{
		{
			name:    "every header",
			subject: wire.TaskSubject("emails", "monitor.update_metric_list"),
			env:     fullEnvelope,
			msgID:   "order-42",
			notify:  "_INBOX.abc.tok",
			headers: map[string]string{
				wire.HeaderMsgID:       "order-42",
				wire.HeaderID:          "01J00000000000000000000000",
				wire.HeaderTask:        "monitor.update_metric_list",
				wire.HeaderEnqueued:    "2026-01-02T03:04:05.123456789Z",
				wire.HeaderExpires:     "2026-01-02T04:04:05Z",
				wire.HeaderMaxRetries:  "4",
				wire.HeaderTimeout:     "1m30s",
				wire.HeaderOrigin:      "beat/nightly",
				wire.HeaderTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				wire.HeaderNotify:      "_INBOX.abc.tok",
				wire.HeaderQueue:       "", // the subject says it
			},
			body: `{"host":"a","n":[1,2]}`,
		},
		{
			name:    "minimal: msg id defaults to the task id, no optional headers",
			subject: wire.TaskSubject("default", "sys.ping"),
			env: func() *task.Envelope {
				return &task.Envelope{
					ID: "01J1", Name: "sys.ping", Queue: "default", MaxRetries: -1,
					EnqueuedAt: time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC),
					Args:       json.RawMessage(`{}`),
				}
			},
			headers: map[string]string{
				wire.HeaderMsgID:       "01J1",
				wire.HeaderID:          "01J1",
				wire.HeaderTask:        "sys.ping",
				wire.HeaderEnqueued:    "2026-05-06T07:08:09Z",
				wire.HeaderQueue:       "",
				wire.HeaderExpires:     "",
				wire.HeaderMaxRetries:  "",
				wire.HeaderTimeout:     "",
				wire.HeaderOrigin:      "",
				wire.HeaderTraceparent: "",
				wire.HeaderNotify:      "",
			},
			body: `{}`,
		},
		{
			name:    "zero max retries is written, not dropped",
			subject: wire.TaskSubject("default", "sys.ping"),
			env: func() *task.Envelope {
				return &task.Envelope{ID: "01J2", Name: "sys.ping", Queue: "default", MaxRetries: 0, Args: json.RawMessage(`{}`)}
			},
			headers: map[string]string{wire.HeaderMaxRetries: "0"},
			body:    `{}`,
		},
		{
			name:    "other queue than the subject's: the header carries it",
			subject: wire.TaskSubject("default", "email.send"),
			env: func() *task.Envelope {
				return &task.Envelope{ID: "01J4", Name: "email.send", Queue: "emails", MaxRetries: -1, Args: json.RawMessage(`{}`)}
			},
			headers: map[string]string{wire.HeaderQueue: "emails"},
			body:    `{}`,
			// The subject wins over the header when decoding.
			decodedQueue: "default",
		},
		{
			name:    "delayed: the queue travels in a header",
			subject: wire.DueSubject("default", "01J3"),
			env: func() *task.Envelope {
				return &task.Envelope{ID: "01J3", Name: "email.send", Queue: "emails", MaxRetries: -1, Args: json.RawMessage(`{"to":"x"}`)}
			},
			headers: map[string]string{wire.HeaderQueue: "emails"},
			body:    `{"to":"x"}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := tc.env()
			m := wire.NewTaskMsg(tc.subject, env, tc.msgID, tc.notify)
			require.Equal(t, tc.subject, m.Subject)
			require.JSONEq(t, tc.body, string(m.Data))
			for k, want := range tc.headers {
				if want == "" {
					require.NotContains(t, m.Header, k)
					continue
				}
				require.Equal(t, []string{want}, m.Header[k], k)
			}

			got, err := wire.DecodeTask(m.Subject, m.Header, m.Data)
			require.NoError(t, err)
			if tc.decodedQueue != "" {
				env.Queue = tc.decodedQueue
			}
			if diff := cmp.Diff(env, got); diff != "" {
				t.Fatalf("round trip (-sent +decoded):\n%s", diff)
			}
		})
	}
}

func TestNewTaskMsgEmptyArgs(t *testing.T) {
	t.Parallel()
	env := &task.Envelope{ID: "x", Name: "sys.ping", MaxRetries: -1}
	m := wire.NewTaskMsg(wire.TaskSubject("default", "sys.ping"), env, "", "")
	require.Equal(t, `{}`, string(m.Data), "empty args go out as an empty object")
	got, err := wire.DecodeTask(m.Subject, m.Header, m.Data)
	require.NoError(t, err)
	require.Equal(t, "default", got.Queue, "queue from the subject")
	require.Equal(t, -1, got.MaxRetries)
}

func TestDecodeTaskErrors(t *testing.T) {
	t.Parallel()
	valid := func() nats.Header {
		m := wire.NewTaskMsg(wire.TaskSubject("emails", "monitor.update_metric_list"), fullEnvelope(), "", "")
		return m.Header
	}
	for _, tc := range []struct {
		name   string
		mutate func(h nats.Header)
		body   string
		cause  string // substring of the error
		hasID  bool   // the envelope still names the task, for dead-lettering
	}{
		{name: "missing id", mutate: func(h nats.Header) { h.Del(wire.HeaderID) }, cause: wire.HeaderID},
		{name: "empty id", mutate: func(h nats.Header) { h.Set(wire.HeaderID, "") }, cause: wire.HeaderID},
		{name: "missing task", mutate: func(h nats.Header) { h.Del(wire.HeaderTask) }, cause: wire.HeaderTask, hasID: true},
		{name: "bad enqueued", mutate: func(h nats.Header) { h.Set(wire.HeaderEnqueued, "yesterday") }, cause: wire.HeaderEnqueued, hasID: true},
		{name: "enqueued without zone", mutate: func(h nats.Header) { h.Set(wire.HeaderEnqueued, "2026-01-02T03:04:05") }, cause: wire.HeaderEnqueued, hasID: true},
		{name: "bad expires", mutate: func(h nats.Header) { h.Set(wire.HeaderExpires, "1700000000") }, cause: wire.HeaderExpires, hasID: true},
		{name: "max retries not a number", mutate: func(h nats.Header) { h.Set(wire.HeaderMaxRetries, "many") }, cause: wire.HeaderMaxRetries, hasID: true},
		{name: "max retries negative", mutate: func(h nats.Header) { h.Set(wire.HeaderMaxRetries, "-1") }, cause: wire.HeaderMaxRetries, hasID: true},
		{name: "timeout not a duration", mutate: func(h nats.Header) { h.Set(wire.HeaderTimeout, "30") }, cause: wire.HeaderTimeout, hasID: true},
		{name: "timeout zero", mutate: func(h nats.Header) { h.Set(wire.HeaderTimeout, "0s") }, cause: wire.HeaderTimeout, hasID: true},
		{name: "body array", body: `[1,2]`, cause: "body", hasID: true},
		{name: "body null", body: `null`, cause: "body", hasID: true},
		{name: "body string", body: `"x"`, cause: "body", hasID: true},
		{name: "body empty", body: ``, cause: "body", hasID: true},
		{name: "body truncated object", body: `{"a":`, cause: "body", hasID: true},
		{name: "body two objects", body: `{}{}`, cause: "body", hasID: true},
		{name: "body not JSON", body: `hello`, cause: "body", hasID: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := valid()
			if tc.mutate != nil {
				tc.mutate(h)
			}
			body := tc.body
			if tc.mutate != nil && body == "" {
				body = `{}`
			}
			env, err := wire.DecodeTask(wire.TaskSubject("emails", "monitor.update_metric_list"), h, []byte(body))
			require.Error(t, err)
			require.ErrorIs(t, err, wire.ErrUndecodable)
			require.Contains(t, err.Error(), tc.cause)
			require.NotNil(t, env)
			if tc.hasID {
				require.Equal(t, fullEnvelope().ID, env.ID)
			}
		})
	}
}

func TestDecodeTaskNilHeader(t *testing.T) {
	t.Parallel()
	_, err := wire.DecodeTask("tasks.default.x", nil, []byte(`{}`))
	require.ErrorIs(t, err, wire.ErrUndecodable)
}

func TestDecodeTaskAcceptsWhitespaceAroundBody(t *testing.T) {
	t.Parallel()
	m := wire.NewTaskMsg(wire.TaskSubject("default", "a.b"), &task.Envelope{ID: "1", Name: "a.b", MaxRetries: -1}, "", "")
	env, err := wire.DecodeTask(m.Subject, m.Header, []byte(" \n\t{\"k\": 1}\r\n"))
	require.NoError(t, err)
	require.JSONEq(t, `{"k":1}`, string(env.Args))
}

func TestIsJSONObject(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want bool
	}{
		{"empty object", `{}`, true},
		{"object", `{"a":[1,{"b":null}]}`, true},
		{"leading space", "  {}", true},
		{"trailing space", "{}  ", true},
		{"empty", ``, false},
		{"spaces", `   `, false},
		{"array", `[]`, false},
		{"null", `null`, false},
		{"number", `1`, false},
		{"unterminated", `{`, false},
		{"two values", `{} {}`, false},
		{"garbage after", `{}x`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, task.IsJSONObject([]byte(tc.in)))
		})
	}
}

// FuzzDecodeTask feeds arbitrary headers and bodies to DecodeTask: it never
// panics, every error matches ErrUndecodable, and whatever it accepts
// survives another trip through NewTaskMsg.
func FuzzDecodeTask(f *testing.F) {
	m := wire.NewTaskMsg(wire.TaskSubject("emails", "monitor.update_metric_list"), fullEnvelope(), "k", "n")
	h := m.Header
	f.Add(m.Subject, h.Get(wire.HeaderID), h.Get(wire.HeaderTask), h.Get(wire.HeaderEnqueued), h.Get(wire.HeaderExpires),
		h.Get(wire.HeaderMaxRetries), h.Get(wire.HeaderTimeout), h.Get(wire.HeaderQueue), m.Data)
	f.Add("tasks.", "", "", "", "", "", "", "", []byte(nil))
	f.Add("tasks.q", "1", "a", "2026-01-02T03:04:05+23:59", "", "+3", "1ns", "", []byte(` {} `))
	f.Add("delayed.due.1", "1", "a", "", "bad", "-0", "-1s", "q", []byte(`{"a":`))
	f.Add("tasks..x", "1", "a", "", "", "99999999999999999999", "", "", []byte(`[]`))
	f.Fuzz(func(t *testing.T, subject, id, name, enq, exp, maxRetries, timeout, queue string, body []byte) {
		h := nats.Header{}
		for k, v := range map[string]string{
			wire.HeaderID: id, wire.HeaderTask: name, wire.HeaderEnqueued: enq, wire.HeaderExpires: exp,
			wire.HeaderMaxRetries: maxRetries, wire.HeaderTimeout: timeout, wire.HeaderQueue: queue,
		} {
			if v != "" {
				h.Set(k, v)
			}
		}
		env, err := wire.DecodeTask(subject, h, body)
		if env == nil {
			t.Fatal("DecodeTask returned a nil envelope")
		}
		if err != nil {
			if !errors.Is(err, wire.ErrUndecodable) {
				t.Fatalf("error %v does not match ErrUndecodable", err)
			}
			return
		}
		if !task.IsJSONObject(env.Args) {
			t.Fatalf("accepted args %q are not a JSON object", env.Args)
		}
		if task.ValidateQueue(env.Queue) != nil || task.ValidateName(env.Name) != nil {
			return // names a worker dead-letters; re-encoding them is not defined
		}
		m := wire.NewTaskMsg(subject, env, "", "")
		again, err := wire.DecodeTask(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if diff := cmp.Diff(env, again); diff != "" {
			t.Fatalf("second round trip differs (-first +second):\n%s", diff)
		}
	})
}

// TestDecodeTaskSubjectWins: the subject (what a producer's permissions
// allowed) names the task; a header that names another one is refused, and
// the envelope keeps the subject's names for the dead letter.
func TestDecodeTaskSubjectWins(t *testing.T) {
	t.Parallel()
	m := wire.NewTaskMsg(wire.TaskSubject("default", "sys.echo"), &task.Envelope{ID: "1", Name: "sys.echo", MaxRetries: -1}, "", "")
	m.Header.Set(wire.HeaderTask, "sys.fail")
	env, err := wire.DecodeTask(m.Subject, m.Header, m.Data)
	require.ErrorIs(t, err, wire.ErrUndecodable)
	require.Contains(t, err.Error(), `"sys.fail"`)
	require.Equal(t, "sys.echo", env.Name)
	require.Equal(t, "default", env.Queue)
}
