package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/app"
	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/queues"
	"github.com/flotilla/flotilla/internal/rest"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/revoke"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/task"
	"github.com/flotilla/flotilla/internal/wire"
)

// taskCancelCmd is `flotilla task cancel`: one task by id, or with --all
// every pending and delayed task of --task and/or --queue.
func taskCancelCmd(rf *rootFlags) *cobra.Command {
	var all bool
	var f revoke.Filter
	cmd := &cobra.Command{
		Use:   "cancel ID | cancel --all (--task NAME | --queue Q)",
		Short: "Cancel a task (it never runs, or its running attempt is cancelled), or every waiting task of a name or queue",
		Example: "  flotilla task cancel 01JD7Y4T2W9X6V3Q8M5N0R1S2P\n" +
			"  flotilla task cancel --all --task report.build\n  flotilla task cancel --all --queue bulk --task mail.send",
		RunE: func(cmd *cobra.Command, a []string) error {
			switch {
			case all && len(a) > 0:
				return errors.New("give an ID or --all, not both")
			case !all && len(a) != 1:
				return errors.New("give one task ID, or --all with --task and/or --queue")
			case all && f.Task == "" && f.Queue == "":
				return errors.New("--all needs --task NAME, --queue Q, or both")
			case !all && (f.Task != "" || f.Queue != ""):
				return errors.New("--task and --queue select tasks for --all")
			}
			if f.Task != "" {
				if err := task.ValidateName(f.Task); err != nil {
					return fmt.Errorf("--task: %w", err)
				}
			}
			if f.Queue != "" {
				if err := task.ValidateQueue(f.Queue); err != nil {
					return fmt.Errorf("--queue: %w", err)
				}
			}
			cfg, c, err := openCLI(cmd, rf, app.Needs{Redis: true, Postgres: true})
			if err != nil {
				return err
			}
			defer c.Close()
			st := store.New(c.Pool)
			cn := revoke.New(c.JS, c.Results, jet.NewEvents(c.NC, wire.EventLevel(cfg.Tasks.Events)))
			by := "cli:" + osActor()
			if all {
				n, err := cn.CancelMatching(cmd.Context(), f, by)
				cliAudit(cmd, st, "task.cancel_bulk", fmt.Sprintf("task=%s queue=%s", f.Task, f.Queue), err)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "cancelled %d tasks\n", n)
				return err
			}
			out, err := cn.Cancel(cmd.Context(), a[0], by)
			cliAudit(cmd, st, "task.cancel", a[0], err)
			switch {
			case errors.Is(err, results.ErrNotFound):
				return fmt.Errorf("task %s: not found (unknown, or its state expired)", a[0])
			case err != nil:
				return err
			case out.Running:
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "task %s is running on %s: cancelling it\n", a[0], out.State.Worker)
			default:
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "cancelled task %s\n", a[0])
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "cancel every pending and delayed task that --task and --queue select")
	cmd.Flags().StringVar(&f.Task, "task", "", "with --all: the task name")
	cmd.Flags().StringVar(&f.Queue, "queue", "", "with --all: the queue")
	return cmd
}

// queueCmd is `flotilla queue ls|pause|resume|purge`.
func queueCmd(rf *rootFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "queue", Short: "Queue figures; pause, resume or purge a queue"}
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "Per queue: pending, in flight, redelivered, delayed, oldest, rate, dead letters, paused",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := openCLI(cmd, rf, app.Needs{})
			if err != nil {
				return err
			}
			defer c.Close()
			qs, err := queues.New(c.JS).List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd, qs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "QUEUE\tPENDING\tIN FLIGHT\tREDELIVERED\tDELAYED\tOLDEST\tDEAD\tPAUSED")
			for _, q := range qs {
				delayed, oldest, paused := "-", "-", "no"
				if q.Delayed != nil {
					delayed = fmt.Sprint(*q.Delayed)
				}
				if q.OldestAgeS != nil {
					oldest = (time.Duration(*q.OldestAgeS * float64(time.Second))).Round(time.Second).String()
				}
				if q.Paused {
					paused = "yes"
					if q.PausedUntil != nil {
						paused = "until " + q.PausedUntil.Format(time.RFC3339)
					}
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%d\t%s\n", q.Queue, q.Pending, q.InFlight, q.Redelivered, delayed, oldest, q.Dead, paused)
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON (with the rate, which needs samples over time) instead of a table")

	var until string
	pause := &cobra.Command{
		Use:   "pause QUEUE [--until RFC3339]",
		Short: "Stop a queue from delivering tasks (running ones finish) until resumed or --until",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			var t time.Time
			if until != "" {
				var err error
				if t, err = time.Parse(time.RFC3339, until); err != nil {
					return fmt.Errorf("--until: %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", until)
				}
				if !t.After(time.Now()) {
					return fmt.Errorf("--until: %s is not in the future", until)
				}
			}
			return steerQueue(cmd, rf, "queue.pause", a[0], func(ctx context.Context, s *queues.Service) (queues.Stats, error) {
				return s.Pause(ctx, a[0], t)
			})
		},
	}
	pause.Flags().StringVar(&until, "until", "", "resume by itself at this RFC 3339 time")
	resume := &cobra.Command{
		Use:   "resume QUEUE",
		Short: "Let a paused queue deliver again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return steerQueue(cmd, rf, "queue.resume", a[0], func(ctx context.Context, s *queues.Service) (queues.Stats, error) {
				return s.Resume(ctx, a[0])
			})
		},
	}
	var confirm string
	purge := &cobra.Command{
		Use:   "purge QUEUE --confirm QUEUE",
		Short: "Cancel every pending and delayed task of a queue (they end CANCELLED)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			if confirm != a[0] {
				return fmt.Errorf("purging cancels every waiting task of queue %s: repeat its name with --confirm %s", a[0], a[0])
			}
			cfg, c, err := openCLI(cmd, rf, app.Needs{Redis: true, Postgres: true})
			if err != nil {
				return err
			}
			defer c.Close()
			st := store.New(c.Pool)
			if _, err := queues.New(c.JS).Get(cmd.Context(), a[0]); err != nil {
				return err
			}
			n, err := revoke.New(c.JS, c.Results, jet.NewEvents(c.NC, wire.EventLevel(cfg.Tasks.Events))).
				CancelMatching(cmd.Context(), revoke.Filter{Queue: a[0]}, "cli:"+osActor())
			cliAudit(cmd, st, "queue.purge", a[0], err)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "purged queue %s: %d tasks cancelled\n", a[0], n)
			return err
		},
	}
	purge.Flags().StringVar(&confirm, "confirm", "", "the queue's name again")
	cmd.AddCommand(ls, pause, resume, purge)
	return cmd
}

