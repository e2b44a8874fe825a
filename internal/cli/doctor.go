package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/app"
	"github.com/flotilla/flotilla/internal/beat"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/wire"
)

// check is one line of the doctor's report.
type check struct {
	name string
	ok   bool
	msg  string
}

func doctorCmd(env Env, rf *rootFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check configuration, NATS/JetStream topology, PostgreSQL migrations, Redis and the beat lease",
		Long: `doctor checks what a deployment needs and says what to do about each problem:
the configuration, NATS with JetStream, every stream of streams/ and its drift
from the files, the consumer of each configured queue, PostgreSQL and pending
migrations, Redis (7.0 or newer, for idempotency keys), and who holds the beat
lease. It exits non-zero when a check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := runDoctor(cmd, rf)
			failed := 0
			for _, c := range checks {
				mark := "ok  "
				if !c.ok {
					mark = "FAIL"
					failed++
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s  %-28s %s\n", mark, c.name, c.msg)
			}
			if failed > 0 {
				return fmt.Errorf("doctor: %d of %d checks failed", failed, len(checks))
			}
			return nil
		},
	}
}

func runDoctor(cmd *cobra.Command, rf *rootFlags) []check {
	ctx, cancel := context.WithTimeout(cmd.Context(), 20*time.Second)
	defer cancel()
	var out []check
	add := func(name string, err error, okMsg string) bool {
		if err != nil {
			out = append(out, check{name, false, err.Error()})
			return false
		}
		out = append(out, check{name, true, okMsg})
		return true
	}
	cfg, err := loadCLI(cmd, rf, nil)
	if !add("configuration", err, "valid") {
		return out
	}
	if cfg.NATS.URL == "" {
		add("nats", errors.New("nats.url is empty: set FLOTILLA_NATS_URL, or start `flotilla dev`"), "")
		return out
	}
	nc, js, err := jet.Connect(ctx, cfg.NATS.URL, "flotilla-doctor", cfg.NATS.InboxPrefix)
	connected := ""
	if err == nil {
		connected = "connected to " + nc.ConnectedUrlRedacted()
	}
	if add("nats", err, connected) {
		defer nc.Close()
		doctorStreams(ctx, js, cfg, add)
	}
	pool, err := store.Open(ctx, cfg.Database.URL)
	if add("postgresql", err, "reachable") {
		defer pool.Close()
		ms, err := store.MigrateStatus(ctx, pool)
		if err == nil {
			var pending []string
			for _, m := range ms {
				if !m.Applied {
					pending = append(pending, m.Source)
				}
			}
			if len(pending) > 0 {
				err = fmt.Errorf("pending migrations %s: run `flotilla migrate`", strings.Join(pending, ", "))
			}
		}
		add("postgresql migrations", err, fmt.Sprintf("%d applied", len(ms)))
	}
	rdb, err := results.Open(ctx, cfg.Redis.URL)
	if add("redis", err, "reachable") {
		defer rdb.Close()
		info, err := rdb.Info(ctx, "server").Result()
		if err == nil {
			v := infoField(info, "redis_version")
			if v != "" && v < "7" {
				err = fmt.Errorf("version %s: idempotency keys need Redis 7.0 or newer (SET NX GET)", v)
			}
			add("redis version", err, v)
		}
	}
	if js != nil {
		leader, err := beat.Leader(ctx, js)
		msg := "no beat replica holds the lease (no beat running?)"
		if leader != "" {
			msg = "held by " + leader
		}
		add("beat lease", err, msg)
	}
	return out
}

// doctorStreams compares every stream with streams/ and checks the queue consumers.
func doctorStreams(ctx context.Context, js jetstream.JetStream, cfg config.Config, add func(string, error, string) bool) {
	topo, err := jet.LoadTopology(app.TopologyParams(cfg))
	if !add("streams/ files", err, "decode") {
		return
	}
	if _, err := js.AccountInfo(ctx); !add("jetstream", err, "enabled") {
		return
	}
	for _, want := range topo.Streams {
		s, err := js.Stream(ctx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			err = fmt.Errorf("missing: run `flotilla streams apply`")
		}
		if err != nil {
			add("stream "+want.Name, err, "")
			continue
		}
		got := s.CachedInfo()
		var drift []string
		if got.Config.Replicas != want.Replicas {
			drift = append(drift, fmt.Sprintf("replicas %d (want %d)", got.Config.Replicas, want.Replicas))
		}
		if got.Config.Retention != want.Retention {
			drift = append(drift, fmt.Sprintf("retention %s (want %s)", got.Config.Retention, want.Retention))
		}
		if got.Config.Discard != want.Discard {
			drift = append(drift, fmt.Sprintf("discard %s (want %s)", got.Config.Discard, want.Discard))
		}
		if got.Config.Duplicates != want.Duplicates {
			drift = append(drift, fmt.Sprintf("duplicate_window %s (want %s)", got.Config.Duplicates, want.Duplicates))
		}
		if len(drift) > 0 {
			err = fmt.Errorf("differs from streams/: %s; run `flotilla streams apply`", strings.Join(drift, ", "))
		}
		add("stream "+want.Name, err, fmt.Sprintf("%d messages", got.State.Msgs))
	}
	for _, q := range cfg.Worker.Queues {
		c, err := js.Consumer(ctx, wire.StreamTasks, wire.ConsumerName(q))
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			err = fmt.Errorf("missing: run `flotilla streams apply --queues %s`", q)
		}
		msg := ""
		if err == nil {
			info := c.CachedInfo()
			msg = fmt.Sprintf("%d pending, %d in flight, %d redelivered", info.NumPending, info.NumAckPending, info.NumRedelivered)
		}
		add("consumer "+wire.ConsumerName(q), err, msg)
	}
	orphans, err := jet.Orphans(ctx, js)
	if err == nil && len(orphans) > 0 {
		var parts []string
		for _, o := range orphans {
			parts = append(parts, fmt.Sprintf("%s: %d tasks", o.Queue, o.Tasks))
		}
		err = fmt.Errorf("tasks wait on queues no consumer serves (%s): start workers for them, or create the consumers with `flotilla streams apply --queues ...`", strings.Join(parts, ", "))
	}
	add("queues without consumer", err, "none")
}

func infoField(info, key string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
