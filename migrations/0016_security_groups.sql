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

-- Owned by the API: a port's security groups (ids; a group in use cannot be deleted: the API
-- locks the groups it adds a port to, and a delete checks under the group's row lock).
ALTER TABLE ports ADD COLUMN security_group_ids text[] NOT NULL DEFAULT '{}';
CREATE INDEX ports_security_groups ON ports USING gin (security_group_ids);
