"""/v2/metadefs/namespaces/<ns>/properties: the property definitions of a namespace, each a
small JSON Schema (title, type, enum, ...) under its name."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import Conflict, NotFound
from api.image import query, validation
from api.image.metadefs import access, schemas
from api.image.metadefs.resource_types import associations
from api.image.metadefs.views import properties_map, property_view

PROPERTY_DOCUMENT = schemas.document(schemas.PROPERTY)


def check_property(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        schemas.refuse_read_only("property", body)
    validation.check("property", PROPERTY_DOCUMENT, body)
    return body


def duplicate(name: str, namespace: str) -> Conflict:
    return Conflict(
        f"A metadata definition property with name={name} already exists in namespace={namespace}."
    )


def not_found(name: str, namespace: str) -> NotFound:
    return NotFound(
        f"The metadata definition property with name={name} was not found in namespace={namespace}."
    )


async def insert(
    conn: Any, namespace: asyncpg.Record, name: str, definition: dict[str, Any]
) -> asyncpg.Record:
    """Add the property to the namespace in the caller's transaction; 409 when the name is taken."""
    definition = {key: value for key, value in definition.items() if key != "name"}
    row = await conn.fetchrow(
        "INSERT INTO metadef_properties (namespace_id, name, definition) VALUES ($1, $2, $3) "
        "ON CONFLICT (namespace_id, name) DO NOTHING RETURNING *",
        namespace["id"],
        name,
        definition,
    )
    if row is None:
        raise duplicate(name, namespace["namespace"])
    return row


async def of_namespace(conn: Any, namespace_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM metadef_properties WHERE namespace_id = $1 ORDER BY created_at, id", namespace_id
    )


async def _property(
    conn: Any, namespace: asyncpg.Record, name: str, *, for_update: bool = False
) -> asyncpg.Record:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT * FROM metadef_properties WHERE namespace_id = $1 AND name = $2{lock}", namespace["id"], name
    )
    if row is None:
        raise not_found(name, namespace["namespace"])
    return row


async def list_properties(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        namespace = await access.namespace(conn, caller(request), request.match_info["namespace"])
        rows = await of_namespace(conn, namespace["id"])
    return json_response({"properties": properties_map(rows)})


async def create_property(request: web.Request) -> web.Response:
    me = caller(request)
    body = check_property(await json_body(request))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "add_metadef_property")
        row = await insert(conn, namespace, body["name"], body)
    return json_response(property_view(row), status=201)


async def get_property(request: web.Request) -> web.Response:
    """`?resource_type=T`: the name is asked for with T's prefix, which is taken off to find it."""
    name = request.match_info["property_name"]
    resource_type = request.query.get("resource_type")
    async with ctx(request).pool.acquire() as conn:
        namespace = await access.namespace(conn, caller(request), request.match_info["namespace"])
        if resource_type:
            found = [a for a in await associations(conn, namespace["id"]) if a["name"] == resource_type]
            if not found:
                raise NotFound(
                    f"The metadata definition resource-type association of resource-type={resource_type} "
                    f"to namespace={namespace['namespace']}, was not found."
                )
            prefix = found[0]["prefix"]
            if not prefix or not name.startswith(prefix):
                raise NotFound(
                    f"Property {name} does not start with the expected resource type association "
                    f"prefix of '{prefix}'."
                )
            name = name[len(prefix) :]
        row = await _property(conn, namespace, name)
    return json_response(property_view(row))


async def update_property(request: web.Request) -> web.Response:
    """A PUT: the property becomes what the body says, under the body's name."""
    me = caller(request)
    body = check_property(await json_body(request))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "modify_metadef_property")
        current = await _property(conn, namespace, request.match_info["property_name"], for_update=True)
        definition = {key: value for key, value in body.items() if key != "name"}
        try:
            row = await conn.fetchrow(
                "UPDATE metadef_properties SET name = $2, definition = $3, updated_at = now() WHERE id = $1 "
                "RETURNING *",
                current["id"],
                body["name"],
                definition,
            )
        except asyncpg.UniqueViolationError:
            raise duplicate(body["name"], namespace["namespace"]) from None
    return json_response(property_view(row))


async def delete_property(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "remove_metadef_property")
        row = await _property(conn, namespace, request.match_info["property_name"], for_update=True)
        access.refuse_if_protected(
            namespace, f"Metadata definition property {row['name']} is protected and cannot be deleted."
        )
        await conn.execute("DELETE FROM metadef_properties WHERE id = $1", row["id"])
    return web.Response(status=204)


async def delete_all_properties(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "delete_metadef_namespace")
        access.refuse_if_protected(
            namespace,
            f"Metadata definition namespace {namespace['namespace']} is protected and cannot be deleted.",
        )
        await conn.execute("DELETE FROM metadef_properties WHERE namespace_id = $1", namespace["id"])
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    base = "/image/v2/metadefs/namespaces/{namespace}/properties"
    r.add_get(base, list_properties)
    r.add_post(base, create_property)
    r.add_delete(base, delete_all_properties)
    get_property.query_parameters = [  # for /openapi.json
        query.param("resource_type", {"type": "string"}, "The name carries this type's prefix")
    ]
    r.add_get(base + "/{property_name}", get_property)
    r.add_put(base + "/{property_name}", update_property)
    r.add_delete(base + "/{property_name}", delete_property)
