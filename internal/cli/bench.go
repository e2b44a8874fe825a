package cli

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/bench"
	"github.com/flotilla/flotilla/internal/config"
)

func benchCmd(env Env, rf *rootFlags) *cobra.Command {
	var cfg bench.Config
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Flotilla against raw JetStream in one run (record results in docs/benchmarks.md)",
		Long: `bench enqueues --tasks tasks with 64-byte JSON args, drains them with one worker
of --concurrency handlers (results and events off, then results in Redis and
events on), runs --round-trips sequential enqueue-and-wait calls and an HTTP
enqueue phase (--http-tasks requests from --http-clients keep-alive clients
to the web role with its defaults, with results and events on and each off,
taking turns with the same server answering a no-op handler), and runs the
raw JetStream loops in the same run so that every Flotilla figure is printed
next to its raw counterpart.

--cluster 3 runs three embedded servers as a cluster with every stream at
replicas 3; --sync always makes them fsync every write (and, unless given,
runs a fifth of --tasks, --http-tasks and --round-trips). The raw loops run
on the same servers with the same replication.

Phases (--phases): raw, enqueue, drain, drain-results-only, drain-events-only,
drain-results, roundtrip, http.`,
		Args: cobra.NoArgs,
		RunE: profiled(&cpuProfile, func(cmd *cobra.Command, _ []string) error {
			if cfg.RedisURL == "" {
				c, err := load(cmd, rf, config.RoleCLI, nil)
				if err != nil {
					return fmt.Errorf("bench: %w", err)
				}
				cfg.RedisURL = c.Redis.URL
			}
			return bench.Run(cmd.Context(), cfg, cmd.OutOrStdout())
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NATSURL, "server", "", "NATS URL to benchmark against (default: an embedded server in a temp dir)")
	f.IntVar(&cfg.Tasks, "tasks", 100_000, "tasks per throughput phase")
	f.IntVar(&cfg.Concurrency, "concurrency", 64, "worker concurrency")
	f.IntVar(&cfg.RoundTrips, "round-trips", 5000, "sequential enqueue-and-wait calls")
	f.IntVar(&cfg.HTTPClients, "http-clients", 64, "concurrent HTTP clients")
	f.IntVar(&cfg.HTTPTasks, "http-tasks", 50_000, "tasks enqueued over HTTP")
	f.IntVar(&cfg.ArgsBytes, "args-bytes", 64, "size of each task's JSON args")
	f.StringSliceVar(&cfg.Phases, "phases", nil, "phases to run (default all)")
	cmd.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) of the run to this file")
	f.IntVar(&cfg.Cluster, "cluster", 1, "run this many embedded servers as a cluster, every stream at that many replicas (without --server)")
	var sync string
	f.StringVar(&sync, "sync", "", `"always": the embedded servers fsync every write (sync_interval: always)`)
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		switch sync {
		case "":
		case "always":
			cfg.SyncAlways = true
			// Every write waits for the disk: a fifth of the default
			// sizes keeps a run within a few minutes.
			for name, v := range map[string]*int{"tasks": &cfg.Tasks, "http-tasks": &cfg.HTTPTasks, "round-trips": &cfg.RoundTrips} {
				if !cmd.Flags().Changed(name) {
					*v /= 5
				}
			}
		default:
			return fmt.Errorf("--sync: %q; want always (or leave it out: the server's default interval)", sync)
		}
		if cfg.Cluster < 1 {
			return fmt.Errorf("--cluster: %d; want 1 or more", cfg.Cluster)
		}
		if cfg.NATSURL != "" && (cfg.Cluster > 1 || cfg.SyncAlways) {
			return errors.New("--cluster and --sync shape the embedded servers: leave out --server")
		}
		return nil
	}
	cmd.AddCommand(benchBeatCmd(rf, &cpuProfile), benchExecCmd(rf, &cpuProfile))
	return cmd
}

// profiled wraps a bench command's run with the CPU profile that
// --cpuprofile asks for, written also when the run fails.
func profiled(path *string, run func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if *path == "" {
			return run(cmd, args)
		}
		f, err := os.Create(*path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		err = run(cmd, args)
		pprof.StopCPUProfile()
		return errors.Join(err, f.Close())
	}
}

func benchBeatCmd(rf *rootFlags, cpuProfile *string) *cobra.Command {
	var cfg bench.BeatConfig
	cmd := &cobra.Command{
		Use:   "beat",
		Short: "Load many every-minute schedules with spread and measure one leader's fire lag, CPU and memory",
		Long: `bench beat stores --schedules "* * * * *" schedules with a one-minute spread in a
schema of its own (database.url), runs one beat leader against --server (or an
embedded NATS server, whose CPU then counts too) and reports, for every fire
during --duration, the lag from its due time to the server's ack, plus the
process's CPU cores and RSS. Fires go through the producer beat uses in
production: their PENDING states are written to Redis (redis.url, under a
prefix of the run's own that is deleted afterwards) and "sent" events
published. Point --server at a separate nats-server to measure beat alone.`,
		Args: cobra.NoArgs,
		RunE: profiled(cpuProfile, func(cmd *cobra.Command, _ []string) error {
			c, err := load(cmd, rf, config.RoleCLI, nil)
			if err != nil {
				return fmt.Errorf("bench beat: %w", err)
			}
			cfg.DatabaseURL, cfg.RedisURL = c.Database.URL, c.Redis.URL
			return bench.RunBeat(cmd.Context(), cfg, cmd.OutOrStdout())
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NATSURL, "server", "", "NATS URL (default: an embedded server)")
	f.IntVar(&cfg.Schedules, "schedules", 100_000, "number of every-minute schedules")
	f.DurationVar(&cfg.Duration, "duration", 70*time.Second, "measurement window")
	f.DurationVar(&cfg.Warmup, "warmup", time.Minute, "wait this long after the start-up catch-up before measuring (every schedule fires once a minute)")
	f.StringVar(&cfg.PublishMode, "publish", "async", "publish mode: async or inline")
	f.BoolVar(&cfg.NoResults, "no-results", false, "do not write the fires' PENDING states to Redis")
	f.BoolVar(&cfg.NoEvents, "no-events", false, "do not publish the fires' \"sent\" events")
	f.StringVar(&cfg.HeapProfile, "memprofile", "", "write a heap profile (go tool pprof) at the end of the measurement to this file")
	return cmd
}

func benchExecCmd(rf *rootFlags, cpuProfile *string) *cobra.Command {
	var cfg bench.ExecConfig
	cmd := &cobra.Command{
		Use:   "exec",
		Short: "Measure synchronous execution (api role → worker over NATS request-reply) next to raw request-reply",
		Args:  cobra.NoArgs,
		RunE: profiled(cpuProfile, func(cmd *cobra.Command, _ []string) error {
			if cfg.RedisURL == "" {
				c, err := load(cmd, rf, config.RoleCLI, nil)
				if err != nil {
					return fmt.Errorf("bench exec: %w", err)
				}
				cfg.RedisURL = c.Redis.URL
			}
			return bench.RunExec(cmd.Context(), cfg, cmd.OutOrStdout())
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NATSURL, "server", "", "NATS URL (default: an embedded server)")
	f.IntVar(&cfg.Calls, "calls", 5000, "calls per sequential phase")
	f.IntVar(&cfg.ConcurrentCalls, "concurrent-calls", 50_000, "calls in the concurrent HTTP phase")
	f.IntVar(&cfg.Clients, "clients", 64, "concurrent HTTP callers")
	return cmd
}
