-- name: UserInsert :one
INSERT INTO users (name, password_hash, role)
VALUES (@name, @password_hash, @role)
RETURNING *;

-- name: UserGet :one
SELECT * FROM users WHERE name = @name;

-- name: UserList :many
SELECT * FROM users ORDER BY name;

-- UserSetPassword changes the password of name; no row comes back when
-- the name is unknown.
-- name: UserSetPassword :one
UPDATE users SET password_hash = @password_hash WHERE name = @name RETURNING *;

-- name: UserSetRole :one
UPDATE users SET role = @role WHERE name = @name RETURNING *;

-- name: UserDelete :execrows
DELETE FROM users WHERE name = @name;

-- name: UserTouchLogin :exec
UPDATE users SET last_login_at = now() WHERE name = @name;
