"""The server actor: Nova's instance lifecycle as a transition table.

A server's state is Nova's pair (vm_state, task_state); the table's state name is
"vm_state" or "vm_state:task_state". power_state is what the hypervisor last reported, and the
API status is derived from vm_state and task_state exactly as Nova derives it
(protocol.states.server_status).

The flow of a boot: the API inserts the row in building:scheduling (with its ports, created or
claimed in the same transaction) and sends `server.build`; the actor asks the scheduler for a
host (`scheduler.select`); on `server.scheduled` it binds its ports to that host
(building:networking) and, once every port confirmed, asks the host's agent to spawn
(building:spawning); `server.spawned` makes it active and its ports ACTIVE. A failed spawn
releases the claim and retries on another host until `max_attempts`, then ERROR with Nova's
"No valid host was found" fault. Every state with a task has a timeout (TASK_TIMEOUTS) that
ends it in ERROR. Deleting works from every state and ends in `deleted` once the host confirms
the domain and files are gone; then the ports the server created are deleted and the ones the
user gave it are released.

The power actions (stop, start, reboot, pause, …) are the rows of protocol/power.py: each
becomes a request row here (from its vm_states to `vm_state:task`), and `server.action_done`
ends it in the row's vm_state.

Nova's deferred delete: with a reclaim interval the API sends `server.soft_delete` instead of
`server.delete`; the host powers the domain off (soft-deleting) and the server stays
SOFT_DELETED until the interval is over (the state's timer, set to `reclaim_at`), when it is
deleted as any other; `server.restore` powers it on again (restoring, then ACTIVE), and a delete
(Nova's forceDelete) deletes it at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from actors.table import NO_TIMEOUT as NO_TIMEOUT
from actors.table import Context, Effect, Fault, Notify, Outcome, Refused, Send, TransitionTable
from protocol import Message, Target
from protocol import compute as m
from protocol import network as n
from protocol import volume as v
from protocol.actor import StateTimeout
from protocol.notifications import ERROR
from protocol.power import BY_ACTION, BY_TASK, ROWS, PowerAction, PowerActionRow
from protocol.states import BlockDeviceStatus as B
from protocol.states import PowerState, TaskState, VmState

V, T = VmState, TaskState

# How long each task may last before the server goes to ERROR (seconds): the build's steps and
# the delete here, each power action's in its row.
TASK_TIMEOUTS: dict[TaskState, float] = {
    T.SCHEDULING: 120.0,
    T.NETWORKING: 120.0,
    T.BLOCK_DEVICE_MAPPING: 900.0,
    T.SPAWNING: 900.0,
    T.DELETING: 600.0,
    T.SOFT_DELETING: 180.0,
    T.RESTORING: 180.0,
    **{row.task: row.timeout for row in ROWS},
}

# --- the record ---------------------------------------------------------------------------------


class ServerRecord(msgspec.Struct, kw_only=True):
    """The columns of `servers` that the actor owns or reads (the API owns name, metadata…)."""

    id: str
    version: int = 0
    project_id: str
    user_id: str
    display_name: str = ""
    vm_state: VmState = V.BUILDING
    task_state: TaskState | None = T.SCHEDULING
    power_state: PowerState = PowerState.NOSTATE
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
    reclaim_at: float | None = None  # when a soft-deleted server is deleted for good


def state(vm_state: VmState, task_state: TaskState | None = None) -> str:
    """The table's name for (vm_state, task_state)."""
    return str(vm_state) if task_state is None else f"{vm_state}:{task_state}"


def state_name(record: ServerRecord) -> str:
    return state(record.vm_state, record.task_state)


# The settled vm_states (no task); the ones a volume may be attached in; the building steps.
STABLE = frozenset({V.ACTIVE, V.STOPPED, V.PAUSED, V.SUSPENDED, V.ERROR, V.SOFT_DELETED})
ATTACHABLE = frozenset({V.ACTIVE, V.STOPPED, V.PAUSED, V.SUSPENDED})
_BUILD_STEPS = (T.SCHEDULING, T.NETWORKING, T.BLOCK_DEVICE_MAPPING, T.SPAWNING)

