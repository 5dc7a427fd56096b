"""What host agents read, as SQL over one snapshot: the rows the internal API hands them.

Every query is scoped to the hosts of the caller's token (`hosts`): a host sees the servers the
database places on it, the ports bound to it and the networks those ports are on, the
instance data of its own servers, and the images its servers and volumes are made from.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Iterable
from typing import Any

import asyncpg

from actors import db

# The servers placed on a host (every one not deleted), with their vm_state: what the agent
# adopts, restores or reaps at start, and reports power states for.
PLACED_SQL = """
SELECT id, vm_state FROM servers WHERE host = $1 AND vm_state <> 'deleted'
"""

# A server's ports on the caller's hosts, in the order of its nics (then creation order).
PORTS_OF_SERVER_SQL = """
SELECT p.id AS port_id, p.network_id, p.mac_address::text AS mac, n.mtu
FROM ports p
JOIN networks n ON n.id = p.network_id
LEFT JOIN servers s ON s.id = p.device_id
LEFT JOIN LATERAL (
    SELECT o.i FROM jsonb_array_elements(
        CASE jsonb_typeof(s.nics) WHEN 'array' THEN s.nics ELSE '[]'::jsonb END) WITH ORDINALITY AS o(nic, i)
    WHERE o.nic->>'port_id' = p.id LIMIT 1
) nic ON true
WHERE p.device_id = $1 AND p.binding_host_id = ANY($2::text[])
ORDER BY nic.i NULLS LAST, p.created_at, p.id
"""

# A server's ports that are (still) bound to the caller's hosts: the taps an unplug removes.
DEVICE_PORTS_SQL = """
SELECT id, network_id FROM ports WHERE device_id = $1 AND binding_host_id = ANY($2::text[])
"""

# The taps: VM ports bound to the hosts whose server lives there.
TAPS_SQL = """
SELECT p.id AS port_id, p.network_id, p.mac_address::text AS mac, p.device_id AS server_id,
       p.admin_state_up AND n.admin_state_up AS up, n.mtu, n.network_type, n.segmentation_id
FROM ports p
JOIN servers s ON s.id = p.device_id
JOIN networks n ON n.id = p.network_id
WHERE p.binding_host_id = ANY($1::text[]) AND s.host = p.binding_host_id
  AND s.vm_state <> 'deleted' AND s.task_state IS DISTINCT FROM 'deleting'
"""

SUBNETS_SQL = """
SELECT id, network_id, cidr::text AS cidr, host(gateway_ip) AS gateway_ip, dns_nameservers, host_routes
FROM subnets
WHERE network_id = ANY($1::text[]) AND ip_version = 4 AND enable_dhcp
ORDER BY network_id, created_at, id
"""

# Every IPv4 address of every port of those networks: the DHCP port's, and the hosts dnsmasq
# serves (all of the network's ports, not only the host's: it needs no binding).
ADDRESSES_SQL = """
SELECT a.network_id, a.subnet_id, host(a.ip_address) AS ip, p.id AS port_id,
       p.mac_address::text AS mac, p.device_owner, p.device_id, s.hostname
FROM ip_allocations a
JOIN ports p ON p.id = a.port_id
LEFT JOIN servers s ON s.id = p.device_id AND s.vm_state <> 'deleted'
WHERE a.network_id = ANY($1::text[]) AND family(a.ip_address) = 4
ORDER BY p.created_at, p.id, a.ip_address
"""

# The ports of those networks on other hosts (l2population): each with its host's tunnel endpoint
# and its IPv4 addresses, for the VXLAN device's forwarding and ARP entries. Only ports whose
# server lives there, as the taps: a host with none has no tunnel of the network.
REMOTES_SQL = """
SELECT p.id AS port_id, p.network_id, p.mac_address::text AS mac, host(h.tunnel_ip) AS tunnel_ip,
       ARRAY(SELECT host(a.ip_address) FROM ip_allocations a
             WHERE a.port_id = p.id AND family(a.ip_address) = 4 ORDER BY a.ip_address) AS ips
FROM ports p
JOIN servers s ON s.id = p.device_id
JOIN compute_hosts h ON h.name = p.binding_host_id
WHERE p.network_id = ANY($1::text[]) AND NOT (p.binding_host_id = ANY($2::text[]))
  AND s.host = p.binding_host_id AND s.vm_state <> 'deleted' AND s.task_state IS DISTINCT FROM 'deleting'
  AND h.tunnel_ip IS NOT NULL
