"""The server actor: Nova's instance lifecycle as a transition table.

A server's state is Nova's pair (vm_state, task_state); the table's state name is
"vm_state" or "vm_state:task_state". power_state is what the hypervisor last reported, and the
API status is derived from vm_state and task_state exactly as Nova derives it (`status_of`).

The flow of a boot: the API inserts the row in building:scheduling (with its ports, created or
claimed in the same transaction) and sends `server.build`; the actor asks the scheduler for a
host (`scheduler.select`); on `server.scheduled` it binds its ports to that host
(building:networking) and, once every port confirmed, asks the host's agent to spawn
(building:spawning); `server.spawned` makes it active and its ports ACTIVE. A failed spawn
releases the claim and retries on another host until `max_attempts`, then ERROR with Nova's
"No valid host was found" fault. Every transitional state sets a timer that ends it in ERROR.
Deleting works from every state and ends in `deleted` once the host confirms the domain and
files are gone; then the ports the server created are deleted and the ones the user gave it are
released.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec

from actors import notices
from actors.kind import ActorKind
from actors.table import (
    CancelTimer,
    Context,
    Fault,
    Notify,
    Outcome,
    Refused,
    Send,
    SetTimer,
    TransitionTable,
)
from protocol import Message, Target
from protocol import compute as m
from protocol import network as n
from protocol import volume as v
from protocol.notifications import ERROR

# --- Nova's vocabulary ---------------------------------------------------------------------------

# power_state values, as Nova stores them
NOSTATE, RUNNING, PAUSED, SHUTDOWN, CRASHED, SUSPENDED = 0, 1, 3, 4, 6, 7
POWER_STATE_NAMES = {
    NOSTATE: "NOSTATE",
    RUNNING: "Running",
    PAUSED: "Paused",
    SHUTDOWN: "Shutdown",
    CRASHED: "Crashed",
    SUSPENDED: "Suspended",
}

# Nova's map from (vm_state, task_state) to the API status (nova/api/openstack/common.py).
_STATUS: dict[str, dict[str | None, str]] = {
    "active": {
        None: "ACTIVE",
        "rebooting": "REBOOT",
        "reboot_pending": "REBOOT",
        "reboot_started": "REBOOT",
        "rebooting_hard": "HARD_REBOOT",
        "reboot_pending_hard": "HARD_REBOOT",
        "reboot_started_hard": "HARD_REBOOT",
        "updating_password": "PASSWORD",
        "rebuilding": "REBUILD",
        "rebuild_block_device_mapping": "REBUILD",
        "rebuild_spawning": "REBUILD",
        "migrating": "MIGRATING",
        "resize_prep": "RESIZE",
        "resize_migrating": "RESIZE",
        "resize_migrated": "RESIZE",
        "resize_finish": "RESIZE",
    },
    "building": {None: "BUILD"},
    "stopped": {
        None: "SHUTOFF",
        "resize_prep": "RESIZE",
        "resize_migrating": "RESIZE",
        "resize_migrated": "RESIZE",
        "resize_finish": "RESIZE",
        "rebuilding": "REBUILD",
        "rebuild_block_device_mapping": "REBUILD",
        "rebuild_spawning": "REBUILD",
    },
    "resized": {None: "VERIFY_RESIZE", "resize_reverting": "REVERT_RESIZE"},
    "paused": {None: "PAUSED", "migrating": "MIGRATING"},
    "suspended": {None: "SUSPENDED"},
    "rescued": {None: "RESCUE"},
    "error": {
        None: "ERROR",
        "rebuilding": "REBUILD",
        "rebuild_block_device_mapping": "REBUILD",
        "rebuild_spawning": "REBUILD",
    },
    "deleted": {None: "DELETED"},
    "soft-delete": {None: "SOFT_DELETED"},
    "shelved": {None: "SHELVED"},
    "shelved_offloaded": {None: "SHELVED_OFFLOADED"},
}


def status_of(vm_state: str, task_state: str | None) -> str:
    """The API status, as Nova's status_from_state computes it."""
    tasks = _STATUS.get(vm_state)
    if tasks is None:
        return "UNKNOWN"
    return tasks.get(task_state, tasks[None])


