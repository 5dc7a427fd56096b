"""The host's inventory, as the agent reports it at start and with every heartbeat.

The agent knows its host: the inventory (vCPUs, RAM, disk), the hypervisor, its address and the
allocation ratios and reserved memory it is configured with. It sends them to the `host` service
(actors/hosts.py), which writes those columns of the host's `compute_hosts` row and nothing else:
the scheduler owns the usage, the operator `enabled`. The scheduler takes a host whose heartbeat
is older than ACTORSTACK_HOST_DOWN_AFTER (30 s) for down.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from hostagent.virt.base import HostInfo
from protocol.hosts import ComputeHostReport

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
    tunnel_ip: str | None = None


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
    tunnel_ip: str | None = None,
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
        tunnel_ip=tunnel_ip,
    )


def report(inv: Inventory, *, started: bool) -> ComputeHostReport:
    """The inventory as the `host` service takes it: at start, and as every heartbeat."""
    return ComputeHostReport(
        started=started,
        availability_zone=inv.availability_zone,
        virt_type=inv.virt_type,
        hypervisor_hostname=inv.hypervisor_hostname,
        host_ip=inv.host_ip,
        vcpus=inv.vcpus,
        memory_mb=inv.memory_mb,
        local_gb=inv.local_gb,
        cpu_allocation_ratio=inv.cpu_allocation_ratio,
        ram_allocation_ratio=inv.ram_allocation_ratio,
        disk_allocation_ratio=inv.disk_allocation_ratio,
        reserved_memory_mb=inv.reserved_memory_mb,
        tunnel_ip=inv.tunnel_ip,
    )
