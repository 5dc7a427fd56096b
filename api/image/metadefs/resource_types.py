"""Resource types and their associations with namespaces: /v2/metadefs/resource_types and
/v2/metadefs/namespaces/<ns>/resource_types.

The cloud comes with the resource types of the services it runs (protected, as Glance's loaded
definitions make them); associating a namespace with a name not known yet creates that type, as
Glance does. An association says which prefix the namespace's properties take on that type.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import Conflict, NotFound
from api.image import validation
from api.image.metadefs import access, schemas
from api.image.metadefs.views import association_view, resource_type_view

ASSOCIATION_DOCUMENT = schemas.document(schemas.RESOURCE_TYPE_ASSOCIATION)


def check_association(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        schemas.refuse_read_only("resource_type_association", body)
    validation.check("resource_type_association", ASSOCIATION_DOCUMENT, body)
    return body


async def associate(conn: Any, namespace: asyncpg.Record, body: dict[str, Any]) -> asyncpg.Record:
    """Associate the namespace with the resource type `body["name"]` (created if new), in the
    caller's transaction; 409 when they are associated already."""
    name = body["name"]
    type_id = await conn.fetchval(
        "INSERT INTO metadef_resource_types (name) VALUES ($1) "
        "ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
        name,
    )
    row = await conn.fetchrow(
        "INSERT INTO metadef_namespace_resource_types "
        "(namespace_id, resource_type_id, prefix, properties_target) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT DO NOTHING RETURNING *, $5::text AS name",
        namespace["id"],
        type_id,
        body.get("prefix"),
        body.get("properties_target"),
        name,
    )
    if row is None:
        raise Conflict(
            f"The metadata definition resource-type association of resource-type={name} to "
            f"namespace={namespace['namespace']} already exists."
        )
    return row


async def associations(conn: Any, namespace_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT a.*, t.name FROM metadef_namespace_resource_types a "
        "JOIN metadef_resource_types t ON t.id = a.resource_type_id WHERE a.namespace_id = $1 "
        "ORDER BY a.created_at, t.name",
        namespace_id,
    )


async def list_resource_types(request: web.Request) -> web.Response:
    rows = await ctx(request).pool.fetch("SELECT * FROM metadef_resource_types ORDER BY created_at, id")
    return json_response({"resource_types": [resource_type_view(r) for r in rows]})


async def list_associations(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        namespace = await access.namespace(conn, caller(request), request.match_info["namespace"])
        rows = await associations(conn, namespace["id"])
    return json_response({"resource_type_associations": [association_view(r) for r in rows]})


async def create_association(request: web.Request) -> web.Response:
    me = caller(request)
    body = check_association(await json_body(request))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "add_metadef_resource_type_association")
        row = await associate(conn, namespace, body)
    return json_response(association_view(row), status=201)


async def delete_association(request: web.Request) -> web.Response:
    me = caller(request)
    name = request.match_info["resource_type"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "remove_metadef_resource_type_association")
        exists = await conn.fetchval(
            "SELECT 1 FROM metadef_namespace_resource_types a JOIN metadef_resource_types t "
            "ON t.id = a.resource_type_id WHERE a.namespace_id = $1 AND t.name = $2",
            namespace["id"],
            name,
        )
        if not exists:
            raise NotFound(f"Failed to find resource type {name} to delete")
        access.refuse_if_protected(
            namespace,
            f"Metadata definition resource-type-association {name} is protected and cannot be deleted.",
        )
        await conn.execute(
            "DELETE FROM metadef_namespace_resource_types a USING metadef_resource_types t "
            "WHERE t.id = a.resource_type_id AND a.namespace_id = $1 AND t.name = $2",
            namespace["id"],
            name,
        )
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/image/v2/metadefs/resource_types", list_resource_types)
    base = "/image/v2/metadefs/namespaces/{namespace}/resource_types"
    r.add_get(base, list_associations)
    r.add_post(base, create_association)
    r.add_delete(base + "/{resource_type}", delete_association)
