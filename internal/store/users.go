package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/flotilla/flotilla/internal/store/dbsqlc"
)

// Roles of users and API tokens, from most to least allowed.
const (
	// RoleAdmin may do everything: users, audit, purges, deletes.
	RoleAdmin = "admin"
	// RoleOperator may enqueue, cancel, retry, pause and resume queues and
	// manage schedules.
	RoleOperator = "operator"
	// RoleViewer may read everything and change nothing.
	RoleViewer = "viewer"
)

// Roles lists every role, most allowed first.
var Roles = []string{RoleAdmin, RoleOperator, RoleViewer}

// ValidRole reports whether r is a role.
func ValidRole(r string) bool { return r == RoleAdmin || r == RoleOperator || r == RoleViewer }

// ErrInvalidRole means a role is none of admin, operator, viewer.
var ErrInvalidRole = errors.New("unknown role: want admin, operator or viewer")

// ErrInvalidUserName means a user name does not have the required form.
var ErrInvalidUserName = errors.New("must be 1 to 100 letters, digits or _.@- and start with a letter or digit")

// userNameRE is the form of a user name; users_name_check repeats it.
var userNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$`)

// User is a person who logs in to the web role, as listed: never the hash.
type User struct {
	Name        string     `json:"name"`
	Role        string     `json:"role"`
	CreatedAt   time.Time  `json:"created_at"`
	LastLoginAt *time.Time `json:"last_login_at"`
}

func userFromRow(r dbsqlc.User) User {
	return User{Name: r.Name, Role: r.Role, CreatedAt: r.CreatedAt.UTC(), LastLoginAt: utc(r.LastLoginAt)}
}

// UserCreate creates user name with a password hash (made by the caller,
// see package auth) and role. Errors: [ErrInvalidUserName],
// [ErrInvalidRole], [ErrConflict] when the name is taken.
func (s *Store) UserCreate(ctx context.Context, name, passwordHash, role string) (User, error) {
	if !userNameRE.MatchString(name) {
		return User{}, fmt.Errorf("user name %q: %w", name, ErrInvalidUserName)
	}
	if !ValidRole(role) {
		return User{}, fmt.Errorf("user %s: role %q: %w", name, role, ErrInvalidRole)
	}
	r, err := s.q.UserInsert(ctx, s.pool, dbsqlc.UserInsertParams{Name: name, PasswordHash: passwordHash, Role: role})
	if err != nil {
		return User{}, fmt.Errorf("user %s: %w", name, interpretError(err))
	}
	return userFromRow(r), nil
}

// UserCredentials returns user name and its password hash, or
// [ErrNotFound].
func (s *Store) UserCredentials(ctx context.Context, name string) (User, string, error) {
	r, err := s.q.UserGet(ctx, s.pool, name)
	if err != nil {
		return User{}, "", fmt.Errorf("user %s: %w", name, interpretError(err))
	}
	return userFromRow(r), r.PasswordHash, nil
}

// UserGet returns user name, or [ErrNotFound].
func (s *Store) UserGet(ctx context.Context, name string) (User, error) {
	u, _, err := s.UserCredentials(ctx, name)
	return u, err
}

// UserList returns every user, ordered by name.
func (s *Store) UserList(ctx context.Context) ([]User, error) {
	rows, err := s.q.UserList(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", interpretError(err))
	}
	out := make([]User, len(rows))
	for i, r := range rows {
		out[i] = userFromRow(r)
	}
	return out, nil
}

// UserSetPassword replaces the password hash of name; [ErrNotFound] when
// there is no such user.
func (s *Store) UserSetPassword(ctx context.Context, name, passwordHash string) error {
	if _, err := s.q.UserSetPassword(ctx, s.pool, dbsqlc.UserSetPasswordParams{Name: name, PasswordHash: passwordHash}); err != nil {
		return fmt.Errorf("user %s: %w", name, interpretError(err))
	}
	return nil
}

// UserSetRole changes the role of name; [ErrNotFound], [ErrInvalidRole].
func (s *Store) UserSetRole(ctx context.Context, name, role string) (User, error) {
	if !ValidRole(role) {
		return User{}, fmt.Errorf("user %s: role %q: %w", name, role, ErrInvalidRole)
	}
	r, err := s.q.UserSetRole(ctx, s.pool, dbsqlc.UserSetRoleParams{Name: name, Role: role})
	if err != nil {
		return User{}, fmt.Errorf("user %s: %w", name, interpretError(err))
	}
	return userFromRow(r), nil
}

// UserDelete removes user name; [ErrNotFound] when there is none.
func (s *Store) UserDelete(ctx context.Context, name string) error {
	n, err := s.q.UserDelete(ctx, s.pool, name)
	if err != nil {
		return fmt.Errorf("delete user %s: %w", name, interpretError(err))
	}
	if n == 0 {
		return fmt.Errorf("user %s: %w", name, ErrNotFound)
	}
	return nil
}

// UserTouchLogin records a successful login of name.
func (s *Store) UserTouchLogin(ctx context.Context, name string) error {
	if err := s.q.UserTouchLogin(ctx, s.pool, name); err != nil {
		return fmt.Errorf("user %s: record login: %w", name, interpretError(err))
	}
	return nil
}
