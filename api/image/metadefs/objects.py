"""/v2/metadefs/namespaces/<ns>/objects: named groups of property definitions in a namespace
(e.g. "CPU Limits"), each with the names of the ones required."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import Conflict, NotFound
from api.image import validation
from api.image.metadefs import access, schemas
from api.image.metadefs.views import object_view

OBJECT_DOCUMENT = schemas.document(schemas.OBJECT)
# A property inside an object is named by its key, so it need not carry a name.
NAMELESS_PROPERTY = {**schemas.document(schemas.PROPERTY), "required": schemas.PROPERTY_REQUIRED}


def check_object(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        schemas.refuse_read_only("object", body)
    validation.check("object", OBJECT_DOCUMENT, body)
    for definition in (body.get("properties") or {}).values():
        validation.check("property", NAMELESS_PROPERTY, definition)
    return body


def duplicate(name: str, namespace: str) -> Conflict:
    return Conflict(f"A metadata definition object with name={name} already exists in namespace={namespace}.")


def not_found(name: str, namespace: str) -> NotFound:
    return NotFound(
        f"The metadata definition object with name={name} was not found in namespace={namespace}."
    )


async def insert(conn: Any, namespace: asyncpg.Record, body: dict[str, Any]) -> asyncpg.Record:
    """Add the object to the namespace in the caller's transaction; 409 when its name is taken."""
    row = await conn.fetchrow(
        "INSERT INTO metadef_objects (namespace_id, name, description, required, properties) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (namespace_id, name) DO NOTHING RETURNING *",
        namespace["id"],
        body["name"],
        body.get("description"),
        body.get("required"),
        body.get("properties"),
    )
    if row is None:
        raise duplicate(body["name"], namespace["namespace"])
    return row


async def of_namespace(conn: Any, namespace_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM metadef_objects WHERE namespace_id = $1 ORDER BY created_at, id", namespace_id
    )


async def list_objects(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        namespace = await access.namespace(conn, caller(request), request.match_info["namespace"])
        rows = await of_namespace(conn, namespace["id"])
    name = namespace["namespace"]
    # Glance's own schema link here has no leading slash.
    return json_response(
        {"objects": [object_view(name, r) for r in rows], "schema": "v2/schemas/metadefs/objects"}
    )


async def create_object(request: web.Request) -> web.Response:
    me = caller(request)
    body = check_object(await json_body(request))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "add_metadef_object")
        row = await insert(conn, namespace, body)
    return json_response(object_view(namespace["namespace"], row), status=201)


async def _object(
    conn: Any, namespace: asyncpg.Record, name: str, *, for_update: bool = False
) -> asyncpg.Record:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT * FROM metadef_objects WHERE namespace_id = $1 AND name = $2{lock}", namespace["id"], name
    )
    if row is None:
        raise not_found(name, namespace["namespace"])
    return row


async def get_object(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        namespace = await access.namespace(conn, caller(request), request.match_info["namespace"])
        row = await _object(conn, namespace, request.match_info["object_name"])
    return json_response(object_view(namespace["namespace"], row))


async def update_object(request: web.Request) -> web.Response:
    """A PUT: name, description, required and properties become what the body says."""
    me = caller(request)
    body = check_object(await json_body(request))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "modify_metadef_object")
        current = await _object(conn, namespace, request.match_info["object_name"], for_update=True)
        try:
            row = await conn.fetchrow(
                "UPDATE metadef_objects SET name = $2, description = $3, required = $4, properties = $5, "
                "updated_at = now() WHERE id = $1 RETURNING *",
                current["id"],
                body["name"],
                body.get("description"),
                body.get("required"),
                body.get("properties"),
            )
        except asyncpg.UniqueViolationError:
            raise duplicate(body["name"], namespace["namespace"]) from None
    return json_response(object_view(namespace["namespace"], row))


async def delete_object(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "delete_metadef_object")
        row = await _object(conn, namespace, request.match_info["object_name"], for_update=True)
        access.refuse_if_protected(
            namespace, f"Metadata definition object {row['name']} is protected and cannot be deleted."
        )
        await conn.execute("DELETE FROM metadef_objects WHERE id = $1", row["id"])
    return web.Response(status=204)


async def delete_all_objects(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "delete_metadef_namespace")
        access.refuse_if_protected(
            namespace,
            f"Metadata definition namespace {namespace['namespace']} is protected and cannot be deleted.",
        )
        await conn.execute("DELETE FROM metadef_objects WHERE namespace_id = $1", namespace["id"])
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    base = "/image/v2/metadefs/namespaces/{namespace}/objects"
    r.add_get(base, list_objects)
    r.add_post(base, create_object)
    r.add_delete(base, delete_all_objects)
    r.add_get(base + "/{object_name}", get_object)
    r.add_put(base + "/{object_name}", update_object)
    r.add_delete(base + "/{object_name}", delete_object)
