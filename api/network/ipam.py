"""IPAM: the fixed IPs of ports, allocated from their network's subnets.

The guarantee is the database's: `ip_allocations` has PRIMARY KEY (subnet_id, ip_address), so one
address of a subnet belongs to at most one port whatever the concurrency, and every insert is
made in a savepoint so that a lost race is a clean error (or another try), never a broken
transaction. Allocations on one subnet are serialised by a transaction-scoped advisory lock on
the subnet, so concurrent requests do not fight over the same lowest address; a subnet update
or delete takes the same lock, so it never changes the pools under an allocation in flight.

Picking an address costs O(addresses allocated), not O(subnet size): the lowest free address in
the allocation pools is among the pools' first addresses and the addresses just after the
allocated ones (and the gateway), so only those candidates are considered — an IPv6 /64 costs no
more than an IPv4 /29.

What a port gets when it asks for nothing, as Neutron does: one address from the first IPv4
subnet that has room, one from the first stateful IPv6 subnet that has room, and its EUI-64
address (from its MAC) on every SLAAC / DHCPv6-stateless subnet.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from typing import Any

import asyncpg

from api.errors import NotFound
from api.network.attributes import IPAddress, IPNetwork
from api.network.faults import (
    address_taken,
    addresses_exhausted,
    invalid_input,
    invalid_ip_for_network,
    invalid_ip_for_subnet,
    subnet_not_found,
)

AUTO_ADDRESS_MODES = ("slaac", "dhcpv6-stateless")
_LOCK_SPACE = 0x6970616D  # "ipam": the first key of the two-key advisory lock of a subnet

_LOWEST_FREE = """
WITH pools (first, last) AS (SELECT * FROM unnest($2::inet[], $3::inet[])),
used (ip) AS (
    SELECT ip_address FROM ip_allocations WHERE subnet_id = $1
    UNION ALL SELECT $4::inet WHERE $4::inet IS NOT NULL
)
SELECT host(c.ip) FROM (
    SELECT first AS ip FROM pools
    UNION
    SELECT u.ip + 1 FROM used u JOIN pools p ON u.ip >= p.first AND u.ip < p.last
) AS c
WHERE c.ip IS DISTINCT FROM $4::inet
  AND NOT EXISTS (SELECT 1 FROM ip_allocations a WHERE a.subnet_id = $1 AND a.ip_address = c.ip)
ORDER BY c.ip
LIMIT 1
"""


@dataclasses.dataclass(frozen=True)
class Subnet:
    """A subnet as IPAM sees it."""

    id: str
    network_id: str
    ip_version: int
    cidr: IPNetwork
    gateway_ip: IPAddress | None
    pools: tuple[tuple[IPAddress, IPAddress], ...]
    ipv6_address_mode: str | None
    enable_dhcp: bool

    @classmethod
    def of(cls, row: asyncpg.Record) -> Subnet:
        return cls(
            id=row["id"],
            network_id=row["network_id"],
            ip_version=row["ip_version"],
            cidr=row["cidr"],
            gateway_ip=row["gateway_ip"],
            ipv6_address_mode=row["ipv6_address_mode"] or row["ipv6_ra_mode"],
            enable_dhcp=row["enable_dhcp"],
            pools=tuple(
                (ipaddress.ip_address(p["start"]), ipaddress.ip_address(p["end"]))
                for p in row["allocation_pools"]
            ),
        )

    @property
    def auto_address(self) -> bool:
        """Addresses come from the port's MAC (EUI-64), not from the pools."""
        return self.ip_version == 6 and self.ipv6_address_mode in AUTO_ADDRESS_MODES

    def usable(self, ip: IPAddress) -> bool:
        """Neutron's check_subnet_ip: inside the CIDR, not its network address, nor (IPv4) its
        broadcast address."""
        if ip.version != self.ip_version or ip not in self.cidr or ip == self.cidr.network_address:
            return False
        return self.ip_version == 6 or self.cidr.prefixlen >= 31 or ip != self.cidr.broadcast_address


