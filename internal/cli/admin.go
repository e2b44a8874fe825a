package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/app"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// loadCLI loads the cli role's configuration. When no NATS URL was given
// (flag, environment or file) and a dev process recorded its embedded
// server's URL under data_dir, that URL is used, so `flotilla task send`
// talks to `flotilla dev` even when dev had to pick a free port.
// openCLI loads the cli configuration and opens the connections n asks for
// (NATS always), leaving the streams as they are; close them with c.Close.
func openCLI(cmd *cobra.Command, rf *rootFlags, n app.Needs) (config.Config, *app.Conns, error) {
	cfg, err := loadCLI(cmd, rf, nil)
	if err != nil {
		return cfg, nil, err
	}
	cfg.NATS.ApplyStreams = false
	c, err := app.Open(cmd.Context(), cfg, n)
	return cfg, c, err
}

func loadCLI(cmd *cobra.Command, rf *rootFlags, extra map[string]string) (config.Config, error) {
	cfg, err := load(cmd, rf, config.RoleCLI, extra)
	if err != nil {
		return cfg, err
	}
	explicit := os.Getenv(config.EnvName("nats.url")) != "" || cmd.Flags().Changed("nats-url") ||
		rf.configFile != "" || os.Getenv("FLOTILLA_CONFIG") != ""
	if !explicit {
		if b, err := os.ReadFile(filepath.Join(cfg.DataDir, app.DevURLFile)); err == nil {
			u := strings.TrimSpace(string(b))
			if u != "" {
				cfg.NATS.URL = u
			}
		}
	}
	return cfg, nil
}

func streamsCmd(env Env, rf *rootFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "streams", Short: "Manage the JetStream topology of streams/"}
	var queues []string
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Create or update every stream and the consumers of the given queues (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadCLI(cmd, rf, nil)
			if err != nil {
				return err
			}
			cfg.NATS.ApplyStreams = true
			c, err := app.Open(cmd.Context(), cfg, app.Needs{})
			if err != nil {
				return err
			}
			defer c.Close()
			if len(queues) == 0 {
				queues = cfg.Worker.Queues
			}
			if err := jet.ApplyQueues(cmd.Context(), c.JS, c.Topology, queues); err != nil {
				return err
			}
			for _, s := range c.Topology.Streams {
				fmt.Fprintf(cmd.OutOrStdout(), "stream %s: subjects %s, replicas %d\n", s.Name, strings.Join(s.Subjects, " "), s.Replicas)
			}
			for _, q := range queues {
				fmt.Fprintf(cmd.OutOrStdout(), "consumer %s on %s: filter %s\n", wire.ConsumerName(q), wire.StreamTasks, wire.QueueFilter(q))
			}
			for _, kc := range c.Topology.Buckets() {
				fmt.Fprintf(cmd.OutOrStdout(), "kv bucket %s: %s, ttl %s, replicas %d\n", kc.Bucket, kc.Description, kc.TTL, kc.Replicas)
			}
			return nil
		},
	}
	apply.Flags().StringSliceVar(&queues, "queues", nil, "queues whose consumers to create (default worker.queues)")
	cmd.AddCommand(apply)
	return cmd
}