BUILDING = frozenset(state(V.BUILDING, task) for task in _BUILD_STEPS)
IN_POWER_ACTION = frozenset(state(vm, row.task) for row in ROWS for vm in row.from_states)
DELETING = frozenset(state(vm, T.DELETING) for vm in (V.BUILDING, *sorted(STABLE)))
DELETED = state(V.DELETED)
# Nova's deferred delete: from a settled vm_state, through soft-deleting, to SOFT_DELETED.
SOFT_DELETABLE = STABLE - {V.SOFT_DELETED}
SOFT_DELETING = frozenset(state(vm, T.SOFT_DELETING) for vm in SOFT_DELETABLE)
SOFT_DELETED = state(V.SOFT_DELETED)
RESTORING = state(V.SOFT_DELETED, T.RESTORING)
STATES = (
    BUILDING
    | {state(vm) for vm in STABLE}
    | IN_POWER_ACTION
    | DELETING
    | SOFT_DELETING
    | {RESTORING, DELETED}
)
SETTLED = frozenset(state(vm) for vm in STABLE)


def _on_fault(record: ServerRecord, fault: Fault, now: float) -> ServerRecord:
    return msgspec.structs.replace(
        record,
        vm_state=V.ERROR,
        task_state=None,
        updated_at=now,
        fault=_fault(500, fault.reason, now, fault.details),
    )


table = TransitionTable(
    "server", ServerRecord, states=STATES, error_state=state(V.ERROR), state_of=state_name, on_fault=_on_fault
)


# --- helpers ------------------------------------------------------------------------------------


def _with(record: ServerRecord, ctx: Context, **changes: Any) -> ServerRecord:
    return msgspec.structs.replace(record, updated_at=ctx.now, **changes)


def _fault(code: int, message: str, now: float, details: str = "") -> dict[str, Any]:
    return {"code": code, "message": message, "details": details, "created": now}


def _flavor(record: ServerRecord) -> m.FlavorSpec:
    return msgspec.convert(record.flavor, m.FlavorSpec)


def _agent(record: ServerRecord) -> Target:
    assert record.host is not None
    return Target("agent", record.host)


def _task(
    record: ServerRecord, ctx: Context, task: TaskState, *effects: Effect, **changes: Any
) -> Outcome[ServerRecord]:
    """Start `task` (the table sets its timeout)."""
    return Outcome(_with(record, ctx, task_state=task, **changes), effects=effects)


def _settle(record: ServerRecord, ctx: Context, *effects: Effect, **changes: Any) -> Outcome[ServerRecord]:
    """End the task in progress (the table cancels its timeout)."""
    return Outcome(_with(record, ctx, task_state=None, **changes), effects=effects)


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


def _port_ids(record: ServerRecord) -> list[str]:
    return [str(nic["port_id"]) for nic in record.nics]


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


# --- build ----------------------------------------------------------------------------------------


@table.on(m.BuildServer, source=state(V.BUILDING, T.SCHEDULING))
def build(record: ServerRecord, msg: m.BuildServer, ctx: Context) -> Outcome[ServerRecord]:
    """The API created the row in building:scheduling; the actor starts it (and its timeout)."""
    return Outcome(
        _with(record, ctx), effects=(_select(record), Notify("instance.create.start")), reenter=True
    )


def _spawn(record: ServerRecord, ctx: Context) -> Outcome[ServerRecord]:
    """Spawn, once every volume of the boot is ready (else wait for them in block_device_mapping)."""
    assert record.host is not None
    if any(bdm["status"] == B.WAITING for bdm in record.block_devices):
        return _task(record, ctx, T.BLOCK_DEVICE_MAPPING)
    volumes = [
        m.BlockDevice(
            device=bdm["device"],
            connection=msgspec.convert(bdm["connection"], v.VolumeConnection),
            boot_index=bdm.get("boot_index"),
        )
        for bdm in record.block_devices
        if bdm["status"] == B.READY
    ]
    spawn = m.Spawn(
        server_id=record.id,
        name=record.display_name,
        flavor=_flavor(record),
        image_id=record.image_id,
        ports=_port_ids(record),
        volumes=volumes,
    )
    return _task(record, ctx, T.SPAWNING, Send(_agent(record), spawn))


_AFTER_SCHEDULING = {state(V.BUILDING, t) for t in (T.NETWORKING, T.BLOCK_DEVICE_MAPPING, T.SPAWNING)}


