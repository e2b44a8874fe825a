package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/store/dbsqlc"
)

// TokenPrefix starts every API token, so that tokens are easy to recognise
// (and to find with secret scanners).
const TokenPrefix = "flt_"

// tokenRandomBytes is the entropy of a token: 256 bits from crypto/rand.
const tokenRandomBytes = 32

// tokenDisplayLen is how many leading characters of a token are kept in
// clear for listings ("flt_" and 4 random characters: 20 bits, too few to
// help a guesser).
const tokenDisplayLen = 8

// tokenEncoding encodes the random bytes: lower-case base32 without
// padding, 52 characters for 32 bytes, safe in headers, URLs and shells.
var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// tokenLen is the length of a whole token.
var tokenLen = len(TokenPrefix) + tokenEncoding.EncodedLen(tokenRandomBytes)

// tokenNameRE is the form of a token name; the api_tokens_name_check
// constraint repeats it.
var tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$`)

// ErrInvalidTokenName means a token name does not have the required form
// (see [Store.TokenCreate]).
var ErrInvalidTokenName = errors.New("must be 1 to 100 letters, digits or _.:@- and start with a letter or digit")

// touchEvery is how often at most a token's last_used_at is written.
const touchEvery = time.Minute

// Token is an API token as listed: never its text or digest.
type Token struct {
	// Name identifies the token (unique), e.g. "ci" or "billing-service".
	Name string `json:"name"`
	// Prefix is the first 8 characters of the token, e.g. "flt_k3jd".
	Prefix string `json:"prefix"`
	// CreatedAt is when the token was created, in UTC.
	CreatedAt time.Time `json:"created_at"`
	// LastUsedAt is its latest successful verification (UTC, to within a
	// minute), nil if it was never used.
	LastUsedAt *time.Time `json:"last_used_at"`
	// RevokedAt is when it was revoked (UTC), nil while it is valid.
	RevokedAt *time.Time `json:"revoked_at"`
	// Role is what the token may do: RoleAdmin, RoleOperator or RoleViewer.
	Role string `json:"role"`
}

// TokenCreate creates a token called name and returns its text, which is
// not stored (only its SHA-256 digest is) and so cannot be shown again. The
// text is "flt_" followed by 52 lower-case base32 characters encoding 32
// bytes from crypto/rand.
//
// role is what the token may do (see [ValidRole]); "" is RoleAdmin.
//
// It returns an error wrapping [ErrInvalidTokenName] when name has the
// wrong form, [ErrInvalidRole] for an unknown role, and [ErrConflict] when
// a token of that name exists, revoked or not.
func (s *Store) TokenCreate(ctx context.Context, name, role string) (string, Token, error) {
	if !tokenNameRE.MatchString(name) {
		return "", Token{}, fmt.Errorf("token name %q: %w", name, ErrInvalidTokenName)
	}
	if role == "" {
		role = RoleAdmin
	}
	if !ValidRole(role) {
		return "", Token{}, fmt.Errorf("token %s: role %q: %w", name, role, ErrInvalidRole)
	}
	b := make([]byte, tokenRandomBytes)
	if _, err := rand.Read(b); err != nil {
		return "", Token{}, fmt.Errorf("create token %s: %w", name, err)
	}
	plaintext := TokenPrefix + tokenEncoding.EncodeToString(b)
	r, err := s.q.TokenInsert(ctx, s.pool, dbsqlc.TokenInsertParams{
		Name: name, TokenHash: tokenHash(plaintext), TokenPrefix: plaintext[:tokenDisplayLen], Role: role,
	})
	if err != nil {
		err = interpretError(err)
		if errors.Is(err, ErrConflict) {
			return "", Token{}, fmt.Errorf("token %s: %w", name, ErrConflict)
		}
		return "", Token{}, fmt.Errorf("create token %s: %w", name, err)
	}
	return plaintext, tokenFromRow(r), nil
}

// TokenVerify returns the valid token whose text is plaintext, or
// [ErrNotFound] when there is none: malformed (no query is made), unknown
// or revoked. It records the use in LastUsedAt at most once a minute, so a
// busy token costs one read per call and one write per minute; the
// returned LastUsedAt is the value before this call. Errors never contain
// plaintext.
func (s *Store) TokenVerify(ctx context.Context, plaintext string) (Token, error) {
	if !wellFormedToken(plaintext) {
		return Token{}, fmt.Errorf("token: %w", ErrNotFound)
	}
	r, err := s.q.TokenGetActive(ctx, s.pool, tokenHash(plaintext))
	if err != nil {
		return Token{}, fmt.Errorf("verify token: %w", interpretError(err))
	}
	if r.LastUsedAt == nil || time.Since(*r.LastUsedAt) >= touchEvery {
		if err := s.q.TokenTouch(ctx, s.pool, r.ID); err != nil {
			return Token{}, fmt.Errorf("token %s: record use: %w", r.Name, interpretError(err))
		}
	}
	return tokenFromRow(r), nil
}

// TokenList returns every token, revoked ones included, ordered by name.
func (s *Store) TokenList(ctx context.Context) ([]Token, error) {
	rows, err := s.q.TokenList(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", interpretError(err))
	}
	out := make([]Token, len(rows))
	for i, r := range rows {
		out[i] = tokenFromRow(r)
	}
	return out, nil
}

// TokenRevoke revokes the token called name: [Store.TokenVerify] rejects it
// from then on, and it stays listed with its RevokedAt. Revoking a revoked
// token is a no-op (RevokedAt keeps the first time). It returns
// [ErrNotFound] when there is no such token.
func (s *Store) TokenRevoke(ctx context.Context, name string) error {
	if _, err := s.q.TokenRevoke(ctx, s.pool, name); err != nil {
		return fmt.Errorf("token %s: %w", name, interpretError(err))
	}
	return nil
}

// tokenHash is the stored digest of a token. A token holds 256 random
// bits, so a fast unsalted SHA-256 is enough: there is nothing to
// brute-force, and a slow password hash would only add latency to every
// request.
func tokenHash(plaintext string) []byte {
	h := sha256.Sum256([]byte(plaintext))
	return h[:]
}

// wellFormedToken reports whether s could be a token made by TokenCreate.
func wellFormedToken(s string) bool {
	if len(s) != tokenLen || !strings.HasPrefix(s, TokenPrefix) {
		return false
	}
	for _, c := range s[len(TokenPrefix):] {
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

func tokenFromRow(r dbsqlc.ApiToken) Token {
	return Token{
		Name: r.Name, Prefix: r.TokenPrefix, CreatedAt: r.CreatedAt.UTC(),
		LastUsedAt: utc(r.LastUsedAt), RevokedAt: utc(r.RevokedAt), Role: r.Role,
	}
}
