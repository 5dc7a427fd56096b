-- Compute (api/compute, actors/server.py, actors/scheduler.py): what Nova keeps of a server that
-- the API did not store yet, the reclaim time of a soft-deleted server, forced-down hosts, host
-- aggregates and the availability zone an aggregate gives its hosts, the quota classes other
-- than 'default', and per-user compute quotas.

-- Owned by the API: the access IPs, who locked the server and why, the guest's encrypted
-- password (os-server-password), the disk config. Owned by the server actor: reclaim_at, when
-- a soft-deleted server is deleted for good.
ALTER TABLE servers
    ADD COLUMN access_ip_v4      text,
    ADD COLUMN access_ip_v6      text,
    ADD COLUMN locked_by         text CHECK (locked_by IN ('owner', 'admin')),
    ADD COLUMN locked_reason     text,
    ADD COLUMN password          text NOT NULL DEFAULT '',
    ADD COLUMN auto_disk_config  boolean NOT NULL DEFAULT false,
    ADD COLUMN reclaim_at        double precision;

-- Owned by the operator (os-services, as enabled is): a host forced down is down whatever its
-- heartbeat says, for the scheduler and the API alike.
ALTER TABLE compute_hosts ADD COLUMN forced_down boolean NOT NULL DEFAULT false;

-- Host aggregates (Nova's os-aggregates), owned by the API (api/compute/aggregates.py). An
-- aggregate's `availability_zone` metadata is the availability zone of its hosts.
CREATE TABLE aggregates (
    id          serial PRIMARY KEY,
    uuid        text NOT NULL UNIQUE,
    name        text NOT NULL UNIQUE,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz
);

CREATE TABLE aggregate_hosts (
    aggregate_id  integer NOT NULL REFERENCES aggregates (id) ON DELETE CASCADE,
    host          text NOT NULL,
    PRIMARY KEY (aggregate_id, host)
);
CREATE INDEX aggregate_hosts_host ON aggregate_hosts (host);

-- A host's availability zone: the one an aggregate of it names, else the one its agent reports.
CREATE FUNCTION host_zone(host text, reported text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT a.metadata->>'availability_zone' FROM aggregate_hosts ah
         JOIN aggregates a ON a.id = ah.aggregate_id
         WHERE ah.host = $1 AND a.metadata ? 'availability_zone' ORDER BY a.id LIMIT 1),
        $2)
$$;

-- Quota classes other than 'default' (whose values are quota_defaults), owned by the API
-- (api/compute/quota_classes.py). As in Nova, they are kept and shown but limit nothing.
CREATE TABLE quota_classes (
    class_name  text NOT NULL,
    resource    text NOT NULL REFERENCES quota_defaults (resource),
    hard_limit  bigint NOT NULL CHECK (hard_limit >= -1),
    PRIMARY KEY (class_name, resource)
);

-- Per-user compute quotas (Nova's quota sets with ?user_id=; migration 0013), owned by the API
-- (api/compute/quotas.py): a user's limit within a project, in place of the project's.
CREATE TABLE quota_user_limits (
    project_id  text NOT NULL,
    user_id     text NOT NULL,
    resource    text NOT NULL REFERENCES quota_defaults (resource),
    hard_limit  bigint NOT NULL CHECK (hard_limit >= -1),
    PRIMARY KEY (project_id, user_id, resource)
);
