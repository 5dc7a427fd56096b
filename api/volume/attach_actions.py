"""Cinder's attach bookkeeping actions, for a client that attaches a volume itself and tells
Cinder (as Nova does): os-reserve, os-unreserve, os-attach, os-begin_detaching,
os-roll_detaching and os-detach, under POST /volume/v3/{project_id}/volumes/{id}/action.

Each is checked and made in one transaction on the locked row, so the caller learns at once
what happened (Cinder's answers are synchronous too): os-reserve is available -> attaching,
os-unreserve the way back; os-attach writes the attachment (marked `"origin": "os-attach"`) and
sends the volume actor `volume.attached`, which makes it in-use; os-begin_detaching is in-use ->
detaching (`volume.detaching` starts the actor's timer), os-roll_detaching the way back, and
os-detach sends `volume.detached`, which makes it available. A reservation a client never
completes times out as the actor's table says (attaching -> error).

An attachment this cloud's compute service made (a server's os-volume_attachments, a boot
volume) is the compute service's to undo: the server actor holds the disk on its host, so
these actions refuse to detach or roll it, and the client detaches through the compute API.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from api.context import caller, ctx
from api.errors import BadRequest
from api.validate import invalid
from api.volume import validate as check
from api.volume import volumes
from protocol import volume as v
from protocol.states import AttachStatus, VolumeStatus

ORIGIN = "os-attach"  # the attachment's "origin" when a client made it through os-attach
_MODES = ("rw", "ro")


def _refused(action: str, reason: str) -> BadRequest:
    """What Cinder's API answers when the volume manager refuses (InvalidVolume over RPC)."""
    return BadRequest(f"Error {action} volume - InvalidVolume: Invalid volume: {reason}")


def _clients(row: asyncpg.Record) -> bool:
    """Whether the volume's attachment is a client's (os-attach), not the compute service's."""
    attachment = row["attachment"]
    return attachment is not None and attachment.get("origin") == ORIGIN


def _compute_owned(row: asyncpg.Record) -> str:
    attachment = row["attachment"]
    return (
        f"Volume {row['id']} is attached to server {attachment.get('server_id')} by the compute "
        f"service; detach it there (DELETE /servers/{attachment.get('server_id')}/"
        f"os-volume_attachments/{row['id']})."
    )


async def _set(conn: Any, volume_id: str, status: str, **columns: Any) -> None:
    """Write the lifecycle columns on the locked row, bumping `version` (the actor's copy reloads)."""
    names = ["status", *columns]
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
    await conn.execute(
        f"UPDATE volumes SET {assignments}, version = version + 1, updated_at = now() WHERE id = $1",
        volume_id,
        status,
        *columns.values(),
    )


async def reserve(request: web.Request, args: dict[str, Any]) -> web.Response:
    """Cinder's reserve_volume: available -> attaching, or 400 (a second reserve included)."""
    me = caller(request)
    me.require_writer("volume_extension:volume_actions:reserve")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        if row["status"] != VolumeStatus.AVAILABLE or row["attachment"] is not None:
            raise BadRequest(
                f"Invalid volume: Volume status must be available to reserve, but the status is "
                f"{row['status']}."
            )
        await _set(conn, row["id"], VolumeStatus.ATTACHING)
        await volumes.send(request, conn, row["id"], v.VolumeAttaching())
    return web.Response(status=202)


async def unreserve(request: web.Request, args: dict[str, Any]) -> web.Response:
    """Cinder's unreserve_volume: attaching (reserved, not attached) -> available; a volume in
    another status is left as it is, and the answer is 202 all the same (Cinder's)."""
    me = caller(request)
    me.require_writer("volume_extension:volume_actions:unreserve")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        if row["status"] == VolumeStatus.ATTACHING and row["attachment"] is None:
            await _set(conn, row["id"], VolumeStatus.AVAILABLE)
    return web.Response(status=202)


def _attach_args(args: dict[str, Any]) -> tuple[str | None, str | None, str, str]:
    """Cinder's schema of os-attach: (instance_uuid, host_name, mountpoint, mode)."""
    check.only("os-attach", args, {"instance_uuid", "host_name", "mountpoint", "mode"})
    if "mountpoint" not in args:
        raise invalid("os-attach", args, "'mountpoint' is a required property")
    if "instance_uuid" not in args and "host_name" not in args:
        raise invalid("os-attach", args, f"{args!r} is not valid under any of the given schemas")
    instance = args.get("instance_uuid")
    if instance is not None:
        try:
            uuid.UUID(str(instance))
        except ValueError:
            raise invalid("instance_uuid", instance, f"{instance!r} is not a 'uuid'") from None
    host_name = check.text(args, "host_name")
    mountpoint = args["mountpoint"]
    if not isinstance(mountpoint, str):
        raise invalid("mountpoint", mountpoint, f"{mountpoint!r} is not of type 'string'")
    if not 1 <= len(mountpoint) <= 255:
        raise invalid("mountpoint", mountpoint, f"{mountpoint!r} should be 1 to 255 characters long")
    mode = args.get("mode", "rw")
    if mode not in _MODES:
        raise invalid("mode", mode, f"{mode!r} is not one of {list(_MODES)}")
    return instance, host_name, mountpoint, mode


