package jet_test

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
	"github.com/flotilla/flotilla/internal/wire"
)

func mustStream(t *testing.T, top jet.Topology, name string) jetstream.StreamConfig {
	t.Helper()
	sc, ok := top.Stream(name)
	require.True(t, ok, "stream %s is not in the topology", name)
	return sc
}

func TestLoadTopologyDefaults(t *testing.T) {
	t.Parallel()
	top, err := jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)

	var names []string
	for _, s := range top.Streams {
		names = append(names, s.Name)
	}
	require.ElementsMatch(t, []string{wire.StreamTasks, wire.StreamEvents, wire.StreamDead, wire.StreamDelayed}, names)
	_, ok := top.Stream("NOPE")
	require.False(t, ok)

	tasks := mustStream(t, top, wire.StreamTasks)
	require.Equal(t, []string{"tasks.>"}, tasks.Subjects)
	require.Equal(t, jetstream.WorkQueuePolicy, tasks.Retention)
	require.Equal(t, jetstream.DiscardNew, tasks.Discard, "a full queue must refuse new work, never drop old work")
	require.Equal(t, jetstream.FileStorage, tasks.Storage)
	require.GreaterOrEqual(t, tasks.Duplicates, 2*time.Minute)
	require.Positive(t, tasks.MaxMsgs, "TASKS must be bounded")
	require.Positive(t, tasks.MaxBytes, "TASKS must be bounded")
	require.Equal(t, 1, tasks.Replicas)

	delayed := mustStream(t, top, wire.StreamDelayed)
	require.True(t, delayed.AllowMsgSchedules)
	require.Equal(t, []string{"delayed.>"}, delayed.Subjects)
	require.GreaterOrEqual(t, delayed.Duplicates, 2*time.Minute)

	events := mustStream(t, top, wire.StreamEvents)
	require.Equal(t, jetstream.LimitsPolicy, events.Retention)
	require.Equal(t, 24*time.Hour, events.MaxAge)

	dead := mustStream(t, top, wire.StreamDead)
	require.Equal(t, jetstream.LimitsPolicy, dead.Retention)
	require.Equal(t, 14*24*time.Hour, dead.MaxAge)

	require.Equal(t, wire.ConsumerName(task0), top.Consumer.Durable)
	require.Equal(t, wire.QueueFilter(task0), top.Consumer.FilterSubject)
	require.Equal(t, jetstream.AckExplicitPolicy, top.Consumer.AckPolicy)
	require.Equal(t, wire.ConsumerMover, top.Mover.Durable)
	require.Equal(t, wire.DueFilter, top.Mover.FilterSubject)
	require.Equal(t, jetstream.AckExplicitPolicy, top.Mover.AckPolicy)
}

// task0 is the queue the consumer template in streams/ is written for.
const task0 = "default"

func TestLoadTopologyParams(t *testing.T) {
	t.Parallel()
	def, err := jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)

	for _, tc := range []struct {
		name  string
		p     jet.TopologyParams
		check func(t *testing.T, top jet.Topology)
	}{
		{
			name: "zero keeps the files",
			p:    jet.TopologyParams{},
			check: func(t *testing.T, top jet.Topology) {
				require.Equal(t, def, top)
			},
		},
		{
			name: "replicas apply to every stream",
			p:    jet.TopologyParams{Replicas: 3},
			check: func(t *testing.T, top jet.Topology) {
				for _, s := range top.Streams {
					require.Equal(t, 3, s.Replicas, s.Name)
				}
			},
		},
		{
			name: "task limits apply to TASKS only",
			p:    jet.TopologyParams{TaskMaxMsgs: 5, TaskMaxBytes: 4096},
			check: func(t *testing.T, top jet.Topology) {
				tasks := mustStream(t, top, wire.StreamTasks)
				require.EqualValues(t, 5, tasks.MaxMsgs)
				require.EqualValues(t, 4096, tasks.MaxBytes)
				for _, name := range []string{wire.StreamEvents, wire.StreamDead, wire.StreamDelayed} {
					require.Equal(t, mustStream(t, def, name), mustStream(t, top, name), name)
				}
			},
		},
		{
			name: "ack wait applies to the queue consumers",
			p:    jet.TopologyParams{AckWait: 7 * time.Second},
			check: func(t *testing.T, top jet.Topology) {
				require.Equal(t, 7*time.Second, top.Consumer.AckWait)
				require.Equal(t, 7*time.Second, top.QueueConsumer("emails").AckWait)
				require.Equal(t, def.Mover, top.Mover)
				require.Equal(t, def.Streams, top.Streams)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			top, err := jet.LoadTopology(tc.p)
			require.NoError(t, err)
			tc.check(t, top)
		})
	}
}

