"""The volume actor: a Cinder volume's lifecycle as a transition table.

Cinder's statuses: creating -> available; reserved -> in-use (attach); detaching -> available;
deleting (then the row is gone); extending -> available; error, error_deleting and
error_extending when the backend fails. The API creates the row (`creating`, its backend chosen)
and makes the transitions whose outcome the caller must learn at once as guarded updates of the
row — available -> reserved for an attach or a boot, in-use -> detaching for a detach,
available -> extending for an extension, and Cinder's attach bookkeeping for a client that
attaches the volume itself (os-reserve: available -> attaching) — then tells the actor
(`volume.reserved`, `volume.detaching`, `volume.extend`, `volume.attaching`) so that it keeps
the watch or does the work. Everything else is the actor's, on messages from its storage agent
and from the server it is attached to (or, for such a client, from the API on its behalf:
`volume.attached` and `volume.detached` for os-attach and os-detach).

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

from actors.table import (
    ABSENT,
    NO_TIMEOUT,
    Context,
    Effect,
    Fault,
    Notify,
    Outcome,
    Refused,
    Send,
    TransitionTable,
)
from protocol import Target
from protocol import volume as v
from protocol.actor import StateTimeout
from protocol.notifications import ERROR
from protocol.states import AttachStatus as A
from protocol.states import VolumeStatus as S

STATES = frozenset(S)
# How long each transitional status may last (seconds), and the status it times out to.
TIMEOUTS = {
    S.CREATING: 900.0,
    S.EXTENDING: 600.0,
    S.DELETING: 600.0,
    S.RESERVED: 600.0,
    S.ATTACHING: 600.0,
    S.DETACHING: 600.0,
}
TIMED_OUT = {
    S.CREATING: S.ERROR,
    S.EXTENDING: S.ERROR_EXTENDING,
    S.DELETING: S.ERROR_DELETING,
    S.RESERVED: S.ERROR,
    S.ATTACHING: S.ERROR,
    S.DETACHING: S.ERROR,
}
DELETABLE = frozenset({S.AVAILABLE, S.ERROR, S.ERROR_EXTENDING, S.ERROR_DELETING})
# The statuses of a volume that is (being) attached: a detach makes it available again.
_ATTACHED = frozenset({S.RESERVED, S.ATTACHING, S.IN_USE, S.DETACHING})


class VolumeRecord(msgspec.Struct, kw_only=True):
    """The columns of `volumes` the actor reads or owns (the API owns name, metadata…)."""

    id: str
    version: int = 0
    project_id: str
    size: int
    status: S = S.CREATING
    attach_status: A = A.DETACHED
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


def _to(
    record: VolumeRecord, ctx: Context, status: S, *effects: Effect, **changes: Any
) -> Outcome[VolumeRecord]:
    """Move to `status` (the table sets or cancels the status's timeout)."""
    return Outcome(_with(record, ctx, status=status, **changes), effects=effects)


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


def _on_fault(record: VolumeRecord, fault: Fault, now: float) -> VolumeRecord:
    return msgspec.structs.replace(record, status=S.ERROR, fault=fault.reason)


table = TransitionTable(
    "volume",
    VolumeRecord,
    states=STATES,
    error_state=S.ERROR,
    state_of=lambda r: r.status,
    on_fault=_on_fault,
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


@table.on(v.CreateVolume, source=S.CREATING, to=S.ERROR)
def create(record: VolumeRecord, msg: v.CreateVolume, ctx: Context) -> Outcome[VolumeRecord]:
    """The API created the row (creating, its backend chosen); the actor asks the backend."""
    if record.backend is None:
        reason = "No valid backend was found. No weighed backends available"
        return _to(record, ctx, S.ERROR, *_failed_boot(record, reason), _create_error(reason), fault=reason)
    request = v.CreateVolumeOnBackend(
        volume_id=record.id, size=record.size, image_id=record.image_id, format=record.format
    )
    return Outcome(
        _with(record, ctx),
        effects=(Send(_backend(record), request), Notify("volume.create.start")),
        reenter=True,
    )


@table.on(v.VolumeCreated, source=S.CREATING, to={S.AVAILABLE, S.RESERVED})
def created(record: VolumeRecord, msg: v.VolumeCreated, ctx: Context) -> Outcome[VolumeRecord]:
    new = _with(record, ctx, backend=msg.backend, provider_location=msg.provider_location, fault=None)
    server = _boot_server(record)
    if server is None:
        return _to(new, ctx, S.AVAILABLE, Notify("volume.create.end"))
    ready = v.VolumeReady(attachment_id=str(_attachment_id(record)), connection=connection(new))
    # Reserved for the server whose boot made it: that server's own build timeouts bound the wait,
    # and a reservation that timed out to error would stay error after the server is deleted.
    return Outcome(
        _with(new, ctx, status=S.RESERVED),
        effects=(Send(Target("server", server), ready), Notify("volume.create.end")),
        timeout=NO_TIMEOUT,
    )


@table.on(v.VolumeCreateFailed, source=S.CREATING, to=S.ERROR)
def create_failed(record: VolumeRecord, msg: v.VolumeCreateFailed, ctx: Context) -> Outcome[VolumeRecord]:
    return _to(
        record, ctx, S.ERROR, *_failed_boot(record, msg.reason), _create_error(msg.reason), fault=msg.reason
    )


# --- delete ------------------------------------------------------------------------------------------


def _delete(record: VolumeRecord, ctx: Context) -> Outcome[VolumeRecord]:
    if record.backend is None or record.provider_location is None:  # nothing exists on a backend
        return Outcome(
            None, effects=(Notify("volume.delete.start"), Notify("volume.delete.end")), delete=True
        )
    request = v.DeleteVolumeOnBackend(volume_id=record.id, provider_location=record.provider_location)
    return _to(
        record,
        ctx,
        S.DELETING,
        Send(_backend(record), request),
        Notify("volume.delete.start"),
        attachment=None,
        attach_status=A.DETACHED,
    )


@table.on(v.DeleteVolume, source=DELETABLE, to={S.DELETING, ABSENT})
def delete(record: VolumeRecord, msg: v.DeleteVolume, ctx: Context) -> Outcome[VolumeRecord]:
    if record.attachment is not None:
        raise Refused(f"Volume {record.id} is attached to server {record.attachment['server_id']}.")
    return _delete(record, ctx)


@table.on(v.DeleteVolume, source=S.DELETING)
def delete_again(record: VolumeRecord, msg: v.DeleteVolume, ctx: Context) -> Outcome[VolumeRecord]:
    return Outcome(record)


@table.on(v.VolumeDeleted, source={S.DELETING, S.ERROR_DELETING}, to=ABSENT)
def deleted(record: VolumeRecord, msg: v.VolumeDeleted, ctx: Context) -> Outcome[VolumeRecord]:
    return Outcome(None, effects=(Notify("volume.delete.end"),), delete=True)


@table.on(v.VolumeDeleteFailed, source=S.DELETING, to=S.ERROR_DELETING)
def delete_failed(record: VolumeRecord, msg: v.VolumeDeleteFailed, ctx: Context) -> Outcome[VolumeRecord]:
    return _to(record, ctx, S.ERROR_DELETING, fault=msg.reason)


# --- extend ------------------------------------------------------------------------------------------


def _cannot_extend(record: VolumeRecord, new_size: int) -> str | None:
    if new_size <= record.size:
        return (
            f"New size for extend must be greater than current size. (current: {record.size}, "
            f"extended: {new_size})."
        )
    if record.backend is None or record.provider_location is None:
        # Never created on a backend (an admin reset an errored create to available): there is
        # nothing to grow, and the agent could not be asked.
        return f"Volume {record.id} has no storage on a backend; it cannot be extended."
    return None


@table.on(v.ExtendVolume, source={S.AVAILABLE, S.EXTENDING}, to={S.EXTENDING, S.AVAILABLE})
def extend(record: VolumeRecord, msg: v.ExtendVolume, ctx: Context) -> Outcome[VolumeRecord]:
    """The API moved the volume available -> extending (target_size set) in the request's
    transaction, so that the caller sees `extending` at once (Cinder's API does so); the actor
    asks the backend and starts the timer. (In available: a request of an API that left the
    transition to the actor.)"""
    if record.status == S.EXTENDING and record.target_size != msg.new_size:
        return Outcome(record)  # not the extension this message asked for
    problem = _cannot_extend(record, msg.new_size)
    if problem is not None:
        # The API refuses both itself; should one get here, an extension the API began ends.
        if record.status == S.AVAILABLE:
            raise Refused(problem)
        return _to(record, ctx, S.AVAILABLE, target_size=None, fault=problem)
    assert record.provider_location is not None  # _cannot_extend says so
    request = v.ExtendVolumeOnBackend(
        volume_id=record.id, new_size=msg.new_size, provider_location=record.provider_location
    )
    return Outcome(
        _with(record, ctx, status=S.EXTENDING, target_size=msg.new_size),
        effects=(Send(_backend(record), request), Notify("volume.resize.start")),
        reenter=True,
    )


@table.on(v.VolumeExtended, source=S.EXTENDING, to=S.AVAILABLE)
def extended(record: VolumeRecord, msg: v.VolumeExtended, ctx: Context) -> Outcome[VolumeRecord]:
    return _to(
        record, ctx, S.AVAILABLE, Notify("volume.resize.end"), size=msg.size, target_size=None, fault=None
    )


@table.on(v.VolumeExtendFailed, source=S.EXTENDING, to=S.ERROR_EXTENDING)
def extend_failed(record: VolumeRecord, msg: v.VolumeExtendFailed, ctx: Context) -> Outcome[VolumeRecord]:
    return _to(record, ctx, S.ERROR_EXTENDING, target_size=None, fault=msg.reason)


# --- attach and detach -------------------------------------------------------------------------------


@table.on(v.VolumeReserved, source=S.RESERVED)
def reserved(record: VolumeRecord, msg: v.VolumeReserved, ctx: Context) -> Outcome[VolumeRecord]:
    """The API reserved the volume (the row says so already): start the reservation's timeout."""
    if _attachment_id(record) != msg.attachment_id:
        return Outcome(record)  # reserved again for another attachment since
    return Outcome(_with(record, ctx), reenter=True)


# It moved on before the message arrived (attached, failed, reset): nothing to watch.
table.ignore(v.VolumeReserved, in_=STATES - {S.RESERVED})


@table.on(v.VolumeAttaching, source=S.ATTACHING)
def attaching(record: VolumeRecord, msg: v.VolumeAttaching, ctx: Context) -> Outcome[VolumeRecord]:
    """A client reserved the volume (os-reserve; the row says attaching already): start the
    reservation's timeout, unless its os-attach came first."""
    if record.attachment is not None:
        return Outcome(record)
    return Outcome(_with(record, ctx), reenter=True)


# Unreserved, attached or reset before the message arrived: nothing to watch.
table.ignore(v.VolumeAttaching, in_=STATES - {S.ATTACHING})


@table.on(v.VolumeAttached, source=STATES, to=S.IN_USE)
def attached(record: VolumeRecord, msg: v.VolumeAttached, ctx: Context) -> Outcome[VolumeRecord]:
    """The server's host has the disk: in-use. Also after a failed detach (the disk stayed), and
    after a reservation that timed out meanwhile, when nothing else took the volume: what the
    host reports is what is."""
    mine = _attachment_id(record) == msg.attachment_id
    if not mine and not (record.attachment is None and record.status in (S.AVAILABLE, S.ERROR)):
        return Outcome(record)  # attached to something else since: not ours to change
    attachment = dict(
        record.attachment
        or {
            "id": msg.attachment_id,
            "server_id": msg.server_id,
            "mode": "rw",
            "delete_on_termination": False,
        }
    )
    attachment.update(
        host=msg.host,
        device=msg.device,
        attached_at=attachment.get("attached_at")
        or datetime.datetime.fromtimestamp(ctx.now, datetime.UTC).isoformat(),
    )
    notice = () if record.status == S.IN_USE else (Notify("volume.attach.end"),)
    return _to(record, ctx, S.IN_USE, *notice, attach_status=A.ATTACHED, attachment=attachment, fault=None)


@table.on(v.VolumeAttachFailed, source=STATES, to=S.AVAILABLE)
def attach_failed(record: VolumeRecord, msg: v.VolumeAttachFailed, ctx: Context) -> Outcome[VolumeRecord]:
    if _attachment_id(record) != msg.attachment_id or record.status not in (S.RESERVED, S.ATTACHING, S.ERROR):
        return Outcome(record)
    return _to(record, ctx, S.AVAILABLE, attach_status=A.DETACHED, attachment=None)


@table.on(v.VolumeDetaching, source=S.DETACHING)
def detaching(record: VolumeRecord, msg: v.VolumeDetaching, ctx: Context) -> Outcome[VolumeRecord]:
    """The API moved the volume in-use -> detaching: start the detach's timeout."""
    if _attachment_id(record) != msg.attachment_id:
        return Outcome(record)
    return Outcome(_with(record, ctx, attach_status=A.DETACHING), reenter=True)


table.ignore(v.VolumeDetaching, in_=STATES - {S.DETACHING})


@table.on(v.VolumeDetached, source=STATES, to={S.AVAILABLE, S.DELETING, ABSENT})
def detached(record: VolumeRecord, msg: v.VolumeDetached, ctx: Context) -> Outcome[VolumeRecord]:
    """No longer on its server: available again (an error stays an error), or deleted with it.
    A boot volume still being created when its server went away stays creating, with its
    create timeout, so that a lost backend reply cannot leave it creating."""
    if _attachment_id(record) != msg.attachment_id:
        return Outcome(record)
    free = _with(record, ctx, attachment=None, attach_status=A.DETACHED)
    if record.status in _ATTACHED:
        free = msgspec.structs.replace(free, status=S.AVAILABLE)
    notice = (Notify("volume.detach.end"),) if record.attach_status in (A.ATTACHED, A.DETACHING) else ()
    if msg.delete and free.status in DELETABLE:
        outcome = _delete(free, ctx)
        return Outcome(outcome.record, effects=(*notice, *outcome.effects), delete=outcome.delete)
    return Outcome(free, effects=notice)


# --- admin reset and timeouts ---------------------------------------------------------------------------


@table.on(v.ResetVolumeState, source=STATES, to=STATES)
def reset_state(record: VolumeRecord, msg: v.ResetVolumeState, ctx: Context) -> Outcome[VolumeRecord]:
    """Cinder's os-reset_status: the admin sets any status (the one row from any status to any
    status, by design). The volume enters it afresh: a transitional one gets its timeout again."""
    changes: dict[str, Any] = {}
    if msg.attach_status == A.DETACHED:
        changes.update(attach_status=A.DETACHED, attachment=None)
    elif msg.attach_status is not None:
        changes.update(attach_status=msg.attach_status)
    return Outcome(_with(record, ctx, status=msg.status, **changes), reenter=True)


def _timed_out(record: VolumeRecord, msg: StateTimeout, ctx: Context) -> Outcome[VolumeRecord]:
    reason = f"Timed out while the volume was {record.status}."
    effects: tuple[Effect, ...] = ()
    if record.status == S.CREATING:
        effects = (*_failed_boot(record, reason), _create_error(reason))
    return _to(record, ctx, TIMED_OUT[record.status], *effects, fault=reason)


for _status, _after in TIMEOUTS.items():
    table.timeout(_status, after=_after, to=TIMED_OUT[_status])(_timed_out)


def _create_error(reason: str) -> Notify:
    return Notify("volume.create.error", ERROR, {"reason": reason})
