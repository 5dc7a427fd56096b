"""The host's inventory, as the agent reports it at start and with every heartbeat.

The agent knows its host: the inventory (vCPUs, RAM, disk), the hypervisor, its address and the
allocation ratios and reserved memory it is configured with. It sends them to the `host` service
(actors/hosts.py), which writes those columns of the host's `compute_hosts` row and nothing else:
the scheduler owns the usage, the operator `enabled`. The scheduler takes a host whose heartbeat
is older than ACTORSTACK_HOST_DOWN_AFTER (30 s) for down.
"""

from __future__ import annotations

import os
from pathlib import Path

from hostagent.virt.base import HostInfo
from protocol.hosts import ComputeHostReport

GIB = 1024**3


def local_gb(path: Path) -> int:
    """The size of the file system that holds the instances, in GiB (Nova's local_gb). Blocking."""
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize // GIB


def inventory(
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
) -> ComputeHostReport:
    """The host's inventory as the `host` service takes it: the report of a start (a heartbeat is
    the same report with `started` false)."""
    return ComputeHostReport(
        started=True,
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