@table.on(m.Scheduled, source=state(V.BUILDING, T.SCHEDULING), to=_AFTER_SCHEDULING)
def scheduled(record: ServerRecord, msg: m.Scheduled, ctx: Context) -> Outcome[ServerRecord]:
    new = _with(
        record, ctx, host=msg.host, node=msg.node, availability_zone=msg.availability_zone, bound_ports=[]
    )
    if not record.nics:
        return _spawn(new, ctx)
    binds = [
        Send(Target("port", port_id), n.BindPort(server_id=record.id, host=msg.host))
        for port_id in _port_ids(record)
    ]
    return _task(new, ctx, T.NETWORKING, *binds)


@table.on(
    n.PortBound,
    source=state(V.BUILDING, T.NETWORKING),
    to={state(V.BUILDING, T.BLOCK_DEVICE_MAPPING), state(V.BUILDING, T.SPAWNING)},
)
def port_bound(record: ServerRecord, msg: n.PortBound, ctx: Context) -> Outcome[ServerRecord]:
    """Nova waits for its ports' bindings before it spawns; so does the server actor."""
    if msg.host != record.host or msg.port_id not in _port_ids(record) or msg.port_id in record.bound_ports:
        return Outcome(record)  # a binding to an earlier host, or a repeat
    new = _with(record, ctx, bound_ports=[*record.bound_ports, msg.port_id])
    if set(new.bound_ports) >= set(_port_ids(record)):
        return _spawn(new, ctx)
    return Outcome(new)


# A binding confirmed after the server moved on (spawned, failed, deleted) changes nothing.
table.ignore(n.PortBound, in_=STATES - {state(V.BUILDING, T.NETWORKING)})


@table.on(m.NoValidHost, source=state(V.BUILDING, T.SCHEDULING), to=state(V.ERROR))
def no_valid_host(record: ServerRecord, msg: m.NoValidHost, ctx: Context) -> Outcome[ServerRecord]:
    message = "No valid host was found. " + msg.reason if msg.reason else "No valid host was found."
    return _settle(
        record,
        ctx,
        _create_error("NoValidHost", message.strip()),
        vm_state=V.ERROR,
        fault=_fault(500, message.strip(), ctx.now),
    )


@table.on(m.Spawned, source=state(V.BUILDING, T.SPAWNING), to=state(V.ACTIVE))
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
        if bdm["status"] == B.READY
    ]
    devices = [
        {**bdm, "status": B.ATTACHED} if bdm["status"] == B.READY else bdm for bdm in record.block_devices
    ]
    return _settle(
        record,
        ctx,
        *activate,
        *attached,
        Notify("instance.create.end"),
        vm_state=V.ACTIVE,
        power_state=msg.power_state,
        launched_at=ctx.now,
        block_devices=devices,
    )


@table.on(
    m.SpawnFailed, source=state(V.BUILDING, T.SPAWNING), to={state(V.BUILDING, T.SCHEDULING), state(V.ERROR)}
)
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
            ctx,
            *release,
            _create_error("MaxRetriesExceeded", reason),
            vm_state=V.ERROR,
            host=None,
            node=None,
            attempted_hosts=attempted,
            fault=_fault(500, reason, ctx.now, f"last failure on {msg.host}: {msg.reason}"),
        )
    retry = _with(record, ctx, host=None, node=None, attempted_hosts=attempted, bound_ports=[])
    return _task(retry, ctx, T.SCHEDULING, *release, _select(retry))


# --- power actions: one request row per row of protocol/power.py ----------------------------------


def _power_action(row: PowerActionRow) -> None:
    """The rows of one power action: its request in each vm_state it may start from, and the
    host's report that it is done (the row's vm_state) or failed (the vm_state it started in)."""

    def request(record: ServerRecord, msg: Message, ctx: Context) -> Outcome[ServerRecord]:
        if record.host is None:
            raise Refused(f"Instance {record.id} is not ready")
        power = m.PowerActionOnHost(server_id=record.id, action=row.action)
        return _task(
            record, ctx, row.task, Send(_agent(record), power), Notify(f"instance.{row.notification}.start")
        )

    running = {state(vm, row.task) for vm in row.from_states}
    table.on(m.ActionDone, source=running, to=state(row.done))(action_done)
    for vm in sorted(row.from_states):
        table.on(row.request, source=state(vm), to=state(vm, row.task))(request)
        table.on(m.ActionFailed, source=state(vm, row.task), to=state(vm))(action_failed)


def _reported_action(record: ServerRecord, action: Any) -> PowerActionRow | None:
    """The row of the action a host reports on, if it is the one in progress (not a late
    report of an earlier one)."""
    row = BY_ACTION[action]
    return row if row.task == record.task_state else None


