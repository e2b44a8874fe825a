-- API tokens of the api role (issue #4). Only a SHA-256 digest of each token
-- is stored: a token is "flt_" + 32 bytes from crypto/rand, so it cannot be
-- guessed or brute-forced, and a fast unsalted hash is the right tool (a
-- slow password hash such as bcrypt or argon2 protects low-entropy secrets
-- and would cost milliseconds per request for nothing). The digest is unique
-- and indexed, so a token is verified by one lookup, never by comparing
-- plaintext.

-- +goose Up
CREATE TABLE api_tokens (
    id           bigserial   NOT NULL,
    name         text        NOT NULL,
    token_hash   bytea       NOT NULL,
    token_prefix text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,

    CONSTRAINT api_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT api_tokens_name_key UNIQUE (name),
    CONSTRAINT api_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT api_tokens_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$'),
    CONSTRAINT api_tokens_token_hash_check CHECK (length(token_hash) = 32),
    CONSTRAINT api_tokens_token_prefix_check CHECK (length(token_prefix) = 8)
);

COMMENT ON TABLE api_tokens IS 'API tokens of the api role, stored as SHA-256 digests; a revoked token stays listed.';
COMMENT ON COLUMN api_tokens.token_hash IS 'SHA-256 of the whole token text (tokens carry 256 random bits, so a fast hash suffices).';
COMMENT ON COLUMN api_tokens.token_prefix IS 'First 8 characters of the token, to recognise it in listings.';
COMMENT ON COLUMN api_tokens.last_used_at IS 'Latest successful verification, updated at most once a minute.';

-- +goose Down
DROP TABLE api_tokens;
