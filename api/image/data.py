"""/image/v2/images/<id>/file: uploading and downloading image data.

Upload (PUT, application/octet-stream) claims the image by moving it from queued to saving in
one conditional UPDATE — a second upload, or one to an active image, gets 409 — then streams
the body to the file store (`api/image/store.py`, chunk by chunk, never whole in memory) and
records size, md5 checksum, sha512 os_hash_value and virtual size as it turns the image active.
Whatever stops an upload half-way — the client going away or falling silent, the size cap, a
full disk, a cancelled handler — puts the image back to queued, as Glance does, and leaves no
file behind. An image deleted while its data was arriving gets its bytes removed and the uploader a 410.

Download streams the file with aiohttp's FileResponse: the kernel's sendfile where it can
(zero-copy, non-blocking), otherwise chunked reads in the default executor, so neither memory
nor the event loop carry the image. Ranges are honoured; Content-MD5 is sent with whole files.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import StreamReader, web
from aiohttp.http_exceptions import PayloadEncodingError

from api.context import caller, ctx
from api.errors import ApiError, BadRequest, Conflict, Forbidden, Gone, PayloadTooLarge, UnsupportedMediaType
from api.image import access, formats, store
from protocol.states import ImageStatus

log = structlog.get_logger("api.image")

SIZE_CAP = web.AppKey("image_size_cap", int)
DEFAULT_SIZE_CAP = 1024**4  # 1 TiB, Glance's default image_size_cap
SIZE_CAP_ENV = "ACTORSTACK_IMAGE_SIZE_CAP"

# A client silent this long has abandoned its upload (a half-open connection would otherwise
# keep the image in "saving" for ever).
IDLE_TIMEOUT = 300.0
# How a client that goes away mid-upload shows up while the body is read.
_DISCONNECTS = (ConnectionError, PayloadEncodingError)


def size_cap_from_env() -> int:
    raw = os.environ.get(SIZE_CAP_ENV)
    if raw is None:
        return DEFAULT_SIZE_CAP
    try:
        cap = int(raw)
    except ValueError:
        cap = 0
    if cap <= 0:
        raise ValueError(f"{SIZE_CAP_ENV} must be a positive number of bytes, not {raw!r}")
    return cap


def declared_size(request: web.Request) -> int | None:
    """The size the client announces (X-OpenStack-Image-Size, as the SDK sends, or Content-Length)."""
    raw = request.headers.get("X-OpenStack-Image-Size")
    if raw is None:
        return request.content_length
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"Invalid X-OpenStack-Image-Size: {raw!r}") from None


async def body_chunks(content: StreamReader, idle_timeout: float = IDLE_TIMEOUT) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client silent for `idle_timeout` seconds is treated as
    gone (ConnectionAbortedError), like one whose connection dropped."""
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await content.readany()
        except TimeoutError:
            raise ConnectionAbortedError(f"no data for {idle_timeout:g} seconds") from None
        if not chunk:
            return
        yield chunk


def check_incoming(request: web.Request) -> int:
    """Refuse image data that is not application/octet-stream (415; aiohttp reports that type
    when the header is absent, and Glance wants it said) or announced larger than the size cap
    (413); the cap."""
    if "Content-Type" not in request.headers or request.content_type != "application/octet-stream":
        raise UnsupportedMediaType(
            f"Content type {request.headers.get('Content-Type')} is not supported; send "
            "application/octet-stream."
        )
    cap = request.app[SIZE_CAP]
    declared = declared_size(request)
    if declared is not None and declared > cap:
        raise PayloadTooLarge(f"The incoming image is too large: {declared} bytes, the limit is {cap}.")
    return cap


def receive_failure(exc: BaseException, image_id: str) -> ApiError | None:
    """What the client is told when receiving its image data failed with `exc` (None: re-raise)."""
    if isinstance(exc, store.TooLarge):
        return PayloadTooLarge(f"The incoming image is too large: {exc}.")
    if isinstance(exc, _DISCONNECTS):
        log.info("image upload interrupted", image_id=image_id, error=str(exc) or type(exc).__name__)
        return BadRequest("The image upload was interrupted before all of its data arrived.")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return PayloadTooLarge(f"Image storage media is full: {exc.strerror}")
    return None


