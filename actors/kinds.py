"""The built-in actor kinds: each pure transition table bound to the PostgreSQL table that holds
its actors' rows and to the builders of its notifications.

The tables (actors/server.py, volume.py, port.py, network.py) import no I/O, which
`.importlinter` holds them to; the binding to storage is here, and the runtime uses these.
"""

from __future__ import annotations

from actors import firewall, hosts, network, notifications, port, scheduler, server, volume
from actors.kind import ActorKind
from actors.service import ServiceKind

SERVER = ActorKind(
    server.table,
    "servers",
    project_field="project_id",
    notifier=notifications.server,
    fault_notice=server.fault_notice,
)
VOLUME = ActorKind(volume.table, "volumes", project_field="project_id", notifier=notifications.volume)
PORT = ActorKind(port.table, "ports", project_field="project_id", notifier=notifications.port)
NETWORK = ActorKind(network.table, "networks", project_field="project_id")
SCHEDULER: ServiceKind = scheduler.KIND
HOSTS: ServiceKind = hosts.KIND
SECURITY_GROUPS: ServiceKind = firewall.KIND

BUILTIN: tuple[ActorKind | ServiceKind, ...] = (
    SERVER,
    SCHEDULER,
    HOSTS,
    SECURITY_GROUPS,
    NETWORK,
    PORT,
    VOLUME,
)
