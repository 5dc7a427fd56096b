"""Images the cloud provides itself: `up --virt qemu` registers the test image this way.

As if the admin had uploaded it: a public image owned by the admin project, its bytes in the
image store, its size, checksum, hash and virtual size as an upload records them. Idempotent:
an active image with this name built from the same inputs (the `build` property) is kept; an
earlier build of it is replaced, so that the name stays unique for `--image NAME`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import structlog

from api.image import formats, store
from protocol.states import ImageStatus

log = structlog.get_logger("api.image")


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, store.CHUNK):
            yield chunk


async def register(
    pool: asyncpg.Pool,
    state_dir: Path,
    path: Path,
    *,
    name: str,
    owner: str,
    disk_format: str,
    build_property: str,
    properties: dict[str, str],
    min_ram: int = 0,
) -> tuple[str, bool]:
    """The id of the public image `name` built as `properties[build_property]` says, registering
    it from `path` when there is none; and whether it was registered now."""
    build = properties[build_property]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('actorstack seed image ' || $1))", name)
        rows = await conn.fetch(
            "SELECT id, status, properties->>$3 AS build FROM images WHERE name = $1 AND owner = $2 "
            "AND properties ? $3 FOR UPDATE",
            name,
            owner,
            build_property,
        )
        current = next(
            (r["id"] for r in rows if r["build"] == build and r["status"] == ImageStatus.ACTIVE), None
        )
        if current is not None:
            return current, False
        stale = [r["id"] for r in rows]
        if stale:
            await conn.execute("DELETE FROM images WHERE id = ANY($1::text[])", stale)
        image_id = str(uuid.uuid4())  # Glance's ids are UUIDs, as an upload's are
        await conn.execute(
            "INSERT INTO images (id, name, owner, status, visibility, disk_format, container_format, "
            "min_ram, properties) VALUES ($1, $2, $3, 'saving', 'public', $4, 'bare', $5, $6::jsonb)",
            image_id,
            name,
            owner,
            disk_format,
            min_ram,
            properties,
        )
    for old in stale:
        await store.remove(store.image_path(state_dir, old))
    destination = store.image_path(state_dir, image_id)
    try:
        received = await store.receive(_chunks(path), destination, cap=1 << 40)
        virtual = formats.virtual_size(disk_format, received.head, received.tail, received.size)
        await pool.execute(
            "UPDATE images SET status = 'active', size = $2, virtual_size = $3, checksum = $4, "
            "os_hash_algo = $5, os_hash_value = $6, updated_at = now() WHERE id = $1",
            image_id,
            received.size,
            virtual,
            received.md5,
            store.HASH_ALGO,
            received.hash_value,
        )
    except BaseException:
        await asyncio.shield(pool.execute("DELETE FROM images WHERE id = $1", image_id))
        await asyncio.shield(store.remove(destination))
        raise
    log.info("image registered", image_id=image_id, name=name, size=received.size)
    return image_id, True
