"""/identity/v3/projects and /identity/v3/domains."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from api.auth import new_id
from api.context import caller, ctx, json_body, json_response
from api.errors import Conflict, Forbidden
from api.identity import validate as v
from api.identity.views import domain_view, find_domain, get_or_404, links, project_view


def _bool_query(request: web.Request, key: str) -> bool | None:
    raw = request.query.get(key)
    if raw is None:
        return None
    return raw.lower() not in ("0", "false", "no", "off")


async def list_projects(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    me.require_admin("identity:list_projects")
    name, domain_id, enabled = (
        request.query.get("name"),
        request.query.get("domain_id"),
        _bool_query(request, "enabled"),
    )
    rows = await context.pool.fetch(
        "SELECT * FROM projects WHERE ($1::text IS NULL OR name = $1) AND ($2::text IS NULL "
        "OR domain_id = $2) AND ($3::boolean IS NULL OR enabled = $3) ORDER BY name",
        name,
        domain_id,
        enabled,
    )
    return json_response(
        {
            "projects": [project_view(r, context.base_url) for r in rows],
            "links": links(context.base_url, "projects"),
        }
    )


async def create_project(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_admin("identity:create_project")
    context = ctx(request)
    data = v.member(await json_body(request), "project")
    v.only(
        data,
        {"name", "domain_id", "description", "enabled", "tags", "parent_id", "is_domain", "options"},
        "project",
    )
    name = v.text(data, "name", required=True, max_len=64)
    description = v.text(data, "description", max_len=65535) or ""
    enabled = v.flag(data, "enabled")
    tags = v.tags(data) or []
    async with context.pool.acquire() as conn:
        domain = await find_domain(conn, {"id": data.get("domain_id") or "default"})
        try:
            row = await conn.fetchrow(
                "INSERT INTO projects (id, name, domain_id, description, enabled, tags) "
                "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                new_id(),
                name,
                domain["id"],
                description,
                True if enabled is None else enabled,
                tags,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                "Conflict occurred attempting to store project - it is not permitted to have two "
                f"projects with the same name in the same domain : {name}."
            ) from None
    return json_response({"project": project_view(row, context.base_url)}, status=201)


async def get_project(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    project_id = request.match_info["project_id"]
    async with context.pool.acquire() as conn:
        row = await get_or_404(conn, "projects", project_id, "project")
        if not me.is_admin and project_id != me.project_id:
            has_role = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM role_assignments WHERE user_id = $1 AND project_id = $2)",
                me.user_id,
                project_id,
            )
            if not has_role:
                raise Forbidden(
                    "You are not authorized to perform the requested action: identity:get_project."
                )
    return json_response({"project": project_view(row, context.base_url)})


async def update_project(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_admin("identity:update_project")
    context = ctx(request)
    project_id = request.match_info["project_id"]
    data = v.member(await json_body(request), "project")
    v.only(data, {"name", "description", "enabled", "tags", "options"}, "project")
    name = v.text(data, "name", max_len=64)
    description = v.text(data, "description", max_len=65535)
    enabled = v.flag(data, "enabled")
    tags = v.tags(data)
    async with context.pool.acquire() as conn:
        await get_or_404(conn, "projects", project_id, "project")
        try:
            row = await conn.fetchrow(
                "UPDATE projects SET name = coalesce($2, name), description = coalesce($3, description), "
                "enabled = coalesce($4, enabled), tags = coalesce($5, tags) WHERE id = $1 RETURNING *",
                project_id,
                name,
                description,
                enabled,
                tags,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"Conflict occurred attempting to store project - duplicate name {name}."
            ) from None
    return json_response({"project": project_view(row, context.base_url)})


async def delete_project(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_admin("identity:delete_project")
    context = ctx(request)
    project_id = request.match_info["project_id"]
    async with context.pool.acquire() as conn, conn.transaction():
        await get_or_404(conn, "projects", project_id, "project")
        users = await conn.fetch(
            "SELECT DISTINCT user_id FROM role_assignments WHERE project_id = $1", project_id
        )
        await conn.execute("DELETE FROM projects WHERE id = $1", project_id)
        await conn.executemany(
            "INSERT INTO token_revocations (user_id) VALUES ($1)", [(u["user_id"],) for u in users]
        )
    return web.Response(status=204)


async def list_domains(request: web.Request) -> web.Response:
    context = ctx(request)
    name = request.query.get("name")
    rows = await context.pool.fetch(
        "SELECT * FROM domains WHERE ($1::text IS NULL OR name = $1) ORDER BY name", name
    )
    return json_response(
        {
            "domains": [domain_view(r, context.base_url) for r in rows],
            "links": links(context.base_url, "domains"),
        }
    )


async def get_domain(request: web.Request) -> web.Response:
    context = ctx(request)
    row = await get_or_404(context.pool, "domains", request.match_info["domain_id"], "domain")
    return json_response({"domain": domain_view(row, context.base_url)})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/projects", list_projects)
    r.add_post("/identity/v3/projects", create_project)
    r.add_get("/identity/v3/projects/{project_id}", get_project)
    r.add_patch("/identity/v3/projects/{project_id}", update_project)
    r.add_delete("/identity/v3/projects/{project_id}", delete_project)
    r.add_get("/identity/v3/domains", list_domains)
    r.add_get("/identity/v3/domains/{domain_id}", get_domain)
