-- name: TokenInsert :one
INSERT INTO api_tokens (name, token_hash, token_prefix, role)
VALUES (@name, @token_hash, @token_prefix, @role)
RETURNING *;

-- TokenGetActive returns the unrevoked token with this digest.
-- name: TokenGetActive :one
SELECT * FROM api_tokens WHERE token_hash = @token_hash AND revoked_at IS NULL;

-- TokenTouch records a use of token id unless one was recorded within the
-- last minute, so busy tokens cost one write a minute, not one a request.
-- name: TokenTouch :exec
UPDATE api_tokens SET last_used_at = now()
WHERE id = @id AND revoked_at IS NULL
  AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');

-- name: TokenList :many
SELECT * FROM api_tokens ORDER BY name;

-- TokenRevoke revokes the token called name; revoking twice keeps the
-- first time. No row comes back when the name is unknown.
-- name: TokenRevoke :one
UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now())
WHERE name = @name
RETURNING *;