def action_done(record: ServerRecord, msg: m.ActionDone, ctx: Context) -> Outcome[ServerRecord]:
    row = _reported_action(record, msg.action)
    if row is None:
        return Outcome(record)
    return _settle(
        record,
        ctx,
        Notify(f"instance.{row.notification}.end"),
        vm_state=row.done,
        power_state=msg.power_state,
    )


def action_failed(record: ServerRecord, msg: m.ActionFailed, ctx: Context) -> Outcome[ServerRecord]:
    """As Nova: the instance stays in its vm_state, the task is cleared, the fault recorded."""
    row = _reported_action(record, msg.action)
    if row is None:
        return Outcome(record)
    power = record.power_state if msg.power_state is None else msg.power_state
    error = Notify(
        f"instance.{row.notification}.error",
        ERROR,
        {"exception": "InstanceActionFailed", "reason": msg.reason},
    )
    return _settle(record, ctx, error, power_state=power, fault=_fault(500, msg.reason, ctx.now))


for _row in ROWS:
    _power_action(_row)


# --- delete ----------------------------------------------------------------------------------------


def delete(record: ServerRecord, msg: m.DeleteServer, ctx: Context) -> Outcome[ServerRecord]:
    if record.host is None:  # never placed: nothing exists on any host (Nova's local delete)
        return _settle(
            record,
            ctx,
            *_release_ports(record),
            *_release_volumes(record),
            Notify("instance.delete.start"),
            Notify("instance.delete.end"),
            vm_state=V.DELETED,
            terminated_at=ctx.now,
        )
    return _task(
        record,
        ctx,
        T.DELETING,
        Send(_agent(record), m.Destroy(server_id=record.id)),
        Notify("instance.delete.start"),
        Notify("instance.shutdown.start"),
    )


# Deleting works from every state: to vm_state:deleting while the host removes the domain, or at
# once to deleted when it was never placed.
for _vm in (V.BUILDING, *sorted(STABLE)):
    _sources = {s for s in STATES if s.split(":")[0] == _vm} - DELETING
    table.on(m.DeleteServer, source=_sources, to={state(_vm, T.DELETING), DELETED})(delete)


@table.on(m.DeleteServer, source=DELETING | {DELETED})
def delete_again(record: ServerRecord, msg: m.DeleteServer, ctx: Context) -> Outcome[ServerRecord]:
    return Outcome(record)  # idempotent, as Nova's delete of a deleting server


@table.on(m.Destroyed, source=DELETING, to=DELETED)
def destroyed(record: ServerRecord, msg: m.Destroyed, ctx: Context) -> Outcome[ServerRecord]:
    return _settle(
        record,
        ctx,
        *_release(record),
        *_release_ports(record),
        *_release_volumes(record),
        Notify("instance.shutdown.end"),
        Notify("instance.delete.end"),
        vm_state=V.DELETED,
        power_state=PowerState.NOSTATE,
        terminated_at=ctx.now,
    )


@table.on(m.Scheduled, source=DELETING | {DELETED, state(V.ERROR)})
def scheduled_late(record: ServerRecord, msg: m.Scheduled, ctx: Context) -> Outcome[ServerRecord]:
    """A claim that arrives after the server stopped waiting for it is given back."""
    release = Send(Target("scheduler", record.id), m.ReleaseClaim(server_id=record.id, host=msg.host))
    return Outcome(record, effects=(release,))


table.ignore(m.Spawned, in_=DELETING | {DELETED})


# --- deferred delete (Nova's soft delete), restore and reclaim ------------------------------------

# The declared length of SOFT_DELETED's timer; every entry into the state sets its own, the time
# left until `reclaim_at`.
_RECLAIM_DEFAULT = 3600.0


def _action_error(family: str, reason: str) -> Notify:
    return Notify(f"instance.{family}.error", ERROR, {"exception": "InstanceActionFailed", "reason": reason})


def _reclaim_in(record: ServerRecord, ctx: Context) -> float:
    """Seconds until the soft-deleted server is reclaimed (a moment, when that time is past)."""
    return max((record.reclaim_at or ctx.now) - ctx.now, 0.001)


