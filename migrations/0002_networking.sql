-- Networking (Neutron's model): networks, subnets, ports and their fixed IPs.
--
-- The network and port actors own `version`, `status` and (ports) the binding columns; the API
-- owns the rest and bumps `version` whenever it writes, as for servers. A subnet has no
-- lifecycle of its own in Neutron (no status): it is a part of its network, written by the API.

-- The cloud's own id: host agents tag what they create in the kernel (links) with it, so that
-- they only ever adopt or remove their own cloud's bridges, taps and namespaces.
INSERT INTO cluster_settings (key, value) VALUES ('cloud_id', to_jsonb(gen_random_uuid()::text));

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
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX networks_project ON networks (project_id);

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

-- A server's network interfaces, in order: [{"port_id", "network_id", "mac_address",
-- "delete_on_termination"}]; and the ports that confirmed their binding to the server's host.
ALTER TABLE servers ADD COLUMN nics jsonb NOT NULL DEFAULT '[]';
ALTER TABLE servers ADD COLUMN bound_ports text[] NOT NULL DEFAULT '{}';
