"""/volume/v3/{project_id}/volumes/{id}/metadata: a volume's metadata as Cinder serves it
(`openstack volume set --property`, `volume unset --property`).

GET the whole; POST merges, PUT replaces, both answering the whole; …/metadata/{key} GET, PUT
(exactly that one key) and DELETE. Metadata is the API's column: each write bumps the version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, NotFound
from api.validate import invalid
from api.volume import validate as check
from api.volume import volumes


def _missing(volume_id: str, key: str) -> NotFound:
    return NotFound(f"Volume {volume_id} has no metadata with key {key}.")


async def _body(request: web.Request, wrapper: str) -> dict[str, str]:
    document = await json_body(request)
    if not isinstance(document, dict) or wrapper not in document:
        raise BadRequest(f"Invalid input for field/attribute {wrapper}. '{wrapper}' is a required property")
    extra = sorted(set(document) - {wrapper})
    if extra:
        listed = ", ".join(map(repr, extra))
        raise invalid(wrapper, document, f"Additional properties are not allowed ({listed} unexpected)")
    return check.metadata(document[wrapper], wrapper)


Change = Callable[[str, dict[str, str]], dict[str, str]]


async def _write(request: web.Request, change: Change) -> dict[str, str]:
    """Apply `change(volume_id, old) -> new` to the volume's metadata; the new metadata."""
    me = caller(request)
    me.require_writer("volume:update_volume_metadata")
    volumes.url_project(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await volumes.find(conn, me, request.match_info["volume_id"], lock=True)
        new = change(row["id"], dict(row["metadata"]))
        await conn.execute(
            "UPDATE volumes SET metadata = $2, version = version + 1, updated_at = now() WHERE id = $1",
            row["id"],
            new,
        )
    return new


async def _read(request: web.Request) -> tuple[str, dict[str, Any]]:
    volumes.url_project(request)
    row = await volumes.find(ctx(request).pool, caller(request), request.match_info["volume_id"])
    return row["id"], row["metadata"]


async def show_all(request: web.Request) -> web.Response:
    _, metadata = await _read(request)
    return json_response({"metadata": metadata})


async def merge(request: web.Request) -> web.Response:
    items = await _body(request, "metadata")
    return json_response({"metadata": await _write(request, lambda _, old: {**old, **items})})


async def replace(request: web.Request) -> web.Response:
    items = await _body(request, "metadata")
    return json_response({"metadata": await _write(request, lambda _, old: dict(items))})


async def show_item(request: web.Request) -> web.Response:
    volume_id, metadata = await _read(request)
    key = request.match_info["key"]
    if key not in metadata:
        raise _missing(volume_id, key)
    return json_response({"meta": {key: metadata[key]}})


async def set_item(request: web.Request) -> web.Response:
    item = await _body(request, "meta")
    key = request.match_info["key"]
    if key not in item:
        raise BadRequest("Request body and URI mismatch")
    if len(item) > 1:
        raise BadRequest("Request body contains too many items")
    await _write(request, lambda _, old: {**old, **item})
    return json_response({"meta": item})


async def delete_item(request: web.Request) -> web.Response:
    key = request.match_info["key"]

    def without(volume_id: str, old: dict[str, str]) -> dict[str, str]:
        if key not in old:
            raise _missing(volume_id, key)
        return {k: value for k, value in old.items() if k != key}

    await _write(request, without)
    return web.Response(status=200)


def setup(app: web.Application) -> None:
    r = app.router
    base = "/volume/v3/{project_id}/volumes/{volume_id}/metadata"
    r.add_get(base, show_all)
    r.add_post(base, merge)
    r.add_put(base, replace)
    r.add_get(base + "/{key}", show_item)
    r.add_put(base + "/{key}", set_item)
    r.add_delete(base + "/{key}", delete_item)