def soft_delete(record: ServerRecord, msg: m.SoftDeleteServer, ctx: Context) -> Outcome[ServerRecord]:
    """Nova's soft_delete: the host powers the domain off; the server keeps its host, ports and
    volumes until it is reclaimed."""
    if record.host is None or record.launched_at is None:
        raise Refused(f"Instance {record.id} was never active: it can only be deleted.")
    power = m.PowerActionOnHost(server_id=record.id, action=PowerAction.STOP)
    return _task(
        record,
        ctx,
        T.SOFT_DELETING,
        Send(_agent(record), power),
        Notify("instance.soft_delete.start"),
        reclaim_at=ctx.now + msg.reclaim_after,
    )


def soft_deleted(record: ServerRecord, msg: m.ActionDone, ctx: Context) -> Outcome[ServerRecord]:
    if msg.action != PowerAction.STOP:
        return Outcome(record)  # a late report of an earlier action
    new = _with(record, ctx, task_state=None, vm_state=V.SOFT_DELETED, power_state=msg.power_state)
    return Outcome(new, effects=(Notify("instance.soft_delete.end"),), timeout=_reclaim_in(new, ctx))


def soft_delete_failed(record: ServerRecord, msg: m.ActionFailed, ctx: Context) -> Outcome[ServerRecord]:
    """The domain did not power off: the server stays as it was, with the fault."""
    if msg.action != PowerAction.STOP:
        return Outcome(record)
    power = record.power_state if msg.power_state is None else msg.power_state
    error = _action_error("soft_delete", msg.reason)
    return _settle(
        record, ctx, error, power_state=power, reclaim_at=None, fault=_fault(500, msg.reason, ctx.now)
    )


for _vm in sorted(SOFT_DELETABLE):
    table.on(m.SoftDeleteServer, source=state(_vm), to=state(_vm, T.SOFT_DELETING))(soft_delete)
    table.on(m.ActionFailed, source=state(_vm, T.SOFT_DELETING), to=state(_vm))(soft_delete_failed)
table.on(m.ActionDone, source=SOFT_DELETING, to=SOFT_DELETED)(soft_deleted)


@table.on(m.RestoreServer, source=SOFT_DELETED, to=RESTORING)
def restore(record: ServerRecord, msg: m.RestoreServer, ctx: Context) -> Outcome[ServerRecord]:
    power = m.PowerActionOnHost(server_id=record.id, action=PowerAction.START)
    return _task(record, ctx, T.RESTORING, Send(_agent(record), power), Notify("instance.restore.start"))


@table.on(m.ActionDone, source=RESTORING, to=state(V.ACTIVE))
def restored(record: ServerRecord, msg: m.ActionDone, ctx: Context) -> Outcome[ServerRecord]:
    if msg.action != PowerAction.START:
        return Outcome(record)
    return _settle(
        record,
        ctx,
        Notify("instance.restore.end"),
        vm_state=V.ACTIVE,
        power_state=msg.power_state,
        reclaim_at=None,
    )


@table.on(m.ActionFailed, source=RESTORING, to=SOFT_DELETED)
def restore_failed(record: ServerRecord, msg: m.ActionFailed, ctx: Context) -> Outcome[ServerRecord]:
    """Still soft-deleted, with the fault; the reclaim time stays what it was."""
    if msg.action != PowerAction.START:
        return Outcome(record)
    power = record.power_state if msg.power_state is None else msg.power_state
    new = _with(record, ctx, task_state=None, power_state=power, fault=_fault(500, msg.reason, ctx.now))
    error = _action_error("restore", msg.reason)
    return Outcome(new, effects=(error,), timeout=_reclaim_in(new, ctx))


@table.timeout({SOFT_DELETED}, after=_RECLAIM_DEFAULT, to={state(V.SOFT_DELETED, T.DELETING), DELETED})
def reclaimed(record: ServerRecord, msg: StateTimeout, ctx: Context) -> Outcome[ServerRecord]:
    """The reclaim: once the interval is over, the soft-deleted server is deleted as any other."""
    return delete(record, m.DeleteServer(), ctx)


# --- timeouts -------------------------------------------------------------------------------------


def _timeout_for(task: TaskState) -> None:
    states = {s for s in STATES if s.endswith(f":{task}")}
    if task is T.DELETING:
        table.timeout(states, after=TASK_TIMEOUTS[task], to=DELETED)(deleting_timed_out)
    else:
        table.timeout(states, after=TASK_TIMEOUTS[task], to=state(V.ERROR))(task_timed_out)


