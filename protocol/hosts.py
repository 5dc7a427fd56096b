"""What agents report about themselves: to the `host` service, which owns the rows.

An agent (a compute host's, a storage backend's) holds no database credentials: its
registration, heartbeat, domain inventory and the requests it could not read all travel to
the `host` service kind (actors/hosts.py) as messages addressed to `Target("host", <agent name>)`,
so one agent's reports are handled in order, and the service writes `compute_hosts`,
`volume_backends`, `host_domains` and `dead_letters` in its turns.

A heartbeat carries the whole inventory: the row is written again if an operator deleted it,
with no question and answer between agent and service.
"""

from __future__ import annotations

from protocol.message import Message


class ComputeHostReport(Message, frozen=True):
    """A compute host's inventory (Nova's compute node): at start (`started`) and as heartbeat."""

    TYPE = "host.compute_report"
    started: bool
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
    tunnel_ip: str | None = None  # where its VXLAN tunnels start; None: no underlay


class DomainsReport(Message, frozen=True):
    """What a compute host keeps: {server id: power state, None for files without a domain}."""

    TYPE = "host.domains"
    domains: dict[str, int | None]


class BackendReport(Message, frozen=True):
    """A volume backend's registration (`started`) and heartbeat."""

    TYPE = "host.backend_report"
    started: bool
    driver: str
    availability_zone: str
    total_gb: int


class AgentDeadLetter(Message, frozen=True):
    """A request the agent could not decode or does not handle, for the dead letters."""

    TYPE = "host.dead_letter"
    queue: str
    reason: str
    message_id: str
    raw: bytes
