package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/store"
)

// openStore connects to database.url of cfg; the caller closes the pool.
func openStore(cmd *cobra.Command, cfg config.Config) (*pgxpool.Pool, *store.Store, error) {
	pool, err := store.Open(cmd.Context(), cfg.Database.URL)
	if err != nil {
		return nil, nil, err
	}
	return pool, store.New(pool), nil
}

// withStore wraps a command body that needs the schedule/token store: it
// loads the cli configuration, opens PostgreSQL and closes it afterwards.
func withStore(rf *rootFlags, fn func(cmd *cobra.Command, args []string, st *store.Store) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cfg, err := load(cmd, rf, config.RoleCLI, nil)
		if err != nil {
			return err
		}
		pool, st, err := openStore(cmd, cfg)
		if err != nil {
			return err
		}
		defer pool.Close()
		return fn(cmd, args, st)
	}
}

func migrateCmd(env Env, rf *rootFlags) *cobra.Command {
	var createDB bool
	cmd := &cobra.Command{
		Use:   "migrate [up|down|status]",
		Short: "Apply (up, the default), roll back one (down) or list (status) the PostgreSQL migrations",
		Long: `Apply, roll back or list the migrations embedded from sql/migrations
(goose) in the database of database.url (FLOTILLA_DATABASE_URL, --database-url).

  up      apply every pending migration (default); safe to run from several
          processes at once: they queue on an advisory lock
  down    roll back the latest applied migration (loses its data)
  status  list every migration and whether it is applied

The dev role migrates by itself; other deployments run "flotilla migrate"
before starting web and beat (docker-compose does, as a one-shot service).`,
		Args:      cobra.MatchAll(cobra.MaximumNArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"up", "down", "status"},
		RunE: func(cmd *cobra.Command, args []string) error {
			action := "up"
			if len(args) == 1 {
				action = args[0]
			}
			cfg, err := load(cmd, rf, config.RoleCLI, nil)
			if err != nil {
				return err
			}
			if createDB {
				if _, err := store.EnsureDatabase(cmd.Context(), cfg.Database.URL); err != nil {
					return err
				}
			}
			pool, _, err := openStore(cmd, cfg)
			if err != nil {
				return err
			}
			defer pool.Close()
			out := cmd.OutOrStdout()
			switch action {
			case "up":
				applied, err := store.MigrateUp(cmd.Context(), pool)
				for _, m := range applied {
					fmt.Fprintf(out, "applied %s (%s)\n", m.Source, m.Duration.Round(time.Millisecond))
				}
				if err != nil {
					return err
				}
				if len(applied) == 0 {
					fmt.Fprintln(out, "database is up to date")
				}
			case "down":
				m, ok, err := store.MigrateDown(cmd.Context(), pool)
				if err != nil {
					return err
				}
				if !ok {
					fmt.Fprintln(out, "no migration is applied: nothing to roll back")
					return nil
				}
				fmt.Fprintf(out, "rolled back %s (%s)\n", m.Source, m.Duration.Round(time.Millisecond))
			case "status":
				st, err := store.MigrateStatus(cmd.Context(), pool)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tMIGRATION\tSTATE\tAPPLIED AT")
				for _, m := range st {
					state, at := "pending", "-"
					if m.Applied {
						state, at = "applied", m.AppliedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", m.Version, m.Source, state, at)
				}
				return tw.Flush()
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&createDB, "create-database", false, "create the database of database.url first if it does not exist (needs the CREATEDB privilege)")
	return cmd
}