func taskCmd(env Env, rf *rootFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "task", Short: "Send tasks and read their states"}
	var (
		args, queue, countdown, eta, expires, timeout, idem, id string
		maxRetries                                              int
		wait                                                    bool
		waitFor                                                 time.Duration
	)
	send := &cobra.Command{
		Use:   "send TASK",
		Short: "Enqueue a task; with --wait, wait for its result",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			body := client.EnqueueBody{ID: id, Task: a[0], Queue: queue, Countdown: countdown, ETA: eta, Expires: expires, Timeout: timeout, IdempotencyKey: idem}
			if args != "" {
				body.Args = json.RawMessage(args)
			}
			if cmd.Flags().Changed("max-retries") {
				body.MaxRetries = &maxRetries
			}
			req, err := body.Request(time.Now())
			if err != nil {
				return flagErr(err)
			}
			req.Origin = wire.OriginCLI
			cfg, c, err := openCLI(cmd, rf, app.Needs{Redis: true})
			if err != nil {
				return err
			}
			defer c.Close()
			cl := app.NewClient(cfg, c, env.Registry)
			if !wait {
				res, err := cl.Enqueue(cmd.Context(), req)
				if err != nil {
					return cliErr(err)
				}
				return printJSON(cmd, res)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), waitFor)
			defer cancel()
			st, err := cl.EnqueueAndWait(ctx, req)
			if err != nil {
				return cliErr(err)
			}
			if err := printJSON(cmd, st); err != nil {
				return err
			}
			if st.State != task.StateSuccess {
				return fmt.Errorf("task %s ended %s: %s", st.ID, st.State, st.Error)
			}
			return nil
		},
	}
	f := send.Flags()
	f.StringVar(&args, "args", "", `args as a JSON object, e.g. '{"x":1}'`)
	f.StringVar(&queue, "queue", "", "queue (default: the task's, else default)")
	f.StringVar(&countdown, "countdown", "", "delay, a Go duration such as 30s")
	f.StringVar(&eta, "eta", "", "run at this RFC 3339 time")
	f.StringVar(&expires, "expires", "", "RFC 3339 time or duration after which the task is not run")
	f.IntVar(&maxRetries, "max-retries", 0, "retry budget")
	f.StringVar(&timeout, "timeout", "", "per-attempt timeout, a Go duration")
	f.StringVar(&idem, "idempotency-key", "", "enqueues with the same key within the dedup window run once")
	f.StringVar(&id, "id", "", "task id (default: a new ULID); resending with the id of an unconfirmed enqueue runs it once")
	f.BoolVar(&wait, "wait", false, "wait for the final state and print it")
	f.DurationVar(&waitFor, "wait-timeout", time.Minute, "how long --wait waits")

	get := &cobra.Command{
		Use:   "get ID",
		Short: "Print a task's state and result",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cfg, c, err := openCLI(cmd, rf, app.Needs{Redis: true})
			if err != nil {
				return err
			}
			defer c.Close()
			st, err := app.NewClient(cfg, c, env.Registry).Get(cmd.Context(), a[0])
			if err != nil {
				return cliErr(fmt.Errorf("task %s: %w", a[0], err))
			}
			return printJSON(cmd, st)
		},
	}
	cmd.AddCommand(send, get, taskCancelCmd(rf), taskLsCmd(env, rf))
	return cmd
}

func cliErr(err error) error {
	var he *rest.HTTPError
	if errors.As(err, &he) {
		return errors.New(he.Body.Error)
	}
	return err
}

func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func configCmd(env Env, rf *rootFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect configuration"}
	var role, format string
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration of a role, secrets redacted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd, rf, role, nil)
			if err != nil {
				return err
			}
			return cfg.Print(cmd.OutOrStdout(), format)
		},
	}
	print.Flags().StringVar(&role, "role", config.RoleDev, "role: web, api, worker, beat, dev")
	print.Flags().StringVar(&format, "format", "yaml", "yaml or json")
	cmd.AddCommand(print)
	return cmd
}

func healthCmd(env Env, rf *rootFlags) *cobra.Command {
	var role, url string
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Check a running role's /readyz; exit status 0 when ready (for container health checks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				cfg, err := load(cmd, rf, role, nil)
				if err != nil {
					return err
				}
				addr := map[string]string{
					config.RoleWeb: cfg.Web.Addr, config.RoleAPI: cfg.API.Addr, config.RoleDev: cfg.Web.Addr,
					config.RoleWorker: cfg.Worker.Addr, config.RoleBeat: cfg.Beat.Addr,
				}[role]
				if strings.HasPrefix(addr, ":") {
					addr = "127.0.0.1" + addr
				}
				url = "http://" + addr + "/readyz"
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("health: %w", err)
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			_ = printJSON(cmd, body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("health: %s answered %s", url, resp.Status)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&role, "role", config.RoleWeb, "role whose address to check: web, api, worker, beat, dev")
	cmd.Flags().StringVar(&url, "url", "", "readiness URL to check instead of the role's address")
	return cmd
}
