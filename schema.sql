-- actorstack: the one schema. PostgreSQL is the system of record; RabbitMQ holds only
-- messages in flight. Applied by `actorstack db init`; older databases are upgraded by the
-- numbered files in migrations/ (this file always equals version 1 plus every migration).
--
-- schema-version: 1

-- Which schema version this database is at; one row per applied version.
CREATE TABLE schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO schema_version (version) VALUES (1);

-- Settings every process must agree on (owned by `db init`; read by the runtime and senders).
CREATE TABLE cluster_settings (
    key    text PRIMARY KEY,
    value  jsonb NOT NULL
);
-- Actors of each kind are spread over this many quorum queues (protocol/routing.py).
INSERT INTO cluster_settings (key, value) VALUES ('shards', '16');

-- Runtime: ids of messages already handled (dedupe of redeliveries). A row is written in the
-- same transaction as the turn's effects; rows older than the dedupe window are pruned.
CREATE TABLE inbox (
    message_id    uuid PRIMARY KEY,
    kind          text NOT NULL,
    actor_id      text NOT NULL,
    member_id     text NOT NULL,           -- the runtime process that handled it
    processed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_processed_at ON inbox (processed_at);

-- Runtime: messages committed by a turn (or an API transaction) and not yet confirmed by the
-- broker. The relay publishes them in seq order with publisher confirms, then deletes them.
CREATE TABLE outbox (
    seq          bigserial PRIMARY KEY,
    message_id   uuid NOT NULL,
    exchange     text NOT NULL,
    routing_key  text NOT NULL,
    headers      jsonb,
    body         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Runtime: durable timers. A due timer moves to the outbox in one transaction.
CREATE TABLE timers (
    kind         text NOT NULL,
    actor_id     text NOT NULL,
    name         text NOT NULL,
    fire_at      timestamptz NOT NULL,
    message_id   uuid NOT NULL,
    routing_key  text NOT NULL,
    body         bytea NOT NULL,
    PRIMARY KEY (kind, actor_id, name)
);
CREATE INDEX timers_fire_at ON timers (fire_at);

-- Runtime: the event log, one row per actor state change (and per event a handler emits),
-- written in the transaction of the change. Public through the operator event stream.
CREATE TABLE events (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    kind            text NOT NULL,
    actor_id        text NOT NULL,
    project_id      text,
    type            text NOT NULL,
    prev_state      text,
    new_state       text,
    correlation_id  text,
    causation_id    text,              -- the message that caused it
    payload         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_actor ON events (kind, actor_id, id);

-- Runtime: why an actor went to its error state (Nova's instance_faults, for every kind).
CREATE TABLE actor_faults (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL,
    actor_id      text NOT NULL,
    message_id    text,
    message_type  text,
    reason        text NOT NULL,
    details       text NOT NULL DEFAULT '',
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX actor_faults_actor ON actor_faults (kind, actor_id, id);

-- Runtime: every message that was dead-lettered, with the reason (the message itself is also
-- kept in the actorstack.dead-letters queue for inspection and replay).
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    message_id  text,
    queue       text NOT NULL,
    reason      text NOT NULL,
    body        bytea NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

-- Runtime: live runtime processes (heartbeats); shards are balanced over the live members.
CREATE TABLE runtime_members (
    member_id     text PRIMARY KEY,
    hostname      text NOT NULL,
    pid           integer NOT NULL,
    kinds         text[] NOT NULL DEFAULT '{}',   -- the actor kinds it hosts
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);
