"""/volume/v3/{project_id}/volumes: create, list, show, update and delete, as Cinder serves them.

The API never runs a volume's lifecycle: it inserts the row (`creating`, its backend chosen and
claimed, under the volumes and gigabytes quotas) and sends the volume actor `volume.create` in
one transaction, and a delete is a `volume.delete` to the actor, which removes the row once the
backend confirms. What the API refuses at once it refuses with Cinder's message, by the actor's
own rules (`actors.volume.DELETABLE`), so the API's 400 and the actor agree.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from actors import outbox
from actors import volume as volume_actor
from api import quotas
from api.auth import AuthContext
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, NotFound, PayloadTooLarge
from api.image.access import visible_image
from api.times import iso_micro
from api.validate import boolean, invalid
from api.volume import backends, filters, types
from api.volume import validate as check
from api.volume.microversion import requested
from api.volume.quotas import volume_usage
from protocol import Envelope, Message, Target
from protocol import volume as v
from protocol.states import AttachStatus, ImageStatus

GiB = 1024**3


def not_found(volume_id: str) -> NotFound:
    return NotFound(f"Volume {volume_id} could not be found.")


def url_project(request: web.Request) -> str:
    """The project in the URL, which must be the token's (Cinder: "Malformed request url")."""
    me = caller(request)
    project_id = me.require_project()
    if request.match_info["project_id"] != project_id:
        raise BadRequest("Malformed request url")
    return project_id


async def find(conn: Any, me: AuthContext, volume_id: str, *, lock: bool = False) -> asyncpg.Record:
    """The volume if the caller may see it (own project, or any for an admin)."""
    lock_clause = " FOR UPDATE OF v" if lock else ""
    row = await conn.fetchrow(f"{filters.SELECT} WHERE v.id = $1{lock_clause}", volume_id)
    if row is None or (not me.is_admin and row["project_id"] != me.project_id):
        raise not_found(volume_id)
    return row


async def send(request: web.Request, conn: asyncpg.Connection, volume_id: str, body: Message) -> None:
    """Send the volume actor a message inside the caller's transaction."""
    envelope = Envelope.new(Target("volume", volume_id), body, correlation_id=request["request_id"])
    await outbox.send(conn, [envelope], ctx(request).shards)


# --- views ------------------------------------------------------------------------------------------


def _links(request: web.Request, volume_id: str) -> list[dict[str, str]]:
    base, project = ctx(request).base_url, request.match_info["project_id"]
    return [
        {"rel": "self", "href": f"{base}/volume/v3/{project}/volumes/{volume_id}"},
        {"rel": "bookmark", "href": f"{base}/volume/{project}/volumes/{volume_id}"},
    ]


def attachment_moment(text: Any) -> Any:
    """An attachment's ISO timestamp as Cinder prints datetimes (microseconds, no zone)."""
    if not isinstance(text, str):
        return text
    try:
        return iso_micro(datetime.datetime.fromisoformat(text))
    except ValueError:
        return text


def _attachments(row: asyncpg.Record, me: AuthContext) -> list[dict[str, Any]]:
    attachment = row["attachment"]
    if attachment is None or row["attach_status"] != AttachStatus.ATTACHED:
        return []
    return [
        {
            "id": row["id"],  # Cinder's quirk: the volume's id, the attachment's is attachment_id
            "attachment_id": attachment.get("id"),
            "volume_id": row["id"],
            "server_id": attachment.get("server_id"),
            "host_name": (attachment.get("host") or None) if me.is_admin else None,
            "device": attachment.get("device"),
            "attached_at": attachment_moment(attachment.get("attached_at")),
        }
    ]