def _tracked_already(row: asyncpg.Record, instance: str | None, host_name: str | None, mode: str) -> bool:
    """Whether this attach is recorded already (Cinder answers it again with 202); 400 when the
    volume cannot be attached as asked."""
    if row["metadata"].get("readonly") == "True" and mode != "ro":
        raise BadRequest(f"Invalid attaching mode '{mode}' for volume {row['id']}.")
    attachment = row["attachment"]
    if _clients(row) and (attachment.get("server_id"), attachment.get("host")) == (instance, host_name or ""):
        return True
    if attachment is not None or row["status"] == VolumeStatus.IN_USE:
        raise _refused("attaching", "volume is already attached and multiple attachments are not enabled")
    if row["status"] not in (VolumeStatus.AVAILABLE, VolumeStatus.ATTACHING) or not row["provider_location"]:
        reason = f"Volume status must be available or attaching, but the status is {row['status']}."
        raise _refused("attaching", reason)
    return False


async def attach(request: web.Request, args: dict[str, Any]) -> web.Response:
    """Cinder's attach: record that the client attached the volume to `instance_uuid` (or to
    the host `host_name`) at `mountpoint`; the volume actor makes it in-use."""
    me = caller(request)
    me.require_writer("volume_extension:volume_actions:attach")
    instance, host_name, mountpoint, mode = _attach_args(args)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        if _tracked_already(row, instance, host_name, mode):
            return web.Response(status=202)
        attachment = {
            "id": str(uuid.uuid4()),
            "server_id": instance,
            "host": host_name or "",
            "device": mountpoint,
            "mode": mode,
            "delete_on_termination": False,
            "origin": ORIGIN,
        }
        await _set(conn, row["id"], VolumeStatus.ATTACHING, attachment=attachment)
        done = v.VolumeAttached(
            attachment_id=attachment["id"], server_id=instance or "", host=host_name or "", device=mountpoint
        )
        await volumes.send(request, conn, row["id"], done)
    return web.Response(status=202)


async def begin_detaching(request: web.Request, args: dict[str, Any]) -> web.Response:
    """Cinder's begin_detaching: in-use (attached) -> detaching, or 400."""
    me = caller(request)
    me.require_writer("volume_extension:volume_actions:begin_detaching")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        if row["status"] != VolumeStatus.IN_USE or row["attach_status"] != AttachStatus.ATTACHED:
            raise BadRequest(
                "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and "
                "attach_status must be 'attached' to detach."
            )
        if not _clients(row):
            raise BadRequest(f"Invalid volume: {_compute_owned(row)}")
        attachment = row["attachment"]
        await _set(conn, row["id"], VolumeStatus.DETACHING)
        await volumes.send(
            request,
            conn,
            row["id"],
            v.VolumeDetaching(attachment_id=attachment["id"], server_id=attachment.get("server_id") or ""),
        )
    return web.Response(status=202)


async def roll_detaching(request: web.Request, args: dict[str, Any]) -> web.Response:
    """Cinder's roll_detaching: detaching -> in-use (still attached); any other status is left
    as it is, 202 all the same."""
    me = caller(request)
    me.require_writer("volume_extension:volume_actions:roll_detaching")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        if row["status"] != VolumeStatus.DETACHING:
            return web.Response(status=202)
        if not _clients(row):
            raise BadRequest(f"Invalid volume: {_compute_owned(row)}")
        await _set(conn, row["id"], VolumeStatus.IN_USE, attach_status=AttachStatus.ATTACHED)
    return web.Response(status=202)


async def detach(request: web.Request, args: dict[str, Any]) -> web.Response:
    """Cinder's detach: the client took the volume off; the volume actor makes it available. An
    unattached volume is left as it is (202, as Cinder)."""
    me = caller(request)
    me.require_writer("volume_extension:volume_actions:detach")
    check.only("os-detach", args, {"attachment_id"})
    wanted = args.get("attachment_id")
    if wanted is not None and not isinstance(wanted, str):
        raise invalid("attachment_id", wanted, f"{wanted!r} is not of type 'string', 'null'")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        attachment = row["attachment"]
        if attachment is None:
            return web.Response(status=202)
        if wanted and wanted != attachment["id"]:
            raise BadRequest(
                "Error detaching volume - VolumeAttachmentNotFound: Volume attachment could not be "
                f"found with filter: attachment_id = {wanted}."
            )
        if not _clients(row):
            raise _refused("detaching", _compute_owned(row))
        await _set(conn, row["id"], VolumeStatus.DETACHING)
        await volumes.send(request, conn, row["id"], v.VolumeDetached(attachment_id=attachment["id"]))
    return web.Response(status=202)


ACTIONS = {
    "os-reserve": reserve,
    "os-unreserve": unreserve,
    "os-attach": attach,
    "os-begin_detaching": begin_detaching,
    "os-roll_detaching": roll_detaching,
    "os-detach": detach,
}
# Actions whose body Cinder ignores ({"os-reserve": null} or {"os-reserve": {}}); os-detach's
# may be null too.
WITHOUT_ARGUMENTS = frozenset({"os-reserve", "os-unreserve", "os-begin_detaching", "os-roll_detaching"})
