-- name: AuditInsert :exec
INSERT INTO audit_log (actor, actor_kind, action, target, result, status, remote_addr)
VALUES (@actor, @actor_kind, @action, @target, @result, @status, @remote_addr);

-- AuditList pages the log newest first: rows older than before_id when given,
-- optionally of one actor or action.
-- name: AuditList :many
SELECT * FROM audit_log
WHERE (sqlc.narg(before_id)::bigint IS NULL OR id < sqlc.narg(before_id)::bigint)
  AND (sqlc.narg(actor)::text IS NULL OR actor = sqlc.narg(actor)::text)
  AND (sqlc.narg(action)::text IS NULL OR action = sqlc.narg(action)::text)
  AND (sqlc.narg(since)::timestamptz IS NULL OR at >= sqlc.narg(since)::timestamptz)
ORDER BY id DESC
LIMIT @lim;
