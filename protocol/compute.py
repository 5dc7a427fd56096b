"""Messages of the compute capability: the server actor, the scheduler and the host agents.

Naming: `server.<verb>` is addressed to a server actor; requests from the API are imperative
(`server.stop`), reports from the scheduler or a host agent say what happened
(`server.scheduled`, `server.spawned`, `server.action_done`).
"""

from __future__ import annotations

import msgspec

from protocol.message import Message
from protocol.power import PowerAction
from protocol.states import PowerState
from protocol.volume import VolumeConnection

# --- to the server actor, from the API ---------------------------------------------------------


class BuildServer(Message, frozen=True):
    """The API inserted the server row (building/scheduling) and asks the actor to build it."""

    TYPE = "server.build"


class DeleteServer(Message, frozen=True):
    TYPE = "server.delete"


class SoftDeleteServer(Message, frozen=True):
    """Nova's deferred delete (reclaim_instance_interval > 0): power the server off and keep it
    SOFT_DELETED for `reclaim_after` seconds, then delete it for good unless it was restored."""

    TYPE = "server.soft_delete"
    reclaim_after: float


class RestoreServer(Message, frozen=True):
    """Bring a soft-deleted server back (powered on, ACTIVE)."""

    TYPE = "server.restore"


# The power actions' requests (server.stop, server.reboot, …) are in protocol/power.py.


# --- to the server actor, from the scheduler ---------------------------------------------------


class Scheduled(Message, frozen=True):
    TYPE = "server.scheduled"
    host: str
    node: str
    availability_zone: str


class NoValidHost(Message, frozen=True):
    TYPE = "server.no_valid_host"
    reason: str


# --- to the server actor, from a host agent ----------------------------------------------------


class Spawned(Message, frozen=True):
    TYPE = "server.spawned"
    host: str
    power_state: PowerState


class SpawnFailed(Message, frozen=True):
    TYPE = "server.spawn_failed"
    host: str
    reason: str


class ActionDone(Message, frozen=True):
    TYPE = "server.action_done"
    action: PowerAction
    power_state: PowerState


class ActionFailed(Message, frozen=True):
    TYPE = "server.action_failed"
    action: PowerAction
    reason: str
    power_state: PowerState | None = None


class Destroyed(Message, frozen=True):
    """The host removed the domain and the instance's files (or they never existed)."""

    TYPE = "server.destroyed"
    host: str | None = None


class PowerStateReport(Message, frozen=True):
    """The host's periodic power-state sync: what libvirt says now."""

    TYPE = "server.power_state"
    host: str
    power_state: PowerState


# --- from the server actor to the scheduler and to host agents -----------------------------------


class FlavorSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a server needs from a host (a copy of its flavor at create time)."""

    id: str
    name: str
    ram: int
    vcpus: int
    disk: int
    ephemeral: int = 0
    swap: int = 0
    extra_specs: dict[str, str] = {}


class SelectHost(Message, frozen=True):
    """To the scheduler: claim a host for this server, avoiding the ones that failed it."""

    TYPE = "scheduler.select"
    server_id: str
    project_id: str
    flavor: FlavorSpec
    availability_zone: str | None = None
    group_id: str | None = None
    excluded_hosts: list[str] = []


class ReleaseClaim(Message, frozen=True):
    """To the scheduler: the server no longer uses its host (deleted, or its spawn failed)."""

    TYPE = "scheduler.release"
    server_id: str
    host: str


class BlockDevice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A volume the domain gets at spawn: its root disk (boot_index 0, then there is no image)
    or a data disk."""

    device: str  # /dev/vdX
    connection: VolumeConnection
    boot_index: int | None = None


class Spawn(Message, frozen=True):
    TYPE = "agent.spawn"
    server_id: str
    name: str
    flavor: FlavorSpec
    image_id: str | None  # None: the root disk is the volume with boot_index 0
    ports: list[str] = []  # the server's ports, bound to this host: the host plugs their taps
    volumes: list[BlockDevice] = []


class PowerActionOnHost(Message, frozen=True):
    """Perform a power action (protocol/power.py) on the server's domain."""

    TYPE = "agent.power"
    server_id: str
    action: PowerAction


class Destroy(Message, frozen=True):
    TYPE = "agent.destroy"
    server_id: str


# --- questions to a host agent (reply_to set: the answer is a Reply, not a report) ---------------


class ConsoleOutputOnHost(Message, frozen=True):
    """The tail of the server's serial console log, at most `max_bytes` (Nova's
    get_console_output compute RPC): the API asks the server's host, which alone has the file."""

    TYPE = "agent.console_output"
    server_id: str
    max_bytes: int


class ConsoleLog(Message, frozen=True):
    """The answer: the log's last bytes, or None when the host has no console for the server."""

    TYPE = "agent.console_log"
    output: bytes | None