def task_timed_out(record: ServerRecord, msg: StateTimeout, ctx: Context) -> Outcome[ServerRecord]:
    reason = f"Timed out during {record.task_state} of instance {record.id}."
    notice = _error_notice(record, "Timeout", reason)
    return _settle(
        record, ctx, *((notice,) if notice else ()), vm_state=V.ERROR, fault=_fault(500, reason, ctx.now)
    )


def deleting_timed_out(record: ServerRecord, msg: StateTimeout, ctx: Context) -> Outcome[ServerRecord]:
    """The host never confirmed: the server is gone for the user; `doctor` reconciles the host."""
    return _settle(
        record,
        ctx,
        *_release(record),
        *_release_ports(record),
        *_release_volumes(record),
        Notify("instance.delete.end"),
        vm_state=V.DELETED,
        terminated_at=ctx.now,
        fault=_fault(500, "Timed out waiting for the host to delete the instance.", ctx.now),
    )


for _task_state in TASK_TIMEOUTS:
    _timeout_for(_task_state)


# --- power-state sync -----------------------------------------------------------------------------

# What a settled server becomes when its host reports its domain stopped (or gone): Nova's
# _sync_instance_power_state.
_STOPPED_BY = {
    V.ACTIVE: {PowerState.SHUTDOWN, PowerState.CRASHED, PowerState.NOSTATE},
    V.PAUSED: {PowerState.SHUTDOWN, PowerState.CRASHED, PowerState.NOSTATE},
    V.SUSPENDED: {PowerState.SHUTDOWN, PowerState.NOSTATE},
}


@table.on(m.PowerStateReport, source=SETTLED, to=state(V.STOPPED))
def power_state_report(record: ServerRecord, msg: m.PowerStateReport, ctx: Context) -> Outcome[ServerRecord]:
    """Nova's power-state sync: record what the hypervisor says; an instance that stopped (or
    vanished) behind our back while ACTIVE (PAUSED, SUSPENDED) becomes SHUTOFF."""
    if record.host != msg.host:
        return Outcome(record)
    stopped = msg.power_state in _STOPPED_BY.get(record.vm_state, ())
    vm_state = V.STOPPED if stopped else record.vm_state
    if msg.power_state == record.power_state and vm_state == record.vm_state:
        return Outcome(record)
    return Outcome(_with(record, ctx, power_state=msg.power_state, vm_state=vm_state))


# Mid-task, building or deleted: the task's own report decides, not the periodic sync.
table.ignore(m.PowerStateReport, in_=STATES - SETTLED)


# --- volumes: attach, detach, and the volumes of a boot ---------------------------------------------


def _bdm(record: ServerRecord, attachment_id: str) -> dict[str, Any] | None:
    return next((b for b in record.block_devices if b["attachment_id"] == attachment_id), None)


def _replace_bdm(record: ServerRecord, attachment_id: str, **changes: Any) -> list[dict[str, Any]]:
    return [{**b, **changes} if b["attachment_id"] == attachment_id else b for b in record.block_devices]


def _without_bdm(record: ServerRecord, attachment_id: str) -> list[dict[str, Any]]:
    return [b for b in record.block_devices if b["attachment_id"] != attachment_id]


def _volume(bdm: dict[str, Any], body: Message) -> Send:
    return Send(Target("volume", bdm["volume_id"]), body)


def _new_bdm(msg: v.AttachVolume) -> dict[str, Any]:
    return {
        "attachment_id": msg.attachment_id,
        "volume_id": msg.connection.volume_id,
        "device": msg.device,
        "boot_index": None,
        "delete_on_termination": msg.delete_on_termination,
        "connection": msgspec.to_builtins(msg.connection),
        "status": B.ATTACHING,
    }


def _give_back(record: ServerRecord, msg: v.AttachVolume) -> tuple[Send, ...]:
    failed = v.VolumeAttachFailed(
        attachment_id=msg.attachment_id, reason=f"Instance {record.id} is in state {state_name(record)}."
    )
    return (_volume(_new_bdm(msg), failed),)


