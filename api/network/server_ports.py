"""What the network service offers the compute API: ports as servers use them.

This is one of the API's published cross-service modules (see `.importlinter`): the compute
service reaches networks and ports through it and nothing else of api/network. It holds what
Nova asks of Neutron when a server boots and when it is shown, done here in the compute request's
own transaction: the networks a project may boot on without naming one, a network the caller may
see, a new port for a server (with Neutron's checks, quota and IP allocation), an existing port
claimed for a server, and the fixed IPs of servers' ports. The words of the answers (Nova's)
stay with the compute API.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from api.auth import AuthContext
from api.network import ports, security_groups


async def usable_networks(conn: Any, project_id: str | None) -> list[asyncpg.Record]:
    """The ids of the networks the project may boot on without naming one: its own and the shared
    ones, not external, oldest first."""
    return await conn.fetch(
        "SELECT id FROM networks WHERE (project_id = $1 OR shared) AND NOT external ORDER BY created_at, id",
        project_id,
    )


async def visible_network(conn: Any, me: AuthContext, network_id: str) -> asyncpg.Record:
    """The network if the caller may see it; api.errors.NotFound (NetworkNotFound) otherwise."""
    return await ports.visible_network(conn, me, network_id)


async def create_port(
    conn: Any,
    me: AuthContext,
    network: asyncpg.Record,
    *,
    project_id: str,
    device_id: str,
    device_owner: str,
    fixed_ips: list[dict[str, Any]] | None,
    security_groups: list[str] | None,
    shards: int,
) -> asyncpg.Record:
    """A new port on `network` (from `visible_network`) for the server `device_id`, as Neutron
    creates one (api/network/ports.py's create_port: its policy, quota and IP allocation, its
    security groups (None: the project's default group) and its errors). On a network without
    port security a port gets no groups; asking for some there is SecurityGroupCannotBeApplied."""
    if security_groups and not network["port_security_enabled"]:
        raise GroupsNeedPortSecurity(network["id"])
    return await ports.create_port(
        conn,
        me,
        network,
        project_id=project_id,
        device_id=device_id,
        device_owner=device_owner,
        fixed_ips=fixed_ips,
        security_groups=security_groups,
        shards=shards,
    )


class GroupsNeedPortSecurity(Exception):
    """Security groups asked for a port on a network without port security."""

    def __init__(self, network_id: str) -> None:
        super().__init__(network_id)
        self.network_id = network_id


class GroupNotFound(Exception):
    """No group of the project has this name or id."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


# --- security groups as servers use them (Nova's names) ---------------------------------------------


async def group_ids(conn: Any, project_id: str, names: list[str]) -> list[str]:
    """The ids of the project's groups of these names (or ids); GroupNotFound for the first
    name none has, api.errors.Conflict (NoUniqueMatch) for one two groups share."""
    found = await security_groups.by_names(conn, project_id, names)
    for name in names:
        if name not in found:
            raise GroupNotFound(name)
    return list(dict.fromkeys(found[name] for name in names))


async def server_groups(conn: Any, server_ids: list[str]) -> dict[str, list[str]]:
    """The names of the security groups of each server's ports (each name once, by name)."""
    if not server_ids:
        return {}
    rows = await conn.fetch(
        "SELECT DISTINCT p.device_id, g.name FROM ports p "
        "JOIN security_groups g ON g.id = ANY(p.security_group_ids) "
        "WHERE p.device_id = ANY($1::text[]) AND p.device_owner LIKE 'compute:%' "
        "ORDER BY p.device_id, g.name",
        server_ids,
    )
    result: dict[str, list[str]] = {sid: [] for sid in server_ids}
    for row in rows:
        result[row["device_id"]].append(row["name"])
    return result


async def server_group_rows(conn: Any, server_id: str) -> list[asyncpg.Record]:
    """The security groups of a server's ports (Nova's os-security-groups of a server), whole rows."""
    return await conn.fetch(
        "SELECT DISTINCT g.* FROM ports p JOIN security_groups g ON g.id = ANY(p.security_group_ids) "
        "WHERE p.device_id = $1 AND p.device_owner LIKE 'compute:%' ORDER BY g.name, g.id",
        server_id,
    )


async def change_server_group(
    conn: Any, server_id: str, group_id: str, *, add: bool, shards: int
) -> tuple[int, int]:
    """Add the group to (or remove it from) every port of the server, as Nova's add_to_instance
    and remove_from_instance do, in the caller's transaction; (ports, ports changed). A port
    without port security cannot take a group (GroupsNeedPortSecurity)."""
    rows = await conn.fetch(
        "SELECT * FROM ports WHERE device_id = $1 AND device_owner LIKE 'compute:%' ORDER BY created_at, id "
        "FOR UPDATE",
        server_id,
    )
    changed = 0
    for row in rows:
        groups = list(row["security_group_ids"])
        if add and group_id not in groups:
            if not row["port_security_enabled"]:
                raise GroupsNeedPortSecurity(row["network_id"])
            groups.append(group_id)
        elif not add and group_id in groups:
            groups.remove(group_id)
        else:
            continue
        await ports.set_security_groups(conn, row, groups, shards)
        changed += 1
    return len(rows), changed


async def visible_port(conn: Any, me: AuthContext, port_id: str) -> asyncpg.Record | None:
    """The port if it is the caller's project's (any port for an admin), else None."""
    row = await conn.fetchrow("SELECT * FROM ports WHERE id = $1", port_id)
    if row is None or (not me.is_admin and row["project_id"] != me.project_id):
        return None
    return row


async def claim_port(conn: Any, port_id: str, device_id: str, device_owner: str) -> asyncpg.Record | None:
    """Bind a free port to the server `device_id`; None (nothing changed) when the port has a
    device already or is one of a network's own (DHCP, router)."""
    return await conn.fetchrow(
        "UPDATE ports SET device_id = $2, device_owner = $3, version = version + 1, "
        "revision_number = revision_number + 1, updated_at = now() "
        "WHERE id = $1 AND device_id = '' AND device_owner NOT LIKE 'network:%' RETURNING *",
        port_id,
        device_id,
        device_owner,
    )


async def fixed_ips(conn: Any, server_ids: list[str]) -> list[asyncpg.Record]:
    """The fixed IPs of the servers' ports (device_id, network name, ip, version, mac), port by
    port in the order the ports were created, IPv4 first."""
    return await conn.fetch(
        "SELECT p.device_id, n.name AS network, host(a.ip_address) AS ip, family(a.ip_address) AS version, "
        "p.mac_address::text AS mac FROM ports p JOIN networks n ON n.id = p.network_id "
        "JOIN ip_allocations a ON a.port_id = p.id "
        "WHERE p.device_id = ANY($1::text[]) AND p.device_owner LIKE 'compute:%' "
        "ORDER BY p.device_id, p.created_at, p.id, family(a.ip_address), a.ip_address",
        server_ids,
    )
