-- Schedules of the beat role (issue #3). A schedule fires either on a cron
-- expression (in an IANA time zone) or on a fixed interval; see
-- internal/schedule for the meaning of every column. Rows may be written
-- with plain SQL too: the constraints below reject what beat could never
-- fire, and the triggers keep updated_at and the change notifications right.

-- +goose Up
CREATE TABLE schedules (
    name         text        NOT NULL,
    task         text        NOT NULL,
    queue        text        NOT NULL DEFAULT 'default',
    args         jsonb       NOT NULL DEFAULT '{}',
    cron         text,
    timezone     text,
    "interval"   interval,
    start_at     timestamptz,
    expires_at   timestamptz,
    enabled      boolean     NOT NULL DEFAULT true,
    one_off      boolean     NOT NULL DEFAULT false,
    spread       interval    NOT NULL DEFAULT '0',
    misfire      text        NOT NULL DEFAULT 'once',
    catch_up_max integer     NOT NULL DEFAULT 100,
    description  text        NOT NULL DEFAULT '',
    source       text        NOT NULL DEFAULT 'runtime',
    last_run_at  timestamptz,
    run_count    bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT schedules_pkey PRIMARY KEY (name),
    -- Constraint names are schedules_<field>_check: store reports a
    -- violation as an error naming <field>.
    CONSTRAINT schedules_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$'),
    CONSTRAINT schedules_task_check CHECK (task ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$' AND length(task) <= 128),
    CONSTRAINT schedules_queue_check CHECK (queue ~ '^[a-z0-9_-]+$' AND length(queue) <= 128),
    CONSTRAINT schedules_args_check CHECK (jsonb_typeof(args) = 'object'),
    CONSTRAINT schedules_cron_check CHECK ((cron IS NULL) <> ("interval" IS NULL)),
    CONSTRAINT schedules_timezone_check CHECK (timezone IS NULL OR cron IS NOT NULL),
    CONSTRAINT schedules_interval_check CHECK ("interval" IS NULL OR "interval" >= interval '1 second'),
    CONSTRAINT schedules_spread_check CHECK (spread >= interval '0'),
    CONSTRAINT schedules_misfire_check CHECK (misfire IN ('skip', 'once', 'catch_up')),
    CONSTRAINT schedules_catch_up_max_check CHECK (catch_up_max >= 0),
    CONSTRAINT schedules_expires_at_check CHECK (expires_at IS NULL OR start_at IS NULL OR expires_at > start_at),
    CONSTRAINT schedules_source_check CHECK (source IN ('code', 'runtime'))
);

COMMENT ON TABLE schedules IS 'Periodic tasks fired by the beat leader; changes are announced on NOTIFY channel flotilla_schedules.';
COMMENT ON COLUMN schedules.last_run_at IS 'Latest fire recorded by beat (bookkeeping: changing it sends no notification).';
COMMENT ON COLUMN schedules.run_count IS 'Fires recorded by beat (bookkeeping: changing it sends no notification).';

-- schedules_definition_changed is true when an update touches anything but
-- the bookkeeping columns (last_run_at, run_count) and updated_at.
-- +goose StatementBegin
CREATE FUNCTION schedules_definition_changed(o schedules, n schedules) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT (o.name, o.task, o.queue, o.args, o.cron, o.timezone, o."interval", o.start_at,
            o.expires_at, o.enabled, o.one_off, o.spread, o.misfire, o.catch_up_max,
            o.description, o.source, o.created_at)
           IS DISTINCT FROM
           (n.name, n.task, n.queue, n.args, n.cron, n.timezone, n."interval", n.start_at,
            n.expires_at, n.enabled, n.one_off, n.spread, n.misfire, n.catch_up_max,
            n.description, n.source, n.created_at)
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION schedules_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF schedules_definition_changed(OLD, NEW) THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER schedules_touch BEFORE UPDATE ON schedules
    FOR EACH ROW EXECUTE FUNCTION schedules_touch();

-- schedules_notify announces the name of every inserted, deleted or
-- redefined schedule on channel flotilla_schedules, however the change was
-- made (web, CLI or plain SQL), so that the beat leader reloads it at once.
-- Bookkeeping-only updates (beat recording its fires) stay silent.
-- +goose StatementBegin
CREATE FUNCTION schedules_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('flotilla_schedules', NEW.name);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('flotilla_schedules', OLD.name);
    ELSIF schedules_definition_changed(OLD, NEW) THEN
        IF OLD.name <> NEW.name THEN
            PERFORM pg_notify('flotilla_schedules', OLD.name);
        END IF;
        PERFORM pg_notify('flotilla_schedules', NEW.name);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER schedules_notify AFTER INSERT OR UPDATE OR DELETE ON schedules
    FOR EACH ROW EXECUTE FUNCTION schedules_notify();

-- An empty payload means "reload everything".
-- +goose StatementBegin
CREATE FUNCTION schedules_notify_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flotilla_schedules', '');
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER schedules_notify_truncate AFTER TRUNCATE ON schedules
    FOR EACH STATEMENT EXECUTE FUNCTION schedules_notify_truncate();

-- +goose Down
DROP FUNCTION schedules_definition_changed(schedules, schedules);
DROP TABLE schedules;
DROP FUNCTION schedules_notify_truncate();
DROP FUNCTION schedules_notify();
DROP FUNCTION schedules_touch();
