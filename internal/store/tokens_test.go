package store_test

import (
	"crypto/sha256"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/store"
)

var tokenRE = regexp.MustCompile(`^flt_[a-z2-7]{52}$`)

func TestTokenLifecycle(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)

	before := time.Now().Add(-time.Second)
	plain, tok, err := b.store.TokenCreate(ctx, "ci", store.RoleAdmin)
	require.NoError(t, err)
	require.Regexp(t, tokenRE, plain)
	require.Equal(t, "ci", tok.Name)
	require.Equal(t, plain[:8], tok.Prefix)
	require.True(t, tok.CreatedAt.After(before), tok.CreatedAt)
	require.Equal(t, time.UTC, tok.CreatedAt.Location())
	require.Nil(t, tok.LastUsedAt)
	require.Nil(t, tok.RevokedAt)

	other, _, err := b.store.TokenCreate(ctx, "billing-service", store.RoleAdmin)
	require.NoError(t, err)
	require.NotEqual(t, plain, other)

	// Only the SHA-256 digest is stored, never the text.
	var hash []byte
	var prefix string
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT token_hash, token_prefix FROM api_tokens WHERE name = 'ci'").Scan(&hash, &prefix))
	sum := sha256.Sum256([]byte(plain))
	require.Equal(t, sum[:], hash)
	require.Equal(t, plain[:8], prefix)
	var n int
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM api_tokens t WHERE strpos(t::text, $1) > 0", plain[8:]).Scan(&n))
	require.Zero(t, n, "token text found in a row")

	got, err := b.store.TokenVerify(ctx, plain)
	require.NoError(t, err)
	require.Equal(t, "ci", got.Name)

	list, err := b.store.TokenList(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "billing-service", list[0].Name, "ordered by name")
	require.Nil(t, list[0].LastUsedAt, "never used")
	require.Equal(t, "ci", list[1].Name)
	require.NotNil(t, list[1].LastUsedAt, "verify records the use")
	require.Equal(t, time.UTC, list[1].LastUsedAt.Location())

	require.NoError(t, b.store.TokenRevoke(ctx, "ci"))
	_, err = b.store.TokenVerify(ctx, plain)
	require.ErrorIs(t, err, store.ErrNotFound, "revoked")
	_, err = b.store.TokenVerify(ctx, other)
	require.NoError(t, err, "other tokens stay valid")

	list, err = b.store.TokenList(ctx)
	require.NoError(t, err)
	require.NotNil(t, list[1].RevokedAt, "a revoked token stays listed")
	first := *list[1].RevokedAt
	require.NoError(t, b.store.TokenRevoke(ctx, "ci"), "revoking twice is a no-op")
	list, err = b.store.TokenList(ctx)
	require.NoError(t, err)
	require.Equal(t, first, *list[1].RevokedAt, "keeps the first revocation time")

	err = b.store.TokenRevoke(ctx, "nope")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorContains(t, err, "token nope")
}

func TestTokenCreateErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)

	_, _, err := b.store.TokenCreate(ctx, "ci", store.RoleAdmin)
	require.NoError(t, err)
	_, _, err = b.store.TokenCreate(ctx, "ci", store.RoleAdmin)
	require.ErrorIs(t, err, store.ErrConflict)
	require.ErrorContains(t, err, "token ci: already exists")

	require.NoError(t, b.store.TokenRevoke(ctx, "ci"))
	_, _, err = b.store.TokenCreate(ctx, "ci", store.RoleAdmin)
	require.ErrorIs(t, err, store.ErrConflict, "a revoked token keeps its name")

	for _, name := range []string{"", "-x", "a b", "x/y", strings.Repeat("a", 101), "é"} {
		_, _, err := b.store.TokenCreate(ctx, name, store.RoleAdmin)
		require.ErrorIs(t, err, store.ErrInvalidTokenName, "%q", name)
	}
	for _, name := range []string{"a", "user@example.com", "svc:billing.v2_x-1", strings.Repeat("a", 100)} {
		_, _, err := b.store.TokenCreate(ctx, name, store.RoleAdmin)
		require.NoError(t, err, "%q", name)
	}

	// The database enforces the form too, for rows written with SQL.
	_, err = b.pool.Exec(ctx, `INSERT INTO api_tokens (name, token_hash, token_prefix) VALUES ('a b', sha256('x'), 'flt_abcd')`)
	require.ErrorContains(t, err, "api_tokens_name_check")
}

func TestTokenVerifyRejects(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)

	plain, _, err := b.store.TokenCreate(ctx, "ci", store.RoleAdmin)
	require.NoError(t, err)

	flip := []byte(plain)
	if flip[20] == 'a' {
		flip[20] = 'b'
	} else {
		flip[20] = 'a'
	}
	tests := []struct {
		name  string
		token string
	}{
		{"empty", ""},
		{"wrong", string(flip)},
		{"no prefix", plain[4:]},
		{"upper case", strings.ToUpper(plain)},
		{"truncated", plain[:len(plain)-1]},
		{"extended", plain + "a"},
		{"bad alphabet", plain[:len(plain)-1] + "1"},
		{"whitespace", " " + plain},
	}
	for _, tt := range tests {
		_, err := b.store.TokenVerify(ctx, tt.token)
		require.ErrorIs(t, err, store.ErrNotFound, tt.name)
		if len(tt.token) > 12 {
			require.NotContains(t, err.Error(), tt.token[8:], "%s: error shows the token", tt.name)
		}
	}
}

func TestTokenVerifyTouchesOncePerMinute(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t)

	plain, _, err := b.store.TokenCreate(ctx, "ci", store.RoleAdmin)
	require.NoError(t, err)
	lastUsed := func() time.Time {
		t.Helper()
		var ts *time.Time
		require.NoError(t, b.pool.QueryRow(ctx, "SELECT last_used_at FROM api_tokens WHERE name = 'ci'").Scan(&ts))
		require.NotNil(t, ts)
		return *ts
	}

	_, err = b.store.TokenVerify(ctx, plain)
	require.NoError(t, err)
	first := lastUsed()

	// Used again within the minute: no write.
	tok, err := b.store.TokenVerify(ctx, plain)
	require.NoError(t, err)
	require.True(t, first.Equal(lastUsed()))
	require.True(t, first.Equal(*tok.LastUsedAt), "returns the recorded use")

	// A minute later: written again.
	_, err = b.pool.Exec(ctx, "UPDATE api_tokens SET last_used_at = now() - interval '61 seconds'")
	require.NoError(t, err)
	old := lastUsed()
	_, err = b.store.TokenVerify(ctx, plain)
	require.NoError(t, err)
	require.True(t, lastUsed().After(old.Add(time.Minute)))

	// Concurrent verifications all succeed.
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() { _, errs[i] = b.store.TokenVerify(ctx, plain) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}
