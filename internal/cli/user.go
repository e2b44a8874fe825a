package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/flotilla/flotilla/internal/auth"
	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/revoke"
	"github.com/flotilla/flotilla/internal/store"
)

func userCmd(rf *rootFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Manage the people who log in to web (add, ls, passwd, role, rm)",
		Long: `Manage accounts for the web role (web.auth=required, the default outside
dev). A user has a role: admin (everything), operator (enqueue, cancel,
retry, pause queues, schedules) or viewer (read only). Passwords are read from
the terminal without echo, or from the first line of standard input when it
is not a terminal, and stored as bcrypt hashes.`,
	}
	cmd.AddCommand(userAddCmd(rf), userLsCmd(rf), userPasswdCmd(rf), userRoleCmd(rf), userRmCmd(rf))
	return cmd
}

func userAddCmd(rf *rootFlags) *cobra.Command {
	var role string
	cmd := &cobra.Command{
		Use:     "add NAME --role admin|operator|viewer",
		Short:   "Create a user; the password comes from a prompt or standard input",
		Example: "  flotilla user add ada --role admin\n  echo 's3cret-pass' | flotilla user add ci-viewer --role viewer",
		Args:    cobra.ExactArgs(1),
		RunE: withStore(rf, func(cmd *cobra.Command, a []string, st *store.Store) error {
			if !store.ValidRole(role) {
				return fmt.Errorf("--role: %q: %w", role, store.ErrInvalidRole)
			}
			hash, err := readPassword(cmd, "Password for "+a[0]+": ")
			if err != nil {
				return err
			}
			u, err := st.UserCreate(cmd.Context(), a[0], hash, role)
			cliAudit(cmd, st, "user.create", a[0], err)
			if errors.Is(err, store.ErrInvalidUserName) {
				return fmt.Errorf("NAME: %q %w", a[0], store.ErrInvalidUserName)
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "created user %s (role %s)\n", u.Name, u.Role)
			return err
		}),
	}
	cmd.Flags().StringVar(&role, "role", "", "admin, operator or viewer (required)")
	_ = cmd.MarkFlagRequired("role")
	return cmd
}

func userLsCmd(rf *rootFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List users (name, role, created, last login)",
		Args:  cobra.NoArgs,
		RunE: withStore(rf, func(cmd *cobra.Command, _ []string, st *store.Store) error {
			us, err := st.UserList(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if us == nil {
					us = []store.User{}
				}
				return printJSON(cmd, us)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tLAST LOGIN")
			for _, u := range us {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Name, u.Role, timeOrDash(&u.CreatedAt), timeOrDash(u.LastLoginAt))
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

func userPasswdCmd(rf *rootFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "passwd NAME",
		Short: "Set a user's password (and end their sessions)",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(rf, func(cmd *cobra.Command, a []string, st *store.Store) error {
			if _, err := st.UserGet(cmd.Context(), a[0]); err != nil {
				return err
			}
			hash, err := readPassword(cmd, "New password for "+a[0]+": ")
			if err != nil {
				return err
			}
			err = st.UserSetPassword(cmd.Context(), a[0], hash)
			cliAudit(cmd, st, "user.passwd", a[0], err)
			if err != nil {
				return err
			}
			endSessions(cmd, rf, a[0])
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "password of %s changed\n", a[0])
			return err
		}),
	}
}

func userRoleCmd(rf *rootFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "role NAME admin|operator|viewer",
		Short: "Change a user's role (and end their sessions)",
		Args:  cobra.ExactArgs(2),
		RunE: withStore(rf, func(cmd *cobra.Command, a []string, st *store.Store) error {
			u, err := st.UserSetRole(cmd.Context(), a[0], a[1])
			cliAudit(cmd, st, "user.role", a[0]+"/"+a[1], err)
			if err != nil {
				return err
			}
			endSessions(cmd, rf, a[0])
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "user %s is now %s\n", u.Name, u.Role)
			return err
		}),
	}
}