# How long each transitional task may last before the server goes to ERROR (seconds).
TASK_TIMEOUTS = {
    "scheduling": 120.0,
    "networking": 120.0,
    "block_device_mapping": 900.0,
    "spawning": 900.0,
    "powering-off": 180.0,
    "powering-on": 180.0,
    "rebooting": 300.0,
    "rebooting_hard": 300.0,
    "pausing": 120.0,
    "unpausing": 120.0,
    "suspending": 180.0,
    "resuming": 180.0,
    "deleting": 600.0,
}

# --- the record ---------------------------------------------------------------------------------


class ServerRecord(msgspec.Struct, kw_only=True):
    """The columns of `servers` that the actor owns or reads (the API owns name, metadata…)."""

    id: str
    version: int = 0
    project_id: str
    user_id: str
    display_name: str = ""
    vm_state: str = "building"
    task_state: str | None = "scheduling"
    power_state: int = NOSTATE
    flavor: dict[str, Any] = {}
    image_id: str | None = None
    host: str | None = None
    node: str | None = None
    availability_zone: str | None = None
    requested_availability_zone: str | None = None
    group_id: str | None = None
    attempted_hosts: list[str] = []
    nics: list[dict[str, Any]] = []  # [{"port_id", "network_id", "mac_address", "delete_on_termination"}]
    bound_ports: list[str] = []  # the ports that confirmed their binding to `host`
    # Nova's block device mappings of volumes: [{"attachment_id", "volume_id", "device",
    # "boot_index", "delete_on_termination", "connection", "status"}], status waiting (its volume
    # is being created for this boot), ready (to attach at spawn), attaching, attached, detaching
    block_devices: list[dict[str, Any]] = []
    max_attempts: int = 3
    fault: dict[str, Any] | None = None
    launched_at: float | None = None
    terminated_at: float | None = None
    updated_at: float | None = None


def state_name(record: ServerRecord) -> str:
    return record.vm_state if record.task_state is None else f"{record.vm_state}:{record.task_state}"


STABLE = ("active", "stopped", "paused", "suspended", "error")
STATES = {
    "building:scheduling",
    "building:networking",
    "building:block_device_mapping",
    "building:spawning",
    "building:deleting",
    "active",
    "active:powering-off",
    "active:rebooting",
    "active:rebooting_hard",
    "active:pausing",
    "active:suspending",
    "active:deleting",
    "stopped",
    "stopped:powering-on",
    "stopped:rebooting_hard",
    "stopped:deleting",
    "paused",
    "paused:unpausing",
    "paused:rebooting_hard",
    "paused:deleting",
    "suspended",
    "suspended:resuming",
    "suspended:rebooting_hard",
    "suspended:deleting",
    "error",
    "error:powering-off",
    "error:rebooting_hard",
    "error:deleting",
    "deleted",
}


def _on_fault(record: ServerRecord, fault: Fault) -> ServerRecord:
    return _with(
        record, vm_state="error", task_state=None, fault=_fault(500, f"{fault.reason}", fault.details)
    )


table = TransitionTable(
    "server", ServerRecord, states=STATES, error_state="error", state_of=state_name, on_fault=_on_fault
)


# --- helpers ------------------------------------------------------------------------------------


def _with(record: ServerRecord, **changes: Any) -> ServerRecord:
    return msgspec.structs.replace(record, updated_at=time.time(), **changes)


def _fault(code: int, message: str, details: str = "") -> dict[str, Any]:
    return {"code": code, "message": message, "details": details, "created": time.time()}


def _flavor(record: ServerRecord) -> m.FlavorSpec:
    return msgspec.convert(record.flavor, m.FlavorSpec)


def _agent(record: ServerRecord) -> Target:
    assert record.host is not None
    return Target("agent", record.host)


def _begin(record: ServerRecord, task: str, *effects: Any, **changes: Any) -> Outcome[ServerRecord]:
    """Enter `task` (with its timer)."""
    new = _with(record, task_state=task, **changes)
    timer = SetTimer("task", TASK_TIMEOUTS[task], m.TaskTimeout(vm_state=new.vm_state, task_state=task))
    return Outcome(new, effects=(*effects, timer))


