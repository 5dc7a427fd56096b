"""The volume actor: a Cinder volume's lifecycle as a transition table.

Cinder's statuses: creating -> available; reserved -> in-use (attach); detaching -> available;
deleting (then the row is gone); extending -> available; error, error_deleting and
error_extending when the backend fails. The API creates the row (`creating`, its backend chosen)
and makes the two transitions whose winner the caller must learn at once — available -> reserved
for an attach or a boot, in-use -> detaching for a detach — as guarded updates of the row, then
tells the actor (`volume.reserved`, `volume.detaching`) so that it keeps the watch. Everything
else is the actor's, on messages from its storage agent and from the server it is attached to.

Every transitional status has a timer: a volume that stays creating, extending, deleting,
reserved, attaching or detaching too long goes to error (error_deleting, error_extending) with
the reason, from where an admin's reset (`openstack volume set --state`) or a delete leads on.
A volume has at most one attachment (no multiattach), kept in its row: `attachment` is
{"id", "server_id", "device", "host", "mode", "delete_on_termination", "attached_at"}.
"""

from __future__ import annotations

import datetime
from typing import Any

import msgspec

from actors import notices
from actors.kind import ActorKind
from actors.table import CancelTimer, Context, Notify, Outcome, Refused, Send, SetTimer, TransitionTable
from protocol import Target
from protocol import volume as v
from protocol.notifications import ERROR

STATES = {
    "creating",
    "available",
    "reserved",
    "attaching",
    "in-use",
    "detaching",
    "deleting",
    "error",
    "error_deleting",
    "extending",
    "error_extending",
}
TIMEOUTS = {
    "creating": 900.0,
    "extending": 600.0,
    "deleting": 600.0,
    "reserved": 600.0,
    "attaching": 600.0,
    "detaching": 600.0,
}
# What a transitional status times out to.
TIMED_OUT = {
    "creating": "error",
    "extending": "error_extending",
    "deleting": "error_deleting",
    "reserved": "error",
    "attaching": "error",
    "detaching": "error",
}
DELETABLE = {"available", "error", "error_extending", "error_deleting"}


class VolumeRecord(msgspec.Struct, kw_only=True):
    """The columns of `volumes` the actor reads or owns (the API owns name, metadata…)."""

    id: str
    version: int = 0
    project_id: str
    size: int
    status: str = "creating"
    attach_status: str = "detached"
    attachment: dict[str, Any] | None = None
    image_id: str | None = None
    backend: str | None = None
    provider_location: str | None = None
    format: str = "qcow2"
    target_size: int | None = None
    fault: str | None = None
    updated_at: datetime.datetime | None = None


def _with(record: VolumeRecord, ctx: Context, **changes: Any) -> VolumeRecord:
    return msgspec.structs.replace(
        record, updated_at=datetime.datetime.fromtimestamp(ctx.now, datetime.UTC), **changes
    )


def _begin(
    record: VolumeRecord, ctx: Context, status: str, *effects: Any, **changes: Any
) -> Outcome[VolumeRecord]:
    timer = SetTimer("task", TIMEOUTS[status], v.VolumeTimeout(status=status))
    return Outcome(_with(record, ctx, status=status, **changes), effects=(*effects, timer))


def _settle(
    record: VolumeRecord, ctx: Context, status: str, *effects: Any, **changes: Any
) -> Outcome[VolumeRecord]:
    return Outcome(_with(record, ctx, status=status, **changes), effects=(*effects, CancelTimer("task")))


def _backend(record: VolumeRecord) -> Target:
    assert record.backend is not None
    return Target("agent", record.backend)


def connection(record: VolumeRecord) -> v.VolumeConnection:
    assert record.provider_location is not None
    return v.VolumeConnection(
        volume_id=record.id, driver="file", path=record.provider_location, format=record.format
    )


def _boot_server(record: VolumeRecord) -> str | None:
    """The server this volume is reserved for at its boot (created for it, or given to it)."""
    return None if record.attachment is None else str(record.attachment["server_id"])


def _attachment_id(record: VolumeRecord) -> str | None:
    return None if record.attachment is None else str(record.attachment["id"])


table = TransitionTable(
    "volume",
    VolumeRecord,
    states=STATES,
    error_state="error",
    state_of=lambda r: r.status,
    on_fault=lambda r, f: msgspec.structs.replace(r, status="error", fault=f.reason),
)


# --- create ------------------------------------------------------------------------------------------


def _failed_boot(record: VolumeRecord, reason: str) -> tuple[Send, ...]:
    server = _boot_server(record)
    if server is None:
        return ()
    return (
        Send(
            Target("server", server),
            v.VolumeFailed(attachment_id=str(_attachment_id(record)), volume_id=record.id, reason=reason),
        ),
    )