// steerQueue runs op on queue q, audits it and prints the queue's state.
func steerQueue(cmd *cobra.Command, rf *rootFlags, action, q string, op func(context.Context, *queues.Service) (queues.Stats, error)) error {
	_, c, err := openCLI(cmd, rf, app.Needs{Postgres: true})
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := op(cmd.Context(), queues.New(c.JS))
	cliAudit(cmd, store.New(c.Pool), action, q, err)
	if err != nil {
		return err
	}
	state := "running"
	if st.Paused {
		state = "paused"
		if st.PausedUntil != nil {
			state += " until " + st.PausedUntil.Format(time.RFC3339)
		}
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "queue %s: %s, %d pending\n", q, state, st.Pending)
	return err
}

// workerLsCmd is `flotilla worker ls`.
func workerLsCmd(rf *rootFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the live workers: host, pid, queues, concurrency, what each runs now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := openCLI(cmd, rf, app.Needs{})
			if err != nil {
				return err
			}
			defer c.Close()
			ws, err := fleet.List(cmd.Context(), c.JS)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd, ws)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tHOST\tPID\tQUEUES\tCONCURRENCY\tRUNNING\tPROCESSED\tFAILED\tUP SINCE\tLAST SEEN")
			for _, w := range ws {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", w.ID, w.Host, w.PID, strings.Join(w.Queues, ","),
					w.Concurrency, len(w.Running), w.Processed, w.Failed, w.StartedAt.Format(time.RFC3339), w.LastSeen.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (with the running tasks' ids) instead of a table")
	return cmd
}

// taskLsCmd is `flotilla task ls`: the task index, newest first.
func taskLsCmd(env Env, rf *rootFlags) *cobra.Command {
	var q results.Query
	var since, until string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls [--state S] [--task NAME] [--queue Q] [--since 1h|RFC3339] [--until …] [--limit N] [--cursor C]",
		Short: "List recent tasks, newest first, from the task index",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, f := range []struct {
				name, v string
				to      *time.Time
			}{{"since", since, &q.Since}, {"until", until, &q.Until}} {
				if f.v == "" {
					continue
				}
				t, err := rest.ParseTimeOrAgo(f.v, time.Now())
				if err != nil {
					return fmt.Errorf("--%s: %w", f.name, err)
				}
				*f.to = t
			}
			if q.State != "" && !slices.Contains(task.States, q.State) {
				return fmt.Errorf("--state: %q is not one of %s", q.State, strings.Join(task.States, ", "))
			}
			if q.Limit < 1 || q.Limit > 1000 {
				return fmt.Errorf("--limit: %d is not from 1 to 1000", q.Limit)
			}
			cfg, c, err := openCLI(cmd, rf, app.Needs{Redis: true})
			if err != nil {
				return err
			}
			defer c.Close()
			page, err := app.NewClient(cfg, c, env.Registry).Search(cmd.Context(), q)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd, page)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTASK\tQUEUE\tSTATE\tATTEMPTS\tENQUEUED\tFINISHED\tERROR")
			for _, st := range page.Items {
				errText := st.Error
				if len(errText) > 60 {
					errText = errText[:57] + "..."
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", st.ID, st.Task, st.Queue, st.State, st.Attempts,
					timeOrDash(st.EnqueuedAt), timeOrDash(st.FinishedAt), errText)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --cursor %s\n", page.Next)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.State, "state", "", "PENDING, STARTED, RETRY, SUCCESS, FAILURE, EXPIRED or CANCELLED")
	f.StringVar(&q.Task, "task", "", "task name")
	f.StringVar(&q.Queue, "queue", "", "queue")
	f.StringVar(&since, "since", "", "enqueued at or after: RFC 3339, or a duration ago such as 1h")
	f.StringVar(&until, "until", "", "enqueued at or before: RFC 3339, or a duration ago")
	f.IntVar(&q.Limit, "limit", 50, "page size, 1 to 1000")
	f.StringVar(&q.Cursor, "cursor", "", "the next page (printed after a full page)")
	f.BoolVar(&asJSON, "json", false, "print the page as JSON, with its next cursor")
	return cmd
}