def view(request: web.Request, row: asyncpg.Record, *, extended: bool = True) -> dict[str, Any]:
    """The volume as Cinder shows it at the request's microversion. `extended`: with the
    attributes Cinder's API extensions add to show and list (tenant, host, migration status,
    image metadata), which its create and update answers lack."""
    me = caller(request)
    version = requested(request)
    volume: dict[str, Any] = {
        "id": row["id"],
        "status": row["status"],
        "size": row["size"],
        "availability_zone": row["availability_zone"],
        "created_at": iso_micro(row["created_at"]),
        "updated_at": iso_micro(row["updated_at"]) if row["updated_at"] else None,
        "name": row["name"] or None,
        "description": row["description"] or None,
        "volume_type": row["volume_type"],
        "snapshot_id": row["snapshot_id"],
        "source_volid": row["source_volid"],
        "metadata": row["metadata"],
        "links": _links(request, row["id"]),
        "user_id": row["user_id"],
        "bootable": "true" if row["bootable"] else "false",
        "encrypted": False,
        "replication_status": None,
        "consistencygroup_id": None,
        "multiattach": False,
        "attachments": _attachments(row, me),
    }
    if me.is_admin:
        volume["migration_status"] = None
    if version >= (3, 13):
        volume["group_id"] = None
    if me.is_admin and version >= (3, 21):
        volume["provider_id"] = None
    if version >= (3, 48):
        volume["shared_targets"] = False  # a file needs no host-wide lock to attach
        volume["service_uuid"] = backends.service_uuid(row["backend"])
    if me.is_admin and version >= (3, 61):
        volume["cluster_name"] = None
    if version >= (3, 63):
        volume["volume_type_id"] = types.DEFAULT_ID
    if version >= (3, 65):
        volume["consumes_quota"] = True
    if extended:
        volume["os-vol-tenant-attr:tenant_id"] = row["project_id"]
        if me.is_admin:
            volume["os-vol-host-attr:host"] = backends.host_of(row["backend"], row["backend_driver"])
            volume["os-vol-mig-status-attr:migstat"] = None
            volume["os-vol-mig-status-attr:name_id"] = None
        if row["image_metadata"]:
            volume["volume_image_metadata"] = row["image_metadata"]
    return volume


