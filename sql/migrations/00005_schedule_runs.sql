-- Beat at a million schedules (issue #12). Bookkeeping moves out of the
-- schedules table into schedule_runs: every fire updates a schedule's
-- bookkeeping, and an update of a schedules row rewrites the whole wide
-- row, checks its constraints and runs its two triggers, about 60 µs a row
-- here (a million every-minute schedules made PostgreSQL the busiest
-- process of the machine). A narrow row on half-full pages is updated in
-- place (HOT) in about 7 µs. A schedule gets its row at its first
-- recorded fire; the row goes with the schedule (so TRUNCATE schedules
-- needs CASCADE).
--
-- Beat also re-reads only the schedules whose definition changed since
-- its last read between its full reads: an index on updated_at keeps that
-- a small range scan.

-- +goose Up
CREATE TABLE schedule_runs (
    name        text        NOT NULL,
    last_run_at timestamptz NOT NULL,
    run_count   bigint      NOT NULL,

    CONSTRAINT schedule_runs_pkey PRIMARY KEY (name),
    CONSTRAINT schedule_runs_name_fkey FOREIGN KEY (name) REFERENCES schedules (name)
        ON DELETE CASCADE ON UPDATE CASCADE
) WITH (fillfactor = 50);

COMMENT ON TABLE schedule_runs IS 'Bookkeeping of the schedules beat fired: latest fire and run count (writing it sends no notification).';

INSERT INTO schedule_runs (name, last_run_at, run_count)
SELECT name, last_run_at, run_count FROM schedules WHERE last_run_at IS NOT NULL;

ALTER TABLE schedules DROP COLUMN last_run_at, DROP COLUMN run_count;

CREATE INDEX schedules_updated_at ON schedules (updated_at);

-- +goose Down
DROP INDEX schedules_updated_at;
ALTER TABLE schedules ADD COLUMN last_run_at timestamptz, ADD COLUMN run_count bigint NOT NULL DEFAULT 0;
UPDATE schedules AS s SET last_run_at = r.last_run_at, run_count = r.run_count
FROM schedule_runs AS r WHERE r.name = s.name;
DROP TABLE schedule_runs;
