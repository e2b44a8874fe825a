-- The transactional outbox (issue #11): flotilla.Client.EnqueueTx writes a
-- task's message into this table inside the caller's transaction; the
-- outbox relay (internal/outbox, run by web and worker) publishes committed
-- rows to JetStream with Nats-Msg-Id = the task id and deletes them. A
-- rolled-back transaction leaves no row, so it never publishes.
--
-- A row holds the message exactly as an enqueue would publish it: subject,
-- headers (NATS headers as JSON: {"Name": ["value", ...]}) and body.

-- +goose Up
CREATE TABLE outbox (
    id         bigserial   NOT NULL,
    task_id    text        NOT NULL,
    subject    text        NOT NULL,
    headers    jsonb       NOT NULL,
    data       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT outbox_pkey PRIMARY KEY (id)
);

COMMENT ON TABLE outbox IS 'Task messages enqueued inside a transaction, waiting for the outbox relay to publish them to JetStream (then deleted).';

-- outbox_notify wakes the relays: one notification per inserting
-- statement on channel flotilla_outbox, delivered only when the
-- transaction commits (PostgreSQL also folds identical notifications of
-- one transaction into one).
-- +goose StatementBegin
CREATE FUNCTION outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flotilla_outbox', '');
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- +goose Down
DROP TABLE outbox;
DROP FUNCTION outbox_notify();
