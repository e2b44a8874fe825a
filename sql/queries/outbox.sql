-- OutboxInsert stores one task message; run it in the caller's transaction
-- (the outbox_notify trigger wakes the relays when it commits).
-- name: OutboxInsert :exec
INSERT INTO outbox (task_id, subject, headers, data)
VALUES (@task_id, @subject, @headers, @data);

-- OutboxBound sets up the relay's transaction: the server ends it when
-- it stays idle, or one statement runs, longer than these (milliseconds),
-- so that the rows of a relay that died or hangs come back within a known
-- time; and its commit does not wait for the WAL flush (a delete lost in a
-- server crash only makes the rows publish again, which the stream's
-- deduplication drops). Settings are local to the transaction.
-- name: OutboxBound :exec
SELECT set_config('idle_in_transaction_session_timeout', @idle_ms::text, true),
       set_config('statement_timeout', @statement_ms::text, true),
       set_config('synchronous_commit', 'off', true);

-- OutboxClaim locks up to lim of the oldest rows that no other transaction
-- holds; concurrent relays skip each other's rows.
-- name: OutboxClaim :many
SELECT id, task_id, subject, headers, data FROM outbox
ORDER BY id
LIMIT @lim
FOR UPDATE SKIP LOCKED;

-- name: OutboxDelete :exec
DELETE FROM outbox WHERE id = ANY(@ids::bigint[]);

-- OutboxStats counts the rows waiting and gives the oldest one's age in
-- seconds (0 when empty).
-- name: OutboxStats :one
SELECT count(*)::bigint AS rows,
       COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest_s
FROM outbox;

-- OutboxInsertMany stores several task messages with one statement, in
-- the order given: rows is a JSON array of {"task_id", "subject",
-- "headers", "data" (base64)} (one parameter, so that any database/sql
-- driver can send it).
-- name: OutboxInsertMany :exec
INSERT INTO outbox (task_id, subject, headers, data)
SELECT r.task_id, r.subject, r.headers, decode(r.data, 'base64')
FROM ROWS FROM (jsonb_to_recordset(@rows::jsonb) AS (task_id text, subject text, headers jsonb, data text))
     WITH ORDINALITY AS r (task_id, subject, headers, data, n)
ORDER BY r.n;
