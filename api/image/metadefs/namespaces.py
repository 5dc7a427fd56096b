"""/v2/metadefs/namespaces: metadata-definition namespaces, the containers of property
definitions, objects and tags that say which extra properties a resource type understands.

A namespace is created with whatever it contains in one transaction (all or nothing); showing
one shows its contents, with property names prefixed for `?resource_type=` as that type's
association says. Listing pages by keyset on the sort key then the row id.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import asyncpg
from aiohttp import web

from api.auth import AuthContext
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict
from api.image import query, validation
from api.image.metadefs import access, objects, properties, resource_types, schemas, tags
from api.image.metadefs.views import association_view, namespace_view, object_view, properties_map
from api.image.query import sort_and_limit
from api.sql import Sql

NAMESPACE_DOCUMENT = schemas.document(schemas.NAMESPACE)
# Sort keys; a nullable column sorts by its value or '' so that the keyset stays total.
SORT_KEYS = {
    "namespace": "n.namespace",
    "display_name": "coalesce(n.display_name, '')",
    "visibility": "n.visibility",
    "protected": "n.protected",
    "owner": "n.owner",
    "created_at": "n.created_at",
    "updated_at": "n.updated_at",
}


def check_namespace(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        schemas.refuse_read_only("namespace", body)
    validation.check("namespace", NAMESPACE_DOCUMENT, body)
    if not body["namespace"].strip():
        raise BadRequest("Provided object does not match schema 'namespace': the namespace name is empty.")
    for item in body.get("resource_type_associations", ()):
        resource_types.check_association(item)
    for item in body.get("objects", ()):
        objects.check_object(item)
    for item in body.get("tags", ()):
        tags.check_tag(item)
    return body


def duplicate(name: str) -> Conflict:
    return Conflict(f"The metadata definition namespace={name} already exists.")


async def _fill(conn: Any, namespace: asyncpg.Record, body: dict[str, Any]) -> None:
    for association in body.get("resource_type_associations", ()):
        await resource_types.associate(conn, namespace, association)
    for item in body.get("objects", ()):
        await objects.insert(conn, namespace, item)
    await tags.insert_many(conn, namespace, [tag["name"] for tag in body.get("tags", ())])
    for name, definition in (body.get("properties") or {}).items():
        await properties.insert(conn, namespace, name, definition)


async def create_namespace(request: web.Request) -> web.Response:
    me = caller(request)
    body = check_namespace(await json_body(request))
    access.require_admin(me, "add_metadef_namespace")
    context = ctx(request)
    name = body["namespace"]
    async with context.pool.acquire() as conn, conn.transaction():
        try:
            namespace = await conn.fetchrow(
                "INSERT INTO metadef_namespaces (namespace, display_name, description, visibility, "
                "protected, owner) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                name,
                body.get("display_name"),
                body.get("description"),
                body.get("visibility", "private"),
                body.get("protected", False),
                body.get("owner") or me.require_project(),
            )
        except asyncpg.UniqueViolationError:
            raise duplicate(name) from None
        await _fill(conn, namespace, body)
        view = await _detail(conn, namespace)
    return json_response(
        view,
        status=201,
        headers={"Location": f"{context.base_url}/image/v2/metadefs/namespaces/{quote(name, safe='')}"},
    )


async def _detail(conn: Any, namespace: asyncpg.Record, resource_type: str | None = None) -> dict[str, Any]:
    """The namespace with what it contains; property names prefixed for `resource_type`."""
    name = namespace["namespace"]
    associated = await resource_types.associations(conn, namespace["id"])
    object_views = [object_view(name, row) for row in await objects.of_namespace(conn, namespace["id"])]
    props = properties_map(await properties.of_namespace(conn, namespace["id"]))
    prefix = (
        next((a["prefix"] for a in associated if a["name"] == resource_type), None) if resource_type else None
    )
    if prefix:
        props = {prefix + key: value for key, value in props.items()}
        for view in object_views:
            view["properties"] = {
                prefix + key: value for key, value in (view.get("properties") or {}).items()
            }
            if view.get("required"):
                view["required"] = [prefix + key for key in view["required"]]
    return namespace_view(
        namespace,
        resource_type_associations=[association_view(a) for a in associated],
        properties=props,
        objects=object_views,
        tags=[{"name": row["name"]} for row in await tags.of_namespace(conn, namespace["id"])],
    )


async def get_namespace(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        namespace = await access.namespace(
            conn, caller(request), request.match_info["namespace"], inner=False
        )
        view = await _detail(conn, namespace, request.query.get("resource_type"))
    return json_response(view)


async def update_namespace(request: web.Request) -> web.Response:
    """A PUT, as Glance does it: what the body leaves out returns to its default (private, not
    protected, the caller's project as owner, no display name or description)."""
    me = caller(request)
    body = check_namespace(await json_body(request))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        current = await access.namespace(
            conn, me, request.match_info["namespace"], for_update=True, inner=False
        )
        access.require_admin(me, "modify_metadef_namespace")
        try:
            namespace = await conn.fetchrow(
                "UPDATE metadef_namespaces SET namespace = $2, display_name = $3, description = $4, "
                "visibility = $5, protected = $6, owner = $7, updated_at = now() WHERE id = $1 RETURNING *",
                current["id"],
                body["namespace"],
                body.get("display_name"),
                body.get("description"),
                body.get("visibility") or "private",
                body.get("protected") or False,
                body.get("owner") or me.require_project(),
            )
        except asyncpg.UniqueViolationError:
            raise duplicate(body["namespace"]) from None
    return json_response(namespace_view(namespace))


async def delete_namespace(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(
            conn, me, request.match_info["namespace"], for_update=True, inner=False
        )
        access.require_admin(me, "delete_metadef_namespace")
        access.refuse_if_protected(
            namespace,
            f"Metadata definition namespace {namespace['namespace']} is protected and cannot be deleted.",
        )
        await conn.execute("DELETE FROM metadef_namespaces WHERE id = $1", namespace["id"])
    return web.Response(status=204)


def _filters(sql: Sql, query: Any, me: AuthContext) -> None:
    if not me.is_admin:
        sql.where(access.visible_sql(sql.arg(me.project_id)))
    visibility = query.get("visibility")
    if visibility:
        if visibility not in ("public", "private"):
            raise BadRequest(f"Invalid visibility value: {visibility}")
        sql.where(f"n.visibility = {sql.arg(visibility)}")
    wanted = [name.strip() for name in query.get("resource_types", "").split(",") if name.strip()]
    if wanted:
        sql.where(
            "EXISTS (SELECT 1 FROM metadef_namespace_resource_types a JOIN metadef_resource_types t "
            "ON t.id = a.resource_type_id WHERE a.namespace_id = n.id "
            f"AND t.name = ANY({sql.arg(wanted)}::text[]))"
        )


async def list_namespaces(request: web.Request) -> web.Response:
    me = caller(request)
    query = request.query
    sort_key, sort_dir, limit = sort_and_limit(query, SORT_KEYS)
    descending = sort_dir == "desc"
    order = SORT_KEYS[sort_key]
    sql = Sql()
    _filters(sql, query, me)
    async with ctx(request).pool.acquire() as conn:
        marker = query.get("marker")
        if marker is not None:
            after = await access.namespace(conn, me, marker, inner=False)
            key = await conn.fetchval(
                f"SELECT {order} FROM metadef_namespaces n WHERE n.id = $1", after["id"]
            )
            op = "<" if descending else ">"
            sql.where(f"({order}, n.id) {op} ({sql.arg(key)}, {sql.arg(after['id'])})")
        direction = "DESC" if descending else "ASC"
        rows = await conn.fetch(
            f"SELECT * FROM metadef_namespaces n WHERE {sql.clause()} ORDER BY {order} {direction}, "
            f"n.id {direction} LIMIT {sql.arg(limit + 1)}",
            *sql.args,
        )
        page = rows[:limit]
        views = [
            namespace_view(
                row,
                resource_type_associations=[
                    association_view(a) for a in await resource_types.associations(conn, row["id"])
                ],
            )
            for row in page
        ]
    kept = [(k, v) for k, v in query.items() if k != "marker"]
    body: dict[str, Any] = {
        "namespaces": views,
        "first": "/v2/metadefs/namespaces" + (f"?{urlencode(kept)}" if kept else ""),
        "schema": "/v2/schemas/metadefs/namespaces",
    }
    if len(rows) > limit and page:
        body["next"] = f"/v2/metadefs/namespaces?{urlencode([*kept, ('marker', page[-1]['namespace'])])}"
    return json_response(body)


def setup(app: web.Application) -> None:
    r = app.router
    list_namespaces.query_parameters = [  # for /openapi.json
        *query.paging_parameters(list(SORT_KEYS), "The name of the last namespace of the previous page"),
        query.param("visibility", {"type": "string", "enum": ["public", "private"]}, "Only this visibility"),
        query.param("resource_types", {"type": "string"}, "Namespaces for any of these (comma-separated)"),
    ]
    get_namespace.query_parameters = [
        query.param("resource_type", {"type": "string"}, "Property names with this type's prefix")
    ]
    r.add_get("/image/v2/metadefs/namespaces", list_namespaces)
    r.add_post("/image/v2/metadefs/namespaces", create_namespace)
    r.add_get("/image/v2/metadefs/namespaces/{namespace}", get_namespace)
    r.add_put("/image/v2/metadefs/namespaces/{namespace}", update_namespace)
    r.add_delete("/image/v2/metadefs/namespaces/{namespace}", delete_namespace)
