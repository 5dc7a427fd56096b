"""/identity/v3/groups, their members (/groups/{id}/users/{user}) and a user's groups
(/users/{id}/groups), as Keystone has them. A group's roles are its members' (api/effective_roles.py):
a member added or removed gains or loses them on their next request.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.auth import new_id
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, NotFound
from api.identity import policy
from api.identity import validate as v
from api.identity.list_filters import add_text_filters, inexact
from api.identity.views import find_domain, get_or_404, group_view, links, user_view
from api.query_doc import documented, param
from api.sql import Sql

_KNOWN = {"name", "domain_id", "description"}


def _conflict(name: str | None, domain_id: str) -> Conflict:
    return Conflict(
        f"Conflict occurred attempting to store group - Duplicate entry found with name {name} "
        f"at domain ID {domain_id}."
    )


def _may_change(request: web.Request, domain_id: str, action: str) -> None:
    me = caller(request)
    if not (me.is_admin or policy.domain_admin(me, domain_id)):
        raise policy.denied(action)


async def list_groups(request: web.Request) -> web.Response:
    domain_only = policy.listable_domain(caller(request), "list_groups")
    context = ctx(request)
    q = request.query
    sql = Sql()
    if domain_only is not None:
        sql.where(f"domain_id = {sql.arg(domain_only)}")
    add_text_filters(sql, q, {"name": "name", "domain_id": "domain_id"})
    rows = await context.pool.fetch(f"SELECT * FROM groups WHERE {sql.clause()} ORDER BY name", *sql.args)
    return json_response(
        {
            "groups": [group_view(r, context.base_url) for r in rows],
            "links": links(context.base_url, "groups"),
        }
    )


async def create_group(request: web.Request) -> web.Response:
    context = ctx(request)
    data = v.member(await json_body(request), "group")
    name = v.text(data, "name", required=True, max_len=64)
    description = v.text(data, "description", max_len=65535) or ""
    me = caller(request)
    async with context.pool.acquire() as conn:
        domain = await find_domain(conn, {"id": data.get("domain_id") or me.domain_id or "default"})
        _may_change(request, domain["id"], "create_group")
        try:
            row = await conn.fetchrow(
                "INSERT INTO groups (id, name, domain_id, description, extra) VALUES ($1, $2, $3, $4, $5) "
                "RETURNING *",
                new_id(),
                name,
                domain["id"],
                description,
                v.extra(data, _KNOWN),
            )
        except asyncpg.UniqueViolationError:
            raise _conflict(name, domain["id"]) from None
    return json_response({"group": group_view(row, context.base_url)}, status=201)


async def get_group(request: web.Request) -> web.Response:
    context = ctx(request)
    row = await get_or_404(context.pool, "groups", request.match_info["group_id"], "group")
    policy.require_reader(caller(request), "get_group", domain_id=row["domain_id"])
    return json_response({"group": group_view(row, context.base_url)})


async def update_group(request: web.Request) -> web.Response:
    context = ctx(request)
    group_id = request.match_info["group_id"]
    data = v.member(await json_body(request), "group")
    name = v.text(data, "name", max_len=64)
    if "name" in data and not (name or "").strip():
        raise BadRequest("Invalid input for field 'name': it may not be empty")
    description = v.text(data, "description", max_len=65535)
    async with context.pool.acquire() as conn, conn.transaction():
        old = await get_or_404(conn, "groups", group_id, "group")
        _may_change(request, old["domain_id"], "update_group")
        if data.get("domain_id", old["domain_id"]) != old["domain_id"]:
            raise BadRequest("Cannot change Domain ID")
        try:
            row = await conn.fetchrow(
                "UPDATE groups SET name = coalesce($2, name), description = coalesce($3, description), "
                "extra = extra || $4 WHERE id = $1 RETURNING *",
                group_id,
                name,
                description,
                v.extra(data, _KNOWN),
            )
        except asyncpg.UniqueViolationError:
            raise _conflict(name, old["domain_id"]) from None
    return json_response({"group": group_view(row, context.base_url)})


async def delete_group(request: web.Request) -> web.Response:
    group_id = request.match_info["group_id"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await get_or_404(conn, "groups", group_id, "group")
        _may_change(request, row["domain_id"], "delete_group")
        await conn.execute("DELETE FROM groups WHERE id = $1", group_id)
    return web.Response(status=204)


async def _member(conn: Any, request: web.Request) -> tuple[asyncpg.Record, asyncpg.Record]:
    group = await get_or_404(conn, "groups", request.match_info["group_id"], "group")
    user = await get_or_404(conn, "users", request.match_info["user_id"], "user")
    return group, user


async def add_member(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        group, user = await _member(conn, request)
        _may_change(request, group["domain_id"], "add_user_to_group")
        await conn.execute(
            "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            group["id"],
            user["id"],
        )
    return web.Response(status=204)


async def check_member(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        group, user = await _member(conn, request)
        policy.require_reader(caller(request), "check_user_in_group", domain_id=group["domain_id"])
        found = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM group_members WHERE group_id = $1 AND user_id = $2)",
            group["id"],
            user["id"],
        )
    if not found:
        raise NotFound(f"User {user['id']} is not a member of group {group['id']}.")
    return web.Response(status=204)


async def remove_member(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        group, user = await _member(conn, request)
        _may_change(request, group["domain_id"], "remove_user_from_group")
        status = await conn.execute(
            "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2", group["id"], user["id"]
        )
    if status == "DELETE 0":
        raise NotFound(f"User {user['id']} is not a member of group {group['id']}.")
    return web.Response(status=204)


async def list_members(request: web.Request) -> web.Response:
    context = ctx(request)
    group_id = request.match_info["group_id"]
    async with context.pool.acquire() as conn:
        group = await get_or_404(conn, "groups", group_id, "group")
        policy.require_reader(caller(request), "list_users_in_group", domain_id=group["domain_id"])
        rows = await conn.fetch(
            "SELECT u.* FROM users u JOIN group_members m ON m.user_id = u.id WHERE m.group_id = $1 "
            "AND ($2::text IS NULL OR u.name = $2) ORDER BY u.name",
            group_id,
            request.query.get("name"),
        )
    return json_response(
        {
            "users": [user_view(r, context.base_url) for r in rows],
            "links": links(context.base_url, f"groups/{group_id}/users"),
        }
    )


async def user_groups(request: web.Request) -> web.Response:
    context = ctx(request)
    user_id = request.match_info["user_id"]
    async with context.pool.acquire() as conn:
        user = await get_or_404(conn, "users", user_id, "user")
        policy.require_reader(
            caller(request), "list_groups_for_user", domain_id=user["domain_id"], owner=user_id
        )
        rows = await conn.fetch(
            "SELECT g.* FROM groups g JOIN group_members m ON m.group_id = g.id WHERE m.user_id = $1 "
            "AND ($2::text IS NULL OR g.name = $2) ORDER BY g.name",
            user_id,
            request.query.get("name"),
        )
    # Keystone adds when each membership ends (set only for a federated user's groups).
    groups = [{**group_view(r, context.base_url), "membership_expires_at": None} for r in rows]
    return json_response({"groups": groups, "links": links(context.base_url, f"users/{user_id}/groups")})


documented(list_groups, parameters=[param("domain_id"), *inexact("name")])


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/groups", list_groups)
    r.add_post("/identity/v3/groups", create_group)
    r.add_get("/identity/v3/groups/{group_id}", get_group)
    r.add_patch("/identity/v3/groups/{group_id}", update_group)
    r.add_delete("/identity/v3/groups/{group_id}", delete_group)
    r.add_get("/identity/v3/groups/{group_id}/users", list_members)
    member = "/identity/v3/groups/{group_id}/users/{user_id}"
    r.add_put(member, add_member)
    r.add_head(member, check_member)
    r.add_get(member, check_member, allow_head=False)
    r.add_delete(member, remove_member)
    r.add_get("/identity/v3/users/{user_id}/groups", user_groups)