def _settle(record: ServerRecord, *effects: Any, **changes: Any) -> Outcome[ServerRecord]:
    """Leave the transitional state (and cancel its timer)."""
    return Outcome(_with(record, task_state=None, **changes), effects=(*effects, CancelTimer("task")))


def _states(*vm_states: str, task: str | None = None) -> set[str]:
    return {v if task is None else f"{v}:{task}" for v in vm_states}


def _select(record: ServerRecord) -> Send:
    return Send(
        Target("scheduler", record.id),
        m.SelectHost(
            server_id=record.id,
            project_id=record.project_id,
            flavor=_flavor(record),
            availability_zone=record.requested_availability_zone,
            group_id=record.group_id,
            excluded_hosts=list(record.attempted_hosts),
        ),
    )


def _release(record: ServerRecord) -> tuple[Send, ...]:
    if record.host is None:
        return ()
    return (Send(Target("scheduler", record.id), m.ReleaseClaim(server_id=record.id, host=record.host)),)


# --- build ----------------------------------------------------------------------------------------


@table.on(m.BuildServer, source="building:scheduling", to="building:scheduling")
def build(record: ServerRecord, msg: m.BuildServer, ctx: Context) -> Outcome[ServerRecord]:
    return _begin(record, "scheduling", _select(record), Notify("instance.create.start"))


def _port_ids(record: ServerRecord) -> list[str]:
    return [str(nic["port_id"]) for nic in record.nics]


def _spawn(record: ServerRecord) -> Outcome[ServerRecord]:
    """Spawn, once every volume of the boot is ready (else wait for them in block_device_mapping)."""
    assert record.host is not None
    if any(bdm["status"] == "waiting" for bdm in record.block_devices):
        return _begin(record, "block_device_mapping")
    volumes = [
        m.BlockDevice(
            device=bdm["device"],
            connection=msgspec.convert(bdm["connection"], v.VolumeConnection),
            boot_index=bdm.get("boot_index"),
        )
        for bdm in record.block_devices
        if bdm["status"] == "ready"
    ]
    spawn = m.Spawn(
        server_id=record.id,
        name=record.display_name,
        flavor=_flavor(record),
        image_id=record.image_id,
        ports=_port_ids(record),
        volumes=volumes,
    )
    return _begin(record, "spawning", Send(_agent(record), spawn))


def _release_ports(record: ServerRecord) -> tuple[Send, ...]:
    """The server is gone: delete the ports it created, release the ones it was given."""
    effects = []
    for nic in record.nics:
        target = Target("port", str(nic["port_id"]))
        if nic.get("delete_on_termination", True):
            effects.append(Send(target, n.DeletePort(server_id=record.id)))
        else:
            effects.append(Send(target, n.UnbindPort(server_id=record.id)))
    return tuple(effects)


@table.on(
    m.Scheduled,
    source="building:scheduling",
    to={"building:networking", "building:block_device_mapping", "building:spawning"},
)
def scheduled(record: ServerRecord, msg: m.Scheduled, ctx: Context) -> Outcome[ServerRecord]:
    new = _with(record, host=msg.host, node=msg.node, availability_zone=msg.availability_zone, bound_ports=[])
    if not record.nics:
        return _spawn(new)
    binds = [
        Send(Target("port", port_id), n.BindPort(server_id=record.id, host=msg.host))
        for port_id in _port_ids(record)
    ]
    return _begin(new, "networking", *binds)


@table.on(
    n.PortBound,
    source="building:networking",
    to={"building:networking", "building:block_device_mapping", "building:spawning"},
)
def port_bound(record: ServerRecord, msg: n.PortBound, ctx: Context) -> Outcome[ServerRecord]:
    """Nova waits for its ports' bindings before it spawns; so does the server actor."""
    if msg.host != record.host or msg.port_id not in _port_ids(record) or msg.port_id in record.bound_ports:
        return Outcome(record)  # a binding to an earlier host, or a repeat
    new = _with(record, bound_ports=[*record.bound_ports, msg.port_id])
    if set(new.bound_ports) >= set(_port_ids(record)):
        return _spawn(new)
    return Outcome(new)


