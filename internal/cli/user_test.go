package cli_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/flotilla/flotilla/internal/cli"
	"github.com/flotilla/flotilla/internal/store"
)

// TestUserCommands: add (password from standard input), ls, passwd, role,
// rm, each refused with a clear error on bad input and each in the audit
// log as the operating-system user.
func TestUserCommands(t *testing.T) {
	t.Parallel()
	b := setup(t)
	st := b.store(t)
	withInput := func(in string, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := cli.Run(t.Context(), cli.Env{Registry: b.reg, Stdin: strings.NewReader(in), Stdout: &out, Stderr: &errOut},
			append(args, b.extra...))
		return out.String(), err
	}

	out, err := withInput("correct horse\n", "user", "add", "ada", "--role", "admin")
	require.NoError(t, err)
	require.Equal(t, "created user ada (role admin)\n", out)
	u, hash, err := st.UserCredentials(t.Context(), "ada")
	require.NoError(t, err)
	require.Equal(t, store.RoleAdmin, u.Role)
	require.NoError(t, bcrypt.CompareHashAndPassword([]byte(hash), []byte("correct horse")), "stored as a bcrypt hash of the line read")

	for _, tt := range []struct {
		in   string
		args []string
		want string
	}{
		{"correct horse\n", []string{"add", "ada", "--role", "admin"}, "already exists"},
		{"correct horse\n", []string{"add", "bob", "--role", "root"}, `--role: "root"`},
		{"correct horse\n", []string{"add", "bob"}, `"role" not set`},
		{"short\n", []string{"add", "bob", "--role", "viewer"}, "at least 8 characters"},
		{"correct horse\n", []string{"add", "bad name", "--role", "viewer"}, `"bad name"`},
		{"correct horse\n", []string{"passwd", "nobody"}, "not found"},
		{"", []string{"role", "ada", "god"}, "god"},
		{"", []string{"rm", "nobody"}, "not found"},
	} {
		_, err := withInput(tt.in, append([]string{"user"}, tt.args...)...)
		require.ErrorContains(t, err, tt.want, strings.Join(tt.args, " "))
	}

	_, err = withInput("battery staple\n", "user", "passwd", "ada")
	require.NoError(t, err)
	_, hash, err = st.UserCredentials(t.Context(), "ada")
	require.NoError(t, err)
	require.NoError(t, bcrypt.CompareHashAndPassword([]byte(hash), []byte("battery staple")))
	require.Equal(t, "user ada is now viewer\n", b.mustRun(t, "user", "role", "ada", "viewer"))

	var users []store.User
	require.NoError(t, json.Unmarshal([]byte(b.mustRun(t, "user", "ls", "--json")), &users))
	require.Len(t, users, 1)
	require.Equal(t, store.RoleViewer, users[0].Role)
	require.Regexp(t, `(?m)^ada\s+viewer\s`, b.mustRun(t, "user", "ls"))

	require.Equal(t, "deleted user ada\n", b.mustRun(t, "user", "rm", "ada"))
	require.Equal(t, "[]\n", b.mustRun(t, "user", "ls", "--json"))

	// Every change, refused or done, is in the audit log.
	var es []store.AuditEntry
	require.NoError(t, json.Unmarshal([]byte(b.mustRun(t, "audit", "ls", "--json", "--actor", users[0].Name)), &es))
	require.Empty(t, es, "the actor is the OS user, not the account")
	require.NoError(t, json.Unmarshal([]byte(b.mustRun(t, "audit", "ls", "--json")), &es))
	var got []string
	for _, e := range es {
		require.Equal(t, "cli", e.ActorKind)
		got = append(got, e.Action+" "+e.Target+" "+e.Result)
	}
	require.Equal(t, []string{
		"user.delete ada ok",
		"user.role ada/viewer ok",
		"user.passwd ada ok",
		"user.delete nobody not_found",
		"user.role ada/god error",
		"user.create bad name error",
		"user.create ada conflict",
		"user.create ada ok",
	}, got)
	require.Regexp(t, `(?m)^ID\s+AT\s+ACTOR`, b.mustRun(t, "audit", "ls", "--action", "user.delete"))
}
