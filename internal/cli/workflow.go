package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/app"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/revoke"
	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/internal/workflow"
)

// workflowCmd is `flotilla workflow start|get|group|cancel`.
func workflowCmd(env Env, rf *rootFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "workflow", Short: "Start chains, groups and chords of tasks, and follow them"}
	start := &cobra.Command{
		Use:     "start FILE|-",
		Short:   `Start the workflow a JSON file (or stdin) defines: {"chain": [...]}, {"group": [...]} or {"chord": {"group": [...], "callback": {...}}}`,
		Example: `  echo '{"chain": [{"task": "sys.echo", "args": {"n": 1}}, {"task": "sys.echo", "pass_result": true}]}' | flotilla workflow start -`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			var b []byte
			var err error
			if a[0] == "-" {
				b, err = io.ReadAll(cmd.InOrStdin())
			} else {
				b, err = os.ReadFile(a[0])
			}
			if err != nil {
				return err
			}
			def, err := workflow.Parse(b)
			if err != nil {
				return err
			}
			cfg, c, err := openCLI(cmd, rf, app.Needs{Redis: true})
			if err != nil {
				return err
			}
			defer c.Close()
			eng := workflow.New(c.Results, app.NewClient(cfg, c, env.Registry), nil)
			id, err := eng.Start(cmd.Context(), def, workflow.StartOptions{Origin: wire.OriginCLI})
			if err != nil {
				return cliErr(err)
			}
			return printJSON(cmd, map[string]string{"id": id, "state": workflow.StateRunning})
		},
	}
	// read prints what fn reads with an engine on the configured stores.
	read := func(fn func(cmd *cobra.Command, e *workflow.Engine, id string) (any, error)) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, a []string) error {
			cfg, c, err := openCLI(cmd, rf, app.Needs{Redis: true})
			if err != nil {
				return err
			}
			defer c.Close()
			v, err := fn(cmd, workflow.New(c.Results, app.NewClient(cfg, c, env.Registry), nil), a[0])
			if err != nil {
				return err
			}
			return printJSON(cmd, v)
		}
	}
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Print a workflow and the state of every step",
		Args:  cobra.ExactArgs(1),
		RunE: read(func(cmd *cobra.Command, e *workflow.Engine, id string) (any, error) {
			return e.Get(cmd.Context(), id)
		}),
	}
	group := &cobra.Command{
		Use:   "group ID",
		Short: "Print a group or chord as one: counts, results in order, members",
		Args:  cobra.ExactArgs(1),
		RunE: read(func(cmd *cobra.Command, e *workflow.Engine, id string) (any, error) {
			return e.Group(cmd.Context(), id)
		}),
	}
	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a workflow: no further step starts, and its waiting tasks are cancelled",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cfg, c, err := openCLI(cmd, rf, app.Needs{Redis: true})
			if err != nil {
				return err
			}
			defer c.Close()
			cn := revoke.New(c.JS, c.Results, jet.NewEvents(c.NC, wire.EventLevel(cfg.Tasks.Events)))
			eng := workflow.New(c.Results, app.NewClient(cfg, c, env.Registry), func(ctx2 context.Context, id, by string) error {
				_, err := cn.Cancel(ctx2, id, by)
				return err
			})
			n, err := eng.Cancel(cmd.Context(), a[0], "cli:"+osActor())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "cancelled workflow %s (%d waiting tasks cancelled)\n", a[0], n)
			return err
		},
	}
	cmd.AddCommand(start, get, group, cancel)
	return cmd
}
