"""/identity/v3/policies: policy blobs Keystone stores for other services to fetch (the resource;
the rules Keystone itself enforces are api/identity/policy.py)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, NotFound
from api.identity import policy
from api.identity import validate as v
from api.identity.views import links
from api.query_doc import documented, strings

_KNOWN = {"id", "type", "blob"}


def _view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    view = {
        "id": row["id"],
        "type": row["type"],
        "blob": row["blob"],
        "links": {"self": f"{base}/identity/v3/policies/{row['id']}"},
    }
    return {**{k: val for k, val in row["extra"].items() if k not in view}, **view}


async def _policy(conn: Any, policy_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM policies WHERE id = $1", policy_id)
    if row is None:
        raise NotFound(f"Could not find policy: {policy_id}.")
    return row


def _fields(data: dict[str, Any], *, create: bool) -> tuple[str | None, str | None]:
    type_ = v.text(data, "type", required=create, max_len=255)
    blob = v.text(data, "blob", required=create, max_len=1024 * 1024)
    if "type" in data and not (type_ or "").strip():
        raise BadRequest("Invalid input for field 'type': it may not be empty")
    return type_, blob


async def list_policies(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "list_policies")
    context = ctx(request)
    rows = await context.pool.fetch(
        "SELECT * FROM policies WHERE ($1::text IS NULL OR type = $1) ORDER BY type, id",
        request.query.get("type"),
    )
    base = context.base_url
    return json_response({"policies": [_view(r, base) for r in rows], "links": links(base, "policies")})


async def create_policy(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "create_policy")
    context = ctx(request)
    data = v.member(await json_body(request), "policy")
    type_, blob = _fields(data, create=True)
    row = await context.pool.fetchrow(
        "INSERT INTO policies (id, type, blob, extra) VALUES ($1, $2, $3, $4) RETURNING *",
        uuid.uuid4().hex,
        type_,
        blob,
        v.extra(data, _KNOWN),
    )
    return json_response({"policy": _view(row, context.base_url)}, status=201)


async def get_policy(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "get_policy")
    context = ctx(request)
    row = await _policy(context.pool, request.match_info["policy_id"])
    return json_response({"policy": _view(row, context.base_url)})


async def update_policy(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "update_policy")
    context = ctx(request)
    data = v.member(await json_body(request), "policy")
    type_, blob = _fields(data, create=False)
    async with context.pool.acquire() as conn, conn.transaction():
        old = await _policy(conn, request.match_info["policy_id"])
        row = await conn.fetchrow(
            "UPDATE policies SET type = coalesce($2, type), blob = coalesce($3, blob), extra = extra || $4 "
            "WHERE id = $1 RETURNING *",
            old["id"],
            type_,
            blob,
            v.extra(data, _KNOWN),
        )
    return json_response({"policy": _view(row, context.base_url)})


async def delete_policy(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "delete_policy")
    policy_id = request.match_info["policy_id"]
    status = await ctx(request).pool.execute("DELETE FROM policies WHERE id = $1", policy_id)
    if status == "DELETE 0":
        raise NotFound(f"Could not find policy: {policy_id}.")
    return web.Response(status=204)


documented(list_policies, parameters=strings("type"))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/policies", list_policies)
    r.add_post("/identity/v3/policies", create_policy)
    r.add_get("/identity/v3/policies/{policy_id}", get_policy)
    r.add_patch("/identity/v3/policies/{policy_id}", update_policy)
    r.add_delete("/identity/v3/policies/{policy_id}", delete_policy)