@table.on(n.PortBound, source=STATES - {"building:networking"}, to=STATES - {"building:networking"})
def port_bound_late(record: ServerRecord, msg: n.PortBound, ctx: Context) -> Outcome[ServerRecord]:
    return Outcome(record)


@table.on(m.NoValidHost, source="building:scheduling", to="error")
def no_valid_host(record: ServerRecord, msg: m.NoValidHost, ctx: Context) -> Outcome[ServerRecord]:
    message = "No valid host was found. " + msg.reason if msg.reason else "No valid host was found."
    return _settle(
        record,
        _create_error("NoValidHost", message.strip()),
        vm_state="error",
        fault=_fault(500, message.strip()),
    )


@table.on(m.Spawned, source="building:spawning", to="active")
def spawned(record: ServerRecord, msg: m.Spawned, ctx: Context) -> Outcome[ServerRecord]:
    activate = [
        Send(Target("port", port_id), n.ActivatePort(server_id=record.id, host=msg.host))
        for port_id in _port_ids(record)
    ]
    attached = [
        Send(
            Target("volume", bdm["volume_id"]),
            v.VolumeAttached(
                attachment_id=bdm["attachment_id"], server_id=record.id, host=msg.host, device=bdm["device"]
            ),
        )
        for bdm in record.block_devices
        if bdm["status"] == "ready"
    ]
    devices = [
        {**bdm, "status": "attached"} if bdm["status"] == "ready" else bdm for bdm in record.block_devices
    ]
    return _settle(
        record,
        *activate,
        *attached,
        Notify("instance.create.end"),
        vm_state="active",
        power_state=msg.power_state,
        launched_at=ctx.now,
        block_devices=devices,
    )


@table.on(m.SpawnFailed, source="building:spawning", to={"building:scheduling", "error"})
def spawn_failed(record: ServerRecord, msg: m.SpawnFailed, ctx: Context) -> Outcome[ServerRecord]:
    """Nova's reschedule: release the claim, try another host, give up after max_attempts."""
    attempted = [*record.attempted_hosts, msg.host]
    release = _release(record)
    if len(attempted) >= record.max_attempts:
        reason = (
            f"No valid host was found. Exceeded maximum number of retries. Exhausted all hosts "
            f"available for retrying build failures for instance {record.id}."
        )
        return _settle(
            record,
            *release,
            _create_error("MaxRetriesExceeded", reason),
            vm_state="error",
            host=None,
            node=None,
            attempted_hosts=attempted,
            fault=_fault(500, reason, f"last failure on {msg.host}: {msg.reason}"),
        )
    retry = _with(record, host=None, node=None, attempted_hosts=attempted, bound_ports=[])
    return _begin(retry, "scheduling", *release, _select(retry))


# --- power actions ---------------------------------------------------------------------------------

# message -> (states it is legal in, task it starts, agent action, state when done, power when done)
_ACTIONS: dict[type[Message], tuple[set[str], str, str, str]] = {
    m.Stop: (_states("active", "error"), "powering-off", "stop", "stopped"),
    m.Start: (_states("stopped"), "powering-on", "start", "active"),
    m.Reboot: (_states("active"), "rebooting", "reboot", "active"),
    m.RebootHard: (
        _states("active", "stopped", "paused", "suspended", "error"),
        "rebooting_hard",
        "reboot_hard",
        "active",
    ),
    m.Pause: (_states("active"), "pausing", "pause", "paused"),
    m.Unpause: (_states("paused"), "unpausing", "unpause", "active"),
    m.Suspend: (_states("active"), "suspending", "suspend", "suspended"),
    m.Resume: (_states("suspended"), "resuming", "resume", "active"),
}
_TASK_OF_ACTION = {action: task for _, task, action, _ in _ACTIONS.values()}
# The notification family of each agent action (instance.<family>.start/end/error), as Nova's.
_NOTIFIED_AS = {
    "stop": "power_off",
    "start": "power_on",
    "reboot": "reboot",
    "reboot_hard": "reboot",
    "pause": "pause",
    "unpause": "unpause",
    "suspend": "suspend",
    "resume": "resume",
}
_ACTION_OF_TASK = {task: action for action, task in _TASK_OF_ACTION.items()}
_DONE_STATE = {action: done for _, _, action, done in _ACTIONS.values()}


