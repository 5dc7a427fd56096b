"""/v2/metadefs/namespaces/<ns>/tags: the tags a namespace offers. Tag names are unique in a
namespace regardless of case, as Glance has them. Creating a list replaces the namespace's tags,
unless the request says `X-Openstack-Append: true`."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import Conflict, NotFound
from api.image import query, validation
from api.image.metadefs import access, schemas
from api.image.metadefs.views import tag_view

TAG_DOCUMENT = schemas.document(schemas.TAG)
TAGS_DOCUMENT = {
    "name": "tags",
    "properties": {"tags": {"type": "array", "items": TAG_DOCUMENT}},
    "required": ["tags"],
    "additionalProperties": False,
}
SORT_KEYS = ("created_at", "updated_at", "name")


def duplicate(name: str, namespace: str) -> Conflict:
    return Conflict(
        f"A metadata tag with name={name} already exists in namespace={namespace}. "
        "(Please note that metadata tag names are case insensitive)."
    )


def not_found(name: str, namespace: str) -> NotFound:
    return NotFound(f"The metadata definition tag with name={name} was not found in namespace={namespace}.")


def check_tag(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        schemas.refuse_read_only("tag", body)
    validation.check("tag", TAG_DOCUMENT, body)
    return body


async def insert_many(conn: Any, namespace: asyncpg.Record, names: list[str]) -> list[asyncpg.Record]:
    """Add the tags in the caller's transaction; 409 when one is taken (or given twice)."""
    seen: set[str] = set()
    rows = []
    for name in names:
        if name.lower() in seen:
            raise duplicate(name, namespace["namespace"])
        seen.add(name.lower())
        row = await conn.fetchrow(
            "INSERT INTO metadef_tags (namespace_id, name) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING *",
            namespace["id"],
            name,
        )
        if row is None:
            raise duplicate(name, namespace["namespace"])
        rows.append(row)
    return rows


async def of_namespace(conn: Any, namespace_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM metadef_tags WHERE namespace_id = $1 ORDER BY created_at, id", namespace_id
    )


async def _tag(
    conn: Any, namespace: asyncpg.Record, name: str, *, for_update: bool = False
) -> asyncpg.Record:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT * FROM metadef_tags WHERE namespace_id = $1 AND lower(name) = lower($2){lock}",
        namespace["id"],
        name,
    )
    if row is None:
        raise not_found(name, namespace["namespace"])
    return row


async def list_tags(request: web.Request) -> web.Response:
    sort_key, sort_dir, limit = query.sort_and_limit(request.query, SORT_KEYS)
    op = "<" if sort_dir == "desc" else ">"
    async with ctx(request).pool.acquire() as conn:
        namespace = await access.namespace(conn, caller(request), request.match_info["namespace"])
        args: list[Any] = [namespace["id"], limit]
        after = ""
        marker = request.query.get("marker")
        if marker is not None:
            row = await _tag(conn, namespace, marker)
            args += [row[sort_key], row["id"]]
            after = f" AND ({sort_key}, id) {op} ($3, $4)"
        rows = await conn.fetch(
            f"SELECT * FROM metadef_tags WHERE namespace_id = $1{after} "
            f"ORDER BY {sort_key} {sort_dir}, id {sort_dir} LIMIT $2",
            *args,
        )
    return json_response({"tags": [{"name": r["name"]} for r in rows]})


async def create_tags(request: web.Request) -> web.Response:
    me = caller(request)
    body = await json_body(request)
    validation.check("tags", TAGS_DOCUMENT, body)
    append = request.headers.get("X-Openstack-Append", "").strip().lower() in (
        "1",
        "t",
        "true",
        "on",
        "y",
        "yes",
    )
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "add_metadef_tags")
        if not append:
            await conn.execute("DELETE FROM metadef_tags WHERE namespace_id = $1", namespace["id"])
        rows = await insert_many(conn, namespace, [tag["name"] for tag in body["tags"]])
    return json_response({"tags": [{"name": r["name"]} for r in rows]}, status=201)


async def delete_all_tags(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "delete_metadef_tags")
        access.refuse_if_protected(
            namespace,
            f"Metadata definition namespace {namespace['namespace']} is protected and cannot be deleted.",
        )
        await conn.execute("DELETE FROM metadef_tags WHERE namespace_id = $1", namespace["id"])
    return web.Response(status=204)


async def create_tag(request: web.Request) -> web.Response:
    me = caller(request)
    name = request.match_info["tag_name"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        check_tag({"name": name})
        access.require_admin(me, "add_metadef_tag")
        (row,) = await insert_many(conn, namespace, [name])
    return json_response(tag_view(row), status=201)


async def get_tag(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        namespace = await access.namespace(conn, caller(request), request.match_info["namespace"])
        row = await _tag(conn, namespace, request.match_info["tag_name"])
    return json_response(tag_view(row))


async def update_tag(request: web.Request) -> web.Response:
    me = caller(request)
    body = check_tag(await json_body(request))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "modify_metadef_tag")
        current = await _tag(conn, namespace, request.match_info["tag_name"], for_update=True)
        try:
            row = await conn.fetchrow(
                "UPDATE metadef_tags SET name = $2, updated_at = now() WHERE id = $1 RETURNING *",
                current["id"],
                body["name"],
            )
        except asyncpg.UniqueViolationError:
            raise duplicate(body["name"], namespace["namespace"]) from None
    return json_response(tag_view(row))


async def delete_tag(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        namespace = await access.namespace(conn, me, request.match_info["namespace"], for_update=True)
        access.require_admin(me, "delete_metadef_tag")
        row = await _tag(conn, namespace, request.match_info["tag_name"], for_update=True)
        access.refuse_if_protected(
            namespace, f"Metadata definition tag {row['name']} is protected and cannot be deleted."
        )
        await conn.execute("DELETE FROM metadef_tags WHERE id = $1", row["id"])
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    base = "/image/v2/metadefs/namespaces/{namespace}/tags"
    list_tags.query_parameters = query.paging_parameters(  # for /openapi.json
        SORT_KEYS, "The name of the last tag of the previous page"
    )
    r.add_get(base, list_tags)
    r.add_post(base, create_tags)
    r.add_delete(base, delete_all_tags)
    r.add_get(base + "/{tag_name}", get_tag)
    r.add_post(base + "/{tag_name}", create_tag)
    r.add_put(base + "/{tag_name}", update_tag)
    r.add_delete(base + "/{tag_name}", delete_tag)