@table.on(v.AttachVolume, source={state(vm) for vm in ATTACHABLE})
def attach_volume(record: ServerRecord, msg: v.AttachVolume, ctx: Context) -> Outcome[ServerRecord]:
    """Hot-plug a volume the API reserved for this server."""
    if _bdm(record, msg.attachment_id) is not None:
        return Outcome(record)  # a repeat
    if record.host is None:
        return Outcome(record, effects=_give_back(record, msg))
    bdm = _new_bdm(msg)
    request = v.AttachVolumeOnHost(
        server_id=record.id, attachment_id=msg.attachment_id, device=msg.device, connection=msg.connection
    )
    return Outcome(
        _with(record, ctx, block_devices=[*record.block_devices, bdm]),
        effects=(Send(_agent(record), request), _volume_notice("attach.start", bdm)),
    )


@table.decline(v.AttachVolume, in_=STATES - {state(vm) for vm in ATTACHABLE})
def attach_volume_declined(record: ServerRecord, msg: v.AttachVolume, ctx: Context) -> Iterable[Effect]:
    """A server that cannot take a volume now (building, mid-task, deleted) gives the
    reservation the API made for it back at once."""
    return () if _bdm(record, msg.attachment_id) is not None else _give_back(record, msg)


# The reports of a host about one attachment, and the volume of a boot being ready, arrive in
# whatever state the server is in meanwhile; each changes only that attachment.


@table.on(v.VolumeAttachedToServer, source=STATES)
def volume_attached(
    record: ServerRecord, msg: v.VolumeAttachedToServer, ctx: Context
) -> Outcome[ServerRecord]:
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or bdm["status"] != B.ATTACHING or record.host is None:
        return Outcome(record)
    done = v.VolumeAttached(
        attachment_id=msg.attachment_id, server_id=record.id, host=record.host, device=bdm["device"]
    )
    return Outcome(
        _with(record, ctx, block_devices=_replace_bdm(record, msg.attachment_id, status=B.ATTACHED)),
        effects=(_volume(bdm, done), _volume_notice("attach.end", bdm)),
    )


@table.on(v.VolumeAttachToServerFailed, source=STATES)
def volume_attach_failed(
    record: ServerRecord, msg: v.VolumeAttachToServerFailed, ctx: Context
) -> Outcome[ServerRecord]:
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or bdm["status"] != B.ATTACHING:
        return Outcome(record)
    failed = v.VolumeAttachFailed(attachment_id=msg.attachment_id, reason=msg.reason)
    return Outcome(
        _with(record, ctx, block_devices=_without_bdm(record, msg.attachment_id)),
        effects=(_volume(bdm, failed), _volume_notice("attach.error", bdm, msg.reason)),
    )


@table.on(v.DetachVolume, source=STATES)
def detach_volume(record: ServerRecord, msg: v.DetachVolume, ctx: Context) -> Outcome[ServerRecord]:
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or record.host is None or bdm["status"] in (B.WAITING, B.READY):
        # not (or not yet) on any host: nothing to unplug
        gone = Send(Target("volume", msg.volume_id), v.VolumeDetached(attachment_id=msg.attachment_id))
        return Outcome(
            _with(record, ctx, block_devices=_without_bdm(record, msg.attachment_id)), effects=(gone,)
        )
    if bdm["status"] != B.ATTACHED:
        raise Refused(f"Volume {msg.volume_id} is {bdm['status']} on instance {record.id}.")
    request = v.DetachVolumeOnHost(
        server_id=record.id, attachment_id=msg.attachment_id, volume_id=msg.volume_id, device=bdm["device"]
    )
    return Outcome(
        _with(record, ctx, block_devices=_replace_bdm(record, msg.attachment_id, status=B.DETACHING)),
        effects=(Send(_agent(record), request), _volume_notice("detach.start", bdm)),
    )


@table.on(v.VolumeDetachedFromServer, source=STATES)
def volume_detached(
    record: ServerRecord, msg: v.VolumeDetachedFromServer, ctx: Context
) -> Outcome[ServerRecord]:
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None:
        return Outcome(record)
    done = v.VolumeDetached(attachment_id=msg.attachment_id)
    effects: tuple[Effect, ...] = (_volume(bdm, done),)
    if bdm["status"] == B.DETACHING:
        effects += (_volume_notice("detach.end", bdm),)
    return Outcome(_with(record, ctx, block_devices=_without_bdm(record, msg.attachment_id)), effects=effects)