@table.on(v.CreateVolume, source="creating", to={"creating", "error"})
def create(record: VolumeRecord, msg: v.CreateVolume, ctx: Context) -> Outcome[VolumeRecord]:
    if record.backend is None:
        reason = "No valid backend was found. No weighed backends available"
        return _settle(
            record, ctx, "error", *_failed_boot(record, reason), _create_error(reason), fault=reason
        )
    request = v.CreateVolumeOnBackend(
        volume_id=record.id, size=record.size, image_id=record.image_id, format=record.format
    )
    return _begin(record, ctx, "creating", Send(_backend(record), request), Notify("volume.create.start"))


@table.on(v.VolumeCreated, source="creating", to={"available", "reserved"})
def created(record: VolumeRecord, msg: v.VolumeCreated, ctx: Context) -> Outcome[VolumeRecord]:
    new = _with(record, ctx, backend=msg.backend, provider_location=msg.provider_location, fault=None)
    server = _boot_server(record)
    if server is None:
        return _settle(new, ctx, "available", Notify("volume.create.end"))
    ready = v.VolumeReady(attachment_id=str(_attachment_id(record)), connection=connection(new))
    return _settle(new, ctx, "reserved", Send(Target("server", server), ready), Notify("volume.create.end"))


@table.on(v.VolumeCreateFailed, source="creating", to="error")
def create_failed(record: VolumeRecord, msg: v.VolumeCreateFailed, ctx: Context) -> Outcome[VolumeRecord]:
    return _settle(
        record, ctx, "error", *_failed_boot(record, msg.reason), _create_error(msg.reason), fault=msg.reason
    )


# --- delete ------------------------------------------------------------------------------------------


def _delete(record: VolumeRecord, ctx: Context) -> Outcome[VolumeRecord]:
    if record.backend is None or record.provider_location is None:  # nothing exists on a backend
        return Outcome(
            None,
            effects=(CancelTimer("task"), Notify("volume.delete.start"), Notify("volume.delete.end")),
            delete=True,
        )
    request = v.DeleteVolumeOnBackend(volume_id=record.id, provider_location=record.provider_location)
    return _begin(
        record,
        ctx,
        "deleting",
        Send(_backend(record), request),
        Notify("volume.delete.start"),
        attachment=None,
        attach_status="detached",
    )


@table.on(v.DeleteVolume, source=DELETABLE, to="deleting")
def delete(record: VolumeRecord, msg: v.DeleteVolume, ctx: Context) -> Outcome[VolumeRecord]:
    if record.attachment is not None:
        raise Refused(f"Volume {record.id} is attached to server {record.attachment['server_id']}.")
    return _delete(record, ctx)


@table.on(v.DeleteVolume, source="deleting", to="deleting")
def delete_again(record: VolumeRecord, msg: v.DeleteVolume, ctx: Context) -> Outcome[VolumeRecord]:
    return Outcome(record)


@table.on(v.VolumeDeleted, source={"deleting", "error_deleting"}, to="deleting")
def deleted(record: VolumeRecord, msg: v.VolumeDeleted, ctx: Context) -> Outcome[VolumeRecord]:
    return Outcome(None, effects=(CancelTimer("task"), Notify("volume.delete.end")), delete=True)


@table.on(v.VolumeDeleteFailed, source="deleting", to="error_deleting")
def delete_failed(record: VolumeRecord, msg: v.VolumeDeleteFailed, ctx: Context) -> Outcome[VolumeRecord]:
    return _settle(record, ctx, "error_deleting", fault=msg.reason)


# --- extend ------------------------------------------------------------------------------------------


@table.on(v.ExtendVolume, source="available", to="extending")
def extend(record: VolumeRecord, msg: v.ExtendVolume, ctx: Context) -> Outcome[VolumeRecord]:
    if msg.new_size <= record.size:
        raise Refused(
            f"New size for extend must be greater than current size. (current: {record.size}, "
            f"extended: {msg.new_size})."
        )
    if record.backend is None or record.provider_location is None:
        # Never created on a backend (an admin reset an errored create to available): there is
        # nothing to grow, and the agent could not be asked.
        raise Refused(f"Volume {record.id} has no storage on a backend; it cannot be extended.")
    request = v.ExtendVolumeOnBackend(
        volume_id=record.id, new_size=msg.new_size, provider_location=record.provider_location
    )
    return _begin(
        record,
        ctx,
        "extending",
        Send(_backend(record), request),
        Notify("volume.resize.start"),
        target_size=msg.new_size,
    )


@table.on(v.VolumeExtended, source="extending", to="available")
def extended(record: VolumeRecord, msg: v.VolumeExtended, ctx: Context) -> Outcome[VolumeRecord]:
    return _settle(
        record, ctx, "available", Notify("volume.resize.end"), size=msg.size, target_size=None, fault=None
    )


@table.on(v.VolumeExtendFailed, source="extending", to="error_extending")
def extend_failed(record: VolumeRecord, msg: v.VolumeExtendFailed, ctx: Context) -> Outcome[VolumeRecord]:
    return _settle(record, ctx, "error_extending", target_size=None, fault=msg.reason)


# --- attach and detach -------------------------------------------------------------------------------