def _register_action(message: type[Message], sources: set[str], task: str, action: str) -> None:
    @table.on(message, source=sources, to={f"{s}:{task}" for s in sources})
    def request(record: ServerRecord, msg: Message, ctx: Context) -> Outcome[ServerRecord]:
        if record.host is None:
            raise Refused(f"Instance {record.id} is not ready")
        power = m.PowerAction(server_id=record.id, action=action)
        return _begin(
            record, task, Send(_agent(record), power), Notify(f"instance.{_NOTIFIED_AS[action]}.start")
        )


for _message, (_sources, _task, _action, _done) in _ACTIONS.items():
    _register_action(_message, _sources, _task, _action)

_IN_ACTION = {f"{v}:{task}" for sources, task, _, _ in _ACTIONS.values() for v in sources}


@table.on(m.ActionDone, source=_IN_ACTION, to=_IN_ACTION | set(STABLE))
def action_done(record: ServerRecord, msg: m.ActionDone, ctx: Context) -> Outcome[ServerRecord]:
    if _TASK_OF_ACTION.get(msg.action) != record.task_state:
        return Outcome(record)  # a late report of an earlier action
    return _settle(
        record,
        Notify(f"instance.{_NOTIFIED_AS[msg.action]}.end"),
        vm_state=_DONE_STATE[msg.action],
        power_state=msg.power_state,
    )


@table.on(m.ActionFailed, source=_IN_ACTION, to=_IN_ACTION | set(STABLE))
def action_failed(record: ServerRecord, msg: m.ActionFailed, ctx: Context) -> Outcome[ServerRecord]:
    """As Nova: the instance stays in its vm_state, the task is cleared, the fault recorded."""
    if _TASK_OF_ACTION.get(msg.action) != record.task_state:
        return Outcome(record)
    power = record.power_state if msg.power_state is None else msg.power_state
    error = Notify(
        f"instance.{_NOTIFIED_AS[msg.action]}.error",
        ERROR,
        {"exception": "InstanceActionFailed", "reason": msg.reason},
    )
    return _settle(record, error, power_state=power, fault=_fault(500, msg.reason))


# --- delete ----------------------------------------------------------------------------------------

_DELETABLE = STATES - {"deleted"} - {s for s in STATES if s.endswith(":deleting")}
_DELETING = {s for s in STATES if s.endswith(":deleting")}


@table.on(m.DeleteServer, source=_DELETABLE, to=_DELETING | {"deleted"})
def delete(record: ServerRecord, msg: m.DeleteServer, ctx: Context) -> Outcome[ServerRecord]:
    if record.host is None:  # never placed: nothing exists on any host (Nova's local delete)
        return _settle(
            record,
            *_release_ports(record),
            *_release_volumes(record),
            Notify("instance.delete.start"),
            Notify("instance.delete.end"),
            vm_state="deleted",
            terminated_at=ctx.now,
        )
    return _begin(
        record,
        "deleting",
        Send(_agent(record), m.Destroy(server_id=record.id)),
        Notify("instance.delete.start"),
        Notify("instance.shutdown.start"),
    )


@table.on(m.DeleteServer, source=_DELETING | {"deleted"}, to=_DELETING | {"deleted"})
def delete_again(record: ServerRecord, msg: m.DeleteServer, ctx: Context) -> Outcome[ServerRecord]:
    return Outcome(record)  # idempotent, as Nova's delete of a deleting server


@table.on(m.Destroyed, source=_DELETING, to="deleted")
def destroyed(record: ServerRecord, msg: m.Destroyed, ctx: Context) -> Outcome[ServerRecord]:
    return _settle(
        record,
        *_release(record),
        *_release_ports(record),
        *_release_volumes(record),
        Notify("instance.shutdown.end"),
        Notify("instance.delete.end"),
        vm_state="deleted",
        power_state=NOSTATE,
        terminated_at=ctx.now,
    )


