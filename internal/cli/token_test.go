package cli_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/cli"
	"github.com/flotilla/flotilla/internal/store"
)

func TestTokenCommands(t *testing.T) {
	t.Parallel()
	b := setup(t)
	st := b.store(t)

	// create prints the token alone on stdout and the note on stderr.
	var out, errOut bytes.Buffer
	err := cli.Run(t.Context(), cli.Env{Registry: b.reg, Stdout: &out, Stderr: &errOut},
		append([]string{"token", "create", "--name", "ci"}, b.extra...))
	require.NoError(t, err)
	plain := strings.TrimSuffix(out.String(), "\n")
	require.Regexp(t, `^flt_[a-z2-7]{52}$`, plain)
	require.Contains(t, errOut.String(), "cannot be shown again")
	require.Contains(t, errOut.String(), "ci ("+plain[:8]+"…, role admin)")
	require.NotContains(t, errOut.String(), plain[8:])

	tok, err := st.TokenVerify(t.Context(), plain)
	require.NoError(t, err, "the printed token is valid")
	require.Equal(t, "ci", tok.Name)

	b.mustRun(t, "token", "create", "--name", "billing")

	errTests := []struct {
		name string
		args []string
		want string
	}{
		{"exists", []string{"create", "--name", "ci"}, "token ci: already exists"},
		{"bad name", []string{"create", "--name", "a b"}, `--name: "a b" must be 1 to 100`},
		{"no name", []string{"create"}, `"name" not set`},
		{"revoke missing", []string{"revoke", "nope"}, "token nope: not found"},
		{"revoke no arg", []string{"revoke"}, "accepts 1 arg"},
	}
	for _, tt := range errTests {
		_, err := b.run(t, append([]string{"token"}, tt.args...)...)
		require.ErrorContains(t, err, tt.want, tt.name)
	}

	out2 := b.mustRun(t, "token", "revoke", "ci")
	require.Equal(t, "revoked token ci\n", out2)
	_, err = st.TokenVerify(t.Context(), plain)
	require.ErrorIs(t, err, store.ErrNotFound, "revoked at once")

	ls := b.mustRun(t, "token", "ls")
	require.NotContains(t, ls, plain[8:])
	lines := strings.Split(strings.TrimSpace(ls), "\n")
	require.Len(t, lines, 3, ls)
	require.Regexp(t, `^NAME\s+ROLE\s+PREFIX\s+STATUS\s+CREATED\s+LAST USED\s+REVOKED$`, lines[0])
	require.Regexp(t, `^billing\s+admin\s+flt_[a-z2-7]{4}\s+active\s+\d{4}-\S+\s+-\s+-$`, lines[1])
	require.Regexp(t, `^ci\s+admin\s+`+plain[:8]+`\s+revoked\s+\d{4}-\S+\s+\d{4}-\S+\s+\d{4}-\S+$`, lines[2])

	var list []store.Token
	require.NoError(t, json.Unmarshal([]byte(b.mustRun(t, "token", "ls", "--json")), &list))
	require.Len(t, list, 2)
	require.Equal(t, "ci", list[1].Name)
	require.NotNil(t, list[1].RevokedAt)
	require.NotNil(t, list[1].LastUsedAt)
	require.Nil(t, list[0].RevokedAt)
}

func TestTokenLsEmpty(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.Equal(t, "[]\n", b.mustRun(t, "token", "ls", "--json"))
	require.Regexp(t, `^NAME\s+ROLE\s+PREFIX`, b.mustRun(t, "token", "ls"))
}