@table.on(v.VolumeReserved, source=STATES, to=STATES)
def reserved(record: VolumeRecord, msg: v.VolumeReserved, ctx: Context) -> Outcome[VolumeRecord]:
    """The API reserved the volume (the row says so already): watch the reservation."""
    if record.status != "reserved" or _attachment_id(record) != msg.attachment_id:
        return Outcome(record)  # it moved on already (attached, failed, reset)
    return _begin(record, ctx, "reserved")


@table.on(v.VolumeAttached, source=STATES, to=STATES)
def attached(record: VolumeRecord, msg: v.VolumeAttached, ctx: Context) -> Outcome[VolumeRecord]:
    """The server's host has the disk: in-use. Also after a failed detach (the disk stayed), and
    after a reservation that timed out meanwhile, when nothing else took the volume: what the
    host reports is what is."""
    mine = _attachment_id(record) == msg.attachment_id
    if not mine and not (record.attachment is None and record.status in ("available", "error")):
        return Outcome(record)  # attached to something else since: not ours to change
    attachment = dict(
        record.attachment
        or {"id": msg.attachment_id, "server_id": msg.server_id, "mode": "rw", "delete_on_termination": False}
    )
    attachment.update(
        host=msg.host,
        device=msg.device,
        attached_at=attachment.get("attached_at")
        or datetime.datetime.fromtimestamp(ctx.now, datetime.UTC).isoformat(),
    )
    notice = () if record.status == "in-use" else (Notify("volume.attach.end"),)
    return _settle(
        record, ctx, "in-use", *notice, attach_status="attached", attachment=attachment, fault=None
    )


@table.on(v.VolumeAttachFailed, source=STATES, to=STATES)
def attach_failed(record: VolumeRecord, msg: v.VolumeAttachFailed, ctx: Context) -> Outcome[VolumeRecord]:
    if _attachment_id(record) != msg.attachment_id or record.status not in ("reserved", "attaching", "error"):
        return Outcome(record)
    return _settle(record, ctx, "available", attach_status="detached", attachment=None)


@table.on(v.VolumeDetaching, source=STATES, to=STATES)
def detaching(record: VolumeRecord, msg: v.VolumeDetaching, ctx: Context) -> Outcome[VolumeRecord]:
    if record.status != "detaching" or _attachment_id(record) != msg.attachment_id:
        return Outcome(record)
    return _begin(record, ctx, "detaching", attach_status="detaching")


@table.on(v.VolumeDetached, source=STATES, to=STATES)
def detached(record: VolumeRecord, msg: v.VolumeDetached, ctx: Context) -> Outcome[VolumeRecord]:
    """No longer on its server: available again (an error stays an error), or deleted with it."""
    if _attachment_id(record) != msg.attachment_id:
        return Outcome(record)
    free = _with(record, ctx, attachment=None, attach_status="detached")
    if record.status in ("reserved", "attaching", "in-use", "detaching"):
        free = msgspec.structs.replace(free, status="available")
    notice = (Notify("volume.detach.end"),) if record.attach_status in ("attached", "detaching") else ()
    if msg.delete and free.status in DELETABLE:
        outcome = _delete(free, ctx)
        return Outcome(outcome.record, effects=(*notice, *outcome.effects), delete=outcome.delete)
    # Only the attachment's own timers end here: a boot volume still being created when its
    # server went away keeps its create timer, or a lost backend reply would leave it creating.
    cancel = (CancelTimer("task"),) if record.status in ("reserved", "attaching", "detaching") else ()
    return Outcome(free, effects=(*cancel, *notice))


# --- admin reset and timers -----------------------------------------------------------------------------


@table.on(v.ResetVolumeState, source=STATES, to=STATES)
def reset_state(record: VolumeRecord, msg: v.ResetVolumeState, ctx: Context) -> Outcome[VolumeRecord]:
    if msg.status not in STATES:
        raise Refused(f"Invalid status {msg.status!r}")
    changes: dict[str, Any] = {}
    if msg.attach_status == "detached":
        changes.update(attach_status="detached", attachment=None)
    elif msg.attach_status is not None:
        changes.update(attach_status=msg.attach_status)
    return _settle(record, ctx, msg.status, **changes)


@table.on(v.VolumeTimeout, source=STATES, to=STATES)
def timeout(record: VolumeRecord, msg: v.VolumeTimeout, ctx: Context) -> Outcome[VolumeRecord]:
    if record.status != msg.status or msg.status not in TIMED_OUT:
        return Outcome(record)  # it finished in time: a stale timer
    reason = f"Timed out while the volume was {msg.status}."
    effects = (*_failed_boot(record, reason), _create_error(reason)) if msg.status == "creating" else ()
    return _settle(record, ctx, TIMED_OUT[msg.status], *effects, fault=reason)


def _create_error(reason: str) -> Notify:
    return Notify("volume.create.error", ERROR, {"reason": reason})


KIND = ActorKind(table, "volumes", project_field="project_id", notifier=notices.volume)