# Reports that arrive after the server moved on are accepted and ignored, not errors.
def _release_volumes(record: ServerRecord) -> tuple[Send, ...]:
    """The server is gone: its volumes are detached (deleted where delete_on_termination says)."""
    return tuple(
        Send(
            Target("volume", bdm["volume_id"]),
            v.VolumeDetached(
                attachment_id=bdm["attachment_id"], delete=bool(bdm.get("delete_on_termination"))
            ),
        )
        for bdm in record.block_devices
    )


@table.on(m.Scheduled, source=_DELETING | {"deleted", "error"}, to=_DELETING | {"deleted", "error"})
def scheduled_late(record: ServerRecord, msg: m.Scheduled, ctx: Context) -> Outcome[ServerRecord]:
    release = Send(Target("scheduler", record.id), m.ReleaseClaim(server_id=record.id, host=msg.host))
    return Outcome(record, effects=(release,))


@table.on(m.Spawned, source=_DELETING | {"deleted"}, to=_DELETING | {"deleted"})
def spawned_late(record: ServerRecord, msg: m.Spawned, ctx: Context) -> Outcome[ServerRecord]:
    return Outcome(record)


# --- timers and power-state sync ---------------------------------------------------------------------


@table.on(m.TaskTimeout, source=STATES, to=STATES)
def task_timeout(record: ServerRecord, msg: m.TaskTimeout, ctx: Context) -> Outcome[ServerRecord]:
    if (record.vm_state, record.task_state) != (msg.vm_state, msg.task_state):
        return Outcome(record)  # the task ended in time; a stale timer
    if msg.task_state == "deleting":
        # The host never confirmed: the server is gone for the user; `doctor` reconciles the host.
        return _settle(
            record,
            *_release(record),
            *_release_ports(record),
            *_release_volumes(record),
            Notify("instance.delete.end"),
            vm_state="deleted",
            terminated_at=ctx.now,
            fault=_fault(500, "Timed out waiting for the host to delete the instance."),
        )
    reason = f"Timed out during {msg.task_state} of instance {record.id}."
    notice = _error_notice(record, "Timeout", reason)
    return _settle(record, *((notice,) if notice else ()), vm_state="error", fault=_fault(500, reason))


@table.on(m.PowerStateReport, source=STATES, to=STATES)
def power_state_report(record: ServerRecord, msg: m.PowerStateReport, ctx: Context) -> Outcome[ServerRecord]:
    """Nova's power-state sync: record what the hypervisor says; an instance that stopped (or
    vanished) behind our back while ACTIVE becomes SHUTOFF; nothing changes mid-task."""
    if record.task_state is not None or record.host != msg.host or record.vm_state in ("deleted", "building"):
        return Outcome(record)
    new = _with(record, power_state=msg.power_state)
    if record.vm_state == "active" and msg.power_state in (SHUTDOWN, CRASHED, NOSTATE):
        new = _with(new, vm_state="stopped")
    elif record.vm_state == "paused" and msg.power_state in (SHUTDOWN, CRASHED, NOSTATE):
        new = _with(new, vm_state="stopped")
    elif record.vm_state == "suspended" and msg.power_state in (SHUTDOWN, NOSTATE):
        new = _with(new, vm_state="stopped")
    if new.power_state == record.power_state and new.vm_state == record.vm_state:
        return Outcome(record)
    return Outcome(new)


# --- volumes: attach, detach, and the volumes of a boot ---------------------------------------------

_ATTACHABLE = {"active", "stopped", "paused", "suspended"}


def _bdm(record: ServerRecord, attachment_id: str) -> dict[str, Any] | None:
    return next((b for b in record.block_devices if b["attachment_id"] == attachment_id), None)


def _replace_bdm(record: ServerRecord, attachment_id: str, **changes: Any) -> list[dict[str, Any]]:
    return [{**b, **changes} if b["attachment_id"] == attachment_id else b for b in record.block_devices]


def _without_bdm(record: ServerRecord, attachment_id: str) -> list[dict[str, Any]]:
    return [b for b in record.block_devices if b["attachment_id"] != attachment_id]


