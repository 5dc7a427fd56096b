"""A server's volumes: Nova's os-volume_attachments, and the volumes of a boot
(block_device_mapping_v2 with a volume destination).

Attaching reserves the volume in the request's transaction with a guarded update (available ->
reserved, the attachment written into the volume's row): of two servers racing for one volume,
exactly one update matches and the other request gets a clean 400, so a volume is never attached
twice. The same transaction tells the volume actor (it watches the reservation) and the server
actor (it asks its host to hot-plug the disk); the volume turns in-use when the host confirms.
Detaching is the mirror image (in-use -> detaching). The API picks the device as Nova's libvirt
driver does: the next free `vdX` after the root disk, the flavor's ephemeral and swap disks and
the volumes already there (a device the caller asks for is ignored, as by libvirt).

What is done to the volumes' rows (find, reserve, begin detaching, create for a boot, the quota)
is the block storage service's, done through its published api/volume/server_attachments.py;
this module keeps Nova's side: the devices, the block device mappings and Nova's words.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from actors import kinds, outbox
from actors import server as server_actor
from api.auth import AuthContext
from api.compute import instance_actions
from api.compute.microversion import requested
from api.compute.server_lookup import find
from api.context import caller, ctx, json_body, json_response
from api.errors import ApiError, BadRequest, Conflict, NotFound
from api.image.access import visible_image
from api.volume import server_attachments
from protocol import Envelope, Message, Target
from protocol import volume as v
from protocol.states import BlockDeviceStatus, ImageStatus


class OverLimit(ApiError):
    """Cinder's quota refusals are 413; Nova passes them on as 403 — this is the compute API."""

    status, title = 403, "Forbidden"


def _local_devices(server: Any) -> set[str]:
    """The devices the server's own disks take: the root (an image or a volume), then the
    flavor's ephemeral disk and swap, in that order."""
    flavor = server["flavor"]
    used = {"/dev/vda"}
    letter = ord("b")
    for size in (flavor.get("ephemeral", 0), flavor.get("swap", 0)):
        if size:
            used.add(f"/dev/vd{chr(letter)}")
            letter += 1
    return used


def next_device(taken: set[str]) -> str:
    for letter in "bcdefghijklmnopqrstuvwxyz":
        device = f"/dev/vd{letter}"
        if device not in taken:
            return device
    raise BadRequest("The server has no free device name left for another volume.")


def _attachment_view(request: web.Request, volume: asyncpg.Record) -> dict[str, Any]:
    attachment = volume["attachment"]
    view: dict[str, Any] = {
        "id": volume["id"],
        "volumeId": volume["id"],
        "serverId": attachment["server_id"],
        "device": attachment["device"],
    }
    version = requested(request)
    if version >= (2, 70):
        view["tag"] = attachment.get("tag")
    if version >= (2, 79):
        view["delete_on_termination"] = bool(attachment.get("delete_on_termination"))
    if version >= (2, 89):
        view["attachment_id"] = attachment["id"]
        view["bdm_uuid"] = attachment["id"]
        view.pop("id")
    return view


async def _server(conn: Any, request: web.Request, action: str) -> asyncpg.Record:
    me = caller(request)
    row = await find(conn, me, request.match_info["server_id"])
    if row["locked"] and not me.is_admin:
        raise Conflict(f"Instance {row['id']} is locked")
    if row["vm_state"] not in server_actor.ATTACHABLE or row["task_state"] is not None or row["host"] is None:
        attr, state = (
            ("task_state", row["task_state"]) if row["task_state"] else ("vm_state", row["vm_state"])
        )
        raise Conflict(f"Cannot '{action}' instance {row['id']} while it is in {attr} {state}")
    return row


async def _record_action(conn: Any, request: web.Request, server: asyncpg.Record, action: str) -> None:
    await instance_actions.record(
        conn,
        server_id=server["id"],
        request_id=request["request_id"],
        action=action,
        project_id=server["project_id"],
        user_id=caller(request).user_id,
    )


async def _send(conn: Any, request: web.Request, messages: list[tuple[Target, Message]]) -> None:
    await outbox.send(
        conn,
        [Envelope.new(target, body, correlation_id=request["request_id"]) for target, body in messages],
        ctx(request).shards,
    )


# --- os-volume_attachments -------------------------------------------------------------------------