ORDER BY p.network_id, p.id
"""

# The firewall of the hosts' ports (hostagent/network/firewall.py builds from these), as the one
# JSON document PostgreSQL writes, which the API hands on as it is (a thousand ports' rows never
# become Python objects there): `ports`, those with a tap there (as TAPS_SQL), each with its
# addresses, port security, address pairs and groups (stateful unless its groups are stateless);
# `rules`, those of the groups of the ports with port security; and `members`, the fixed IPs and
# (with port security) address pairs of the ports of every group those rules name as their remote
# group. One statement: one snapshot.
FIREWALL_SQL = """
WITH port AS (
    SELECT p.id AS port_id, p.network_id, p.mac_address::text AS mac,
           ARRAY(SELECT host(a.ip_address) FROM ip_allocations a WHERE a.port_id = p.id
                 ORDER BY a.ip_address) AS ips,
           p.port_security_enabled, p.allowed_address_pairs, p.security_group_ids AS security_groups,
           NOT p.security_group_ids && ARRAY(SELECT id FROM security_groups WHERE NOT stateful) AS stateful
    FROM ports p
    JOIN servers s ON s.id = p.device_id
    WHERE p.binding_host_id = ANY($1::text[]) AND s.host = p.binding_host_id
      AND s.vm_state <> 'deleted' AND s.task_state IS DISTINCT FROM 'deleting'
), rule AS (
    SELECT id, security_group_id, direction, ethertype, protocol, port_range_min, port_range_max,
           network(remote_ip_prefix)::text AS remote_ip_prefix, remote_group_id
    FROM security_group_rules
    WHERE security_group_id = ANY(ARRAY(
        SELECT DISTINCT unnest(security_groups) FROM port WHERE port_security_enabled))
), remote AS (
    SELECT ARRAY(SELECT DISTINCT remote_group_id FROM rule WHERE remote_group_id IS NOT NULL) AS ids
), member AS (
    SELECT m.group_id AS security_group_id, host(a.ip_address) AS ip
    FROM remote, ports p CROSS JOIN LATERAL unnest(p.security_group_ids) AS m(group_id)
    JOIN ip_allocations a ON a.port_id = p.id
    WHERE p.security_group_ids && remote.ids AND m.group_id = ANY(remote.ids)
    UNION
    SELECT m.group_id, pair->>'ip_address'
    FROM remote, ports p CROSS JOIN LATERAL unnest(p.security_group_ids) AS m(group_id)
    CROSS JOIN LATERAL jsonb_array_elements(p.allowed_address_pairs) AS pair
    WHERE p.security_group_ids && remote.ids AND m.group_id = ANY(remote.ids) AND p.port_security_enabled
)
SELECT json_build_object(
    'ports', (SELECT coalesce(json_agg(port ORDER BY port_id), '[]') FROM port),
    'rules', (SELECT coalesce(json_agg(rule ORDER BY security_group_id, id), '[]') FROM rule),
    'members', (SELECT coalesce(json_agg(member ORDER BY security_group_id, ip), '[]') FROM member)
)::text
"""

# The server that owns an address on a network, if it lives on one of the caller's hosts.
INSTANCE_SQL = """
SELECT s.id, s.display_name, s.hostname, s.project_id, s.availability_zone, s.launch_index,
       s.key_name, s.key_data, s.user_data, s.metadata, s.reservation_id, s.flavor, s.image_id,
       p.id AS port_id, p.mac_address::text AS mac
FROM ip_allocations a
JOIN ports p ON p.id = a.port_id
JOIN servers s ON s.id = p.device_id
WHERE a.network_id = $1 AND a.ip_address = $2::inet AND s.vm_state <> 'deleted'
  AND s.host = ANY($3::text[])
"""

# network_data.json: every port of the server with its addresses and their subnets.
INTERFACES_SQL = """
SELECT p.id AS port_id, p.network_id, p.mac_address::text AS mac, n.mtu,
       host(a.ip_address) AS ip, masklen(sn.cidr) AS prefixlen, host(sn.gateway_ip) AS gateway,
       sn.ip_version, sn.enable_dhcp, sn.dns_nameservers, sn.host_routes
FROM ports p
JOIN networks n ON n.id = p.network_id
LEFT JOIN ip_allocations a ON a.port_id = p.id
LEFT JOIN subnets sn ON sn.id = a.subnet_id
WHERE p.device_id = $1
  AND EXISTS (SELECT 1 FROM servers s WHERE s.id = $1 AND s.host = ANY($2::text[]))
ORDER BY p.created_at, p.id, a.ip_address
"""

# An image the caller's hosts need: one a server placed on them boots from, one a volume on
# them is made from, or one every project may read.
IMAGE_SQL = """
SELECT i.id, i.status, i.disk_format, i.size, i.checksum, i.os_hash_algo, i.os_hash_value
FROM images i
WHERE i.id = $1 AND (
    i.visibility IN ('public', 'community')
    OR EXISTS (SELECT 1 FROM servers s WHERE s.image_id = i.id AND s.host = ANY($2::text[])
               AND s.vm_state <> 'deleted')
    OR EXISTS (SELECT 1 FROM volumes v WHERE v.image_id = i.id AND v.backend = ANY($2::text[])))
"""


def plain(value: Any) -> Any:
    """A database value as JSON can carry it (jsonb stays the text PostgreSQL gave)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return str(value)


def rows(records: Iterable[asyncpg.Record]) -> list[dict[str, Any]]:
    return [{key: plain(value) for key, value in record.items()} for record in records]


async def placed(conn: db.Connection, host: str) -> dict[str, str]:
    return {row["id"]: row["vm_state"] for row in await conn.fetch(PLACED_SQL, host)}


async def desired_firewall(conn: db.Connection, hosts: list[str]) -> str:
    """The rows of a firewall pass as a JSON document (`ports`, `rules`, `members`), from one
    snapshot (one statement)."""
    return str(await conn.fetchval(FIREWALL_SQL, hosts))


async def desired_network(conn: db.Connection, hosts: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The rows of a converge pass (hostagent/network/desired.py builds from them), in one
    snapshot: the caller runs this in a repeatable-read transaction."""
    taps = await conn.fetch(TAPS_SQL, hosts)
    network_ids = sorted({row["network_id"] for row in taps})
    subnets = await conn.fetch(SUBNETS_SQL, network_ids) if network_ids else []
    addresses = await conn.fetch(ADDRESSES_SQL, network_ids) if network_ids else []
    remotes = await conn.fetch(REMOTES_SQL, network_ids, hosts) if network_ids else []
    return {
        "taps": rows(taps),
        "subnets": rows(subnets),
        "addresses": rows(addresses),
        "remotes": rows(remotes),
    }