def _volume(bdm: dict[str, Any], body: Message) -> Send:
    return Send(Target("volume", bdm["volume_id"]), body)


@table.on(v.AttachVolume, source=STATES, to=STATES)
def attach_volume(record: ServerRecord, msg: v.AttachVolume, ctx: Context) -> Outcome[ServerRecord]:
    """Hot-plug a volume the API reserved for this server; a server that cannot take it now
    (building, mid-task, deleted) gives the reservation back at once."""
    if _bdm(record, msg.attachment_id) is not None:
        return Outcome(record)  # a repeat
    bdm = {
        "attachment_id": msg.attachment_id,
        "volume_id": msg.connection.volume_id,
        "device": msg.device,
        "boot_index": None,
        "delete_on_termination": msg.delete_on_termination,
        "connection": msgspec.to_builtins(msg.connection),
        "status": "attaching",
    }
    if record.vm_state not in _ATTACHABLE or record.task_state is not None or record.host is None:
        failed = v.VolumeAttachFailed(
            attachment_id=msg.attachment_id, reason=f"Instance {record.id} is in state {state_name(record)}."
        )
        return Outcome(record, effects=(_volume(bdm, failed),))
    request = v.AttachVolumeOnHost(
        server_id=record.id, attachment_id=msg.attachment_id, device=msg.device, connection=msg.connection
    )
    return Outcome(
        _with(record, block_devices=[*record.block_devices, bdm]),
        effects=(Send(_agent(record), request), _volume_notice("attach.start", bdm)),
    )


@table.on(v.VolumeAttachedToServer, source=STATES, to=STATES)
def volume_attached(
    record: ServerRecord, msg: v.VolumeAttachedToServer, ctx: Context
) -> Outcome[ServerRecord]:
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or bdm["status"] != "attaching" or record.host is None:
        return Outcome(record)
    done = v.VolumeAttached(
        attachment_id=msg.attachment_id, server_id=record.id, host=record.host, device=bdm["device"]
    )
    return Outcome(
        _with(record, block_devices=_replace_bdm(record, msg.attachment_id, status="attached")),
        effects=(_volume(bdm, done), _volume_notice("attach.end", bdm)),
    )


@table.on(v.VolumeAttachToServerFailed, source=STATES, to=STATES)
def volume_attach_failed(
    record: ServerRecord, msg: v.VolumeAttachToServerFailed, ctx: Context
) -> Outcome[ServerRecord]:
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or bdm["status"] != "attaching":
        return Outcome(record)
    failed = v.VolumeAttachFailed(attachment_id=msg.attachment_id, reason=msg.reason)
    return Outcome(
        _with(record, block_devices=_without_bdm(record, msg.attachment_id)),
        effects=(_volume(bdm, failed), _volume_notice("attach.error", bdm, msg.reason)),
    )


@table.on(v.DetachVolume, source=STATES, to=STATES)
def detach_volume(record: ServerRecord, msg: v.DetachVolume, ctx: Context) -> Outcome[ServerRecord]:
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or record.host is None or bdm["status"] in ("waiting", "ready"):
        # not (or not yet) on any host: nothing to unplug
        gone = Send(Target("volume", msg.volume_id), v.VolumeDetached(attachment_id=msg.attachment_id))
        return Outcome(_with(record, block_devices=_without_bdm(record, msg.attachment_id)), effects=(gone,))
    if bdm["status"] != "attached":
        raise Refused(f"Volume {msg.volume_id} is {bdm['status']} on instance {record.id}.")
    request = v.DetachVolumeOnHost(
        server_id=record.id, attachment_id=msg.attachment_id, volume_id=msg.volume_id, device=bdm["device"]
    )
    return Outcome(
        _with(record, block_devices=_replace_bdm(record, msg.attachment_id, status="detaching")),
        effects=(Send(_agent(record), request), _volume_notice("detach.start", bdm)),
    )


