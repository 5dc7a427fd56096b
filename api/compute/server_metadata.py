"""/compute/v2.1/servers/{id}/metadata: a server's metadata, whole or key by key (Nova's
server_metadata), under the project's metadata_items quota.

A locked server's metadata is changed by an admin only, as in Nova. The same checks apply to the
metadata a server is created with (`checked_metadata`, used by servers.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import quotas
from api.compute.server_lookup import find
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden, NotFound


def checked_metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 255 and len(v) <= 255
        for k, v in value.items()
    ):
        raise BadRequest(
            "Invalid input for field/attribute metadata. Keys and values must be strings of 1-255 "
            "(keys) and 0-255 (values) characters"
        )
    return value


async def _write_metadata(request: web.Request, change: Any) -> dict[str, str]:
    """Apply `change(old) -> new` to the server's metadata under the metadata_items quota."""
    me = caller(request)
    me.require_writer("os_compute_api:server-metadata:update")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, request.match_info["server_id"])
        if row["locked"] and not me.is_admin:
            raise Conflict(f"Instance {row['id']} is locked")
        new = change(dict(row["metadata"]))
        limit = (await quotas.limits(conn, row["project_id"], ("metadata_items",)))["metadata_items"]
        if limit != quotas.UNLIMITED and len(new) > limit:
            raise Forbidden(f"Quota exceeded for metadata_items: the limit is {limit} items")
        await conn.execute(
            "UPDATE servers SET metadata = $2, version = version + 1 WHERE id = $1", row["id"], new
        )
    return new


async def show_metadata(request: web.Request) -> web.Response:
    row = await find(ctx(request).pool, caller(request), request.match_info["server_id"])
    return json_response({"metadata": row["metadata"]})


async def merge_metadata(request: web.Request) -> web.Response:
    document = await json_body(request)
    items = checked_metadata(document.get("metadata") if isinstance(document, dict) else None)
    return json_response({"metadata": await _write_metadata(request, lambda old: {**old, **items})})


async def replace_metadata(request: web.Request) -> web.Response:
    document = await json_body(request)
    items = checked_metadata(document.get("metadata") if isinstance(document, dict) else None)
    return json_response({"metadata": await _write_metadata(request, lambda old: dict(items))})


async def show_metadata_item(request: web.Request) -> web.Response:
    row = await find(ctx(request).pool, caller(request), request.match_info["server_id"])
    key = request.match_info["key"]
    if key not in row["metadata"]:
        raise NotFound("Metadata item was not found")
    return json_response({"meta": {key: row["metadata"][key]}})


async def set_metadata_item(request: web.Request) -> web.Response:
    document = await json_body(request)
    item = checked_metadata(document.get("meta") if isinstance(document, dict) else None)
    key = request.match_info["key"]
    if list(item) != [key]:
        raise BadRequest("Request body and URI mismatch")
    await _write_metadata(request, lambda old: {**old, **item})
    return json_response({"meta": item})


async def delete_metadata_item(request: web.Request) -> web.Response:
    key = request.match_info["key"]

    def without(old: dict[str, str]) -> dict[str, str]:
        if key not in old:
            raise NotFound("Metadata item was not found")
        return {k: v for k, v in old.items() if k != key}

    await _write_metadata(request, without)
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/servers/{server_id}/metadata", show_metadata)
    r.add_post("/compute/v2.1/servers/{server_id}/metadata", merge_metadata)
    r.add_put("/compute/v2.1/servers/{server_id}/metadata", replace_metadata)
    r.add_get("/compute/v2.1/servers/{server_id}/metadata/{key}", show_metadata_item)
    r.add_put("/compute/v2.1/servers/{server_id}/metadata/{key}", set_metadata_item)
    r.add_delete("/compute/v2.1/servers/{server_id}/metadata/{key}", delete_metadata_item)
