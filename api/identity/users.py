"""/identity/v3/users."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.auth import check_password, hash_password, new_id
from api.context import caller, ctx, json_body, json_response
from api.errors import Conflict, Forbidden, NotFound, Unauthorized
from api.identity import validate as v
from api.identity.views import find_domain, get_or_404, links, project_view, user_view


async def list_users(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_admin("identity:list_users")
    context = ctx(request)
    name, domain_id = request.query.get("name"), request.query.get("domain_id")
    rows = await context.pool.fetch(
        "SELECT * FROM users WHERE ($1::text IS NULL OR name = $1) AND ($2::text IS NULL OR domain_id = $2) "
        "ORDER BY name",
        name,
        domain_id,
    )
    return json_response(
        {"users": [user_view(r, context.base_url) for r in rows], "links": links(context.base_url, "users")}
    )


async def create_user(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_admin("identity:create_user")
    context = ctx(request)
    data = v.member(await json_body(request), "user")
    v.only(
        data,
        {"name", "domain_id", "password", "enabled", "default_project_id", "email", "description", "options"},
        "user",
    )
    name = v.text(data, "name", required=True, max_len=255)
    password = v.text(data, "password", max_len=4096)
    enabled = v.flag(data, "enabled")
    default_project = v.text(data, "default_project_id", max_len=64)
    email, description = v.text(data, "email"), v.text(data, "description", max_len=65535) or ""
    hashed = await hash_password(password) if password is not None else None
    async with context.pool.acquire() as conn:
        domain = await find_domain(conn, {"id": data.get("domain_id") or "default"})
        if default_project is not None:
            await get_or_404(conn, "projects", default_project, "project")
        try:
            row = await conn.fetchrow(
                "INSERT INTO users (id, name, domain_id, password_hash, enabled, default_project_id, email, "
                "description) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                new_id(),
                name,
                domain["id"],
                hashed,
                True if enabled is None else enabled,
                default_project,
                email,
                description,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                "Conflict occurred attempting to store user - Duplicate entry found with name "
                f"{name} at domain ID {domain['id']}."
            ) from None
    return json_response({"user": user_view(row, context.base_url)}, status=201)


def _self_or_admin(request: web.Request, user_id: str, action: str) -> None:
    me = caller(request)
    if not me.is_admin and me.user_id != user_id:
        raise Forbidden(f"You are not authorized to perform the requested action: {action}.")


async def get_user(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    _self_or_admin(request, user_id, "identity:get_user")
    context = ctx(request)
    row = await get_or_404(context.pool, "users", user_id, "user")
    return json_response({"user": user_view(row, context.base_url)})


async def update_user(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:update_user")
    context = ctx(request)
    user_id = request.match_info["user_id"]
    data = v.member(await json_body(request), "user")
    v.only(
        data, {"name", "password", "enabled", "default_project_id", "email", "description", "options"}, "user"
    )
    name = v.text(data, "name")
    password = v.text(data, "password", max_len=4096)
    enabled = v.flag(data, "enabled")
    default_project = v.text(data, "default_project_id", max_len=64)
    hashed = await hash_password(password) if password is not None else None
    async with context.pool.acquire() as conn, conn.transaction():
        await get_or_404(conn, "users", user_id, "user")
        if default_project is not None:
            await get_or_404(conn, "projects", default_project, "project")
        try:
            row = await conn.fetchrow(
                "UPDATE users SET name = coalesce($2, name), password_hash = coalesce($3, password_hash), "
                "enabled = coalesce($4, enabled), default_project_id = coalesce($5, default_project_id), "
                "email = coalesce($6, email), description = coalesce($7, description) WHERE id = $1 "
                "RETURNING *",
                user_id,
                name,
                hashed,
                enabled,
                default_project,
                v.text(data, "email"),
                v.text(data, "description", max_len=65535),
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"Conflict occurred attempting to store user - duplicate name {name}.") from None
        if password is not None or enabled is False:
            await conn.execute("INSERT INTO token_revocations (user_id) VALUES ($1)", user_id)
    return json_response({"user": user_view(row, context.base_url)})


async def delete_user(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:delete_user")
    context = ctx(request)
    user_id = request.match_info["user_id"]
    async with context.pool.acquire() as conn, conn.transaction():
        await get_or_404(conn, "users", user_id, "user")
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        await conn.execute("INSERT INTO token_revocations (user_id) VALUES ($1)", user_id)
    return web.Response(status=204)


async def change_password(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    if caller(request).user_id != user_id:
        raise Forbidden("You are not authorized to perform the requested action: identity:change_password.")
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
    _self_or_admin(request, user_id, "identity:list_user_projects")
    context = ctx(request)
    async with context.pool.acquire() as conn:
        if await conn.fetchval("SELECT 1 FROM users WHERE id = $1", user_id) is None:
            raise NotFound(f"Could not find user: {user_id}.")
        rows = await conn.fetch(
            "SELECT DISTINCT p.* FROM projects p JOIN role_assignments a ON a.project_id = p.id "
            "WHERE a.user_id = $1 ORDER BY p.name",
            user_id,
        )
    result: list[dict[str, Any]] = [project_view(r, context.base_url) for r in rows]
    return json_response({"projects": result, "links": links(context.base_url, f"users/{user_id}/projects")})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/users", list_users)
    r.add_post("/identity/v3/users", create_user)
    r.add_get("/identity/v3/users/{user_id}", get_user)
    r.add_patch("/identity/v3/users/{user_id}", update_user)
    r.add_delete("/identity/v3/users/{user_id}", delete_user)
    r.add_post("/identity/v3/users/{user_id}/password", change_password)
    r.add_get("/identity/v3/users/{user_id}/projects", user_projects)