@table.on(v.VolumeDetachedFromServer, source=STATES, to=STATES)
def volume_detached(
    record: ServerRecord, msg: v.VolumeDetachedFromServer, ctx: Context
) -> Outcome[ServerRecord]:
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None:
        return Outcome(record)
    done = v.VolumeDetached(attachment_id=msg.attachment_id)
    effects: tuple[Any, ...] = (_volume(bdm, done),)
    if bdm["status"] == "detaching":
        effects += (_volume_notice("detach.end", bdm),)
    return Outcome(_with(record, block_devices=_without_bdm(record, msg.attachment_id)), effects=effects)


@table.on(v.VolumeDetachFromServerFailed, source=STATES, to=STATES)
def volume_detach_failed(
    record: ServerRecord, msg: v.VolumeDetachFromServerFailed, ctx: Context
) -> Outcome[ServerRecord]:
    """The disk stayed: it is still attached, and the volume in-use again."""
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or bdm["status"] != "detaching" or record.host is None:
        return Outcome(record)
    still = v.VolumeAttached(
        attachment_id=msg.attachment_id, server_id=record.id, host=record.host, device=bdm["device"]
    )
    return Outcome(
        _with(
            record,
            block_devices=_replace_bdm(record, msg.attachment_id, status="attached"),
            fault=_fault(500, f"Detaching volume {msg.volume_id} failed: {msg.reason}"),
        ),
        effects=(_volume(bdm, still),),
    )


@table.on(v.VolumeReady, source=STATES, to=STATES)
def volume_ready(record: ServerRecord, msg: v.VolumeReady, ctx: Context) -> Outcome[ServerRecord]:
    """A volume created for this boot is there; the last one lets the spawn go ahead."""
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or bdm["status"] != "waiting":
        return Outcome(record)
    new = _with(
        record,
        block_devices=_replace_bdm(
            record, msg.attachment_id, status="ready", connection=msgspec.to_builtins(msg.connection)
        ),
    )
    if state_name(new) == "building:block_device_mapping":
        return _spawn(new)
    return Outcome(new)


@table.on(v.VolumeFailed, source=STATES, to=STATES)
def volume_failed(record: ServerRecord, msg: v.VolumeFailed, ctx: Context) -> Outcome[ServerRecord]:
    """A volume of the boot could not be made: the build fails (Nova's VolumeNotCreated)."""
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or bdm["status"] != "waiting":
        return Outcome(record)
    devices = _replace_bdm(record, msg.attachment_id, status="failed")
    if record.vm_state != "building" or record.task_state == "deleting":
        return Outcome(_with(record, block_devices=devices))
    reason = (
        "Build of instance aborted: " + f"Volume {msg.volume_id} did not finish being created: {msg.reason}"
    )
    return _settle(
        record,
        *_release(record),
        _create_error("BuildAbortException", reason),
        vm_state="error",
        host=None,
        node=None,
        block_devices=devices,
        fault=_fault(500, reason),
    )


# --- notifications ------------------------------------------------------------------------------------


def _create_error(exception: str, reason: str) -> Notify:
    return Notify("instance.create.error", ERROR, {"exception": exception, "reason": reason})


def _error_notice(record: ServerRecord, exception: str, reason: str) -> Notify | None:
    """The error notification of whatever the server was doing (None when it was doing nothing
    Nova notifies about)."""
    if record.vm_state == "building":
        return _create_error(exception, reason)
    action = _ACTION_OF_TASK.get(record.task_state or "")
    if action is None:
        return None
    return Notify(f"instance.{_NOTIFIED_AS[action]}.error", ERROR, {"exception": exception, "reason": reason})


def _volume_notice(step: str, bdm: dict[str, Any], reason: str = "") -> Notify:
    if step.endswith(".error"):
        return Notify(
            f"instance.volume_{step}",
            ERROR,
            {"volume_id": bdm["volume_id"], "exception": "VolumeAttachFailed", "reason": reason},
        )
    return Notify(f"instance.volume_{step}", extra={"volume_id": bdm["volume_id"]})


KIND = ActorKind(
    table,
    "servers",
    project_field="project_id",
    notifier=notices.server,
    fault_notice=lambda record: _error_notice(record, "InstanceFault", ""),
)


def legal_actions(record: ServerRecord) -> Iterable[type[Message]]:
    """The requests the server accepts now (what the API may send without a 409)."""
    return [msg for msg in table.messages if table.allows(record, msg)]
