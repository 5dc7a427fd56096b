"""POST /volume/v3/{project_id}/volumes/{id}/action: Cinder's volume actions.

os-extend (`openstack volume set --size`) is available -> extending (and the target size, under
the gigabytes quota) in the request's transaction, then `volume.extend` to the actor, so a
client waiting for `available` sees the new size; os-reset_status (admin; `volume set --state`,
`--attached`/`--detached`) is a message to the volume actor. os-set_bootable,
os-update_readonly_flag and the image metadata actions (`volume set/unset --image-property`)
change columns the API owns. The attach bookkeeping of a client that attaches volumes itself
(os-reserve, os-attach, os-detach, ...) is attach_actions.py's. Anything else is "There is no
such action".
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, NotFound
from api.validate import boolean, invalid
from api.volume import attach_actions, volumes
from api.volume import validate as check
from api.volume.microversion import requested
from protocol import volume as v
from protocol.states import AttachStatus, VolumeStatus

_ATTACH_STATUSES = (str(AttachStatus.ATTACHED), str(AttachStatus.DETACHED))
_STATUSES = tuple(sorted(str(status) for status in VolumeStatus))
_MIGRATION_STATUSES = ("migrating", "error", "success", "completing", "none", "starting")


def _args(name: str, args: Any) -> dict[str, Any]:
    if not isinstance(args, dict):
        raise invalid(name, args, f"{args!r} is not of type 'object'")
    return args


def _only(name: str, args: dict[str, Any], allowed: set[str]) -> None:
    check.only(name, args, allowed)


async def _extend(request: web.Request, args: dict[str, Any]) -> web.Response:
    """Cinder's extend, its checks in its order, then available -> extending (and the target
    size, which the gigabytes quota counts from now on) in this transaction, so that a client
    waiting for `available` sees the new size; the volume actor asks the backend. An attached
    volume is not extended: the file backend would grow the file under a running guest."""
    me = caller(request)
    me.require_writer("volume:extend")
    _only("os-extend", args, {"new_size"})
    if "new_size" not in args:
        raise invalid("os-extend", args, "'new_size' is a required property")
    new_size = check.size(args, "new_size")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        if new_size <= row["size"]:
            raise check.invalid_input(
                f"New size for extend must be greater than current size. (current: "
                f"{row['size']}, extended: {new_size})."
            )
        if row["status"] == VolumeStatus.IN_USE and requested(request) >= _EXTEND_IN_USE:
            me.require_writer("volume:extend_attached_volume")
            raise BadRequest(
                f"Invalid volume: Volume {row['id']} is attached (in-use): this cloud's file backend "
                "does not extend an attached volume. Detach it, extend it, and attach it again."
            )
        if row["status"] != VolumeStatus.AVAILABLE:
            raise BadRequest(
                f"Invalid volume: Volume {row['id']} status must be '{{'status': 'available'}}' to "
                f"extend, currently {row['status']}."
            )
        if row["provider_location"] is None or row["backend"] is None:
            raise BadRequest(f"Invalid volume: Volume {row['id']} has no storage on a backend to extend.")
        await volumes.check_per_volume_limit(conn, row["project_id"], new_size)
        await volumes.enforce_quota(conn, row["project_id"], volumes=0, gigabytes=new_size - row["size"])
        await conn.execute(
            "UPDATE volumes SET status = 'extending', target_size = $2, version = version + 1, "
            "updated_at = now() WHERE id = $1",
            row["id"],
            new_size,
        )
        await volumes.send(request, conn, row["id"], v.ExtendVolume(new_size=new_size))
    return web.Response(status=202)


def _lowered(name: str, args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(key, value, f"{value!r} is not of type 'string', 'null'")
    return value.lower()


async def _reset_status(request: web.Request, args: dict[str, Any]) -> web.Response:
    me = caller(request)
    me.require_admin("volume_extension:volume_admin_actions:reset_status")
    _only("os-reset_status", args, {"status", "attach_status", "migration_status"})
    status = _lowered("os-reset_status", args, "status")
    attach_status = _lowered("os-reset_status", args, "attach_status")
    migration_status = _lowered("os-reset_status", args, "migration_status")
    if not (status or attach_status or migration_status):
        raise check.invalid_input("Must specify 'status', 'attach_status' or 'migration_status' for update.")
    if status and status not in _STATUSES:
        raise check.invalid_input(f"Volume status: {status} is invalid, valid statuses are: {_STATUSES}.")
    if attach_status and attach_status not in _ATTACH_STATUSES:
        raise check.invalid_input(
            f"Volume attach status: {attach_status} is invalid, valid statuses are: {list(_ATTACH_STATUSES)}."
        )
    if migration_status and migration_status not in _MIGRATION_STATUSES:
        raise check.invalid_input(
            f"Volume migration status: {migration_status} is invalid, valid statuses "
            f"are: {_MIGRATION_STATUSES}."
        )
    if migration_status not in (None, "none"):
        raise check.invalid_input(
            "Volumes do not migrate in this cloud: the only migration status is 'none'."
        )
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        if status or attach_status:
            await volumes.send(
                request,
                conn,
                row["id"],
                v.ResetVolumeState(status=status or row["status"], attach_status=attach_status),
            )
    return web.Response(status=202)


async def _set_bootable(request: web.Request, args: dict[str, Any]) -> web.Response:
    me = caller(request)
    me.require_writer("volume:update")
    _only("os-set_bootable", args, {"bootable"})
    if "bootable" not in args:
        raise invalid("os-set_bootable", args, "'bootable' is a required property")
    bootable = boolean(args, "bootable")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        await conn.execute(
            "UPDATE volumes SET bootable = $2, version = version + 1, updated_at = now() WHERE id = $1",
            row["id"],
            bootable,
        )
    return web.Response(status=200)


async def _update_readonly_flag(request: web.Request, args: dict[str, Any]) -> web.Response:
    """Cinder keeps the flag in the volume's admin metadata and shows it among the metadata as
    "readonly": "True"/"False"; here it is that metadata item."""
    me = caller(request)
    me.require_writer("volume:update_readonly_flag")
    _only("os-update_readonly_flag", args, {"readonly"})
    if "readonly" not in args:
        raise invalid("os-update_readonly_flag", args, "'readonly' is a required property")
    readonly = boolean(args, "readonly")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        if row["status"] != VolumeStatus.AVAILABLE:
            raise BadRequest(
                f"Invalid volume: Volume {row['id']} status must be available to update "
                f"readonly flag, but current status is: {row['status']}."
            )
        await conn.execute(
            "UPDATE volumes SET metadata = metadata || jsonb_build_object('readonly', $2::text), "
            "version = version + 1, updated_at = now() WHERE id = $1",
            row["id"],
            str(readonly),
        )
    return web.Response(status=202)


async def _store_image_metadata(conn: Any, volume_id: str, image_metadata: dict[str, str]) -> None:
    await conn.execute(
        "UPDATE volumes SET image_metadata = $2, version = version + 1, updated_at = now() WHERE id = $1",
        volume_id,
        image_metadata,
    )


async def _set_image_metadata(request: web.Request, args: dict[str, Any]) -> web.Response:
    """`openstack volume set --image-property`: merge into volume_image_metadata."""
    me = caller(request)
    me.require_writer("volume_extension:volume_image_metadata:set")
    _only("os-set_image_metadata", args, {"metadata"})
    if "metadata" not in args:
        raise invalid("os-set_image_metadata", args, "'metadata' is a required property")
    items = check.metadata(args["metadata"])
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        merged = {**row["image_metadata"], **items}
        await _store_image_metadata(conn, row["id"], merged)
    return json_response({"metadata": merged})


async def _unset_image_metadata(request: web.Request, args: dict[str, Any]) -> web.Response:
    """`openstack volume unset --image-property`: one key at a time, as Cinder takes it."""
    me = caller(request)
    me.require_writer("volume_extension:volume_image_metadata:remove")
    _only("os-unset_image_metadata", args, {"key"})
    key = args.get("key")
    if not isinstance(key, str) or not key:
        raise invalid("key", key, "The key cannot be None.")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        if key not in row["image_metadata"]:
            raise NotFound("Metadata item was not found.")
        remaining = {k: value for k, value in row["image_metadata"].items() if k != key}
        await _store_image_metadata(conn, row["id"], remaining)
    return web.Response(status=200)


async def _show_image_metadata(request: web.Request, args: dict[str, Any]) -> web.Response:
    row = await volumes.find(ctx(request).pool, caller(request), request.match_info["volume_id"])
    return json_response({"metadata": row["image_metadata"]})


_ACTIONS = {
    "os-extend": _extend,
    "os-reset_status": _reset_status,
    "os-set_bootable": _set_bootable,
    "os-update_readonly_flag": _update_readonly_flag,
    "os-set_image_metadata": _set_image_metadata,
    "os-unset_image_metadata": _unset_image_metadata,
    "os-show_image_metadata": _show_image_metadata,
    **attach_actions.ACTIONS,
}
_NULL_ARGUMENTS = frozenset({"os-show_image_metadata", "os-detach", *attach_actions.WITHOUT_ARGUMENTS})
_EXTEND_IN_USE = (3, 42)  # Cinder's microversion for extending an attached volume


async def action(request: web.Request) -> web.Response:
    volumes.url_project(request)
    document = await json_body(request)
    if not isinstance(document, dict) or len(document) != 1:
        raise BadRequest("There is no such action: the body must name exactly one action.")
    ((name, args),) = document.items()
    handler = _ACTIONS.get(name)
    if handler is None:
        raise BadRequest(f"There is no such action: {name}")
    if name in _NULL_ARGUMENTS and args is None:  # e.g. {"os-show_image_metadata": null}
        args = {}
    if name in attach_actions.WITHOUT_ARGUMENTS and isinstance(args, dict):
        args = {}  # Cinder ignores what these carry
    return await handler(request, _args(name, args))


def setup(app: web.Application) -> None:
    app.router.add_post("/volume/v3/{project_id}/volumes/{volume_id}/action", action)