def eui64(prefix: IPNetwork, mac: str) -> ipaddress.IPv6Address:
    """The SLAAC address of a MAC on a /64: the MAC with its universal/local bit flipped and
    ff:fe in the middle."""
    octets = bytes.fromhex(mac.replace(":", ""))
    interface_id = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:6]
    return ipaddress.IPv6Address(int(prefix.network_address) | int.from_bytes(interface_id, "big"))


async def lock(conn: Any, subnet_id: str) -> None:
    """Serialise allocations (and pool changes) of one subnet until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_SPACE, subnet_id)


async def network_subnets(conn: Any, network_id: str) -> list[Subnet]:
    rows = await conn.fetch("SELECT * FROM subnets WHERE network_id = $1 ORDER BY created_at, id", network_id)
    return [Subnet.of(r) for r in rows]


async def _locked(conn: Any, subnet_id: str) -> Subnet | None:
    """The subnet as it is now, under its IPAM lock and a key-share lock on its row (so it
    cannot be deleted before this transaction ends); None if it was deleted meanwhile."""
    await lock(conn, subnet_id)
    row = await conn.fetchrow("SELECT * FROM subnets WHERE id = $1 FOR KEY SHARE", subnet_id)
    return Subnet.of(row) if row is not None else None


async def _insert(conn: Any, subnet: Subnet, port_id: str, ip: IPAddress) -> bool:
    """Record the allocation; False when the address is already someone's (the constraint says so)."""
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO ip_allocations (subnet_id, ip_address, port_id, network_id) "
                "VALUES ($1, $2, $3, $4)",
                subnet.id,
                ip,
                port_id,
                subnet.network_id,
            )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def allocate(
    conn: Any, subnet_id: str, port_id: str, *, mac: str, ip: IPAddress | None = None
) -> IPAddress | None:
    """Give the port an address on the subnet: `ip` if given (409 if taken), its EUI-64 address
    on a SLAAC subnet, otherwise the lowest free address of the pools; None when none is free."""
    subnet = await _locked(conn, subnet_id)
    if subnet is None:
        raise subnet_not_found(subnet_id)
    if ip is None and subnet.auto_address:
        ip = eui64(subnet.cidr, mac)
    if ip is not None:
        if not subnet.usable(ip):
            raise invalid_ip_for_subnet(str(ip))
        if not await _insert(conn, subnet, port_id, ip):
            raise address_taken(str(ip), subnet.id)
        return ip
    for _ in range(3):  # under the lock a pick cannot be taken; the retry covers writers that skip it
        picked = await conn.fetchval(
            _LOWEST_FREE,
            subnet.id,
            [str(a) for a, _ in subnet.pools],
            [str(b) for _, b in subnet.pools],
            subnet.gateway_ip,
        )
        if picked is None:
            return None
        if await _insert(conn, subnet, port_id, ipaddress.ip_address(picked)):
            return ipaddress.ip_address(picked)
    return None


# --- a port's fixed IPs --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Wanted:
    """One entry of a port's `fixed_ips`, resolved: the subnet, and the address if one was named."""

    subnet: Subnet
    ip: IPAddress | None


def resolve(network_id: str, subnets: list[Subnet], requested: Iterable[dict[str, Any]]) -> list[Wanted]:
    """`fixed_ips` entries ({subnet_id}, {ip_address} or both, already type-checked) against the
    network's subnets, refused as Neutron refuses them."""
    by_id = {s.id: s for s in subnets}
    wanted = []
    for entry in requested:
        subnet_id, ip = entry.get("subnet_id"), entry.get("ip_address")
        if subnet_id is not None:
            subnet = by_id.get(subnet_id)
            if subnet is None:
                raise invalid_input(
                    f"Failed to create port on network {network_id}, because fixed_ips included "
                    f"invalid subnet {subnet_id}"
                )
            if ip is not None and not subnet.usable(ip):
                raise invalid_ip_for_subnet(str(ip))
        else:
            subnet = next((s for s in subnets if s.usable(ip)), None)
            if subnet is None:
                raise invalid_ip_for_network(str(ip))
        if ip is not None and subnet.auto_address:
            raise invalid_input(
                f"IPv6 address {ip} cannot be directly assigned to a port on subnet {subnet.id} "
                f"as the subnet is configured for automatic addresses"
            )
        wanted.append(Wanted(subnet, ip))
    return wanted