async def attach(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_writer("os_compute_api:os-volumes-attachments:create")
    document = await json_body(request)
    data = document.get("volumeAttachment") if isinstance(document, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("volumeId"), str):
        raise BadRequest(
            "Invalid input for field/attribute volumeAttachment. 'volumeId' is a required property"
        )
    unknown = set(data) - {"volumeId", "device", "tag", "delete_on_termination"}
    if unknown:
        raise BadRequest(
            f"Additional properties are not allowed ({', '.join(sorted(unknown))} were unexpected)"
        )
    delete_on_termination = data.get("delete_on_termination", False)
    if not isinstance(delete_on_termination, bool):
        raise BadRequest("Invalid input for field/attribute delete_on_termination: a boolean is expected")
    volume_id = data["volumeId"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        server = await _server(conn, request, "attach_volume")
        record = kinds.SERVER.store.decode(server)
        if not server_actor.table.allows(record, v.AttachVolume):
            raise Conflict(f"Cannot 'attach_volume' instance {server['id']} now")
        await server_attachments.visible_volume(conn, me, volume_id)
        taken = _local_devices(server) | {b["device"] for b in server["block_devices"]}
        taken |= {
            r["attachment"]["device"]
            for r in (await server_attachments.attached_volumes(conn, [server["id"]])).get(server["id"], [])
        }
        device = next_device(taken)
        attachment = {
            "id": str(uuid.uuid4()),
            "server_id": server["id"],
            "device": device,
            "mode": "rw",
            "delete_on_termination": delete_on_termination,
            "tag": data.get("tag"),
        }
        volume = await server_attachments.reserve(conn, volume_id, attachment)
        if volume is None:
            current = await server_attachments.status(conn, volume_id)
            raise BadRequest(
                f"Invalid volume: Volume {volume_id} status must be available to reserve, but the "
                f"current status is {current}."
            )
        await _record_action(conn, request, server, "attach_volume")
        await _send(
            conn,
            request,
            [
                (
                    Target("volume", volume_id),
                    v.VolumeReserved(attachment_id=attachment["id"], server_id=server["id"]),
                ),
                (
                    Target("server", server["id"]),
                    v.AttachVolume(
                        attachment_id=attachment["id"],
                        device=device,
                        connection=server_attachments.connection(volume),
                        delete_on_termination=delete_on_termination,
                    ),
                ),
            ],
        )
    return json_response({"volumeAttachment": _attachment_view(request, volume)})


async def list_attachments(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        server = await find(conn, caller(request), request.match_info["server_id"])
        volumes = (await server_attachments.attached_volumes(conn, [server["id"]])).get(server["id"], [])
    return json_response({"volumeAttachments": [_attachment_view(request, r) for r in volumes]})


async def show_attachment(request: web.Request) -> web.Response:
    volume_id = request.match_info["volume_id"]
    async with ctx(request).pool.acquire() as conn:
        server = await find(conn, caller(request), request.match_info["server_id"])
        volumes = (await server_attachments.attached_volumes(conn, [server["id"]])).get(server["id"], [])
    for row in volumes:
        if row["id"] == volume_id:
            return json_response({"volumeAttachment": _attachment_view(request, row)})
    raise NotFound(f"Volume {volume_id} is not attached to instance {server['id']}.")


async def detach(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_writer("os_compute_api:os-volumes-attachments:delete")
    volume_id = request.match_info["volume_id"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        server = await _server(conn, request, "detach_volume")
        volume = next(
            (
                r
                for r in (await server_attachments.attached_volumes(conn, [server["id"]])).get(
                    server["id"], []
                )
                if r["id"] == volume_id
            ),
            None,
        )
        if volume is None:
            raise NotFound(f"Volume {volume_id} is not attached to instance {server['id']}.")
        attachment = volume["attachment"]
        root = any(
            b["attachment_id"] == attachment["id"] and b.get("boot_index") == 0
            for b in server["block_devices"]
        )
        if root:
            raise BadRequest("Cannot detach a root device volume")
        if not await server_attachments.begin_detaching(conn, volume_id, attachment["id"]):
            raise BadRequest(
                f"Invalid volume: Unable to detach volume. Volume status must be 'in-use' and "
                f"attach_status must be 'attached' to detach. Currently: status: '{volume['status']}', "
                f"attach_status: '{volume['attach_status']}.'"
            )
        await _record_action(conn, request, server, "detach_volume")
        await _send(
            conn,
            request,
            [
                (
                    Target("volume", volume_id),
                    v.VolumeDetaching(attachment_id=attachment["id"], server_id=server["id"]),
                ),
                (
                    Target("server", server["id"]),
                    v.DetachVolume(attachment_id=attachment["id"], volume_id=volume_id),
                ),
            ],
        )
    return web.Response(status=202)


async def swap(request: web.Request) -> web.Response:
    raise BadRequest("Swapping a server's volume is not supported in this cloud.")


# --- the volumes of a boot (block_device_mapping_v2) -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mapping:
    source: str  # image, volume, blank
    uuid: str | None
    boot_index: int | None
    size: int | None
    delete_on_termination: bool


@dataclasses.dataclass(frozen=True)
class BootDevices:
    image_id: str | None  # the image of a local image boot
    volumes: tuple[Mapping, ...]  # mappings with a volume destination


def parse_mappings(mappings: Any) -> BootDevices:
    """Nova's block_device_mapping_v2: a local image boot, and volumes (from an image, blank, or
    existing) with their boot index; anything this cloud cannot do is a clear 400."""
    if mappings in (None, []):
        return BootDevices(None, ())
    if not isinstance(mappings, list) or not all(isinstance(b, dict) for b in mappings):
        raise BadRequest("Invalid input for field/attribute block_device_mapping_v2.")
    image, volumes = None, []
    for item in mappings:
        source = item.get("source_type")
        destination = item.get("destination_type", "local" if source == "image" else "volume")
        boot_index = _boot_index(item)
        uuid_ = item.get("uuid")
        if source == "image" and destination == "local":
            if boot_index != 0 or not isinstance(uuid_, str):
                raise BadRequest("Block Device Mapping is Invalid: a local image must be the boot device.")
            image = uuid_
            continue
        volumes.append(_volume_mapping(item, source, destination, boot_index, uuid_))
    boots = [m for m in volumes if m.boot_index == 0]
    if image is not None and boots or len(boots) > 1:
        raise BadRequest(
            "Block Device Mapping is Invalid: Boot sequence for the instance and image/block device "
            "mapping combination is not valid."
        )
    return BootDevices(image, tuple(volumes))


def _boot_index(item: dict[str, Any]) -> int | None:
    """A mapping's boot index: an integer (or its decimal string); None when absent or negative
    (Nova: a negative boot index means "not bootable")."""
    boot_index = item.get("boot_index")
    if isinstance(boot_index, str) and boot_index.lstrip("-").isdigit():
        boot_index = int(boot_index)
    if boot_index is not None and (not isinstance(boot_index, int) or isinstance(boot_index, bool)):
        raise BadRequest(f"Invalid input for field/attribute boot_index. Value: {boot_index!r}.")
    if boot_index is not None and boot_index < 0:
        boot_index = None
    return boot_index


def _volume_mapping(
    item: dict[str, Any], source: Any, destination: Any, boot_index: int | None, uuid_: Any
) -> Mapping:
    """A mapping with a volume destination: an existing volume, or a new one (blank or from an
    image) with its size."""
    if destination != "volume" or source not in ("image", "volume", "blank"):
        raise BadRequest(
            f"Block Device Mapping is Invalid: source_type {source!r} with destination_type "
            f"{destination!r} is not supported in this cloud."
        )
    if source in ("image", "volume") and not isinstance(uuid_, str):
        raise BadRequest("Block Device Mapping is Invalid: a 'uuid' is required.")
    size = item.get("volume_size")
    if isinstance(size, str) and size.isdigit():
        size = int(size)
    if source != "volume" and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise BadRequest("Block Device Mapping is Invalid: a new volume needs a volume_size of at least 1.")
    delete = item.get("delete_on_termination", False)
    if isinstance(delete, str):
        delete = delete.lower() in ("true", "1", "yes")
    return Mapping(
        source,
        uuid_ if source != "blank" else None,
        boot_index,
        size if source != "volume" else None,
        bool(delete),
    )


async def prepare_boot_volumes(
    conn: asyncpg.Connection,
    me: AuthContext,
    *,
    project_id: str,
    server_id: str,
    server_name: str,
    zone: str | None,
    flavor: asyncpg.Record,
    boot: BootDevices,
) -> tuple[list[dict[str, Any]], list[tuple[Target, Message]]]:
    """Create (creating) or reserve the boot's volumes in the caller's transaction: the server's
    block_devices and the messages to send with it."""
    if not boot.volumes:
        return [], []
    new = [m for m in boot.volumes if m.source != "volume"]
    if new:
        try:
            await server_attachments.enforce_quota(
                conn, project_id, volumes=len(new), gigabytes=sum(m.size or 0 for m in new)
            )
        except ApiError as exc:  # Cinder's 413, passed on as Nova's 403
            raise OverLimit(exc.message) from None
    devices: list[dict[str, Any]] = []
    messages: list[tuple[Target, Message]] = []
    taken = {"/dev/vda"} if not any(m.boot_index == 0 for m in boot.volumes) else set()
    taken |= _local_devices({"flavor": dict(flavor)}) - {"/dev/vda"}
    for mapping in sorted(boot.volumes, key=lambda m: (m.boot_index is None, m.boot_index or 0)):
        device = "/dev/vda" if mapping.boot_index == 0 else next_device(taken)
        taken.add(device)
        attachment = {
            "id": str(uuid.uuid4()),
            "server_id": server_id,
            "device": device,
            "mode": "rw",
            "delete_on_termination": mapping.delete_on_termination,
        }
        bdm: dict[str, Any] = {
            "attachment_id": attachment["id"],
            "device": device,
            "boot_index": mapping.boot_index,
            "delete_on_termination": mapping.delete_on_termination,
        }
        if mapping.source == "volume":
            bdm.update(await _reserve_for_boot(conn, me, mapping, attachment))
        else:
            image = await _boot_image(conn, me, mapping) if mapping.source == "image" else None
            volume_id = await server_attachments.create_for_server(
                conn,
                project_id=project_id,
                user_id=me.user_id,
                name="" if image is None else f"{server_name}-root",
                size=mapping.size,
                attachment=attachment,
                zone=zone,
                image_id=None if image is None else image["id"],
            )
            messages.append((Target("volume", volume_id), v.CreateVolume()))
            bdm.update(volume_id=volume_id, connection=None, status=BlockDeviceStatus.WAITING)
        devices.append(bdm)
    return devices, messages


async def _reserve_for_boot(
    conn: asyncpg.Connection, me: AuthContext, mapping: Mapping, attachment: dict[str, Any]
) -> dict[str, Any]:
    """Reserve an existing volume of the boot for the server; what its block device adds."""
    assert mapping.uuid is not None
    await server_attachments.visible_volume(conn, me, mapping.uuid)
    row = await server_attachments.reserve(conn, mapping.uuid, attachment)
    if row is None:
        raise BadRequest(f"Invalid volume: Volume {mapping.uuid} status must be available to reserve.")
    if mapping.boot_index == 0 and not row["bootable"]:
        raise BadRequest(f"Block Device Mapping is Invalid: Volume {mapping.uuid} is not bootable.")
    connection = msgspec.to_builtins(server_attachments.connection(row))
    return {"volume_id": row["id"], "connection": connection, "status": BlockDeviceStatus.READY}


async def _boot_image(conn: asyncpg.Connection, me: AuthContext, mapping: Mapping) -> asyncpg.Record:
    """The image a new volume of the boot is made from, if it is active and fits the volume."""
    try:
        image = await visible_image(conn, me, mapping.uuid or "")
    except NotFound:
        raise BadRequest(f"Image {mapping.uuid} could not be found.") from None
    if image["status"] != ImageStatus.ACTIVE:
        raise BadRequest(f"Image {mapping.uuid} is not active.")
    if (
        image["size"]
        and math.ceil(image["size"] / 2**30) > (mapping.size or 0)
        or (image["min_disk"] or 0) > (mapping.size or 0)
    ):
        raise BadRequest(f"Volume size {mapping.size}GB is smaller than image {mapping.uuid} needs.")
    return image


def setup(app: web.Application) -> None:
    base = "/compute/v2.1/servers/{server_id}/os-volume_attachments"
    app.router.add_get(base, list_attachments)
    app.router.add_post(base, attach)
    app.router.add_get(base + "/{volume_id}", show_attachment)
    app.router.add_put(base + "/{volume_id}", swap)
    app.router.add_delete(base + "/{volume_id}", detach)