@table.on(v.VolumeDetachFromServerFailed, source=STATES)
def volume_detach_failed(
    record: ServerRecord, msg: v.VolumeDetachFromServerFailed, ctx: Context
) -> Outcome[ServerRecord]:
    """The disk stayed: it is still attached, and the volume in-use again."""
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or bdm["status"] != B.DETACHING or record.host is None:
        return Outcome(record)
    still = v.VolumeAttached(
        attachment_id=msg.attachment_id, server_id=record.id, host=record.host, device=bdm["device"]
    )
    return Outcome(
        _with(
            record,
            ctx,
            block_devices=_replace_bdm(record, msg.attachment_id, status=B.ATTACHED),
            fault=_fault(500, f"Detaching volume {msg.volume_id} failed: {msg.reason}", ctx.now),
        ),
        effects=(_volume(bdm, still),),
    )


_BEFORE_SPAWN = BUILDING - {state(V.BUILDING, T.SPAWNING)}


@table.on(v.VolumeReady, source=_BEFORE_SPAWN, to=state(V.BUILDING, T.SPAWNING))
@table.on(v.VolumeReady, source=STATES - _BEFORE_SPAWN)
def volume_ready(record: ServerRecord, msg: v.VolumeReady, ctx: Context) -> Outcome[ServerRecord]:
    """A volume created for this boot is there; the last one lets the spawn go ahead."""
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or bdm["status"] != B.WAITING:
        return Outcome(record)
    new = _with(
        record,
        ctx,
        block_devices=_replace_bdm(
            record, msg.attachment_id, status=B.READY, connection=msgspec.to_builtins(msg.connection)
        ),
    )
    if state_name(new) == state(V.BUILDING, T.BLOCK_DEVICE_MAPPING):
        return _spawn(new, ctx)
    return Outcome(new)


@table.on(v.VolumeFailed, source=BUILDING, to=state(V.ERROR))
@table.on(v.VolumeFailed, source=STATES - BUILDING)
def volume_failed(record: ServerRecord, msg: v.VolumeFailed, ctx: Context) -> Outcome[ServerRecord]:
    """A volume of the boot could not be made: the build fails (Nova's VolumeNotCreated)."""
    bdm = _bdm(record, msg.attachment_id)
    if bdm is None or bdm["status"] != B.WAITING:
        return Outcome(record)
    devices = _replace_bdm(record, msg.attachment_id, status=B.FAILED)
    if state_name(record) not in BUILDING:
        return Outcome(_with(record, ctx, block_devices=devices))
    reason = (
        "Build of instance aborted: " + f"Volume {msg.volume_id} did not finish being created: {msg.reason}"
    )
    return _settle(
        record,
        ctx,
        *_release(record),
        _create_error("BuildAbortException", reason),
        vm_state=V.ERROR,
        host=None,
        node=None,
        block_devices=devices,
        fault=_fault(500, reason, ctx.now),
    )


# --- notifications ------------------------------------------------------------------------------------


def _create_error(exception: str, reason: str) -> Notify:
    return Notify("instance.create.error", ERROR, {"exception": exception, "reason": reason})


def _error_notice(record: ServerRecord, exception: str, reason: str) -> Notify | None:
    """The error notification of whatever the server was doing (None when it was doing nothing
    Nova notifies about)."""
    if record.vm_state == V.BUILDING:
        return _create_error(exception, reason)
    row = BY_TASK.get(record.task_state) if record.task_state is not None else None
    family = _TASK_NOTIFICATIONS.get(record.task_state) if row is None else row.notification
    if family is None:
        return None
    return Notify(f"instance.{family}.error", ERROR, {"exception": exception, "reason": reason})


# The notification families of the tasks that are not power actions.
_TASK_NOTIFICATIONS: dict[TaskState | None, str] = {T.SOFT_DELETING: "soft_delete", T.RESTORING: "restore"}


def _volume_notice(step: str, bdm: dict[str, Any], reason: str = "") -> Notify:
    if step.endswith(".error"):
        return Notify(
            f"instance.volume_{step}",
            ERROR,
            {"volume_id": bdm["volume_id"], "exception": "VolumeAttachFailed", "reason": reason},
        )
    return Notify(f"instance.volume_{step}", extra={"volume_id": bdm["volume_id"]})


def fault_notice(record: ServerRecord) -> Notify | None:
    """The notification a fault sends: the error of whatever the server was doing."""
    return _error_notice(record, "InstanceFault", "")


def legal_actions(record: ServerRecord) -> Iterable[type[Message]]:
    """The requests the server accepts now (what the API may send without a 409)."""
    return [msg for msg in table.messages if table.allows(record, msg)]
