package jet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/streams"
)

// Topology is the effective JetStream topology: the streams/ files with the
// settings that vary per deployment applied on top.
type Topology struct {
	Streams  []jetstream.StreamConfig
	Consumer jetstream.ConsumerConfig // template of q-<queue>
	Mover    jetstream.ConsumerConfig // delayed-mover on DELAYED
	// Lease is beat's lease bucket; its Bucket is empty when
	// TopologyParams.LeaseTTL was not set.
	Lease jetstream.KeyValueConfig
	// Cancel holds the cancelled task ids; Workers the workers' announcements.
	Cancel, Workers jetstream.KeyValueConfig
}

// DefaultCancelTTL is how long a cancellation holds by default
// (tasks.cancel_ttl): a task cancelled while pending or delayed that would
// reach a worker only later than this runs after all.
const DefaultCancelTTL = 30 * 24 * time.Hour

// TopologyParams are the deployment settings applied over streams/.
type TopologyParams struct {
	// Replicas of every stream (1 or 3); 0 keeps the file's value.
	Replicas int
	// TaskMaxMsgs and TaskMaxBytes bound TASKS; 0 keeps the file's value.
	TaskMaxMsgs  int64
	TaskMaxBytes int64
	// AckWait of the queue consumers; 0 keeps the file's value.
	AckWait time.Duration
	// LeaseTTL of beat's lease bucket (beat.lease_ttl); 0 = no bucket.
	LeaseTTL time.Duration
	// CancelTTL of the cancellations bucket; 0 = [DefaultCancelTTL].
	CancelTTL time.Duration
}

// LoadTopology decodes streams/ strictly (unknown fields are an error) and
// applies p.
func LoadTopology(p TopologyParams) (Topology, error) {
	var t Topology
	for _, name := range []string{streams.TasksStream, streams.EventsStream, streams.DeadStream, streams.DelayedStream} {
		var sc jetstream.StreamConfig
		if err := decodeFile(name, &sc); err != nil {
			return t, err
		}
		if p.Replicas > 0 {
			sc.Replicas = p.Replicas
		}
		if sc.Name == wire.StreamTasks {
			if p.TaskMaxMsgs != 0 {
				sc.MaxMsgs = p.TaskMaxMsgs
			}
			if p.TaskMaxBytes != 0 {
				sc.MaxBytes = p.TaskMaxBytes
			}
		}
		t.Streams = append(t.Streams, sc)
	}
	if err := decodeFile(streams.DefaultConsumer, &t.Consumer); err != nil {
		return t, err
	}
	if err := decodeFile(streams.MoverConsumer, &t.Mover); err != nil {
		return t, err
	}
	if p.AckWait > 0 {
		t.Consumer.AckWait = p.AckWait
	}
	if p.LeaseTTL > 0 {
		t.Lease = LeaseBucketConfig(p.LeaseTTL, max(p.Replicas, 1))
	}
	if p.CancelTTL <= 0 {
		p.CancelTTL = DefaultCancelTTL
	}
	t.Cancel = jetstream.KeyValueConfig{
		Bucket: wire.CancelBucket, Description: "Flotilla cancelled task ids", History: 1,
		TTL: p.CancelTTL, Replicas: max(p.Replicas, 1), Storage: jetstream.FileStorage,
	}
	t.Workers = jetstream.KeyValueConfig{
		Bucket: wire.WorkersBucket, Description: "Flotilla workers: each announces itself every few seconds", History: 1,
		TTL: wire.WorkersTTL, Replicas: max(p.Replicas, 1), Storage: jetstream.MemoryStorage,
	}
	return t, nil
}

func decodeFile(name string, v any) error {
	b, err := streams.FS.ReadFile(name)
	if err != nil {
		return fmt.Errorf("streams/%s: %w", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("streams/%s: %w", name, err)
	}
	return nil
}

// QueueConsumer returns the consumer config of queue q derived from the template.
func (t Topology) QueueConsumer(q string) jetstream.ConsumerConfig {
	c := t.Consumer
	c.Durable = wire.ConsumerName(q)
	c.Name = ""
	c.FilterSubject = wire.QueueFilter(q)
	c.Description = "Queue " + q + ": shared by every worker of the queue"
	return c
}

// Stream returns the config of the named stream.
func (t Topology) Stream(name string) (jetstream.StreamConfig, bool) {
	for _, s := range t.Streams {
		if s.Name == name {
			return s, true
		}
	}
	return jetstream.StreamConfig{}, false
}

// ApplyStreams creates or updates every stream. It is idempotent and safe to
// run from many replicas at once: a create that loses a race is retried as an
// update.
func ApplyStreams(ctx context.Context, js jetstream.JetStream, t Topology) error {
	for _, sc := range t.Streams {
		if err := retryTransient(ctx, func() error { return applyStream(ctx, js, sc) }); err != nil {
			return fmt.Errorf("apply stream %s: %w", sc.Name, err)
		}
	}
	for _, kc := range t.Buckets() {
		if err := retryTransient(ctx, func() error { return applyBucket(ctx, js, kc) }); err != nil {
			return fmt.Errorf("apply KV bucket %s: %w", kc.Bucket, err)
		}
	}
	return nil
}

// Buckets are the topology's KV buckets.
func (t Topology) Buckets() []jetstream.KeyValueConfig {
	var out []jetstream.KeyValueConfig
	for _, kc := range []jetstream.KeyValueConfig{t.Lease, t.Cancel, t.Workers} {
		if kc.Bucket != "" {
			out = append(out, kc)
		}
	}
	return out
}

// applyBucket creates the KV bucket kc, or updates it when its TTL,
// replicas or history differ.
func applyBucket(ctx context.Context, js jetstream.JetStream, kc jetstream.KeyValueConfig) error {
	st, err := js.Stream(ctx, "KV_"+kc.Bucket)
	if err == nil {
		got := st.CachedInfo().Config
		if got.MaxAge == kc.TTL && got.MaxMsgsPerSubject == int64(kc.History) && got.Replicas == kc.Replicas {
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	_, err = js.CreateOrUpdateKeyValue(ctx, kc)
	return err
}

// applyStream creates sc, or updates it only when a setting Flotilla
// manages differs: replicas starting at once then leave an up-to-date
// stream alone instead of all rewriting its configuration.
func applyStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, sc)
		return err
	}
	if err != nil {
		return err
	}
	if streamUpToDate(s.CachedInfo().Config, sc) {
		return nil
	}
	_, err = js.UpdateStream(ctx, sc)
	return err
}

