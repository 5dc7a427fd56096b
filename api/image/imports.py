"""Interoperable image import, as Glance: PUT /v2/images/<id>/stage, POST /v2/images/<id>/import
and the import tasks of an image, GET /v2/images/<id>/tasks.

Staging (for glance-direct) moves a queued image to `uploading` in one conditional UPDATE (a
second stager gets 409), streams the body into the staging area (bounded by the size cap) and
records its size; a failed or interrupted stage puts the image back to `queued` and keeps
nothing. An import checks the request and the image as Glance does (method, stores, status,
formats, owner, the URL filter of web-download), then, in one transaction, creates the task and
takes the image's import lock (`os_glance_import_task`), so that two imports cannot run at once;
the work itself is the importer's (api/image/importer.py) and the answer is 202 at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, NotFound
from api.image import access, data, importer, info, store, task_records
from api.image.importer import IMPORTER, LOCK
from protocol.states import ImageStatus

log = data.log


# The import request, as /openapi.json describes it (api/openapi.py).
IMPORT_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "method": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": list(info.IMPORT_METHODS)},
                "uri": {"type": "string"},
            },
            "required": ["name"],
        },
        "stores": {"type": "array", "items": {"type": "string"}},
        "all_stores": {"type": "boolean"},
        "all_stores_must_succeed": {"type": "boolean"},
    },
    "required": ["method"],
}


async def _unstage(pool: Any, image_id: str) -> None:
    await pool.execute(
        "UPDATE images SET status = 'queued', size = NULL, updated_at = now() "
        "WHERE id = $1 AND status = 'uploading'",
        image_id,
    )


async def stage(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    image_id = request.match_info["image_id"]
    cap = data.check_incoming(request)
    async with context.pool.acquire() as conn:
        image = await access.visible_image(conn, me, image_id)
        access.require_modify(me, image)
        claimed = await conn.fetchval(
            "UPDATE images SET status = 'uploading', updated_at = now() WHERE id = $1 AND status = 'queued' "
            "RETURNING id",
            image_id,
        )
        if claimed is None:
            status = await conn.fetchval("SELECT status FROM images WHERE id = $1", image_id)
            raise Conflict(f"Image status transition from {status} to uploading is not allowed")
    path = store.staging_path(context.state_dir, image_id)
    try:
        received = await store.receive(data.body_chunks(request.content), path, cap=cap)
    except BaseException as exc:
        await asyncio.shield(_unstage(context.pool, image_id))
        answer = data.receive_failure(exc, image_id)
        if answer is not None:
            raise answer from None
        raise
    recorded = await context.pool.fetchval(
        "UPDATE images SET size = $2, updated_at = now() WHERE id = $1 AND status = 'uploading' RETURNING id",
        image_id,
        received.size,
    )
    if recorded is None:  # deleted while its data arrived
        await store.remove(path)
        raise access.not_found(image_id)
    return web.Response(status=204)


def _method(body: Any) -> tuple[str, dict[str, Any]]:
    """The import method's name and parameters, refused in Glance's words."""
    if not isinstance(body, dict) or "method" not in body:
        raise BadRequest("Import request requires a 'method' field.")
    method = body["method"]
    if not isinstance(method, dict) or "name" not in method:
        raise BadRequest("Import request requires a 'name' field.")
    name = method["name"]
    if name not in info.IMPORT_METHODS:
        raise BadRequest(f"Unknown import method name '{name}'.")
    for key in ("all_stores_must_succeed", "all_stores"):
        if not isinstance(body.get(key, False), bool):
            raise BadRequest(f"'{key}' must be boolean value only")
    return name, method


def _stores(request: web.Request, body: dict[str, Any]) -> list[str]:
    """The stores to import to (Glance's get_stores_from_request); 409 for one it lacks."""
    header = request.headers.get("X-Image-Meta-Store")
    if body.get("all_stores", False):
        if "stores" in body or header is not None:
            raise BadRequest(
                "All_stores parameter can't be used with x-image-meta-store header or stores parameter"
            )
        stores = [info.STORE_ID]
    elif "stores" in body:
        if header is not None:
            raise BadRequest("Stores parameter and x-image-meta-store header can't be both specified")
        stores = body["stores"]
        if not isinstance(stores, list) or not stores or not all(isinstance(s, str) for s in stores):
            raise BadRequest("'stores' must be a non-empty list of store identifiers.")
    else:
        stores = [header or info.STORE_ID]
    for name in stores:
        if name != info.STORE_ID:
            raise Conflict(f"Unknown scheme '{name}' found in URI")
    return list(dict.fromkeys(stores))


def _check_image(image: Any, method: str) -> None:
    status = image["status"]
    if status == ImageStatus.ACTIVE:
        raise Conflict("Image with status active cannot be target for import")
    if method == "web-download" and status != ImageStatus.QUEUED:
        raise Conflict(f"Image needs to be in 'queued' state to use '{method}' method")
    if method == "glance-direct" and status != ImageStatus.UPLOADING:
        raise Conflict("Image needs to be staged before 'glance-direct' method can be used")
    for key in ("container_format", "disk_format"):
        if not image[key]:
            raise Conflict(f"'{key}' needs to be set before import")


async def _check_lock(conn: Any, image: Any) -> None:
    """409 while another import holds the image; a lock left by an ended or vanished task is
    dropped (Glance busts such stale locks too)."""
    holder = image["properties"].get(LOCK)
    if holder is None:
        return
    task = await task_records.get(conn, holder)
    if task is not None and task["status"] in task_records.ACTIVE:
        raise Conflict("Image has active task")


async def import_image(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    image_id = request.match_info["image_id"]
    body = await json_body(request)
    method, params = _method(body)
    stores = _stores(request, body)
    runner = request.app[IMPORTER]
    async with context.pool.acquire() as conn, conn.transaction():
        image = await access.visible_image(conn, me, image_id, for_update=True)
        _check_image(image, method)
        access.require_modify(me, image)
        await _check_lock(conn, image)
        if method == "web-download" and not runner.rules.passes(params.get("uri")):
            raise BadRequest(f"URI for web-download does not pass filtering: {params.get('uri')}")
        task = await task_records.create(
            conn,
            type="api_image_import",
            owner=me.require_project(),
            input={"image_id": image_id, "import_req": body, "backend": stores},
            image_id=image_id,
            request_id=request.get("request_id"),
            user_id=me.user_id,
        )
        properties = {**image["properties"], LOCK: task["id"]}
        await conn.execute(
            "UPDATE images SET properties = $2, updated_at = now() WHERE id = $1", image_id, properties
        )
    runner.start(task["id"])
    return web.Response(status=202)


async def image_tasks(request: web.Request) -> web.Response:
    """The tasks that imported (or tried to) the image, oldest first (API 2.12)."""
    async with ctx(request).pool.acquire() as conn:
        try:
            image = await access.visible_image(conn, caller(request), request.match_info["image_id"])
        except NotFound:
            raise NotFound("The resource could not be found.") from None
        rows = await conn.fetch(
            "SELECT * FROM image_tasks WHERE image_id = $1 ORDER BY created_at, id", image["id"]
        )
    return json_response({"tasks": [task_records.image_task_view(r) for r in rows]})


def setup(app: web.Application) -> None:
    importer.setup(app)
    r = app.router
    r.add_put("/image/v2/images/{image_id}/stage", stage)
    r.add_post("/image/v2/images/{image_id}/import", import_image)
    r.add_get("/image/v2/images/{image_id}/tasks", image_tasks)