async def _requeue(pool: asyncpg.Pool, image_id: str) -> None:
    await pool.execute(
        "UPDATE images SET status = 'queued', updated_at = now() WHERE id = $1 AND status = 'saving'",
        image_id,
    )


async def upload(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    image_id = request.match_info["image_id"]
    cap = check_incoming(request)
    async with context.pool.acquire() as conn:
        image = await access.visible_image(conn, me, image_id)
        access.require_modify(me, image, "upload_image")
        if image["status"] != ImageStatus.QUEUED:
            raise Conflict(f"Image status transition from {image['status']} to saving is not allowed")
        missing = [k for k in ("disk_format", "container_format") if not image[k]]
        if missing:
            noun = "Property" if len(missing) == 1 else "Properties"
            raise BadRequest(f"{noun} {', '.join(missing)} must be set prior to saving data.")
        claimed = await conn.fetchval(
            "UPDATE images SET status = 'saving', updated_at = now() WHERE id = $1 AND status = 'queued' "
            "RETURNING id",
            image_id,
        )
        if claimed is None:  # another upload got there first
            raise Conflict("Image status transition from saving to saving is not allowed")

    path = store.image_path(context.state_dir, image_id)
    try:
        received = await store.receive(body_chunks(request.content), path, cap=cap)
    except BaseException as exc:
        await asyncio.shield(_requeue(context.pool, image_id))
        answer = receive_failure(exc, image_id)
        if answer is not None:
            raise answer from None
        raise

    virtual = formats.virtual_size(image["disk_format"], received.head, received.tail, received.size)
    try:
        activated = await context.pool.fetchval(
            "UPDATE images SET status = 'active', size = $2, virtual_size = $3, checksum = $4, "
            "os_hash_algo = $5, os_hash_value = $6, updated_at = now() WHERE id = $1 AND status = 'saving' "
            "RETURNING id",
            image_id,
            received.size,
            virtual,
            received.md5,
            store.HASH_ALGO,
            received.hash_value,
        )
    except BaseException:
        await asyncio.shield(store.remove(path))
        await asyncio.shield(_requeue(context.pool, image_id))
        raise
    if activated is None:
        await store.remove(path)
        raise Gone(
            f"Image {image_id} could not be found after upload. The image may have been deleted "
            "during the upload, cleaning up the chunks uploaded."
        )
    log.info("image uploaded", image_id=image_id, size=received.size)
    return web.Response(status=204)


async def download(request: web.Request) -> web.StreamResponse:
    me = caller(request)
    context = ctx(request)
    image_id = request.match_info["image_id"]
    image = await access.visible_image(context.pool, me, image_id)
    if image["status"] == ImageStatus.DEACTIVATED and not me.is_admin:
        raise Forbidden("The requested image has been deactivated. Image data download is forbidden.")
    if image["status"] not in (ImageStatus.ACTIVE, ImageStatus.DEACTIVATED):
        return web.Response(status=204)  # no data yet, as Glance answers
    path = store.image_path(context.state_dir, image_id)
    if not await asyncio.to_thread(path.is_file):
        log.error("image data missing", image_id=image_id, path=str(path))
        return web.Response(status=204)  # Glance's answer when the store has lost the data
    headers = {"Content-Type": "application/octet-stream"}
    if image["checksum"] and "Range" not in request.headers:
        headers["Content-MD5"] = image["checksum"]
    return web.FileResponse(path, chunk_size=store.CHUNK, headers=headers)


def setup(app: web.Application) -> None:
    app[SIZE_CAP] = size_cap_from_env()
    r = app.router
    r.add_put("/image/v2/images/{image_id}/file", upload)
    r.add_get("/image/v2/images/{image_id}/file", download)
