package jet_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/task"
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
			subject: jet.TaskSubject("emails", "monitor.update_metric_list"),
			env:     fullEnvelope,
			msgID:   "order-42",
			notify:  "_INBOX.abc.tok",
			headers: map[string]string{
				task.HeaderMsgID:       "order-42",
				task.HeaderID:          "01J00000000000000000000000",
				task.HeaderTask:        "monitor.update_metric_list",
				task.HeaderEnqueued:    "2026-01-02T03:04:05.123456789Z",
				task.HeaderExpires:     "2026-01-02T04:04:05Z",
				task.HeaderMaxRetries:  "4",
				task.HeaderTimeout:     "1m30s",
				task.HeaderOrigin:      "beat/nightly",
				task.HeaderTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				task.HeaderNotify:      "_INBOX.abc.tok",
				task.HeaderQueue:       "", // the subject says it
			},
			body: `{"host":"a","n":[1,2]}`,
		},
		{
			name:    "minimal: msg id defaults to the task id, no optional headers",
			subject: jet.TaskSubject("default", "sys.ping"),
			env: func() *task.Envelope {
				return &task.Envelope{
					ID: "01J1", Name: "sys.ping", Queue: "default", MaxRetries: -1,
					EnqueuedAt: time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC),
					Args:       json.RawMessage(`{}`),
				}
			},
			headers: map[string]string{
				task.HeaderMsgID:       "01J1",
				task.HeaderID:          "01J1",
				task.HeaderTask:        "sys.ping",
				task.HeaderEnqueued:    "2026-05-06T07:08:09Z",
				task.HeaderQueue:       "",
				task.HeaderExpires:     "",
				task.HeaderMaxRetries:  "",
				task.HeaderTimeout:     "",
				task.HeaderOrigin:      "",
				task.HeaderTraceparent: "",
				task.HeaderNotify:      "",
			},
			body: `{}`,
		},
		{
			name:    "zero max retries is written, not dropped",
			subject: jet.TaskSubject("default", "sys.ping"),
			env: func() *task.Envelope {
				return &task.Envelope{ID: "01J2", Name: "sys.ping", Queue: "default", MaxRetries: 0, Args: json.RawMessage(`{}`)}
			},
			headers: map[string]string{task.HeaderMaxRetries: "0"},
			body:    `{}`,
		},
		{
			name:    "other queue than the subject's: the header carries it",
			subject: jet.TaskSubject("default", "email.send"),
			env: func() *task.Envelope {
				return &task.Envelope{ID: "01J4", Name: "email.send", Queue: "emails", MaxRetries: -1, Args: json.RawMessage(`{}`)}
			},
			headers: map[string]string{task.HeaderQueue: "emails"},
			body:    `{}`,
			// The subject wins over the header when decoding.
			decodedQueue: "default",
		},
		{
			name:    "delayed: the queue travels in a header",
			subject: jet.DueSubject("01J3"),
			env: func() *task.Envelope {
				return &task.Envelope{ID: "01J3", Name: "email.send", Queue: "emails", MaxRetries: -1, Args: json.RawMessage(`{"to":"x"}`)}
			},
			headers: map[string]string{task.HeaderQueue: "emails"},
			body:    `{"to":"x"}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := tc.env()
			m := jet.NewTaskMsg(tc.subject, env, tc.msgID, tc.notify)
			require.Equal(t, tc.subject, m.Subject)
			require.JSONEq(t, tc.body, string(m.Data))
			for k, want := range tc.headers {
				if want == "" {
					require.NotContains(t, m.Header, k)
					continue
				}
				require.Equal(t, []string{want}, m.Header[k], k)
			}

			got, err := jet.DecodeTask(m.Subject, m.Header, m.Data)
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
	m := jet.NewTaskMsg(jet.TaskSubject("default", "sys.ping"), env, "", "")
	require.Equal(t, `{}`, string(m.Data), "empty args go out as an empty object")
	got, err := jet.DecodeTask(m.Subject, m.Header, m.Data)
	require.NoError(t, err)
	require.Equal(t, "default", got.Queue, "queue from the subject")
	require.Equal(t, -1, got.MaxRetries)
}

func TestDecodeTaskErrors(t *testing.T) {
	t.Parallel()
	valid := func() nats.Header {
		m := jet.NewTaskMsg(jet.TaskSubject("emails", "email.send"), fullEnvelope(), "", "")
		return m.Header
	}
	for _, tc := range []struct {
		name   string
		mutate func(h nats.Header)
		body   string
		cause  string // substring of the error
		hasID  bool   // the envelope still names the task, for dead-lettering
	}{
		{name: "missing id", mutate: func(h nats.Header) { h.Del(task.HeaderID) }, cause: task.HeaderID},
		{name: "empty id", mutate: func(h nats.Header) { h.Set(task.HeaderID, "") }, cause: task.HeaderID},
		{name: "missing task", mutate: func(h nats.Header) { h.Del(task.HeaderTask) }, cause: task.HeaderTask, hasID: true},
		{name: "bad enqueued", mutate: func(h nats.Header) { h.Set(task.HeaderEnqueued, "yesterday") }, cause: task.HeaderEnqueued, hasID: true},
		{name: "enqueued without zone", mutate: func(h nats.Header) { h.Set(task.HeaderEnqueued, "2026-01-02T03:04:05") }, cause: task.HeaderEnqueued, hasID: true},
		{name: "bad expires", mutate: func(h nats.Header) { h.Set(task.HeaderExpires, "1700000000") }, cause: task.HeaderExpires, hasID: true},
		{name: "max retries not a number", mutate: func(h nats.Header) { h.Set(task.HeaderMaxRetries, "many") }, cause: task.HeaderMaxRetries, hasID: true},
		{name: "max retries negative", mutate: func(h nats.Header) { h.Set(task.HeaderMaxRetries, "-1") }, cause: task.HeaderMaxRetries, hasID: true},
		{name: "timeout not a duration", mutate: func(h nats.Header) { h.Set(task.HeaderTimeout, "30") }, cause: task.HeaderTimeout, hasID: true},
		{name: "timeout zero", mutate: func(h nats.Header) { h.Set(task.HeaderTimeout, "0s") }, cause: task.HeaderTimeout, hasID: true},
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
			env, err := jet.DecodeTask(jet.TaskSubject("emails", "email.send"), h, []byte(body))
			require.Error(t, err)
			require.ErrorIs(t, err, jet.ErrUndecodable)
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
	_, err := jet.DecodeTask("tasks.default.x", nil, []byte(`{}`))
	require.ErrorIs(t, err, jet.ErrUndecodable)
}

func TestDecodeTaskAcceptsWhitespaceAroundBody(t *testing.T) {
	t.Parallel()
	m := jet.NewTaskMsg(jet.TaskSubject("default", "a.b"), &task.Envelope{ID: "1", Name: "a.b", MaxRetries: -1}, "", "")
	env, err := jet.DecodeTask(m.Subject, m.Header, []byte(" \n\t{\"k\": 1}\r\n"))
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
	m := jet.NewTaskMsg(jet.TaskSubject("emails", "email.send"), fullEnvelope(), "k", "n")
	h := m.Header
	f.Add(m.Subject, h.Get(task.HeaderID), h.Get(task.HeaderTask), h.Get(task.HeaderEnqueued), h.Get(task.HeaderExpires),
		h.Get(task.HeaderMaxRetries), h.Get(task.HeaderTimeout), h.Get(task.HeaderQueue), m.Data)
	f.Add("tasks.", "", "", "", "", "", "", "", []byte(nil))
	f.Add("tasks.q", "1", "a", "2026-01-02T03:04:05+23:59", "", "+3", "1ns", "", []byte(` {} `))
	f.Add("delayed.due.1", "1", "a", "", "bad", "-0", "-1s", "q", []byte(`{"a":`))
	f.Add("tasks..x", "1", "a", "", "", "99999999999999999999", "", "", []byte(`[]`))
	f.Fuzz(func(t *testing.T, subject, id, name, enq, exp, maxRetries, timeout, queue string, body []byte) {
		h := nats.Header{}
		for k, v := range map[string]string{
			task.HeaderID: id, task.HeaderTask: name, task.HeaderEnqueued: enq, task.HeaderExpires: exp,
			task.HeaderMaxRetries: maxRetries, task.HeaderTimeout: timeout, task.HeaderQueue: queue,
		} {
			if v != "" {
				h.Set(k, v)
			}
		}
		env, err := jet.DecodeTask(subject, h, body)
		if env == nil {
			t.Fatal("DecodeTask returned a nil envelope")
		}
		if err != nil {
			if !errors.Is(err, jet.ErrUndecodable) {
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
		m := jet.NewTaskMsg(subject, env, "", "")
		again, err := jet.DecodeTask(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if diff := cmp.Diff(env, again); diff != "" {
			t.Fatalf("second round trip differs (-first +second):\n%s", diff)
		}
	})
}