func userRmCmd(rf *rootFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a user (and end their sessions)",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(rf, func(cmd *cobra.Command, a []string, st *store.Store) error {
			err := st.UserDelete(cmd.Context(), a[0])
			cliAudit(cmd, st, "user.delete", a[0], err)
			if err != nil {
				return err
			}
			endSessions(cmd, rf, a[0])
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "deleted user %s\n", a[0])
			return err
		}),
	}
}

// readPassword reads a password — from the terminal twice without echo, or
// the first line of a non-terminal standard input — and returns its hash.
func readPassword(cmd *cobra.Command, prompt string) (string, error) {
	in := cmd.InOrStdin()
	var pw string
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(cmd.ErrOrStderr(), prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(cmd.ErrOrStderr(), "Again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if string(b) != string(again) {
			return "", errors.New("the passwords differ")
		}
		pw = string(b)
	} else {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password from standard input: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	return auth.HashPassword(pw)
}

// endSessions ends the web sessions of name after a change of their
// account; without Redis it says what could not be done.
func endSessions(cmd *cobra.Command, rf *rootFlags, name string) {
	cfg, err := load(cmd, rf, config.RoleCLI, nil)
	if err == nil {
		var rdb interface{ Close() error }
		r, oerr := results.Open(cmd.Context(), cfg.Redis.URL)
		if err = oerr; err == nil {
			rdb = r
			err = auth.NewSessions(auth.SessionConfig{Redis: r, Prefix: cfg.Redis.Prefix}, nil, zerolog.Nop()).EndUser(cmd.Context(), name)
			_ = rdb.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: the sessions of %s were not ended (%v); they expire within web.session_idle\n", name, err)
	}
}

// cliAudit records an admin command in the audit log, as the operating
// system user who ran it; a failed write is reported on standard error.
func cliAudit(cmd *cobra.Command, st *store.Store, action, target string, err error) {
	result, status := "ok", 0
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotFound), errors.Is(err, results.ErrNotFound):
		result = "not_found"
	case errors.Is(err, store.ErrConflict):
		result = "conflict"
	case errors.Is(err, revoke.ErrFinished):
		result = "finished"
	default:
		result = "error"
	}
	actor := osActor()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), 5*time.Second)
	defer cancel()
	if aerr := st.AuditAdd(ctx, store.AuditEntry{Actor: actor, ActorKind: "cli", Action: action, Target: target, Result: result, Status: status}); aerr != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: audit entry not written: %v\n", aerr)
	}
}

// osActor names whoever runs the CLI: the operating-system user at the
// host.
func osActor() string {
	actor := "unknown"
	if u, err := user.Current(); err == nil {
		actor = u.Username
	}
	if host, err := os.Hostname(); err == nil {
		actor += "@" + host
	}
	return actor
}

func auditCmd(rf *rootFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read the audit log of management actions"}
	var f store.AuditFilter
	var since time.Duration
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List audit entries, newest first",
		Args:  cobra.NoArgs,
		RunE: withStore(rf, func(cmd *cobra.Command, _ []string, st *store.Store) error {
			if since > 0 {
				f.Since = time.Now().Add(-since)
			}
			es, err := st.AuditList(cmd.Context(), f)
			if err != nil {
				return err
			}
			if asJSON {
				if es == nil {
					es = []store.AuditEntry{}
				}
				return printJSON(cmd, es)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tAT\tACTOR\tACTION\tTARGET\tRESULT")
			for _, e := range es {
				fmt.Fprintf(tw, "%d\t%s\t%s (%s)\t%s\t%s\t%s\n", e.ID, e.At.Format(time.RFC3339), e.Actor, e.ActorKind, e.Action, e.Target, e.Result)
			}
			return tw.Flush()
		}),
	}
	ls.Flags().StringVar(&f.Actor, "actor", "", "only this actor")
	ls.Flags().StringVar(&f.Action, "action", "", "only this action, e.g. task.cancel")
	ls.Flags().DurationVar(&since, "since", 0, "only entries of this last while, e.g. 24h")
	ls.Flags().IntVar(&f.Limit, "limit", 100, "at most this many entries (up to 1000)")
	ls.Flags().Int64Var(&f.BeforeID, "before", 0, "entries older than this id (paging)")
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.AddCommand(ls)
	return cmd
}
