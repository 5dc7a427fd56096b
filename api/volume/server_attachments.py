"""What the block storage service offers the compute API: volumes as servers use them.

This is one of the API's published cross-service modules (see `.importlinter`): the compute
service reaches volumes through it and nothing else of api/volume. It holds what Nova asks of
Cinder when a server attaches, detaches or boots from a volume, done here in the compute
request's own transaction: find a volume the caller may use, reserve it for a server (a guarded
update: of two servers racing for one volume exactly one wins), begin a detach, check and take
the volume quotas, create a new volume for a boot, list the volumes attached to servers, and the
connection a host needs to plug the volume in. The words of the answers (Nova's) stay with the
compute API.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from api.auth import AuthContext
from api.errors import NotFound
from api.volume import backends
from api.volume import volumes as _volumes_api
from protocol import volume as v


def connection(row: asyncpg.Record) -> v.VolumeConnection:
    """How a host reaches the volume's data (the file backend's path and format)."""
    return v.VolumeConnection(
        volume_id=row["id"], driver="file", path=row["provider_location"], format=row["format"]
    )


async def attached_volumes(conn: Any, server_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    """The volumes attached (or being attached) to each server, by device."""
    if not server_ids:
        return {}
    rows = await conn.fetch(
        "SELECT * FROM volumes WHERE attachment IS NOT NULL "
        "AND attachment->>'server_id' = ANY($1::text[]) ORDER BY attachment->>'device'",
        server_ids,
    )
    result: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        result.setdefault(row["attachment"]["server_id"], []).append(row)
    return result


async def visible_volume(conn: Any, me: AuthContext, volume_id: str) -> asyncpg.Record:
    """The volume if the caller may use it (own project, or any for an admin); NotFound otherwise."""
    if me.is_admin:
        row = await conn.fetchrow("SELECT * FROM volumes WHERE id = $1", volume_id)
    else:
        row = await conn.fetchrow(
            "SELECT * FROM volumes WHERE id = $1 AND project_id = $2", volume_id, me.project_id
        )
    if row is None:
        raise NotFound(f"Volume {volume_id} could not be found.")
    return row


async def reserve(conn: Any, volume_id: str, attachment: dict[str, Any]) -> asyncpg.Record | None:
    """available -> reserved for the server `attachment` names, with the attachment written into
    the volume's row; None (nothing changed) unless the volume is available, unattached and
    created on its backend."""
    return await conn.fetchrow(
        "UPDATE volumes SET status = 'reserved', attachment = $2, version = version + 1, "
        "updated_at = now() WHERE id = $1 AND status = 'available' AND attachment IS NULL "
        "AND provider_location IS NOT NULL RETURNING *",
        volume_id,
        attachment,
    )


async def status(conn: Any, volume_id: str) -> str | None:
    """The volume's status now (what a refused reservation tells the caller)."""
    return await conn.fetchval("SELECT status FROM volumes WHERE id = $1", volume_id)


async def begin_detaching(conn: Any, volume_id: str, attachment_id: str) -> bool:
    """in-use -> detaching for this attachment; False (nothing changed) otherwise."""
    return bool(
        await conn.fetchval(
            "UPDATE volumes SET status = 'detaching', version = version + 1, updated_at = now() "
            "WHERE id = $1 AND status = 'in-use' AND attachment->>'id' = $2 RETURNING true",
            volume_id,
            attachment_id,
        )
    )


async def enforce_quota(conn: asyncpg.Connection, project_id: str, *, volumes: int, gigabytes: int) -> None:
    """The project's volumes and gigabytes quotas, locked in the caller's transaction: an
    ApiError (Cinder's 413 and message) when `volumes` more of `gigabytes` in all do not fit."""
    await _volumes_api.enforce_quota(conn, project_id, volumes=volumes, gigabytes=gigabytes)


async def create_for_server(
    conn: asyncpg.Connection,
    *,
    project_id: str,
    user_id: str,
    name: str,
    size: int | None,
    attachment: dict[str, Any],
    zone: str | None,
    image_id: str | None,
) -> str:
    """Insert a new volume (creating, bootable when made from `image_id`) already attached as
    `attachment`, on a backend claimed in `zone`; its id. The caller sends the volume actor
    `volume.create` in the same transaction."""
    volume_id = str(uuid.uuid4())
    placed = await backends.claim(conn, zone, size or 0)
    backend = None if placed is None else placed["name"]
    await conn.execute(
        "INSERT INTO volumes (id, project_id, user_id, name, size, status, attachment, bootable, "
        "availability_zone, image_id, backend) "
        "VALUES ($1, $2, $3, $4, $5, 'creating', $6, $7, $8, $9, $10)",
        volume_id,
        project_id,
        user_id,
        name,
        size,
        attachment,
        image_id is not None,
        placed["availability_zone"] if placed is not None else (zone or "nova"),
        image_id,
        backend,
    )
    return volume_id
