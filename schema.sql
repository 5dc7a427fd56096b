-- actorstack: the one schema. PostgreSQL is the system of record; RabbitMQ holds only
-- messages in flight. Applied by `actorstack db init`; older databases are upgraded by the
-- numbered files in migrations/ (this file always equals version 1 plus every migration).
--
-- schema-version: 16

-- Which schema version this database is at; one row per applied version.
CREATE TABLE schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO schema_version (version) VALUES (1), (2), (3), (4), (5), (6), (7), (8), (9), (10), (11), (12), (13), (14), (15), (16);

-- Settings every process must agree on (owned by `db init`; read by the runtime and senders).
CREATE TABLE cluster_settings (
    key    text PRIMARY KEY,
    value  jsonb NOT NULL
);
-- Actors of each kind are spread over this many quorum queues (protocol/routing.py).
INSERT INTO cluster_settings (key, value) VALUES ('shards', '16');
-- The key that signs API tokens (HMAC-SHA256): 244 bits from the server's strong random source.
INSERT INTO cluster_settings (key, value)
VALUES ('token_key', to_jsonb(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')));

-- The key that signs host tokens (migration 0014), the credential a host agent shows the
-- host-scoped internal API (api/internal); apart from token_key so that either can be replaced.
INSERT INTO cluster_settings (key, value)
VALUES ('host_key', to_jsonb(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')));

-- The cloud's own id: host agents tag what they create in the kernel (links) with it, so that
-- they only ever adopt or remove their own cloud's bridges, taps and namespaces.
INSERT INTO cluster_settings (key, value) VALUES ('cloud_id', to_jsonb(gen_random_uuid()::text));

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
    payload         jsonb NOT NULL DEFAULT '{}',
    -- The public stream's order (migration 0004): the inserting transaction, and the
    -- commit-ordered number the sequencer gives the event once that transaction is settled.
    xid             xid8 NOT NULL DEFAULT pg_current_xact_id(),
    seq             bigint UNIQUE
);
CREATE INDEX events_actor ON events (kind, actor_id, id);
CREATE INDEX events_unsequenced ON events (xid, id) WHERE seq IS NULL;
CREATE INDEX events_project_seq ON events (project_id, seq);
CREATE TABLE event_sequence (
    last  bigint NOT NULL               -- the highest seq given out
);
INSERT INTO event_sequence (last) VALUES (0);

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

-- ============================================================================================
-- Identity (owned by the API's identity service; Keystone v3's model, Default domain)
-- ============================================================================================

CREATE TABLE domains (
    id           text PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    description  text NOT NULL DEFAULT '',
    enabled      boolean NOT NULL DEFAULT true,
    tags         text[] NOT NULL DEFAULT '{}',
    extra        jsonb NOT NULL DEFAULT '{}'   -- attributes Keystone keeps beside the known ones
);
INSERT INTO domains (id, name, description) VALUES ('default', 'Default', 'The default domain');

-- A project's parent is another project of its domain (parent_id), or its domain (NULL).
CREATE TABLE projects (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    domain_id    text NOT NULL REFERENCES domains (id),
    description  text NOT NULL DEFAULT '',
    enabled      boolean NOT NULL DEFAULT true,
    tags         text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    parent_id    text REFERENCES projects (id) ON DELETE CASCADE,
    extra        jsonb NOT NULL DEFAULT '{}',
    UNIQUE (domain_id, name)
);
CREATE INDEX projects_parent ON projects (parent_id);

CREATE TABLE users (
    id                  text PRIMARY KEY,
    name                text NOT NULL,
    domain_id           text NOT NULL REFERENCES domains (id),
    password_hash       text,
    enabled             boolean NOT NULL DEFAULT true,
    default_project_id  text REFERENCES projects (id) ON DELETE SET NULL,
    email               text,
    description         text NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL DEFAULT now(),
    extra               jsonb NOT NULL DEFAULT '{}',  -- e.g. the project_id tempest gives its users
    UNIQUE (domain_id, name)
);

-- Groups of users (migration 0010; api/identity/groups.py): roles given to a group are its
-- members' roles.
CREATE TABLE groups (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    domain_id    text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    description  text NOT NULL DEFAULT '',
    extra        jsonb NOT NULL DEFAULT '{}',
    UNIQUE (domain_id, name)
);

CREATE TABLE group_members (
    group_id  text NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id   text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

-- A global role (domain_id NULL) or a domain-specific one, which is never put in a token itself:
-- only the global roles it implies are.
CREATE TABLE roles (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    domain_id    text REFERENCES domains (id) ON DELETE CASCADE,
    description  text,
    extra        jsonb NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX roles_name ON roles (name, domain_id) NULLS NOT DISTINCT;

-- Role inference rules: a holder of the prior role holds the implied one too (bootstrap makes
-- admin -> member -> reader).
CREATE TABLE implied_roles (
    prior_role_id    text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    implied_role_id  text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (prior_role_id, implied_role_id)
);

-- A role given to a user or a group (one of them) on a project, a domain or the system (one of
-- them). `inherited` (OS-INHERIT): it applies to the projects below the domain or the project,
-- not to the target itself (api/identity/grants.py writes them; api/effective_roles.py reads
-- them when a token is used).
CREATE TABLE role_assignments (
    user_id     text REFERENCES users (id) ON DELETE CASCADE,
    project_id  text REFERENCES projects (id) ON DELETE CASCADE,
    role_id     text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    group_id    text REFERENCES groups (id) ON DELETE CASCADE,
    domain_id   text REFERENCES domains (id) ON DELETE CASCADE,
    system      boolean NOT NULL DEFAULT false,
    inherited   boolean NOT NULL DEFAULT false,
    CONSTRAINT role_assignments_one_actor CHECK (num_nonnulls(user_id, group_id) = 1),
    CONSTRAINT role_assignments_one_target CHECK (num_nonnulls(project_id, domain_id) + system::int = 1),
    CONSTRAINT role_assignments_system_not_inherited CHECK (NOT (system AND inherited))
);
CREATE INDEX role_assignments_project ON role_assignments (project_id);
CREATE UNIQUE INDEX role_assignments_unique
    ON role_assignments (user_id, group_id, project_id, domain_id, system, role_id, inherited) NULLS NOT DISTINCT;
CREATE INDEX role_assignments_group ON role_assignments (group_id);
CREATE INDEX role_assignments_domain ON role_assignments (domain_id);
CREATE INDEX role_assignments_role ON role_assignments (role_id);

-- Tokens are signed, not stored; these rows revoke the tokens issued before revoked_at: one
-- token (audit_id); every token of a user (user_id alone: password change, disable, delete);
-- a user's tokens on a project, a domain or the system (user_id with project_id, domain_id or
-- system: a role taken away there); every token scoped to a project (project_id alone: disabled
-- or deleted); every token of a domain's users or scoped to it or its projects (domain_id alone).
CREATE TABLE token_revocations (
    id          bigserial PRIMARY KEY,
    audit_id    text,
    user_id     text,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    project_id  text,
    domain_id   text,
    system      boolean NOT NULL DEFAULT false
);
CREATE INDEX token_revocations_audit ON token_revocations (audit_id);
CREATE INDEX token_revocations_user ON token_revocations (user_id, revoked_at);
CREATE INDEX token_revocations_project ON token_revocations (project_id, revoked_at);
CREATE INDEX token_revocations_domain ON token_revocations (domain_id, revoked_at);

-- Keystone's application credentials (migration 0005; api/identity/app_credentials.py): a user
-- delegates some of their roles on one project to an application, which authenticates with the
-- credential's id (or name) and a secret instead of the user's password. Only the secret's scrypt
-- hash is kept. A credential goes with its user and its project; tokens made from it carry its
-- id, and stop validating once its row is gone.
CREATE TABLE application_credentials (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    description   text,
    user_id       text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id    text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    secret_hash   text NOT NULL,
    expires_at    timestamptz,                  -- NULL: never
    unrestricted  boolean NOT NULL DEFAULT false, -- may it manage application credentials itself
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);
CREATE INDEX application_credentials_project ON application_credentials (project_id);
-- The roles a credential delegates (a subset of its user's roles on its project when created; a
-- token gets those the user still holds there).
CREATE TABLE application_credential_roles (
    application_credential_id  text NOT NULL REFERENCES application_credentials (id) ON DELETE CASCADE,
    role_id                    text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (application_credential_id, role_id)
);

-- The catalog beside the built-in one (migration 0012; api/identity/catalog.py): regions (RegionOne
-- built in), services (the built-in ones, `built_in`, seeded by api/bootstrap.py and read-only;
-- their endpoints are computed from the API's URL, api/catalog.py) and the endpoints added to them.
CREATE TABLE regions (
    id                text PRIMARY KEY,
    description       text NOT NULL DEFAULT '',
    parent_region_id  text REFERENCES regions (id) ON DELETE CASCADE,
    extra             jsonb NOT NULL DEFAULT '{}'
);
INSERT INTO regions (id) VALUES ('RegionOne');

CREATE TABLE services (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    name         text,
    description  text,
    enabled      boolean NOT NULL DEFAULT true,
    built_in     boolean NOT NULL DEFAULT false,
    extra        jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE endpoints (
    id          text PRIMARY KEY,
    service_id  text NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    interface   text NOT NULL CHECK (interface IN ('public', 'internal', 'admin')),
    url         text NOT NULL,
    region_id   text REFERENCES regions (id),
    enabled     boolean NOT NULL DEFAULT true,
    extra       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX endpoints_service ON endpoints (service_id);
CREATE INDEX endpoints_region ON endpoints (region_id);

-- OS-EP-FILTER's endpoint groups (api/identity/endpoint_groups.py): filters over endpoints.
CREATE TABLE endpoint_groups (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    description  text,
    filters      jsonb NOT NULL DEFAULT '{}'
);

-- Policy blobs Keystone stores for other services (api/identity/policies.py).
CREATE TABLE policies (
    id     text PRIMARY KEY,
    type   text NOT NULL,
    blob   text NOT NULL,
    extra  jsonb NOT NULL DEFAULT '{}'
);

-- Credentials (api/identity/credentials.py; /credentials and OS-EC2, whose id is the sha256 of
-- its access key): the blob is kept encrypted (Fernet, a key derived from the token key).
CREATE TABLE credentials (
    id              text PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id      text REFERENCES projects (id) ON DELETE CASCADE,
    type            text NOT NULL,
    encrypted_blob  text NOT NULL,
    extra           jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX credentials_user ON credentials (user_id);

-- Trusts (OS-TRUST; api/identity/trusts.py): a trustor lets a trustee act on a project with some
-- of the trustor's roles (as the trustor when `impersonation`), until `expires_at`, at most
-- `remaining_uses` times; a trust made with a trust's token (redelegation) goes with it.
CREATE TABLE trusts (
    id                    text PRIMARY KEY,
    trustor_user_id       text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    trustee_user_id       text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id            text REFERENCES projects (id) ON DELETE CASCADE,
    impersonation         boolean NOT NULL,
    expires_at            timestamptz,
    remaining_uses        integer CHECK (remaining_uses >= 0),
    allow_redelegation    boolean NOT NULL DEFAULT false,
    redelegation_count    integer,
    redelegated_trust_id  text REFERENCES trusts (id) ON DELETE CASCADE,
    created_at            timestamptz NOT NULL DEFAULT now(),
    extra                 jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX trusts_trustor ON trusts (trustor_user_id);
CREATE INDEX trusts_trustee ON trusts (trustee_user_id);

CREATE TABLE trust_roles (
    trust_id  text NOT NULL REFERENCES trusts (id) ON DELETE CASCADE,
    role_id   text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (trust_id, role_id)
);

-- Access rules (api/identity/access_rules.py): what a token made from an application credential
-- may call (service type, method, path pattern). A user's rules are shared by their credentials
-- and outlive them; a rule still in use cannot be deleted.
CREATE TABLE access_rules (
    id       text PRIMARY KEY,
    user_id  text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service  text NOT NULL,
    path     text NOT NULL,
    method   text NOT NULL,
    UNIQUE (user_id, service, path, method)
);

CREATE TABLE application_credential_access_rules (
    application_credential_id  text NOT NULL REFERENCES application_credentials (id) ON DELETE CASCADE,
    access_rule_id             text NOT NULL REFERENCES access_rules (id),
    PRIMARY KEY (application_credential_id, access_rule_id)
);
CREATE INDEX application_credential_access_rules_rule ON application_credential_access_rules (access_rule_id);

-- OAuth1 consumers (api/identity/oauth1.py): only the secret's hash is kept.
CREATE TABLE oauth_consumers (
    id           text PRIMARY KEY,
    description  text,
    secret_hash  text NOT NULL,
    extra        jsonb NOT NULL DEFAULT '{}'
);

-- Domain-specific configuration (api/identity/domain_config.py): Keystone's whitelisted
-- options of the identity and ldap groups, per domain.
CREATE TABLE domain_configs (
    domain_id   text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    group_name  text NOT NULL,
    option      text NOT NULL,
    value       jsonb,
    PRIMARY KEY (domain_id, group_name, option)
);

-- ============================================================================================
-- Compute basics (owned by the API's compute service)
-- ============================================================================================

CREATE TABLE flavors (
    id           text PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    ram          integer NOT NULL CHECK (ram > 0),            -- MiB
    vcpus        integer NOT NULL CHECK (vcpus > 0),
    disk         integer NOT NULL CHECK (disk >= 0),          -- GiB
    ephemeral    integer NOT NULL DEFAULT 0 CHECK (ephemeral >= 0),
    swap         integer NOT NULL DEFAULT 0 CHECK (swap >= 0), -- MiB
    rxtx_factor  double precision NOT NULL DEFAULT 1.0,
    is_public    boolean NOT NULL DEFAULT true,
    description  text,
    extra_specs  jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Projects that may use a private flavor (os-flavor-access).
CREATE TABLE flavor_access (
    flavor_id   text NOT NULL REFERENCES flavors (id) ON DELETE CASCADE,
    project_id  text NOT NULL,
    PRIMARY KEY (flavor_id, project_id)
);

-- SSH keypairs belong to a user, as in Nova. `id` is Nova's integer keypair id: it orders a
-- user's keypairs in a list and is the position a list marker stands for.
CREATE TABLE keypairs (
    id           bigserial NOT NULL UNIQUE,
    user_id      text NOT NULL,
    name         text NOT NULL,
    project_id   text NOT NULL,
    type         text NOT NULL DEFAULT 'ssh',
    public_key   text NOT NULL,
    fingerprint  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, name)
);

-- Quotas of every service: a row overrides the default limit for one project (-1 = unlimited).
CREATE TABLE quota_defaults (
    resource     text PRIMARY KEY,
    hard_limit   bigint NOT NULL
);
INSERT INTO quota_defaults (resource, hard_limit) VALUES
    ('instances', 10), ('cores', 20), ('ram', 51200), ('key_pairs', 100),
    ('metadata_items', 128), ('server_groups', 10), ('server_group_members', 10),
    ('injected_files', 5), ('injected_file_content_bytes', 10240), ('injected_file_path_bytes', 255),
    ('volumes', 10), ('gigabytes', 1000), ('snapshots', 10), ('backups', 10),
    ('backup_gigabytes', 1000), ('per_volume_gigabytes', -1), ('groups', 10),
    ('network', 100), ('subnet', 100), ('port', 500), ('router', 10), ('floatingip', 50),
    ('security_group', 10), ('security_group_rule', 100), ('rbac_policy', 10), ('subnetpool', -1);
-- nova-network's quotas: compute quota sets before microversion 2.36 still show (and store) them,
-- unlimited and enforced by nothing, as Nova does since nova-network was removed.
INSERT INTO quota_defaults (resource, hard_limit) VALUES
    ('fixed_ips', -1), ('floating_ips', -1), ('security_groups', -1), ('security_group_rules', -1);

CREATE TABLE quota_limits (
    project_id   text NOT NULL,
    resource     text NOT NULL REFERENCES quota_defaults (resource),
    hard_limit   bigint NOT NULL CHECK (hard_limit >= -1),
    PRIMARY KEY (project_id, resource)
);

-- Quota classes other than 'default' (whose values are quota_defaults; migration 0013), owned by
-- the API (api/compute/quota_classes.py). As in Nova, they are kept and shown but limit nothing.
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

-- ============================================================================================
-- Images (owned by the API's image service; the bytes live under <state dir>/images/)
-- ============================================================================================

CREATE TABLE images (
    id                text PRIMARY KEY,
    name              text,
    owner             text,                          -- project id
    status            text NOT NULL DEFAULT 'queued', -- queued, saving, active, killed, deleted, deactivated
    visibility        text NOT NULL DEFAULT 'shared'
                      CHECK (visibility IN ('private', 'public', 'shared', 'community')),
    disk_format       text,
    container_format  text,
    size              bigint,
    virtual_size      bigint,
    checksum          text,                          -- md5, as Glance reports it
    os_hash_algo      text,
    os_hash_value     text,
    min_disk          integer NOT NULL DEFAULT 0,
    min_ram           integer NOT NULL DEFAULT 0,
    protected         boolean NOT NULL DEFAULT false,
    os_hidden         boolean NOT NULL DEFAULT false,
    tags              text[] NOT NULL DEFAULT '{}',
    properties        jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX images_owner ON images (owner);

CREATE TABLE image_members (
    image_id    text NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    member_id   text NOT NULL,                       -- project id
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (image_id, member_id)
);

-- Metadata definitions (Glance's metadefs; owned by the API's image service,
-- api/image/metadefs/): namespaces and the property definitions, objects, tags and resource-type
-- associations they hold, all deleted with their namespace.
CREATE TABLE metadef_namespaces (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace     text NOT NULL UNIQUE,
    display_name  text,
    description   text,
    visibility    text NOT NULL DEFAULT 'private' CHECK (visibility IN ('public', 'private')),
    protected     boolean NOT NULL DEFAULT false,
    owner         text NOT NULL,                     -- project id
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX metadef_namespaces_owner ON metadef_namespaces (owner);

-- The cloud's own resource types are protected (as Glance's loaded definitions make them); an
-- association naming a new one creates it.
CREATE TABLE metadef_resource_types (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    protected   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO metadef_resource_types (name, protected) VALUES
    ('OS::Glance::Image', true), ('OS::Cinder::Volume', true), ('OS::Nova::Flavor', true),
    ('OS::Nova::Server', true), ('OS::Nova::Aggregate', true);

CREATE TABLE metadef_namespace_resource_types (
    namespace_id       bigint NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    resource_type_id   bigint NOT NULL REFERENCES metadef_resource_types (id),
    prefix             text,                         -- what the namespace's property names take on this type
    properties_target  text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace_id, resource_type_id)
);

CREATE TABLE metadef_objects (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id  bigint NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    name          text NOT NULL,
    description   text,
    required      jsonb,                             -- names of required properties
    properties    jsonb,                             -- name -> property definition
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace_id, name)
);

CREATE TABLE metadef_properties (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id  bigint NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    name          text NOT NULL,
    definition    jsonb NOT NULL,                    -- title, type, enum, ... (a small JSON Schema)
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace_id, name)
);

CREATE TABLE metadef_tags (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id  bigint NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    name          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX metadef_tags_name ON metadef_tags (namespace_id, lower(name));  -- case-insensitive, as Glance

-- Glance's tasks (owned by the API's image service: api/image/tasks.py, api/image/importer.py):
-- the legacy `import` tasks of /v2/tasks and the `api_image_import` task of each image import.
-- A task outlives its image, as in Glance.
CREATE TABLE image_tasks (
    id          text PRIMARY KEY,
    type        text NOT NULL CHECK (type IN ('import', 'api_image_import')),
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'processing', 'success', 'failure')),
    owner       text NOT NULL,                       -- project id
    input       jsonb,
    result      jsonb,
    message     text NOT NULL DEFAULT '',
    image_id    text,
    request_id  text,
    user_id     text,
    expires_at  timestamptz,                         -- set when the task ends
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()   -- a running task touches it (api/image/importer.py)
);
CREATE INDEX image_tasks_image ON image_tasks (image_id);
CREATE INDEX image_tasks_owner ON image_tasks (owner, created_at);
CREATE INDEX image_tasks_running ON image_tasks (updated_at) WHERE status IN ('pending', 'processing');

-- ============================================================================================
-- Compute: hosts, claims, servers (the compute issue builds on these)
-- ============================================================================================

-- Compute hosts as the scheduler sees them (Placement's resource providers): inventory and
-- heartbeats reported by each host agent, usage kept by the scheduler's claims. Owned by the
-- scheduler service.
CREATE TABLE compute_hosts (
    name                   text PRIMARY KEY,
    availability_zone      text NOT NULL DEFAULT 'nova',
    enabled                boolean NOT NULL DEFAULT true,
    disabled_reason        text,
    virt_type              text NOT NULL,                  -- test, qemu or kvm
    hypervisor_hostname    text NOT NULL,
    host_ip                text,
    vcpus                  integer NOT NULL CHECK (vcpus >= 0),
    memory_mb              integer NOT NULL CHECK (memory_mb >= 0),
    local_gb               integer NOT NULL CHECK (local_gb >= 0),
    cpu_allocation_ratio   double precision NOT NULL DEFAULT 4.0,
    ram_allocation_ratio   double precision NOT NULL DEFAULT 1.0,
    disk_allocation_ratio  double precision NOT NULL DEFAULT 1.0,
    reserved_memory_mb     integer NOT NULL DEFAULT 0,
    used_vcpus             integer NOT NULL DEFAULT 0 CHECK (used_vcpus >= 0),
    used_memory_mb         integer NOT NULL DEFAULT 0 CHECK (used_memory_mb >= 0),
    used_local_gb          integer NOT NULL DEFAULT 0 CHECK (used_local_gb >= 0),
    generation             bigint NOT NULL DEFAULT 0,      -- bumped by every claim and release
    started_at             timestamptz NOT NULL DEFAULT now(),
    heartbeat_at           timestamptz NOT NULL DEFAULT now(),
    -- owned by the operator (os-services, as enabled is; migration 0013): a host forced down is
    -- down whatever its heartbeat says
    forced_down            boolean NOT NULL DEFAULT false,
    -- owned by the agent's report (migration 0015): where its VXLAN tunnels start (NULL: no underlay)
    tunnel_ip              inet
);
CREATE INDEX compute_hosts_free_ram ON compute_hosts
    ((floor((memory_mb - reserved_memory_mb) * ram_allocation_ratio) - used_memory_mb) DESC, name);

-- What each host agent last saw on its host (migration 0008; hostagent/agent.py writes its row at every
-- power-state sync): the instances it keeps, as {server id: power state, or null for an
-- instance directory whose domain is gone}. `actorstack doctor` compares it with `servers` to
-- find domains without servers and servers without domains. Owned by the host agent.
CREATE TABLE host_domains (
    host         text PRIMARY KEY,
    domains      jsonb NOT NULL DEFAULT '{}',
    reported_at  timestamptz NOT NULL DEFAULT now()
);

-- One claim per placed server: what it takes from its host. Owned by the scheduler service.
CREATE TABLE allocations (
    server_id   text PRIMARY KEY,
    host        text NOT NULL REFERENCES compute_hosts (name),
    project_id  text NOT NULL,
    group_id    text,
    vcpus       integer NOT NULL,
    memory_mb   integer NOT NULL,
    local_gb    integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX allocations_host ON allocations (host);
CREATE INDEX allocations_group ON allocations (group_id) WHERE group_id IS NOT NULL;

-- Host aggregates (Nova's os-aggregates; migration 0013), owned by the API
-- (api/compute/aggregates.py). An aggregate's `availability_zone` metadata is the availability
-- zone of its hosts.
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

-- Server groups (Nova's os-server-groups): policy affinity, anti-affinity, soft-*.
CREATE TABLE server_groups (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    project_id  text NOT NULL,
    user_id     text NOT NULL,
    policy      text NOT NULL CHECK (policy IN ('affinity', 'anti-affinity', 'soft-affinity', 'soft-anti-affinity')),
    rules       jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Servers. The server actor (actors/server.py) owns the lifecycle columns (the fields of its
-- ServerRecord, from `version` to `updated_at`); the API owns the rest (name, description,
-- metadata, key, user data…) and bumps `version` whenever it writes, so the actor's cached
-- copy is never written back over the API's change.
CREATE TABLE servers (
    id                           text PRIMARY KEY,
    version                      integer NOT NULL,
    project_id                   text NOT NULL,
    user_id                      text NOT NULL,
    display_name                 text NOT NULL,
    vm_state                     text NOT NULL,
    task_state                   text,
    power_state                  integer NOT NULL DEFAULT 0,
    flavor                       jsonb NOT NULL,
    image_id                     text,
    host                         text,
    node                         text,
    availability_zone            text,
    requested_availability_zone  text,
    group_id                     text,
    attempted_hosts              text[] NOT NULL DEFAULT '{}',
    max_attempts                 integer NOT NULL DEFAULT 3,
    fault                        jsonb,
    launched_at                  double precision,
    terminated_at                double precision,
    updated_at                   double precision,
    -- owned by the API
    description                  text,
    hostname                     text,
    metadata                     jsonb NOT NULL DEFAULT '{}',
    key_name                     text,
    key_data                     text,
    user_data                    text,
    config_drive                 boolean NOT NULL DEFAULT false,
    reservation_id               text NOT NULL,
    launch_index                 integer NOT NULL DEFAULT 0,
    locked                       boolean NOT NULL DEFAULT false,
    tags                         text[] NOT NULL DEFAULT '{}',
    created_at                   timestamptz NOT NULL DEFAULT now(),
    -- a server's network interfaces, in order: [{"port_id", "network_id", "mac_address",
    -- "delete_on_termination"}]; and the ports that confirmed their binding to its host
    nics                         jsonb NOT NULL DEFAULT '[]',
    bound_ports                  text[] NOT NULL DEFAULT '{}',
    -- volumes to create or attach at boot (block_device_mapping_v2 with a volume destination):
    -- [{"volume_id", "device", "boot_index", "delete_on_termination", "status"}]
    block_devices                jsonb NOT NULL DEFAULT '[]',
    -- owned by the API (migration 0013): the access IPs, who locked the server ('owner' or
    -- 'admin') and why, the guest's encrypted password (os-server-password), the disk config
    access_ip_v4                 text,
    access_ip_v6                 text,
    locked_by                    text CHECK (locked_by IN ('owner', 'admin')),
    locked_reason                text,
    password                     text NOT NULL DEFAULT '',
    auto_disk_config             boolean NOT NULL DEFAULT false,
    -- owned by the actor (migration 0013): when a soft-deleted server is deleted for good
    reclaim_at                   double precision
);
CREATE INDEX servers_project ON servers (project_id, created_at) WHERE vm_state <> 'deleted';
CREATE INDEX servers_host ON servers (host) WHERE vm_state <> 'deleted';

-- Nova's instance actions: one row per request on a server (create, stop, delete…), written by
-- the API in the request's transaction.
CREATE TABLE instance_actions (
    id          bigserial PRIMARY KEY,
    server_id   text NOT NULL,
    request_id  text NOT NULL,
    action      text NOT NULL,
    project_id  text NOT NULL,
    user_id     text NOT NULL,
    start_time  timestamptz NOT NULL DEFAULT now(),
    message     text
);
CREATE INDEX instance_actions_server ON instance_actions (server_id, id);

-- Networking (Neutron's model): networks, subnets, ports and their fixed IPs.
--
-- The network and port actors own `version`, `status` and (ports) the binding columns; the API
-- owns the rest and bumps `version` whenever it writes, as for servers. A subnet has no
-- lifecycle of its own in Neutron (no status): it is a part of its network, written by the API.

CREATE TABLE networks (
    id                       text PRIMARY KEY,
    version                  integer NOT NULL DEFAULT 1,
    project_id               text NOT NULL,
    name                     text NOT NULL DEFAULT '',
    description              text NOT NULL DEFAULT '',
    status                   text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('BUILD', 'ACTIVE', 'DOWN', 'ERROR')),
    admin_state_up           boolean NOT NULL DEFAULT true,
    shared                   boolean NOT NULL DEFAULT false,
    external                 boolean NOT NULL DEFAULT false,
    mtu                      integer NOT NULL DEFAULT 1500,
    port_security_enabled    boolean NOT NULL DEFAULT true,
    dns_domain               text NOT NULL DEFAULT '',
    availability_zone_hints  text[] NOT NULL DEFAULT '{}',
    tags                     text[] NOT NULL DEFAULT '{}',
    revision_number          integer NOT NULL DEFAULT 0,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    -- owned by the API (migration 0015): 'vxlan' (tenant networks span the hosts, a VNI each from
    -- vxlan_vni) or 'local' (an admin's host-local network); the segment is the VNI
    network_type             text NOT NULL DEFAULT 'vxlan' CHECK (network_type IN ('vxlan', 'local')),
    segmentation_id          integer CHECK (segmentation_id BETWEEN 1 AND 16777215)
);
CREATE INDEX networks_project ON networks (project_id);
CREATE SEQUENCE vxlan_vni AS integer MINVALUE 1 MAXVALUE 16777215 NO CYCLE;
CREATE UNIQUE INDEX networks_segment ON networks (network_type, segmentation_id);

CREATE TABLE subnets (
    id                 text PRIMARY KEY,
    network_id         text NOT NULL REFERENCES networks (id),
    project_id         text NOT NULL,
    name               text NOT NULL DEFAULT '',
    description        text NOT NULL DEFAULT '',
    ip_version         smallint NOT NULL CHECK (ip_version IN (4, 6)),
    cidr               cidr NOT NULL,
    gateway_ip         inet,
    enable_dhcp        boolean NOT NULL DEFAULT true,
    dns_nameservers    text[] NOT NULL DEFAULT '{}',
    allocation_pools   jsonb NOT NULL DEFAULT '[]',   -- [{"start": ip, "end": ip}], in order
    host_routes        jsonb NOT NULL DEFAULT '[]',   -- [{"destination": cidr, "nexthop": ip}]
    ipv6_ra_mode       text,
    ipv6_address_mode  text,
    tags               text[] NOT NULL DEFAULT '{}',
    revision_number    integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subnets_network ON subnets (network_id);

CREATE TABLE ports (
    id                     text PRIMARY KEY,
    version                integer NOT NULL DEFAULT 1,
    network_id             text NOT NULL REFERENCES networks (id),
    project_id             text NOT NULL,
    name                   text NOT NULL DEFAULT '',
    description            text NOT NULL DEFAULT '',
    mac_address            macaddr NOT NULL,
    admin_state_up         boolean NOT NULL DEFAULT true,
    status                 text NOT NULL DEFAULT 'DOWN' CHECK (status IN ('BUILD', 'ACTIVE', 'DOWN', 'ERROR')),
    device_id              text NOT NULL DEFAULT '',
    device_owner           text NOT NULL DEFAULT '',
    binding_host_id        text NOT NULL DEFAULT '',
    binding_vif_type       text NOT NULL DEFAULT 'unbound',
    binding_vnic_type      text NOT NULL DEFAULT 'normal',
    binding_profile        jsonb NOT NULL DEFAULT '{}',
    dns_name               text NOT NULL DEFAULT '',
    port_security_enabled  boolean NOT NULL DEFAULT true,
    allowed_address_pairs  jsonb NOT NULL DEFAULT '[]',
    security_group_ids     text[] NOT NULL DEFAULT '{}',  -- its security groups (the API's)
    tags                   text[] NOT NULL DEFAULT '{}',
    revision_number        integer NOT NULL DEFAULT 0,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (network_id, mac_address)               -- MACs are unique per network, by constraint
);
CREATE INDEX ports_network ON ports (network_id);
CREATE INDEX ports_project ON ports (project_id);
CREATE INDEX ports_device ON ports (device_id) WHERE device_id <> '';
CREATE INDEX ports_binding ON ports (binding_host_id) WHERE binding_host_id <> '';
CREATE INDEX ports_security_groups ON ports USING gin (security_group_ids);

-- A port's fixed IPs. The primary key is the IPAM guarantee: one address of a subnet belongs to
-- at most one port, whatever the concurrency.
CREATE TABLE ip_allocations (
    subnet_id   text NOT NULL REFERENCES subnets (id),
    ip_address  inet NOT NULL,
    port_id     text NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    network_id  text NOT NULL,
    PRIMARY KEY (subnet_id, ip_address)
);
CREATE INDEX ip_allocations_port ON ip_allocations (port_id);
CREATE INDEX ip_allocations_network ON ip_allocations (network_id, ip_address);

-- Security groups and port security (issue 20).
--
-- Owned by the API (api/network/security_groups.py): Neutron's security groups and their rules.
-- A project's `default` group is made on first use (is_default, one per project by the unique
-- index, so two requests racing to make it end with one). A rule's protocol is kept as the user
-- gave it (a name or a number, as Neutron shows it back); `ip_protocol` is its number (NULL: any),
-- which the de-duplication index and the host agents use. Rules referencing a group as
-- `remote_group_id` go with it (Neutron's cascade).
CREATE TABLE security_groups (
    id               text PRIMARY KEY,
    project_id       text NOT NULL,
    name             text NOT NULL DEFAULT '',
    description      text NOT NULL DEFAULT '',
    stateful         boolean NOT NULL DEFAULT true,
    is_default       boolean NOT NULL DEFAULT false,
    fanned_out_at    timestamptz,  -- the security_group service's (actors/firewall.py): its last fan-out
    tags             text[] NOT NULL DEFAULT '{}',
    revision_number  integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX security_groups_project ON security_groups (project_id);
CREATE UNIQUE INDEX security_groups_default ON security_groups (project_id) WHERE is_default;

CREATE TABLE security_group_rules (
    id                 text PRIMARY KEY,
    security_group_id  text NOT NULL REFERENCES security_groups (id) ON DELETE CASCADE,
    project_id         text NOT NULL,
    direction          text NOT NULL CHECK (direction IN ('ingress', 'egress')),
    ethertype          text NOT NULL CHECK (ethertype IN ('IPv4', 'IPv6')),
    protocol           text,
    ip_protocol        smallint CHECK (ip_protocol BETWEEN 0 AND 255),
    port_range_min     integer CHECK (port_range_min BETWEEN 0 AND 65535),
    port_range_max     integer CHECK (port_range_max BETWEEN 0 AND 65535),
    remote_ip_prefix   inet,            -- as given; its network() is what filters
    remote_group_id    text REFERENCES security_groups (id) ON DELETE CASCADE,
    description        text NOT NULL DEFAULT '',
    revision_number    integer NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (remote_ip_prefix IS NULL OR remote_group_id IS NULL)
);
CREATE INDEX security_group_rules_group ON security_group_rules (security_group_id);
CREATE INDEX security_group_rules_remote ON security_group_rules (remote_group_id) WHERE remote_group_id IS NOT NULL;
CREATE INDEX security_group_rules_project ON security_group_rules (project_id);
-- Neutron's SecurityGroupRuleExists: one rule per meaning, whatever the concurrency.
CREATE UNIQUE INDEX security_group_rules_unique ON security_group_rules (
    security_group_id, direction, ethertype, coalesce(ip_protocol, -1), coalesce(port_range_min, -1),
    coalesce(port_range_max, -1), coalesce(network(remote_ip_prefix)::text, ''), coalesce(remote_group_id, ''));

-- Block storage (Cinder's model): volumes, and the storage backends that hold them.
--
-- The volume actor owns `version`, `status`, `attach_status`, `attachment`, `size` after
-- creation, `backend`/`provider_location` (set from its backend's report), `target_size` and
-- `fault`. The API owns the rest and bumps `version` whenever it writes; besides creating the row
-- (status creating), it makes two guarded transitions itself, because the caller must learn at
-- once whether they won: available -> reserved (an attach, or a boot from this volume) and
-- in-use -> detaching (a detach), each followed in the same transaction by the messages that let
-- the actors carry on. No multiattach: a volume has at most one attachment, kept in its row, so
-- it can never be attached twice.

CREATE TABLE volume_backends (
    name               text PRIMARY KEY,              -- the storage agent's name (its queue: agent.<name>)
    driver             text NOT NULL,                 -- file (qcow2 files), later lvm, rbd …
    availability_zone  text NOT NULL DEFAULT 'nova',
    total_gb           integer NOT NULL CHECK (total_gb >= 0),
    allocated_gb       integer NOT NULL DEFAULT 0,
    enabled            boolean NOT NULL DEFAULT true,
    started_at         timestamptz NOT NULL DEFAULT now(),
    heartbeat_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE volumes (
    id                 text PRIMARY KEY,
    version            integer NOT NULL DEFAULT 1,
    project_id         text NOT NULL,
    user_id            text NOT NULL,
    name               text NOT NULL DEFAULT '',
    description        text NOT NULL DEFAULT '',
    size               integer NOT NULL CHECK (size > 0),          -- GiB
    status             text NOT NULL CHECK (status IN ('creating', 'available', 'reserved', 'attaching', 'in-use',
                           'detaching', 'deleting', 'error', 'error_deleting', 'extending', 'error_extending')),
    attach_status      text NOT NULL DEFAULT 'detached'
                           CHECK (attach_status IN ('detached', 'attaching', 'attached', 'detaching')),
    -- the one attachment: {"id", "server_id", "device", "host", "mode", "delete_on_termination",
    -- "attached_at"}; NULL when detached
    attachment         jsonb,
    bootable           boolean NOT NULL DEFAULT false,
    availability_zone  text NOT NULL DEFAULT 'nova',
    volume_type        text NOT NULL DEFAULT '__DEFAULT__',
    metadata           jsonb NOT NULL DEFAULT '{}',
    image_id           text,                                       -- created from this image
    image_metadata     jsonb NOT NULL DEFAULT '{}',                -- volume_image_metadata
    source_volid       text,
    snapshot_id        text,
    backend            text,                                       -- volume_backends.name
    provider_location  text,                                       -- the backend's handle (file backend: the path)
    format             text NOT NULL DEFAULT 'qcow2',
    target_size        integer,                                    -- extending: the size asked for
    fault              text,                                       -- why it is in an error state
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz
);
CREATE INDEX volumes_project ON volumes (project_id, created_at);
CREATE INDEX volumes_server ON volumes ((attachment->>'server_id')) WHERE attachment IS NOT NULL;
CREATE INDEX volumes_backend ON volumes (backend);

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
