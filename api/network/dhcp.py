"""A network's DHCP port: the address the network's DHCP server answers from, on every subnet
that has DHCP enabled.

Neutron's DHCP agent creates this port when a network gets its first DHCP subnet; here the API
does it in the same transaction as the subnet, so the address is known (normally the subnet's
.2: the first free address of its pools) before anything boots. The port belongs to the
network's project, is ACTIVE from the start (the host agents serve it on every host of the
network), and counts in that project's port usage without ever being refused for quota, as in
Neutron. A later DHCP subnet adds an address to the same port; a subnet that stops serving
DHCP (disabled or deleted) takes its address back, and the port goes with the last one.

Callers hold the network row locked (subnet changes bump it first), so two subnet changes of
one network never race on its DHCP port.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from api.network import ipam, ports
from api.network.faults import addresses_exhausted
from api.network.networks import DHCP_OWNER
from protocol.states import PortStatus


def device_id(network_id: str) -> str:
    return f"dhcp-{network_id}"


async def _port(conn: Any, network_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM ports WHERE network_id = $1 AND device_owner = $2 ORDER BY created_at, id "
        "LIMIT 1 FOR UPDATE",
        network_id,
        DHCP_OWNER,
    )


async def _touch(conn: Any, port_id: str) -> None:
    await conn.execute(
        "UPDATE ports SET version = version + 1, revision_number = revision_number + 1, "
        "updated_at = now() WHERE id = $1",
        port_id,
    )


async def serve(conn: Any, network: asyncpg.Record, subnet_id: str) -> None:
    """The subnet serves DHCP: the network's DHCP port gets an address on it (the port is
    created with the network's first DHCP subnet). 409 when the subnet has no free address."""
    port = await _port(conn, network["id"])
    if port is None:
        port = await ports.insert_row(
            conn,
            network["id"],
            project_id=network["project_id"],
            name="",
            status=PortStatus.ACTIVE,
            device_id=device_id(network["id"]),
            device_owner=DHCP_OWNER,
            port_security_enabled=network["port_security_enabled"],
        )
    else:
        await _touch(conn, port["id"])
    if await ipam.allocate(conn, subnet_id, port["id"], mac=str(port["mac_address"])) is None:
        raise addresses_exhausted(network["id"])


async def unserve(conn: Any, network_id: str, subnet_id: str) -> None:
    """The subnet stops serving DHCP (disabled, or about to be deleted): its address leaves the
    DHCP port, and the port goes when no other subnet of the network serves DHCP."""
    port = await _port(conn, network_id)
    if port is None:
        return
    others = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM subnets WHERE network_id = $1 AND enable_dhcp AND id <> $2)",
        network_id,
        subnet_id,
    )
    if others:
        await ipam.release(conn, port["id"], subnet_id)
        await _touch(conn, port["id"])
    else:
        await conn.execute("DELETE FROM ports WHERE id = $1", port["id"])  # its addresses cascade
