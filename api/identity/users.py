"""/identity/v3/users, as Keystone has them.

Keystone keeps the attributes it is given beside the known ones (`project_id`, say, as tempest
gives its users) and returns them as given. A password change, a disable or a delete revokes
the user's tokens.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api import effective_roles
from api.auth import check_password, hash_password, new_id
from api.context import caller, ctx, json_body, json_response, public
from api.errors import BadRequest, Conflict, NotFound, Unauthorized
from api.identity import policy
from api.identity import validate as v
from api.identity.list_filters import add_never_set, add_text_filters, inexact
from api.identity.views import find_domain, get_or_404, links, project_view, user_view
from api.query_doc import documented, param, strings
from api.sql import Sql

KNOWN = {
    "name",
    "domain_id",
    "password",
    "enabled",
    "default_project_id",
    "email",
    "description",
    "options",
    "federated",
    "id",
}


def _bool_query(raw: str | None) -> bool | None:
    if raw is None:
        return None
    return raw.lower() not in ("0", "false", "no", "off")


async def list_users(request: web.Request) -> web.Response:
    only = policy.listable_domain(caller(request), "list_users")
    context = ctx(request)
    q = request.query
    sql = Sql()
    if only is not None:
        sql.where(f"domain_id = {sql.arg(only)}")
    add_text_filters(sql, q, {"name": "name", "domain_id": "domain_id"})
    # no federated users, and no password here expires
    add_never_set(sql, q, ("idp_id", "protocol_id", "unique_id", "password_expires_at"))
    enabled = _bool_query(q.get("enabled"))
    if enabled is not None:
        sql.where(f"enabled = {sql.arg(enabled)}")
    rows = await context.pool.fetch(f"SELECT * FROM users WHERE {sql.clause()} ORDER BY name", *sql.args)
    return json_response(
        {"users": [user_view(r, context.base_url) for r in rows], "links": links(context.base_url, "users")}
    )


def _may_change(request: web.Request, domain_id: str, action: str) -> None:
    me = caller(request)
    if not (me.is_admin or policy.domain_admin(me, domain_id)):
        raise policy.denied(action)


async def _default_project(conn: Any, data: dict[str, Any]) -> str | None:
    project_id = v.text(data, "default_project_id", max_len=64)
    if project_id is None:
        return None
    if await conn.fetchval("SELECT id FROM projects WHERE id = $1", project_id) is None:
        if await conn.fetchval("SELECT id FROM domains WHERE id = $1", project_id) is not None:
            raise BadRequest(f"Unable to set {project_id} as the default project: it is a domain.")
        raise NotFound(f"Could not find project: {project_id}.")
    return project_id


async def create_user(request: web.Request) -> web.Response:
    context = ctx(request)
    data = v.member(await json_body(request), "user")
    name = v.text(data, "name", required=True, max_len=255)
    password = v.text(data, "password", max_len=4096)
    enabled = v.flag(data, "enabled")
    email, description = v.text(data, "email"), v.text(data, "description", max_len=65535) or ""
    hashed = await hash_password(password) if password is not None else None
    me = caller(request)
    async with context.pool.acquire() as conn:
        domain = await find_domain(conn, {"id": data.get("domain_id") or me.domain_id or "default"})
        _may_change(request, domain["id"], "create_user")
        default_project = await _default_project(conn, data)
        try:
            row = await conn.fetchrow(
                "INSERT INTO users (id, name, domain_id, password_hash, enabled, default_project_id, email, "
                "description, extra) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
                new_id(),
                name,
                domain["id"],
                hashed,
                True if enabled is None else enabled,
                default_project,
                email,
                description,
                v.extra(data, KNOWN),
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                "Conflict occurred attempting to store user - Duplicate entry found with name "
                f"{name} at domain ID {domain['id']}."
            ) from None
    return json_response({"user": user_view(row, context.base_url)}, status=201)


async def get_user(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    context = ctx(request)
    row = await get_or_404(context.pool, "users", user_id, "user")
    policy.require_reader(caller(request), "get_user", domain_id=row["domain_id"], owner=user_id)
    return json_response({"user": user_view(row, context.base_url)})


async def update_user(request: web.Request) -> web.Response:
    context = ctx(request)
    user_id = request.match_info["user_id"]
    data = v.member(await json_body(request), "user")
    name = v.text(data, "name", max_len=255)
    if "name" in data and not (name or "").strip():
        raise BadRequest("Invalid input for field 'name': it may not be empty")
    password = v.text(data, "password", max_len=4096)
    enabled = v.flag(data, "enabled")
    email, description = v.text(data, "email"), v.text(data, "description", max_len=65535)
    hashed = await hash_password(password) if password is not None else None
    async with context.pool.acquire() as conn, conn.transaction():
        old = await get_or_404(conn, "users", user_id, "user")
        _may_change(request, old["domain_id"], "update_user")
        if data.get("domain_id", old["domain_id"]) != old["domain_id"]:
            raise BadRequest("Cannot change Domain ID")
        default_project = await _default_project(conn, data)
        try:
            row = await conn.fetchrow(
                "UPDATE users SET name = coalesce($2, name), password_hash = coalesce($3, password_hash), "
                "enabled = coalesce($4, enabled), default_project_id = coalesce($5, default_project_id), "
                "email = coalesce($6, email), description = coalesce($7, description), extra = extra || $8 "
                "WHERE id = $1 RETURNING *",
                user_id,
                name,
                hashed,
                enabled,
                default_project,
                email,
                description,
                v.extra(data, KNOWN),
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"Conflict occurred attempting to store user - duplicate name {name}.") from None
        if password is not None or enabled is False:
            await conn.execute("INSERT INTO token_revocations (user_id) VALUES ($1)", user_id)
    return json_response({"user": user_view(row, context.base_url)})


async def delete_user(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await get_or_404(conn, "users", user_id, "user")
        _may_change(request, row["domain_id"], "delete_user")
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        await conn.execute("INSERT INTO token_revocations (user_id) VALUES ($1)", user_id)
    return web.Response(status=204)


@public
async def change_password(request: web.Request) -> web.Response:
    """Keystone's self-service password change: the original password is the proof, so it needs
    no token (a user whose password expired can still change it) and no policy applies (an admin
    changing another user's password must know it too)."""
    user_id = request.match_info["user_id"]
    data = v.member(await json_body(request), "user")
    original = v.text(data, "original_password", required=True, max_len=4096)
    password = v.text(data, "password", required=True, max_len=4096)
    context = ctx(request)
    row = await get_or_404(context.pool, "users", user_id, "user")
    if not await check_password(original or "", row["password_hash"]):
        raise Unauthorized("The request you have made requires authentication.")
    hashed = await hash_password(password or "")
    async with context.pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, hashed)
        await conn.execute("INSERT INTO token_revocations (user_id) VALUES ($1)", user_id)
    return web.Response(status=204)


async def user_projects(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    context = ctx(request)
    async with context.pool.acquire() as conn:
        user = await get_or_404(conn, "users", user_id, "user")
        policy.require_reader(
            caller(request), "list_user_projects", domain_id=user["domain_id"], owner=user_id
        )
        rows = await effective_roles.projects_of(conn, user_id)
    result: list[dict[str, Any]] = [project_view(r, context.base_url) for r in rows]
    return json_response({"projects": result, "links": links(context.base_url, f"users/{user_id}/projects")})


documented(
    list_users,
    parameters=[
        *strings("domain_id", "idp_id", "protocol_id", "unique_id", "password_expires_at"),
        param("enabled", "boolean"),
        *inexact("name"),
    ],
)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/users", list_users)
    r.add_post("/identity/v3/users", create_user)
    r.add_get("/identity/v3/users/{user_id}", get_user)
    r.add_patch("/identity/v3/users/{user_id}", update_user)
    r.add_delete("/identity/v3/users/{user_id}", delete_user)
    r.add_post("/identity/v3/users/{user_id}/password", change_password)
    r.add_get("/identity/v3/users/{user_id}/projects", user_projects)
