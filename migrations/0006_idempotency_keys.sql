-- Idempotency keys (api/idempotency.py): a POST, PUT, PATCH or DELETE that carries an
-- `Idempotency-Key` header (every AMQP command with an idempotency_key does) records its key
-- here in the same transaction as its effect, with the response it got. The same key again
-- (same user and project) gets that response back and changes nothing; a different request
-- under a used key is refused. Rows are kept for a day.
CREATE TABLE idempotency_keys (
    user_id       text NOT NULL,
    project_id    text NOT NULL,                -- '' for an unscoped token
    key           text NOT NULL,
    fingerprint   text NOT NULL,                -- sha256 of method, path, query and body
    status        integer NOT NULL,
    content_type  text,
    location      text,
    body          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, project_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