def _summary(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"] or None, "links": _links(request, row["id"])}


# --- create -------------------------------------------------------------------------------------------

_CREATE_KEYS = {
    "name",
    "description",
    "display_name",
    "display_description",
    "size",
    "availability_zone",
    "source_volid",
    "snapshot_id",
    "backup_id",
    "consistencygroup_id",
    "group_id",
    "volume_type",
    "imageRef",
    "image_id",
    "metadata",
    "multiattach",
    "scheduler_hints",
}
# Sources a volume may be created from that this cloud has none of yet: any id given is not
# found, as Cinder answers an id it does not know (SnapshotNotFound, BackupNotFound, ...).
_NONE_EXIST = {
    "snapshot_id": "Snapshot",
    "backup_id": "Backup",
    "consistencygroup_id": "ConsistencyGroup",
    "group_id": "Group",
}


def _image_metadata(image: asyncpg.Record) -> dict[str, str]:
    """Cinder's volume_image_metadata: the image's core attributes and its properties, as strings."""
    core = {
        "image_id": image["id"],
        "image_name": image["name"],
        "checksum": image["checksum"],
        "container_format": image["container_format"],
        "disk_format": image["disk_format"],
        "min_disk": image["min_disk"],
        "min_ram": image["min_ram"],
        "size": image["size"],
    }
    shown = {k: str(value) for k, value in (image["properties"] or {}).items() if value is not None}
    shown.update({k: str(value) for k, value in core.items() if value is not None})
    return shown


async def _check_image(conn: Any, me: AuthContext, image_ref: str, size: int) -> asyncpg.Record:
    """The image a volume is created from, with Cinder's checks of it against the volume's size."""
    try:
        image = await visible_image(conn, me, image_ref)
    except NotFound:
        raise NotFound(f"Image {image_ref} could not be found.") from None
    if image["status"] != ImageStatus.ACTIVE:
        raise check.invalid_input(f"Image {image_ref} is not active.")
    image_gb = -(-int(image["size"] or 0) // GiB)
    if image_gb > size:
        raise check.invalid_input(
            f"Size of specified image {image_gb}GB is larger than volume size {size}GB."
        )
    if size < image["min_disk"]:
        raise check.invalid_input(
            f"Volume size {size}GB cannot be smaller than the image minDisk size {image['min_disk']}GB."
        )
    virtual_gb = -(-int(image["virtual_size"] or 0) // GiB)
    if virtual_gb > size:
        raise BadRequest(
            f"Image {image_ref} is unacceptable: Image virtual size is {virtual_gb}GB and "
            f"doesn't fit in a volume of size {size}GB."
        )
    return image


async def enforce_quota(conn: asyncpg.Connection, project_id: str, *, volumes: int, gigabytes: int) -> None:
    """Inside the caller's transaction: lock the project's volume quotas and refuse (413, Cinder's
    exceptions and messages) what would pass a limit. The caller then writes what it counted."""
    await quotas.lock(conn, project_id, ("gigabytes", "volumes"))
    hard = await quotas.limits(conn, project_id, ("gigabytes", "volumes"))
    used = await volume_usage(conn, project_id)
    limit = hard["gigabytes"]
    if gigabytes and limit != quotas.UNLIMITED and used["gigabytes"] + gigabytes > limit:
        raise PayloadTooLarge(
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. "
            f"Requested {gigabytes}G, quota is {limit}G and {used['gigabytes']}G has been consumed."
        )
    limit = hard["volumes"]
    if volumes and limit != quotas.UNLIMITED and used["volumes"] + volumes > limit:
        raise PayloadTooLarge(
            f"VolumeLimitExceeded: Maximum number of volumes allowed ({limit}) exceeded for quota 'volumes'."
        )


async def check_per_volume_limit(conn: Any, project_id: str, size: int) -> None:
    limit = (await quotas.limits(conn, project_id, ("per_volume_gigabytes",)))["per_volume_gigabytes"]
    if limit != quotas.UNLIMITED and size > limit:
        raise PayloadTooLarge(
            f"VolumeSizeExceedsLimit: Requested volume size {size}G is larger than maximum "
            f"allowed limit {limit}G."
        )


async def create(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_writer("volume:create")
    project_id = url_project(request)
    document = await json_body(request)
    if not isinstance(document, dict) or not isinstance(document.get("volume"), dict):
        raise BadRequest(
            "Invalid input for field/attribute volume. 'volume' is a required property of type 'object'"
        )
    extra = sorted(set(document) - {"volume", "OS-SCH-HNT:scheduler_hints"})
    if extra:
        raise BadRequest(f"Additional properties are not allowed ({', '.join(map(repr, extra))} unexpected)")
    hints = document.get("OS-SCH-HNT:scheduler_hints")
    if hints is not None and not isinstance(hints, dict):
        raise invalid("OS-SCH-HNT:scheduler_hints", hints, f"{hints!r} is not of type 'object'")
    data: dict[str, Any] = document["volume"]
    unknown = sorted(set(data) - _CREATE_KEYS)
    if unknown:
        raise invalid(
            "volume",
            data,
            f"Additional properties are not allowed ({', '.join(map(repr, unknown))} unexpected)",
        )
    name = check.text(data, "name") if "name" in data else check.text(data, "display_name")
    description = (
        check.text(data, "description") if "description" in data else check.text(data, "display_description")
    )
    size = check.size(data)
    for key, what in _NONE_EXIST.items():
        if check.optional_uuid(data, key) is not None:
            raise NotFound(f"{what} {data[key]} could not be found.")
    source_volid = check.optional_uuid(data, "source_volid")
    if data.get("multiattach") is not None and boolean(data, "multiattach"):
        raise check.invalid_input("Multiattach volumes are not supported by this cloud.")
    metadata = check.metadata(data["metadata"]) if data.get("metadata") is not None else {}
    type_name = check.text(data, "volume_type")
    volume_type = types.resolve(type_name) if type_name else types.DEFAULT_NAME
    image_ref = check.text(data, "imageRef") if "imageRef" in data else check.text(data, "image_id")
    zone = check.text(data, "availability_zone") or None

    context = ctx(request)
    volume_id = str(uuid.uuid4())
    async with context.pool.acquire() as conn, conn.transaction():
        if source_volid is not None:
            await find(conn, me, source_volid)  # Cinder's VolumeNotFound for one not seen
            raise check.invalid_input("Cloning a volume (source_volid) is not supported by this cloud yet.")
        if zone is not None and zone not in await backends.zones(conn):
            raise BadRequest(f"Availability zone '{zone}' is invalid.")
        image = await _check_image(conn, me, image_ref, size) if image_ref else None
        await check_per_volume_limit(conn, project_id, size)
        await enforce_quota(conn, project_id, volumes=1, gigabytes=size)
        placed = await backends.claim(conn, zone, size)
        backend = placed["name"] if placed else None
        zone = zone or (placed["availability_zone"] if placed else backends.DEFAULT_ZONE)
        await conn.execute(
            "INSERT INTO volumes (id, version, project_id, user_id, name, description, size, status, "
            "bootable, availability_zone, volume_type, metadata, image_id, image_metadata, backend) "
            "VALUES ($1, 1, $2, $3, $4, $5, $6, 'creating', $7, $8, $9, $10, $11, $12, $13)",
            volume_id,
            project_id,
            me.user_id,
            name or "",
            description or "",
            size,
            image is not None,
            zone,
            volume_type,
            metadata,
            image["id"] if image else None,
            _image_metadata(image) if image else {},
            backend,
        )
        await send(request, conn, volume_id, v.CreateVolume())
        row = await find(conn, me, volume_id)
    return json_response({"volume": view(request, row, extended=False)}, status=202)


# --- list, show ---------------------------------------------------------------------------------------


async def _list(request: web.Request, *, detail: bool) -> web.Response:
    me = caller(request)
    url_project(request)
    version = requested(request)
    query = filters.VolumeQuery.parse(request, me, version)
    rows = await query.fetch(ctx(request).pool)
    page = await query.page(ctx(request).pool, me, rows)
    render = view if detail else _summary
    body: dict[str, Any] = {"volumes": [render(request, r) for r in page]}
    if page and len(page) == query.limit:
        params = dict(request.query)
        params["marker"] = page[-1]["id"]
        base, project = ctx(request).base_url, request.match_info["project_id"]
        tail = "volumes/detail" if detail else "volumes"
        href = f"{base}/volume/v3/{project}/{tail}?{urlencode(params)}"
        body["volumes_links"] = [{"rel": "next", "href": href}]
    if version >= (3, 45) and check.query_bool(request.query, "with_count"):
        body["count"] = len(rows)
    return json_response(body)


async def list_volumes(request: web.Request) -> web.Response:
    return await _list(request, detail=False)


async def list_volumes_detail(request: web.Request) -> web.Response:
    return await _list(request, detail=True)


_SUMMARY = (3, 12)  # Cinder's GET /volumes/summary
_SUMMARY_METADATA = (3, 36)  # ... with every metadata key's distinct values


async def summary(request: web.Request) -> web.Response:
    """Cinder's volume summary: how many volumes and GiB the caller's project has (an admin with
    ?all_tenants: every project's), and from 3.36 each metadata key's distinct values. Cinder
    takes no other filter here."""
    me = caller(request)
    url_project(request)
    version = requested(request)
    if version < _SUMMARY:
        raise NotFound("The resource could not be found.")
    every_project = me.is_admin and bool(check.query_bool(request.query, "all_tenants"))
    where = "TRUE" if every_project else "project_id = $1"
    args = [] if every_project else [me.project_id]
    async with ctx(request).pool.acquire() as conn:
        totals = await conn.fetchrow(
            "SELECT count(*) AS total_count, coalesce(sum(size), 0) AS total_size "
            f"FROM volumes WHERE {where}",
            *args,
        )
        body: dict[str, Any] = {"total_count": totals["total_count"], "total_size": int(totals["total_size"])}
        if version >= _SUMMARY_METADATA:
            pairs = await conn.fetch(
                "SELECT DISTINCT m.key, m.value FROM volumes, jsonb_each_text(metadata) AS m "
                f"WHERE {where} ORDER BY m.key, m.value",
                *args,
            )
            metadata: dict[str, list[str]] = {}
            for pair in pairs:
                metadata.setdefault(pair["key"], []).append(pair["value"])
            body["metadata"] = metadata
    return json_response({"volume-summary": body})


async def show(request: web.Request) -> web.Response:
    me = caller(request)
    url_project(request)
    row = await find(ctx(request).pool, me, request.match_info["volume_id"])
    return json_response({"volume": view(request, row)})


# --- update, delete -------------------------------------------------------------------------------------


async def update(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_writer("volume:update")
    url_project(request)
    document = await json_body(request)
    if not isinstance(document, dict) or not isinstance(document.get("volume"), dict):
        raise BadRequest(
            "Invalid input for field/attribute volume. 'volume' is a required property of type 'object'"
        )
    data = document["volume"]
    unknown = sorted(set(data) - {"name", "description", "display_name", "display_description", "metadata"})
    if unknown:
        raise invalid(
            "volume",
            data,
            f"Additional properties are not allowed ({', '.join(map(repr, unknown))} unexpected)",
        )
    if not data:
        raise BadRequest(
            "Invalid input for field/attribute volume. Value: {}. {} does not have enough properties"
        )
    name = check.text(data, "name") if "name" in data else check.text(data, "display_name")
    description = (
        check.text(data, "description") if "description" in data else check.text(data, "display_description")
    )
    metadata = check.metadata(data["metadata"]) if data.get("metadata") is not None else None
    name_given = "name" in data or "display_name" in data
    description_given = "description" in data or "display_description" in data
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, request.match_info["volume_id"], lock=True)
        await conn.execute(
            "UPDATE volumes SET name = CASE WHEN $2 THEN $3 ELSE name END, "
            "description = CASE WHEN $4 THEN $5 ELSE description END, metadata = coalesce($6, metadata), "
            "version = version + 1, updated_at = now() WHERE id = $1",
            row["id"],
            name_given,
            name or "",
            description_given,
            description or "",
            metadata,
        )
        row = await find(conn, me, row["id"])
    return json_response({"volume": view(request, row, extended=False)})


def delete_refusal() -> BadRequest:
    return BadRequest(
        "Invalid volume: Volume status must be available or error or error_restoring or "
        "error_extending or error_managing and must not be migrating, attached, belong to a "
        "group, have snapshots, awaiting a transfer, or be disassociated from snapshots after "
        "volume transfer."
    )


async def delete(request: web.Request) -> web.Response:
    """Cinder's checks, then `volume.delete` to the actor; `cascade` (snapshots) has nothing to
    cascade to, `force` (3.23, admin) is refused."""
    me = caller(request)
    me.require_writer("volume:delete")
    url_project(request)
    if requested(request) >= (3, 23) and check.query_bool(request.query, "force"):
        me.require_admin("volume:force_delete")
        raise check.invalid_input(
            "Forced deletion is not supported by this cloud: reset the volume's status "
            "(os-reset_status) and delete it."
        )
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, request.match_info["volume_id"], lock=True)
        if (
            row["status"] not in volume_actor.DELETABLE
            or row["attach_status"] != AttachStatus.DETACHED
            or row["attachment"] is not None
        ):
            raise delete_refusal()
        await send(request, conn, row["id"], v.DeleteVolume())
    return web.Response(status=202)


def setup(app: web.Application) -> None:
    r = app.router
    base = "/volume/v3/{project_id}/volumes"
    r.add_get(base, filters.described(list_volumes, filters.PARAMETERS))
    r.add_post(base, create)
    r.add_get(base + "/detail", filters.described(list_volumes_detail, filters.PARAMETERS))
    r.add_get(base + "/summary", filters.described(summary, [filters.ALL_TENANTS]))
    r.add_get(base + "/{volume_id}", show)
    r.add_put(base + "/{volume_id}", update)
    r.add_delete(base + "/{volume_id}", delete)