func streamUpToDate(got, want jetstream.StreamConfig) bool {
	return slices.Equal(got.Subjects, want.Subjects) && got.Description == want.Description &&
		got.Retention == want.Retention && got.MaxConsumers == want.MaxConsumers &&
		got.MaxMsgs == want.MaxMsgs && got.MaxBytes == want.MaxBytes && got.Discard == want.Discard &&
		got.MaxAge == want.MaxAge && got.MaxMsgsPerSubject == want.MaxMsgsPerSubject &&
		got.MaxMsgSize == want.MaxMsgSize && got.Storage == want.Storage && got.Replicas == want.Replicas &&
		got.Duplicates == want.Duplicates && got.AllowDirect == want.AllowDirect &&
		got.AllowMsgSchedules == want.AllowMsgSchedules && got.AllowAtomicPublish == want.AllowAtomicPublish &&
		(got.AllowRollup || !want.AllowRollup)
}

// applyConsumer creates cc on stream, or updates it only when a setting
// Flotilla manages differs.
func applyConsumer(ctx context.Context, js jetstream.JetStream, stream string, cc jetstream.ConsumerConfig) error {
	c, err := js.Consumer(ctx, stream, cc.Durable)
	if err == nil {
		got := c.CachedInfo().Config
		cc.PauseUntil = got.PauseUntil // an update keeps a paused queue paused
		if got.Description == cc.Description && got.AckPolicy == cc.AckPolicy && got.AckWait == cc.AckWait &&
			got.MaxDeliver == cc.MaxDeliver && got.FilterSubject == cc.FilterSubject &&
			got.MaxAckPending == cc.MaxAckPending && got.MaxWaiting == cc.MaxWaiting &&
			slices.Equal(got.BackOff, cc.BackOff) {
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	_, err = js.CreateOrUpdateConsumer(ctx, stream, cc)
	return err
}

// DelayedConsumer is the consumer delayed-<queue> on DELAYED that counts
// queue q's delayed tasks (its num_pending); nothing pulls from it.
func (t Topology) DelayedConsumer(q string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       wire.DelayedConsumerName(q),
		Description:   "Counts queue " + q + "'s delayed tasks (num_pending); never consumed",
		DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: t.Mover.AckWait, MaxDeliver: -1, FilterSubject: wire.DelayedQueueFilter(q),
		MaxAckPending: 1, MaxWaiting: 1,
	}
}

// ApplyQueues creates or updates the durable consumer q-<queue> of each
// queue and its delayed-<queue> on DELAYED, and the delayed-mover.
func ApplyQueues(ctx context.Context, js jetstream.JetStream, t Topology, queues []string) error {
	if err := retryTransient(ctx, func() error { return applyConsumer(ctx, js, wire.StreamDelayed, t.Mover) }); err != nil {
		return fmt.Errorf("apply consumer %s on %s: %w", t.Mover.Durable, wire.StreamDelayed, err)
	}
	for _, q := range queues {
		for _, c := range []struct {
			stream string
			cc     jetstream.ConsumerConfig
		}{{wire.StreamTasks, t.QueueConsumer(q)}, {wire.StreamDelayed, t.DelayedConsumer(q)}} {
			if err := retryTransient(ctx, func() error { return applyConsumer(ctx, js, c.stream, c.cc) }); err != nil {
				return fmt.Errorf("apply consumer %s on %s: %w", c.cc.Durable, c.stream, err)
			}
		}
	}
	return nil
}

// transient reports whether an apply error is worth retrying: a create that
// lost a race with another replica, a cluster without quorum or leader yet
// (503), or a JetStream API request that timed out while ctx itself is
// still live (a freshly formed cluster can take seconds to place a stream).
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoHeartbeat) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamNameInUse ||
		apiErr.ErrorCode == jetstream.JSErrCodeConsumerNameExists || apiErr.ErrorCode == jetstream.JSErrCodeConsumerExists ||
		apiErr.Code == 503)
}

// retryTransient retries fn a few times on transient errors (see transient).
func retryTransient(ctx context.Context, fn func() error) error {
	var err error
	for i := 0; i < 5; i++ {
		err = fn()
		if err == nil {
			return nil
		}
		if !transient(ctx, err) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(time.Duration(50*(i+1)) * time.Millisecond):
		}
	}
	return err
}

// LeaseBucketConfig is the KV bucket of beat's leader lease: one key,
// history 1, and ttl as the bucket's max age (a lease expires ttl after
// its last renewal).
func LeaseBucketConfig(ttl time.Duration, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: wire.LeaseBucket, Description: "Flotilla beat leader lease", History: 1,
		TTL: ttl, Replicas: replicas, Storage: jetstream.FileStorage,
	}
}