func TestQueueConsumer(t *testing.T) {
	t.Parallel()
	top, err := jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)
	for _, q := range []string{"default", "emails", "q_1-x"} {
		t.Run(q, func(t *testing.T) {
			t.Parallel()
			cc := top.QueueConsumer(q)
			require.Equal(t, "q-"+q, cc.Durable)
			require.Empty(t, cc.Name)
			require.Equal(t, "tasks."+q+".>", cc.FilterSubject)
			require.Contains(t, cc.Description, q)
			require.Equal(t, top.Consumer.AckWait, cc.AckWait)
			require.Equal(t, top.Consumer.AckPolicy, cc.AckPolicy)
		})
	}
	// The template is a value: deriving consumers does not change it.
	require.Equal(t, "q-default", top.Consumer.Durable)
}

func applyAll(t *testing.T, js jetstream.JetStream, top jet.Topology, queues []string) {
	t.Helper()
	require.NoError(t, jet.ApplyStreams(t.Context(), js, top))
	require.NoError(t, jet.ApplyQueues(t.Context(), js, top, queues))
}

// checkApplied asserts that the server holds top.
func checkApplied(t *testing.T, js jetstream.JetStream, top jet.Topology, queues []string) {
	t.Helper()
	ctx := t.Context()
	for _, want := range top.Streams {
		s, err := js.Stream(ctx, want.Name)
		require.NoError(t, err)
		got := s.CachedInfo().Config
		require.Equal(t, want.Subjects, got.Subjects, want.Name)
		require.Equal(t, want.Retention, got.Retention, want.Name)
		require.Equal(t, want.Discard, got.Discard, want.Name)
		require.Equal(t, want.MaxMsgs, got.MaxMsgs, want.Name)
		require.Equal(t, want.MaxBytes, got.MaxBytes, want.Name)
		require.Equal(t, want.MaxAge, got.MaxAge, want.Name)
		require.Equal(t, want.Duplicates, got.Duplicates, want.Name)
		require.Equal(t, want.Replicas, got.Replicas, want.Name)
		require.Equal(t, want.AllowMsgSchedules, got.AllowMsgSchedules, want.Name)
	}
	mover, err := js.Consumer(ctx, wire.StreamDelayed, wire.ConsumerMover)
	require.NoError(t, err)
	require.Equal(t, wire.DueFilter, mover.CachedInfo().Config.FilterSubject)
	for _, q := range queues {
		c, err := js.Consumer(ctx, wire.StreamTasks, wire.ConsumerName(q))
		require.NoError(t, err)
		cfg := c.CachedInfo().Config
		require.Equal(t, wire.QueueFilter(q), cfg.FilterSubject)
		require.Equal(t, top.Consumer.AckWait, cfg.AckWait)
		require.Equal(t, jetstream.AckExplicitPolicy, cfg.AckPolicy)
	}
}