async def _allocate_any(conn: Any, network_id: str, port_id: str, mac: str, subnets: list[Subnet]) -> None:
    """One address from the first of these subnets that has room (a subnet deleted meanwhile
    has none)."""
    for subnet in subnets:
        try:
            if await allocate(conn, subnet.id, port_id, mac=mac) is not None:
                return
        except NotFound as exc:
            if exc.kind != "SubnetNotFound":
                raise
    raise addresses_exhausted(network_id)


async def allocate_for_port(
    conn: Any, network_id: str, port_id: str, mac: str, requested: list[dict[str, Any]] | None
) -> None:
    """A new port's fixed IPs: the requested ones, or Neutron's default (see the module)."""
    subnets = await network_subnets(conn, network_id)
    auto = [s for s in subnets if s.auto_address]
    if requested is None:
        for group in (
            [s for s in subnets if s.ip_version == 4],
            [s for s in subnets if s.ip_version == 6 and not s.auto_address],
        ):
            if group:
                await _allocate_any(conn, network_id, port_id, mac, group)
    else:
        wanted = resolve(network_id, subnets, requested)
        for item in wanted:
            if await allocate(conn, item.subnet.id, port_id, mac=mac, ip=item.ip) is None:
                raise addresses_exhausted(network_id)
        auto = [s for s in auto if s.id not in {w.subnet.id for w in wanted}]
    for subnet in auto:
        await allocate(conn, subnet.id, port_id, mac=mac)


async def replace_for_port(
    conn: Any, network_id: str, port_id: str, mac: str, requested: list[dict[str, Any]]
) -> None:
    """A port update's `fixed_ips` as Neutron applies it: named addresses the port has are kept,
    the port's other addresses released (except automatic ones whose subnet is not named),
    and the rest allocated (an entry with only a subnet is always a new address)."""
    subnets = await network_subnets(conn, network_id)
    wanted = resolve(network_id, subnets, requested)
    current = await conn.fetch("SELECT subnet_id, ip_address FROM ip_allocations WHERE port_id = $1", port_id)
    named = {(w.subnet.id, w.ip) for w in wanted if w.ip is not None}
    named_subnets = {w.subnet.id for w in wanted}
    auto_ids = {s.id for s in subnets if s.auto_address}
    for row in current:
        key = (row["subnet_id"], row["ip_address"])
        if key in named or (row["subnet_id"] in auto_ids and row["subnet_id"] not in named_subnets):
            continue
        await lock(conn, row["subnet_id"])
        await conn.execute(
            "DELETE FROM ip_allocations WHERE subnet_id = $1 AND ip_address = $2 AND port_id = $3",
            row["subnet_id"],
            row["ip_address"],
            port_id,
        )
    held = {(r["subnet_id"], r["ip_address"]) for r in current}
    for item in wanted:
        if item.ip is not None and (item.subnet.id, item.ip) in held:
            continue
        if await allocate(conn, item.subnet.id, port_id, mac=mac, ip=item.ip) is None:
            raise addresses_exhausted(network_id)


async def release(conn: Any, port_id: str, subnet_id: str) -> None:
    """Take the port's addresses on one subnet back."""
    await lock(conn, subnet_id)
    await conn.execute("DELETE FROM ip_allocations WHERE port_id = $1 AND subnet_id = $2", port_id, subnet_id)


async def addresses(conn: Any, port_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """Each port's fixed IPs as Neutron shows them, IPv4 first, then by address."""
    rows = await conn.fetch(
        "SELECT port_id, subnet_id, host(ip_address) AS ip FROM ip_allocations "
        "WHERE port_id = ANY($1::text[]) ORDER BY port_id, family(ip_address), ip_address",
        port_ids,
    )
    result: dict[str, list[dict[str, str]]] = {pid: [] for pid in port_ids}
    for row in rows:
        result[row["port_id"]].append({"subnet_id": row["subnet_id"], "ip_address": row["ip"]})
    return result
