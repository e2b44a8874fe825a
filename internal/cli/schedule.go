package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/app"
	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

func scheduleCmd(env Env, rf *rootFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Manage beat's periodic schedules in PostgreSQL (ls, add, rm, enable, disable, run)",
		Long: `Manage the schedules that the beat leader fires. Changes reach a running
leader at once (PostgreSQL NOTIFY). Schedules declared in code can be
disabled and enabled here, but not removed or changed.`,
	}
	cmd.AddCommand(scheduleLsCmd(rf), scheduleAddCmd(env, rf), scheduleRmCmd(rf),
		scheduleEnableCmd(rf, true), scheduleEnableCmd(rf, false), scheduleRunCmd(env, rf))
	return cmd
}

func scheduleLsCmd(rf *rootFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List every schedule with its last and next run",
		Args:  cobra.NoArgs,
		RunE: withStore(rf, func(cmd *cobra.Command, _ []string, st *store.Store) error {
			scs, err := st.ScheduleList(cmd.Context())
			if err != nil {
				return err
			}
			now := time.Now()
			for i := range scs {
				scs[i] = withNextRun(scs[i], now)
			}
			if asJSON {
				if scs == nil {
					scs = []schedule.Schedule{}
				}
				return printJSON(cmd, scs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTASK\tQUEUE\tSCHEDULE\tTZ\tENABLED\tSOURCE\tLAST RUN\tNEXT RUN")
			for _, sc := range scs {
				when := sc.Cron
				if when == "" {
					when = "every " + time.Duration(sc.Interval).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%s\t%s\t%s\n", sc.Name, sc.Task, sc.Queue, when,
					orDash(sc.Timezone), sc.Enabled, sc.Source, timeOrDash(sc.LastRunAt), timeOrDash(sc.NextRunAt))
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

func scheduleAddCmd(env Env, rf *rootFlags) *cobra.Command {
	var (
		sc                                         schedule.Schedule
		args, interval, spread, startAt, expiresAt string
		disabled                                   bool
	)
	cmd := &cobra.Command{
		Use:   "add NAME --task TASK (--cron EXPR | --interval DURATION) [flags]",
		Short: "Create a runtime schedule",
		Example: `  flotilla schedule add nightly-report --task report.build --cron "30 2 * * *" --timezone Europe/Berlin
  flotilla schedule add poll --task metrics.poll --interval 30s --spread 10s --args '{"source":"a"}'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			sc.Name, sc.Enabled = a[0], !disabled
			var err error
			if args != "" {
				sc.Args = json.RawMessage(args)
			}
			if sc.Interval, err = durationFlag("interval", interval); err != nil {
				return err
			}
			if sc.Spread, err = durationFlag("spread", spread); err != nil {
				return err
			}
			if sc.StartAt, err = timeFlag("start-at", startAt); err != nil {
				return err
			}
			if sc.ExpiresAt, err = timeFlag("expires-at", expiresAt); err != nil {
				return err
			}
			cfg, err := load(cmd, rf, config.RoleCLI, nil)
			if err != nil {
				return err
			}
			if err := prepareSchedule(&sc, env.Registry, cfg.Tasks.CheckRegistered); err != nil {
				return err
			}
			pool, st, err := openStore(cmd, cfg)
			if err != nil {
				return err
			}
			defer pool.Close()
			out, err := st.ScheduleCreate(cmd.Context(), sc)
			cliAudit(cmd, st, "schedule.create", sc.Name, err)
			if err != nil {
				return invalidSchedule(err)
			}
			return printJSON(cmd, withNextRun(out, time.Now()))
		},
	}
	f := cmd.Flags()
	f.StringVar(&sc.Task, "task", "", "task name, e.g. report.build (required)")
	f.StringVar(&sc.Queue, "queue", "", "queue (default: the task's registered queue, else default)")
	f.StringVar(&args, "args", "", `args as a JSON object, e.g. '{"x":1}'`)
	f.StringVar(&sc.Cron, "cron", "", `cron expression, 5 fields or 6 with seconds, or @hourly, @every 5m…`)
	f.StringVar(&sc.Timezone, "timezone", "", "IANA time zone of --cron (default UTC)")
	f.StringVar(&interval, "interval", "", "fixed interval instead of --cron, a Go duration of at least 1s")
	f.StringVar(&startAt, "start-at", "", "first possible fire, RFC 3339 (interval ticks are anchored here)")
	f.StringVar(&expiresAt, "expires-at", "", "no fire after this RFC 3339 time")
	f.BoolVar(&sc.OneOff, "one-off", false, "fire once, then disable itself")
	f.StringVar(&spread, "spread", "", "deterministic per-schedule offset within this Go duration, e.g. 30s")
	f.StringVar(&sc.Misfire, "misfire", "", "ticks missed while no leader fired: skip, once (default) or catch_up")
	f.IntVar(&sc.CatchUpMax, "catch-up-max", 0, "with --misfire catch_up, fire at most this many missed ticks (default 100)")
	f.StringVar(&sc.Description, "description", "", "free text")
	f.BoolVar(&disabled, "disabled", false, "create it disabled")
	_ = cmd.MarkFlagRequired("task")
	return cmd
}

func scheduleRmCmd(rf *rootFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a runtime schedule (schedules declared in code can only be disabled)",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(rf, func(cmd *cobra.Command, a []string, st *store.Store) error {
			err := st.ScheduleDelete(cmd.Context(), a[0])
			cliAudit(cmd, st, "schedule.delete", a[0], err)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "deleted schedule %s\n", a[0])
			return err
		}),
	}
}

func scheduleEnableCmd(rf *rootFlags, enable bool) *cobra.Command {
	use, short := "enable NAME", "Enable a schedule: it fires again from its next tick"
	if !enable {
		use, short = "disable NAME", "Disable a schedule: it stays, but does not fire"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: withStore(rf, func(cmd *cobra.Command, a []string, st *store.Store) error {
			sc, err := st.ScheduleSetEnabled(cmd.Context(), a[0], enable)
			action := "schedule.enable"
			if !enable {
				action = "schedule.disable"
			}
			cliAudit(cmd, st, action, a[0], err)
			if err != nil {
				return err
			}
			if !enable {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "disabled schedule %s\n", sc.Name)
				return err
			}
			sc = withNextRun(sc, time.Now())
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "enabled schedule %s; next run %s\n", sc.Name, timeOrDash(sc.NextRunAt))
			return err
		}),
	}
}

func scheduleRunCmd(env Env, rf *rootFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "run NAME",
		Short: "Enqueue a schedule's task now (not counted as a tick; works when disabled)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cfg, c, err := openCLI(cmd, rf, app.Needs{Postgres: true, Redis: true})
			if err != nil {
				return err
			}
			defer c.Close()
			st := store.New(c.Pool)
			sc, err := st.ScheduleGet(cmd.Context(), a[0])
			if err != nil {
				return err
			}
			res, err := app.NewClient(cfg, c, env.Registry).Enqueue(cmd.Context(), client.Request{
				Task: sc.Task, Queue: sc.Queue, Args: sc.Args, Origin: wire.OriginBeat(sc.Name),
			})
			cliAudit(cmd, st, "schedule.run", sc.Name, err)
			if err != nil {
				return cliErr(fmt.Errorf("schedule %s: %w", sc.Name, err))
			}
			return printJSON(cmd, res)
		},
	}
}

// prepareSchedule fills defaults (the task's registered queue first),
// validates sc and checks that its task is registered, as web does. Errors
// name the flag.
func prepareSchedule(sc *schedule.Schedule, reg *task.Registry, checkRegistered bool) error {
	if reg != nil {
		def, err := reg.Lookup(sc.Task)
		switch {
		case err == nil && sc.Queue == "":
			sc.Queue = def.Options.Queue
		case err != nil && checkRegistered && task.ValidateName(sc.Task) == nil:
			return fmt.Errorf("--task: %w (or set tasks.check_registered=false)", err)
		}
	}
	sc.Normalize()
	return invalidSchedule(sc.Validate())
}

// invalidSchedule words a schedule's field errors with their flags.
func invalidSchedule(err error) error {
	if err == nil || !errors.Is(err, task.ErrInvalid) {
		return err
	}
	return fmt.Errorf("invalid schedule: %w", flagErr(err))
}

// flagErr rewrites field errors to name the flag: "--cron: …" (NAME for
// the name argument); several are joined with "; ".
func flagErr(err error) error {
	if err == nil || !errors.Is(err, task.ErrInvalid) {
		return err
	}
	var msgs []string
	for _, e := range unjoin(err) {
		var fe *task.FieldError
		if errors.As(e, &fe) {
			flag := "--" + strings.ReplaceAll(fe.Field, "_", "-")
			if fe.Field == "name" {
				flag = "NAME"
			}
			msgs = append(msgs, flag+": "+fe.Msg)
		} else {
			msgs = append(msgs, e.Error())
		}
	}
	return errors.New(strings.Join(msgs, "; "))
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func durationFlag(name, v string) (schedule.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("--%s: %q is not a Go duration such as 30s or 5m", name, v)
	}
	return schedule.Duration(d), nil
}

func timeFlag(name, v string) (*time.Time, error) {
	if v == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, fmt.Errorf("--%s: %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", name, v)
	}
	return &t, nil
}

// withNextRun sets NextRunAt for an enabled schedule that fires again.
func withNextRun(sc schedule.Schedule, now time.Time) schedule.Schedule {
	sc.NextRunAt = nil
	if !sc.Enabled {
		return sc
	}
	if c, err := schedule.Compile(sc); err == nil {
		if t, ok := c.Next(now); ok {
			t = t.UTC()
			sc.NextRunAt = &t
		}
	}
	return sc
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