func TestApplyIdempotent(t *testing.T) {
	t.Parallel()
	ns := jettest.Server(t)
	_, js := jettest.Connect(t, ns.ClientURL())
	top, err := jet.LoadTopology(jet.TopologyParams{AckWait: 45 * time.Second})
	require.NoError(t, err)
	queues := []string{"default", "emails"}

	applyAll(t, js, top, queues)
	checkApplied(t, js, top, queues)
	applyAll(t, js, top, queues)
	checkApplied(t, js, top, queues)

	// Exactly the declared streams and consumers exist, once each.
	var names []string
	for n := range js.StreamNames(t.Context()).Name() {
		names = append(names, n)
	}
	require.ElementsMatch(t, []string{wire.StreamTasks, wire.StreamEvents, wire.StreamDead, wire.StreamDelayed,
		"KV_" + wire.CancelBucket, "KV_" + wire.WorkersBucket}, names)
	consumers := func(stream string) []string {
		s, err := js.Stream(t.Context(), stream)
		require.NoError(t, err)
		var out []string
		for n := range s.ConsumerNames(t.Context()).Name() {
			out = append(out, n)
		}
		return out
	}
	require.ElementsMatch(t, []string{"q-default", "q-emails"}, consumers(wire.StreamTasks))
	require.ElementsMatch(t, []string{"delayed-mover", "delayed-default", "delayed-emails"}, consumers(wire.StreamDelayed))
}

// TestApplyUpdates checks that a changed setting reaches an existing stream
// and consumer (CreateOrUpdate, not create-if-missing).
func TestApplyUpdates(t *testing.T) {
	t.Parallel()
	ns := jettest.Server(t)
	_, js := jettest.Connect(t, ns.ClientURL())
	queues := []string{"default"}

	small, err := jet.LoadTopology(jet.TopologyParams{TaskMaxMsgs: 5, AckWait: 10 * time.Second})
	require.NoError(t, err)
	applyAll(t, js, small, queues)
	checkApplied(t, js, small, queues)

	def, err := jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)
	applyAll(t, js, def, queues)
	checkApplied(t, js, def, queues)

	// A TASKS created before atomic batches existed gets allow_atomic.
	s, err := js.Stream(t.Context(), wire.StreamTasks)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.AllowAtomicPublish = false
	_, err = js.UpdateStream(t.Context(), cfg)
	require.NoError(t, err)
	applyAll(t, js, def, queues)
	s, err = js.Stream(t.Context(), wire.StreamTasks)
	require.NoError(t, err)
	require.True(t, s.CachedInfo().Config.AllowAtomicPublish, "apply turns allow_atomic on")
}

func TestApplyConcurrent(t *testing.T) {
	t.Parallel()
	ns := jettest.Server(t)
	top, err := jet.LoadTopology(jet.TopologyParams{})
	require.NoError(t, err)
	queues := []string{"default", "emails", "reports"}

	const n = 10
	jss := make([]jetstream.JetStream, n)
	for i := range jss {
		_, jss[i] = jettest.Connect(t, ns.ClientURL())
	}
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			if err := jet.ApplyStreams(t.Context(), jss[i], top); err != nil {
				errs[i] = err
				return
			}
			errs[i] = jet.ApplyQueues(t.Context(), jss[i], top, queues)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "applier %d", i)
	}
	checkApplied(t, jss[0], top, queues)
}

func TestApplyCluster(t *testing.T) {
	t.Parallel()
	c := jettest.NewCluster(t)
	_, js := jettest.Connect(t, c.URLs())
	top, err := jet.LoadTopology(jet.TopologyParams{Replicas: 3})
	require.NoError(t, err)
	queues := []string{"default"}

	applyAll(t, js, top, queues)
	applyAll(t, js, top, queues)
	checkApplied(t, js, top, queues)

	// Two followers besides the leader, once the peers have reported in.
	for _, sc := range top.Streams {
		s, err := js.Stream(t.Context(), sc.Name)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			info, err := s.Info(t.Context())
			return err == nil && info.Config.Replicas == 3 && info.Cluster != nil &&
				info.Cluster.Leader != "" && len(info.Cluster.Replicas) == 2
		}, 10*time.Second, 50*time.Millisecond, sc.Name)
	}
	cons, err := js.Consumer(t.Context(), wire.StreamTasks, wire.ConsumerName("default"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.Cluster != nil && len(info.Cluster.Replicas) == 2
	}, 10*time.Second, 50*time.Millisecond, "the queue consumer is replicated like its stream")
}
