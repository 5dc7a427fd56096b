"""The host's row in `compute_hosts`: its inventory, written at start, and its heartbeat.

Ownership of the row is split by column. The agent writes what it knows about its host: the
inventory (vCPUs, RAM, disk), the hypervisor, its address and the allocation ratios and
reserved memory it is configured with. The scheduler owns the usage (`used_*`, `generation`),
and the operator owns `enabled` / `disabled_reason`: the agent never writes those, so a restart
neither forgets claims nor re-enables a host the operator disabled. The scheduler takes a host
whose heartbeat is older than ACTORSTACK_HOST_DOWN_AFTER (30 s) for down.

The agent also keeps its row of `host_domains`, what it saw at its last power-state sync, and
reads which servers the database places on it: the power-state sync reports a placed server
whose domain is gone, and `actorstack doctor` compares the two sides.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import asyncpg

from hostagent.virt.base import HostInfo

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Inventory:
    name: str
    availability_zone: str
    virt_type: str
    hypervisor_hostname: str
    host_ip: str
    vcpus: int
    memory_mb: int
    local_gb: int
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    disk_allocation_ratio: float
    reserved_memory_mb: int


def local_gb(path: Path) -> int:
    """The size of the file system that holds the instances, in GiB (Nova's local_gb). Blocking."""
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize // GIB


def inventory(
    name: str,
    info: HostInfo,
    disk_gb: int,
    *,
    availability_zone: str,
    host_ip: str,
    cpu_allocation_ratio: float,
    ram_allocation_ratio: float,
    disk_allocation_ratio: float,
    reserved_memory_mb: int,
) -> Inventory:
    return Inventory(
        name=name,
        availability_zone=availability_zone,
        virt_type=info.virt_type,
        hypervisor_hostname=info.hypervisor_hostname,
        host_ip=host_ip,
        vcpus=info.vcpus,
        memory_mb=info.memory_mb,
        local_gb=disk_gb,
        cpu_allocation_ratio=cpu_allocation_ratio,
        ram_allocation_ratio=ram_allocation_ratio,
        disk_allocation_ratio=disk_allocation_ratio,
        reserved_memory_mb=reserved_memory_mb,
    )


_UPSERT = """
INSERT INTO compute_hosts (name, availability_zone, virt_type, hypervisor_hostname, host_ip, vcpus, memory_mb,
                           local_gb, cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio,
                           reserved_memory_mb, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now(), now())
ON CONFLICT (name) DO UPDATE SET
    availability_zone = EXCLUDED.availability_zone, virt_type = EXCLUDED.virt_type,
    hypervisor_hostname = EXCLUDED.hypervisor_hostname, host_ip = EXCLUDED.host_ip,
    vcpus = EXCLUDED.vcpus, memory_mb = EXCLUDED.memory_mb, local_gb = EXCLUDED.local_gb,
    cpu_allocation_ratio = EXCLUDED.cpu_allocation_ratio,
    ram_allocation_ratio = EXCLUDED.ram_allocation_ratio,
    disk_allocation_ratio = EXCLUDED.disk_allocation_ratio, reserved_memory_mb = EXCLUDED.reserved_memory_mb,
    started_at = now(), heartbeat_at = now()
"""


async def register(pool: asyncpg.Pool, inv: Inventory) -> None:
    await pool.execute(
        _UPSERT,
        inv.name,
        inv.availability_zone,
        inv.virt_type,
        inv.hypervisor_hostname,
        inv.host_ip,
        inv.vcpus,
        inv.memory_mb,
        inv.local_gb,
        inv.cpu_allocation_ratio,
        inv.ram_allocation_ratio,
        inv.disk_allocation_ratio,
        inv.reserved_memory_mb,
    )


async def heartbeat(pool: asyncpg.Pool, name: str) -> bool:
    """Mark the host alive now; False when its row is gone (deleted by an operator)."""
    status = await pool.execute("UPDATE compute_hosts SET heartbeat_at = now() WHERE name = $1", name)
    return status != "UPDATE 0"


_RECORD_DOMAINS = """
INSERT INTO host_domains (host, domains, reported_at) VALUES ($1, $2, now())
ON CONFLICT (host) DO UPDATE SET domains = EXCLUDED.domains, reported_at = now()
"""


async def record_domains(pool: asyncpg.Pool, name: str, domains: dict[str, int | None]) -> None:
    """Write what the host keeps now ({server id: power state, None: files without a domain}),
    the inventory `actorstack doctor` compares with the servers the database places here."""
    await pool.execute(_RECORD_DOMAINS, name, domains)


async def placed_servers(pool: asyncpg.Pool, name: str) -> set[str]:
    """The servers the database places on this host (every one not deleted)."""
    rows = await pool.fetch("SELECT id FROM servers WHERE host = $1 AND vm_state <> 'deleted'", name)
    return {row["id"] for row in rows}


async def owners(pool: asyncpg.Pool, server_ids: list[str]) -> dict[str, tuple[str, str | None]]:
    """{server id: (vm_state, host)} of those servers the database still has."""
    rows = await pool.fetch("SELECT id, vm_state, host FROM servers WHERE id = ANY($1::text[])", server_ids)
    return {row["id"]: (row["vm_state"], row["host"]) for row in rows}
