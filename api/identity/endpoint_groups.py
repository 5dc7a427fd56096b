"""/identity/v3/OS-EP-FILTER/endpoint_groups: Keystone's endpoint groups, named filters over the
catalog's endpoints (by `service_id`, `interface` and `region_id`), and the endpoints they
select."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, NotFound
from api.identity import catalog, policy
from api.identity import validate as v
from api.identity.views import links
from api.query_doc import documented, strings

FILTER_KEYS = ("service_id", "interface", "region_id")


def _view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "filters": row["filters"],
        "links": {"self": f"{base}/identity/v3/OS-EP-FILTER/endpoint_groups/{row['id']}"},
    }


def _filters(data: dict[str, Any], *, required: bool) -> dict[str, str] | None:
    filters = data.get("filters")
    if filters is None:
        if required:
            raise BadRequest("'filters' is a required property")
        return None
    if not isinstance(filters, dict) or not filters:
        raise BadRequest("Invalid input for field 'filters': a non-empty object was expected")
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        raise BadRequest(f"Invalid filter keys: {', '.join(unknown)}; allowed: {', '.join(FILTER_KEYS)}.")
    if not all(isinstance(value, str) for value in filters.values()):
        raise BadRequest("Invalid input for field 'filters': its values must be strings")
    if "interface" in filters and filters["interface"] not in catalog.INTERFACES:
        raise BadRequest(f"Invalid interface in filters: {filters['interface']}.")
    return filters


async def _group(conn: Any, group_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM endpoint_groups WHERE id = $1", group_id)
    if row is None:
        raise NotFound(f"Could not find Endpoint Group: {group_id}.")
    return row


async def list_groups(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "list_endpoint_groups")
    context = ctx(request)
    rows = await context.pool.fetch(
        "SELECT * FROM endpoint_groups WHERE ($1::text IS NULL OR name = $1) ORDER BY name, id",
        request.query.get("name"),
    )
    base = context.base_url
    groups = [_view(r, base) for r in rows]
    return json_response({"endpoint_groups": groups, "links": links(base, "OS-EP-FILTER/endpoint_groups")})


async def create_group(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "create_endpoint_group")
    context = ctx(request)
    data = v.member(await json_body(request), "endpoint_group")
    name = v.text(data, "name", required=True, max_len=255)
    description = v.text(data, "description", max_len=65535)
    filters = _filters(data, required=True)
    row = await context.pool.fetchrow(
        "INSERT INTO endpoint_groups (id, name, description, filters) VALUES ($1, $2, $3, $4) RETURNING *",
        uuid.uuid4().hex,
        name,
        description,
        filters,
    )
    return json_response({"endpoint_group": _view(row, context.base_url)}, status=201)


async def get_group(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "get_endpoint_group")
    context = ctx(request)
    row = await _group(context.pool, request.match_info["group_id"])
    return json_response({"endpoint_group": _view(row, context.base_url)})


async def check_group(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "get_endpoint_group")
    await _group(ctx(request).pool, request.match_info["group_id"])
    return web.Response(status=200)


async def update_group(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "update_endpoint_group")
    context = ctx(request)
    data = v.member(await json_body(request), "endpoint_group")
    name = v.text(data, "name", max_len=255)
    if "name" in data and not (name or "").strip():
        raise BadRequest("Invalid input for field 'name': it may not be empty")
    description = v.text(data, "description", max_len=65535)
    filters = _filters(data, required=False)
    async with context.pool.acquire() as conn, conn.transaction():
        old = await _group(conn, request.match_info["group_id"])
        row = await conn.fetchrow(
            "UPDATE endpoint_groups SET name = coalesce($2, name), description = coalesce($3, description), "
            "filters = coalesce($4, filters) WHERE id = $1 RETURNING *",
            old["id"],
            name,
            description,
            filters,
        )
    return json_response({"endpoint_group": _view(row, context.base_url)})


async def delete_group(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "delete_endpoint_group")
    group_id = request.match_info["group_id"]
    status = await ctx(request).pool.execute("DELETE FROM endpoint_groups WHERE id = $1", group_id)
    if status == "DELETE 0":
        raise NotFound(f"Could not find Endpoint Group: {group_id}.")
    return web.Response(status=204)


async def group_endpoints(request: web.Request) -> web.Response:
    """The endpoints the group's filters select."""
    policy.require_reader(caller(request), "list_endpoints_associated_with_endpoint_group")
    context = ctx(request)
    base = context.base_url
    async with context.pool.acquire() as conn:
        group = await _group(conn, request.match_info["group_id"])
        listed = await catalog.all_endpoints(conn, base)
    filters = group["filters"]
    chosen = [e for e in listed if all(e.get(key) == value for key, value in filters.items())]
    return json_response(
        {"endpoints": chosen, "links": links(base, f"OS-EP-FILTER/endpoint_groups/{group['id']}/endpoints")}
    )


documented(list_groups, parameters=strings("name"))


def setup(app: web.Application) -> None:
    r = app.router
    base = "/identity/v3/OS-EP-FILTER/endpoint_groups"
    r.add_get(base, list_groups)
    r.add_post(base, create_group)
    r.add_get(f"{base}/{{group_id}}", get_group, allow_head=False)
    r.add_head(f"{base}/{{group_id}}", check_group)
    r.add_patch(f"{base}/{{group_id}}", update_group)
    r.add_delete(f"{base}/{{group_id}}", delete_group)
    r.add_get(f"{base}/{{group_id}}/endpoints", group_endpoints)
