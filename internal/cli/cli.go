// Package cli is Flotilla's command line: one cobra command per role plus the
// admin commands. It parses flags, loads configuration and calls app; it
// holds no task logic.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/app"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/task"
)

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3".
var Version = "dev"

// Env is what the commands need from the process.
type Env struct {
	Registry *task.Registry
	// Schedules are the periodic tasks declared in code.
	Schedules []schedule.Schedule
	// Middleware wraps every handler, outermost first.
	Middleware []task.Middleware
	Stdin      io.Reader
	Stdout     io.Writer
	Stderr     io.Writer
}

// flagKeys maps the flags shared by every command to config keys.
var globalFlagKeys = map[string]string{
	"nats-url":     "nats.url",
	"redis-url":    "redis.url",
	"database-url": "database.url",
	"log-level":    "log.level",
	"log-format":   "log.format",
	"log-dir":      "log.dir",
	"replicas":     "nats.replicas",
	"data-dir":     "data_dir",
}

// Run executes the command line args (without the program name).
func Run(ctx context.Context, env Env, args []string) error {
	if env.Stdout == nil {
		env.Stdout = os.Stdout
	}
	if env.Stderr == nil {
		env.Stderr = os.Stderr
	}
	root := newRoot(env)
	root.SetArgs(args)
	if env.Stdin != nil {
		root.SetIn(env.Stdin)
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	return root.ExecuteContext(ctx)
}

type rootFlags struct {
	configFile string
}

func newRoot(env Env) *cobra.Command {
	rf := &rootFlags{}
	root := &cobra.Command{
		Use:           "flotilla",
		Short:         "Flotilla: background tasks on NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&rf.configFile, "config", "", "configuration file (YAML or JSON); default $FLOTILLA_CONFIG")
	pf.String("nats-url", "", "NATS servers, comma-separated (nats.url)")
	pf.String("redis-url", "", "Redis URL (redis.url)")
	pf.String("database-url", "", "PostgreSQL URL (database.url)")
	pf.String("log-level", "", "log level: debug, info, warn, error (log.level)")
	pf.String("log-format", "", "log format: console or json (log.format)")
	pf.String("log-dir", "", "write one rotating log file per role into this directory (log.dir)")
	pf.Int("replicas", 0, "stream replicas, 1 or 3 (nats.replicas)")
	pf.String("data-dir", "", "local state of dev, e.g. the embedded JetStream store (data_dir)")

	root.AddCommand(
		roleCmd(env, rf, config.RoleDev, "Run every role in one process on an embedded NATS server", nil),
		roleCmd(env, rf, config.RoleWeb, "Run the web role (HTTP on :8080)", addrFlag("web.addr")),
		roleCmd(env, rf, config.RoleAPI, "Run the kernel API role (HTTP on :8081)", addrFlag("api.addr")),
		roleCmd(env, rf, config.RoleWorker, "Run a worker for some queues (worker ls: list the live workers)", workerFlags),
		roleCmd(env, rf, config.RoleBeat, "Run the periodic scheduler (one replica leads, the others stand by)", addrFlag("beat.addr")),
		streamsCmd(env, rf),
		taskCmd(env, rf),
		workflowCmd(env, rf),
		migrateCmd(env, rf),
		scheduleCmd(env, rf),
		tokenCmd(rf),
		userCmd(rf),
		queueCmd(rf),
		auditCmd(rf),
		configCmd(env, rf),
		healthCmd(env, rf),
		doctorCmd(env, rf),
		benchCmd(env, rf),
		&cobra.Command{
			Use: "version", Short: "Print the version",
			RunE: func(cmd *cobra.Command, _ []string) error {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), "flotilla", Version)
				return err
			},
		},
	)
	return root
}

// load reads the configuration of role with the command's flags.
func load(cmd *cobra.Command, rf *rootFlags, role string, extra map[string]string) (config.Config, error) {
	keys := map[string]string{}
	for k, v := range globalFlagKeys {
		keys[k] = v
	}
	for k, v := range extra {
		keys[k] = v
	}
	// cmd.Flags() holds the command's own and the inherited persistent
	// flags, with Changed set for those given on the command line.
	return config.Load(role, config.LoadOptions{File: rf.configFile, Flags: cmd.Flags(), FlagKeys: keys})
}

type flagAdder func(cmd *cobra.Command) map[string]string

func addrFlag(key string) flagAdder {
	return func(cmd *cobra.Command) map[string]string {
		cmd.Flags().String("addr", "", "listen address ("+key+")")
		return map[string]string{"addr": key}
	}
}

func workerFlags(cmd *cobra.Command) map[string]string {
	cmd.Flags().StringSlice("queues", nil, "queues to consume, comma-separated (worker.queues)")
	cmd.Flags().Int("concurrency", 0, "handlers in flight per queue (worker.concurrency)")
	cmd.Flags().String("name", "", "worker name in task states (worker.name)")
	cmd.Flags().String("addr", "", "health and metrics address (worker.addr)")
	return map[string]string{"queues": "worker.queues", "concurrency": "worker.concurrency", "name": "worker.name", "addr": "worker.addr"}
}

func roleCmd(env Env, rf *rootFlags, role, short string, add flagAdder) *cobra.Command {
	var keys map[string]string
	cmd := &cobra.Command{
		Use:   role,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd, rf, role, keys)
			if err != nil {
				return err
			}
			return app.Run(cmd.Context(), cfg, app.Options{Registry: env.Registry, Stdout: env.Stdout, Schedules: env.Schedules, Middleware: env.Middleware, Version: Version})
		},
	}
	if add != nil {
		keys = add(cmd)
	}
	if role == config.RoleWorker {
		cmd.AddCommand(workerLsCmd(rf))
	}
	if role == config.RoleDev {
		cmd.Flags().StringSlice("queues", nil, "queues the dev worker consumes (worker.queues)")
		cmd.Flags().Int("concurrency", 0, "handlers in flight per queue (worker.concurrency)")
		keys = map[string]string{"queues": "worker.queues", "concurrency": "worker.concurrency"}
	}
	return cmd
}
