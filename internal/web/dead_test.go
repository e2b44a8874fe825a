package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/queues"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/results/resultstest"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/web"
	"github.com/flotilla/flotilla/internal/wire"
)

type op struct {
	js jetstream.JetStream
	cl *client.Client
}

func (o op) Dead(ctx context.Context, n int) ([]wire.DeadLetter, error) {
	return jet.ListDead(ctx, o.js, n)
}
func (o op) Requeue(ctx context.Context, seq uint64) (client.Result, error) {
	return o.cl.Requeue(ctx, seq)
}
func (o op) DeleteDead(ctx context.Context, seq uint64) error { return jet.DeleteDead(ctx, o.js, seq) }
func (o op) RetryTask(ctx context.Context, id string) (client.Result, error) {
	return o.cl.Retry(ctx, id)
}

// TestDeadLettersAndQueues lists dead letters, requeues one onto its queue
// (same task id, no error headers, PENDING again), deletes another, and
// lists the queue consumers.
func TestDeadLettersAndQueues(t *testing.T) {
	t.Parallel()
	nc, js := jettest.Connect(t, jettest.Server(t).ClientURL())
	topo, err := jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)
	require.NoError(t, jet.ApplyStreams(t.Context(), js, topo))
	require.NoError(t, jet.ApplyQueues(t.Context(), js, topo, []string{"default", "action"}))
	rdb, prefix := resultstest.Client(t)
	store := results.New(rdb, results.Config{Prefix: prefix, TTL: time.Hour})
	t.Cleanup(store.Close)
	cl := client.New(nc, js, store, client.Config{})
	srv := httptest.NewServer(web.New(web.Config{MaxBodyBytes: 1 << 20, Operator: op{js, cl}, Queues: queues.New(js)}, cl, nil, zerolog.Nop()).Handler())
	t.Cleanup(srv.Close)

	for i, id := range []string{"TASK1", "TASK2"} {
		env := &task.Envelope{ID: id, Name: "sys.echo", Queue: "action", EnqueuedAt: time.Now(), MaxRetries: 2,
			Expires: time.Now().Add(-time.Hour)}
		m := wire.NewTaskMsg("dead.action.sys.echo", env, "", "")
		m.Header.Set(wire.HeaderError, fmt.Sprintf("boom %d", i))
		m.Header.Set(wire.HeaderAttempts, "3")
		m.Data = []byte(fmt.Sprintf(`{"n":%d}`, i))
		_, err := js.PublishMsg(t.Context(), m)
		require.NoError(t, err)
	}
	require.NoError(t, store.Set(t.Context(), "TASK1", results.Update{Task: "sys.echo", Queue: "action", State: task.StateFailure, Error: "boom 0"}))

	var list struct {
		Dead []struct {
			Seq      uint64
			ID       string
			Queue    string
			Error    string
			Attempts int
			Args     map[string]int
		}
	}
	require.Equal(t, 200, getJSON(t, srv.URL+"/api/v1/dead?limit=10", &list))
	require.Len(t, list.Dead, 2)
	require.Equal(t, "TASK2", list.Dead[0].ID, "newest first")
	require.Equal(t, "action", list.Dead[1].Queue)
	require.Equal(t, "boom 0", list.Dead[1].Error)
	require.Equal(t, 3, list.Dead[1].Attempts)
	require.Equal(t, map[string]int{"n": 0}, list.Dead[1].Args)

	resp, err := http.Post(fmt.Sprintf("%s/api/v1/dead/%d/requeue", srv.URL, list.Dead[1].Seq), "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	st, err := store.Get(t.Context(), "TASK1")
	require.NoError(t, err)
	require.Equal(t, task.StatePending, st.State)
	require.Empty(t, st.Error)
	s, err := js.Stream(t.Context(), wire.StreamTasks)
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(t.Context(), "tasks.action.sys.echo")
	require.NoError(t, err)
	require.Equal(t, "TASK1", m.Header.Get(wire.HeaderID))
	require.Empty(t, m.Header.Get(wire.HeaderError))
	require.Empty(t, m.Header.Get(wire.HeaderExpires), "a requeued task runs even if it had expired")
	require.Equal(t, fmt.Sprintf("TASK1:requeue:%d", list.Dead[1].Seq), m.Header.Get(nats.MsgIdHdr))
	require.JSONEq(t, `{"n":0}`, string(m.Data))

	// Requeued letters leave DEAD; a second requeue of the same seq is 404.
	require.Equal(t, 200, getJSON(t, srv.URL+"/api/v1/dead", &list))
	require.Len(t, list.Dead, 1)
	resp, err = http.Post(srv.URL+"/api/v1/dead/1/requeue", "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	// Without a JSON Content-Type (what a cross-site form sends) nothing happens.
	resp, err = http.Post(srv.URL+"/api/v1/dead/1/requeue", "application/x-www-form-urlencoded", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnsupportedMediaType, resp.StatusCode)

	req, _ := http.NewRequest(http.MethodDelete, fmt.Sprintf("%s/api/v1/dead/%d", srv.URL, list.Dead[0].Seq), nil)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	// Deleting it again, or a sequence never used, is 404.
	for _, seq := range []uint64{list.Dead[0].Seq, 99999} {
		req, _ := http.NewRequest(http.MethodDelete, fmt.Sprintf("%s/api/v1/dead/%d", srv.URL, seq), nil)
		resp, err = http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
	}
	require.Equal(t, 200, getJSON(t, srv.URL+"/api/v1/dead", &list))
	require.Empty(t, list.Dead)
	require.Equal(t, 400, getJSON(t, srv.URL+"/api/v1/dead?limit=0", nil))

	var qs struct {
		Queues []queues.Stats
	}
	require.Equal(t, 200, getJSON(t, srv.URL+"/api/v1/queues", &qs))
	require.Len(t, qs.Queues, 2)
	require.Equal(t, "action", qs.Queues[0].Queue, "by name")
	require.EqualValues(t, 1, qs.Queues[0].Pending, "the requeued task waits on q-action")
	require.NotNil(t, qs.Queues[0].OldestAt)
	require.Zero(t, qs.Queues[0].Dead, "one requeued, one deleted")
	require.Zero(t, qs.Queues[1].Pending)
}

func getJSON(t *testing.T, u string, out any) int {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == 200 {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	}
	return resp.StatusCode
}
