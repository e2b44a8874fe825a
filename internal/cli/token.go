package cli

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/store"
)

func tokenCmd(rf *rootFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage API tokens of web and api in PostgreSQL (create, ls, revoke)",
		Long: `Manage the tokens that programs present to the api and web roles when
authentication is on (the default outside dev), as "Authorization: Bearer
<token>" or "X-API-Token: <token>". Each token has a role: admin (everything),
operator (enqueue, cancel, retry, pause, schedules) or viewer (read only).

Only a SHA-256 digest of each token is stored: a token is printed once, when
it is created, and cannot be shown again. Revoking takes effect at once.`,
	}
	cmd.AddCommand(tokenCreateCmd(rf), tokenLsCmd(rf), tokenRevokeCmd(rf))
	return cmd
}

func tokenCreateCmd(rf *rootFlags) *cobra.Command {
	var name, role string
	cmd := &cobra.Command{
		Use:   "create --name NAME [--role admin|operator|viewer]",
		Short: "Create a token and print it (once: it cannot be shown again)",
		Long: `Create a token called NAME and print it on standard output, alone on its
line, so that scripts can capture it; the note that it cannot be shown again
goes to standard error.`,
		Example: `  flotilla token create --name ci
  TOKEN=$(flotilla token create --name billing-service)`,
		Args: cobra.NoArgs,
		RunE: withStore(rf, func(cmd *cobra.Command, _ []string, st *store.Store) error {
			plain, tok, err := st.TokenCreate(cmd.Context(), name, role)
			cliAudit(cmd, st, "token.create", name, err)
			if errors.Is(err, store.ErrInvalidTokenName) {
				return fmt.Errorf("--name: %q %w", name, store.ErrInvalidTokenName)
			}
			if errors.Is(err, store.ErrInvalidRole) {
				return fmt.Errorf("--role: %q: %w", role, store.ErrInvalidRole)
			}
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintln(cmd.OutOrStdout(), plain); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.ErrOrStderr(),
				"Created API token %s (%s…, role %s). Store it now: it cannot be shown again, only its digest is kept.\n",
				tok.Name, tok.Prefix, tok.Role)
			return err
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "unique name of the token, e.g. ci or billing-service (required)")
	cmd.Flags().StringVar(&role, "role", store.RoleAdmin, "what the token may do: admin, operator or viewer")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func tokenLsCmd(rf *rootFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List every token (name, prefix, creation, last use, revocation; never the token)",
		Args:  cobra.NoArgs,
		RunE: withStore(rf, func(cmd *cobra.Command, _ []string, st *store.Store) error {
			toks, err := st.TokenList(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if toks == nil {
					toks = []store.Token{}
				}
				return printJSON(cmd, toks)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tPREFIX\tSTATUS\tCREATED\tLAST USED\tREVOKED")
			for _, t := range toks {
				status := "active"
				if t.RevokedAt != nil {
					status = "revoked"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Role, t.Prefix, status,
					timeOrDash(&t.CreatedAt), timeOrDash(t.LastUsedAt), timeOrDash(t.RevokedAt))
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

func tokenRevokeCmd(rf *rootFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token: requests presenting it are refused from now on",
		Args:  cobra.ExactArgs(1),
		RunE: withStore(rf, func(cmd *cobra.Command, a []string, st *store.Store) error {
			err := st.TokenRevoke(cmd.Context(), a[0])
			cliAudit(cmd, st, "token.revoke", a[0], err)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "revoked token %s\n", a[0])
			return err
		}),
	}
}
