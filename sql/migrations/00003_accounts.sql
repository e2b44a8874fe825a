-- Accounts for people, roles on API tokens, and the audit log (issue #9).
--
-- Roles: admin (everything), operator (enqueue, cancel, retry, pause and
-- resume queues, schedules), viewer (read only). Passwords are stored as
-- bcrypt hashes (golang.org/x/crypto/bcrypt), never in clear. Tokens made
-- before roles existed keep full access (admin).

-- +goose Up
CREATE TABLE users (
    name          text        NOT NULL,
    password_hash text        NOT NULL,
    role          text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,

    CONSTRAINT users_pkey PRIMARY KEY (name),
    CONSTRAINT users_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$'),
    CONSTRAINT users_role_check CHECK (role IN ('admin', 'operator', 'viewer'))
);

COMMENT ON TABLE users IS 'People who log in to the web role; password_hash is bcrypt.';

ALTER TABLE api_tokens ADD COLUMN role text NOT NULL DEFAULT 'admin';
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check CHECK (role IN ('admin', 'operator', 'viewer'));

CREATE TABLE audit_log (
    id          bigserial   NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    actor_kind  text        NOT NULL,
    action      text        NOT NULL,
    target      text        NOT NULL DEFAULT '',
    result      text        NOT NULL,
    status      integer     NOT NULL,
    remote_addr text        NOT NULL DEFAULT '',

    CONSTRAINT audit_log_pkey PRIMARY KEY (id),
    CONSTRAINT audit_log_actor_kind_check CHECK (actor_kind IN ('user', 'token', 'anonymous', 'cli'))
);

CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC);

COMMENT ON TABLE audit_log IS 'Every state-changing management action: who (actor), what (action), on what (target), when (at) and how it ended (result, status).';

-- +goose Down
DROP TABLE audit_log;
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens DROP COLUMN role;
DROP TABLE users;
