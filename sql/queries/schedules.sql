-- Reads return a schedule with its bookkeeping (schedule_runs; none
-- before its first recorded fire).

-- name: ScheduleList :many
SELECT sqlc.embed(s), r.last_run_at, r.run_count
FROM schedules AS s LEFT JOIN schedule_runs AS r ON r.name = s.name
ORDER BY s.name;

-- name: ScheduleGet :one
SELECT sqlc.embed(s), r.last_run_at, r.run_count
FROM schedules AS s LEFT JOIN schedule_runs AS r ON r.name = s.name
WHERE s.name = @name;

-- name: ScheduleRunsGet :one
SELECT * FROM schedule_runs WHERE name = @name;

-- name: ScheduleInsert :one
INSERT INTO schedules (
    name, task, queue, args, cron, timezone, "interval", start_at, expires_at,
    enabled, one_off, spread, misfire, catch_up_max, description, source
) VALUES (
    @name, @task, @queue, @args, @cron, @timezone, @interval, @start_at, @expires_at,
    @enabled, @one_off, @spread, @misfire, @catch_up_max, @description, @source
)
RETURNING *;

-- ScheduleReplace rewrites a schedule's definition. A row that came from
-- code is updated only when nothing but enabled changes; no row comes back
-- when the name is unknown or the row is from code and differs.
-- name: ScheduleReplace :one
UPDATE schedules SET
    task = @task, queue = @queue, args = @args, cron = @cron, timezone = @timezone,
    "interval" = @interval, start_at = @start_at, expires_at = @expires_at,
    enabled = @enabled, one_off = @one_off, spread = @spread, misfire = @misfire,
    catch_up_max = @catch_up_max, description = @description
WHERE name = @name
  AND (source = 'runtime'
       OR (task, queue, args, cron, timezone, "interval", start_at, expires_at,
           one_off, spread, misfire, catch_up_max, description)
          IS NOT DISTINCT FROM
          (@task::text, @queue::text, @args::jsonb, sqlc.narg(cron)::text, sqlc.narg(timezone)::text,
           sqlc.narg(interval)::interval, sqlc.narg(start_at)::timestamptz, sqlc.narg(expires_at)::timestamptz,
           @one_off::boolean, @spread::interval, @misfire::text, @catch_up_max::integer, @description::text))
RETURNING *;

-- ScheduleDelete deletes a schedule unless it came from code.
-- name: ScheduleDelete :execrows
DELETE FROM schedules WHERE name = @name AND source = 'runtime';

-- name: ScheduleSetEnabled :one
UPDATE schedules SET enabled = @enabled WHERE name = @name RETURNING *;

-- ScheduleUpsertCode inserts or redefines a schedule declared in code. An
-- existing row (from code, or a runtime row of the same name, which becomes
-- a code row) keeps its enabled flag and bookkeeping; a row whose
-- definition is unchanged is not written at all (no notification).
-- name: ScheduleUpsertCode :batchexec
INSERT INTO schedules (
    name, task, queue, args, cron, timezone, "interval", start_at, expires_at,
    enabled, one_off, spread, misfire, catch_up_max, description, source
) VALUES (
    @name, @task, @queue, @args, @cron, @timezone, @interval, @start_at, @expires_at,
    @enabled, @one_off, @spread, @misfire, @catch_up_max, @description, 'code'
)
ON CONFLICT (name) DO UPDATE SET
    task = excluded.task, queue = excluded.queue, args = excluded.args, cron = excluded.cron,
    timezone = excluded.timezone, "interval" = excluded."interval", start_at = excluded.start_at,
    expires_at = excluded.expires_at, one_off = excluded.one_off, spread = excluded.spread,
    misfire = excluded.misfire, catch_up_max = excluded.catch_up_max,
    description = excluded.description, source = 'code'
WHERE (schedules.task, schedules.queue, schedules.args, schedules.cron, schedules.timezone,
       schedules."interval", schedules.start_at, schedules.expires_at, schedules.one_off,
       schedules.spread, schedules.misfire, schedules.catch_up_max, schedules.description,
       schedules.source)
      IS DISTINCT FROM
      (excluded.task, excluded.queue, excluded.args, excluded.cron, excluded.timezone,
       excluded."interval", excluded.start_at, excluded.expires_at, excluded.one_off,
       excluded.spread, excluded.misfire, excluded.catch_up_max, excluded.description,
       excluded.source);

-- ScheduleRecordRuns writes a batch of fire bookkeeping in one
-- statement (one row per name: the caller merges a name's runs). Both
-- fields only move forward, so a batch written twice (its commit
-- acknowledgement lost, then retried) or late changes nothing:
-- last_run_at takes the latest fire, run_count the highest absolute count
-- (beat counts from the value it loaded). Names that no longer exist are
-- skipped.
-- name: ScheduleRecordRuns :exec
INSERT INTO schedule_runs (name, last_run_at, run_count)
SELECT u.name, u.fired_at, u.n
FROM (
    -- Set-returning functions in one select list advance in lockstep.
    SELECT unnest(@names::text[]) AS name,
           unnest(@fired_at::timestamptz[]) AS fired_at,
           unnest(@counts::bigint[]) AS n
) AS u
WHERE EXISTS (SELECT 1 FROM schedules AS s WHERE s.name = u.name)
ON CONFLICT (name) DO UPDATE SET
    last_run_at = GREATEST(schedule_runs.last_run_at, excluded.last_run_at),
    run_count = GREATEST(schedule_runs.run_count, excluded.run_count);

-- ScheduleDisableFired disables the one-off schedules among names (a
-- one-off that fired is done).
-- name: ScheduleDisableFired :exec
UPDATE schedules SET enabled = false
WHERE name = ANY(@names::text[]) AND one_off AND enabled;

-- ScheduleListPage is one page of a full read in name order: up to lim
-- schedules whose names sort after after ('' for the first page). Beat
-- reads a million schedules this way without holding them all at once.
-- (The bound on r too lets the join start at the page instead of
-- walking schedule_runs from its first row on every page.)
-- name: ScheduleListPage :many
SELECT sqlc.embed(s), r.last_run_at, r.run_count
FROM schedules AS s LEFT JOIN schedule_runs AS r ON r.name = s.name AND r.name > @after
WHERE s.name > @after ORDER BY s.name LIMIT @lim;

-- ScheduleListVersions is one page of the enabled schedules' names and
-- definition times, in name order: beat's periodic check of what it holds
-- reads these two columns and fetches in full only what differs.
-- name: ScheduleListVersions :many
SELECT name, updated_at FROM schedules
WHERE name > @after AND enabled ORDER BY name LIMIT @lim;

-- ScheduleListChanged is one page of the schedules whose definition
-- changed at or after since (updated_at moves on every change but
-- bookkeeping) and whose names sort after after, in name order: a bulk
-- change of a million rows is re-read a page at a time.
-- name: ScheduleListChanged :many
SELECT sqlc.embed(s), r.last_run_at, r.run_count
FROM schedules AS s LEFT JOIN schedule_runs AS r ON r.name = s.name AND r.name > @after
WHERE s.updated_at >= @since AND s.name > @after ORDER BY s.name LIMIT @lim;

-- ScheduleListNamed returns the schedules among names that exist.
-- name: ScheduleListNamed :many
SELECT sqlc.embed(s), r.last_run_at, r.run_count
FROM schedules AS s LEFT JOIN schedule_runs AS r ON r.name = s.name
WHERE s.name = ANY(@names::text[]) ORDER BY s.name;
