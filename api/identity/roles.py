"""/identity/v3/roles, project role assignments and /identity/v3/role_assignments."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api import catalog as catalog_
from api.auth import new_id
from api.context import caller, ctx, json_body, json_response
from api.errors import Conflict, Forbidden, NotFound
from api.identity import validate as v
from api.identity.views import get_or_404, links, role_view


async def list_roles(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:list_roles")
    context = ctx(request)
    rows = await context.pool.fetch(
        "SELECT * FROM roles WHERE ($1::text IS NULL OR name = $1) ORDER BY name", request.query.get("name")
    )
    return json_response(
        {"roles": [role_view(r, context.base_url) for r in rows], "links": links(context.base_url, "roles")}
    )


async def create_role(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:create_role")
    context = ctx(request)
    data = v.member(await json_body(request), "role")
    v.only(data, {"name", "description", "domain_id", "options"}, "role")
    name = v.text(data, "name", required=True)
    try:
        row = await context.pool.fetchrow(
            "INSERT INTO roles (id, name) VALUES ($1, $2) RETURNING *", new_id(), name
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(
            f"Conflict occurred attempting to store role - Duplicate entry found with name {name}."
        ) from None
    return json_response({"role": role_view(row, context.base_url)}, status=201)


async def get_role(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:get_role")
    context = ctx(request)
    row = await get_or_404(context.pool, "roles", request.match_info["role_id"], "role")
    return json_response({"role": role_view(row, context.base_url)})


async def delete_role(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:delete_role")
    context = ctx(request)
    role_id = request.match_info["role_id"]
    async with context.pool.acquire() as conn, conn.transaction():
        row = await get_or_404(conn, "roles", role_id, "role")
        if row["name"] in ("admin", "member", "reader"):
            raise Forbidden(f"The role {row['name']} is built in and cannot be deleted.")
        users = await conn.fetch("SELECT DISTINCT user_id FROM role_assignments WHERE role_id = $1", role_id)
        await conn.execute("DELETE FROM roles WHERE id = $1", role_id)
        await conn.executemany(
            "INSERT INTO token_revocations (user_id) VALUES ($1)", [(u["user_id"],) for u in users]
        )
    return web.Response(status=204)


async def _assignment_parts(conn: Any, request: web.Request) -> tuple[str, str, str]:
    m = request.match_info
    project = await get_or_404(conn, "projects", m["project_id"], "project")
    user = await get_or_404(conn, "users", m["user_id"], "user")
    role = await get_or_404(conn, "roles", m["role_id"], "role")
    return project["id"], user["id"], role["id"]


async def grant(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:create_grant")
    async with ctx(request).pool.acquire() as conn:
        project_id, user_id, role_id = await _assignment_parts(conn, request)
        await conn.execute(
            "INSERT INTO role_assignments (user_id, project_id, role_id) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            user_id,
            project_id,
            role_id,
        )
    return web.Response(status=204)


async def check_grant(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:check_grant")
    async with ctx(request).pool.acquire() as conn:
        project_id, user_id, role_id = await _assignment_parts(conn, request)
        exists = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM role_assignments WHERE user_id = $1 AND project_id = $2 "
            "AND role_id = $3)",
            user_id,
            project_id,
            role_id,
        )
    if not exists:
        raise NotFound(
            f"Could not find role assignment with role: {role_id}, user or group: {user_id}, "
            f"project, domain, or system: {project_id}."
        )
    return web.Response(status=204)


async def revoke_grant(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:revoke_grant")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        project_id, user_id, role_id = await _assignment_parts(conn, request)
        status = await conn.execute(
            "DELETE FROM role_assignments WHERE user_id = $1 AND project_id = $2 AND role_id = $3",
            user_id,
            project_id,
            role_id,
        )
        if status == "DELETE 0":
            raise NotFound(
                f"Could not find role assignment with role: {role_id}, user or group: {user_id}, "
                f"project, domain, or system: {project_id}."
            )
        # Tokens carry roles: the user's existing tokens must not keep the one just removed.
        await conn.execute("INSERT INTO token_revocations (user_id) VALUES ($1)", user_id)
    return web.Response(status=204)


async def list_grants(request: web.Request) -> web.Response:
    context = ctx(request)
    me = caller(request)
    m = request.match_info
    if not me.is_admin and me.user_id != m["user_id"]:
        raise Forbidden("You are not authorized to perform the requested action: identity:list_grants.")
    rows = await context.pool.fetch(
        "SELECT r.* FROM role_assignments a JOIN roles r ON r.id = a.role_id "
        "WHERE a.project_id = $1 AND a.user_id = $2 ORDER BY r.name",
        m["project_id"],
        m["user_id"],
    )
    return json_response(
        {
            "roles": [role_view(r, context.base_url) for r in rows],
            "links": links(context.base_url, f"projects/{m['project_id']}/users/{m['user_id']}/roles"),
        }
    )


async def role_assignments(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    q = request.query
    user_id = q.get("user.id")
    if not me.is_admin and user_id != me.user_id:
        raise Forbidden(
            "You are not authorized to perform the requested action: identity:list_role_assignments."
        )
    if q.get("group.id") or q.get("scope.domain.id") or q.get("scope.system"):
        return json_response({"role_assignments": [], "links": links(context.base_url, "role_assignments")})
    include_names = q.get("include_names", "false").lower() not in ("0", "false", "")
    rows = await context.pool.fetch(
        "SELECT a.user_id, a.project_id, a.role_id, r.name AS role_name, u.name AS user_name, "
        "u.domain_id AS user_domain, p.name AS project_name, p.domain_id AS project_domain "
        "FROM role_assignments a JOIN roles r ON r.id = a.role_id JOIN users u ON u.id = a.user_id "
        "JOIN projects p ON p.id = a.project_id "
        "WHERE ($1::text IS NULL OR a.user_id = $1) AND ($2::text IS NULL OR a.project_id = $2) "
        "AND ($3::text IS NULL OR a.role_id = $3) ORDER BY p.name, u.name, r.name",
        user_id,
        q.get("scope.project.id"),
        q.get("role.id"),
    )
    base = context.base_url
    result = []
    for r in rows:
        role: dict[str, Any] = {"id": r["role_id"]}
        user: dict[str, Any] = {"id": r["user_id"]}
        project: dict[str, Any] = {"id": r["project_id"]}
        if include_names:
            role["name"] = r["role_name"]
            user.update(name=r["user_name"], domain={"id": r["user_domain"], "name": "Default"})
            project.update(name=r["project_name"], domain={"id": r["project_domain"], "name": "Default"})
        result.append(
            {
                "role": role,
                "user": user,
                "scope": {"project": project},
                "links": {
                    "assignment": f"{base}/identity/v3/projects/{r['project_id']}"
                    f"/users/{r['user_id']}/roles/{r['role_id']}"
                },
            }
        )
    return json_response({"role_assignments": result, "links": links(base, "role_assignments")})


async def list_services(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:list_services")
    base = ctx(request).base_url
    return json_response({"services": catalog_.services(base), "links": links(base, "services")})


async def list_endpoints(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:list_endpoints")
    base = ctx(request).base_url
    return json_response({"endpoints": catalog_.endpoints(base), "links": links(base, "endpoints")})


async def get_service(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:get_service")
    base = ctx(request).base_url
    for service in catalog_.services(base):
        if service["id"] == request.match_info["service_id"]:
            return json_response({"service": service})
    raise NotFound(f"Could not find service: {request.match_info['service_id']}.")


async def get_endpoint(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:get_endpoint")
    base = ctx(request).base_url
    for endpoint in catalog_.endpoints(base):
        if endpoint["id"] == request.match_info["endpoint_id"]:
            return json_response({"endpoint": endpoint})
    raise NotFound(f"Could not find endpoint: {request.match_info['endpoint_id']}.")


async def list_regions(request: web.Request) -> web.Response:
    base = ctx(request).base_url
    region = {
        "id": catalog_.REGION,
        "description": "",
        "parent_region_id": None,
        "links": {"self": f"{base}/identity/v3/regions/{catalog_.REGION}"},
    }
    return json_response({"regions": [region], "links": links(base, "regions")})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/roles", list_roles)
    r.add_post("/identity/v3/roles", create_role)
    r.add_get("/identity/v3/roles/{role_id}", get_role)
    r.add_delete("/identity/v3/roles/{role_id}", delete_role)
    grant_path = "/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"
    r.add_put(grant_path, grant)
    r.add_head(grant_path, check_grant)
    r.add_delete(grant_path, revoke_grant)
    r.add_get("/identity/v3/projects/{project_id}/users/{user_id}/roles", list_grants)
    r.add_get("/identity/v3/role_assignments", role_assignments)
    r.add_get("/identity/v3/services", list_services)
    r.add_get("/identity/v3/services/{service_id}", get_service)
    r.add_get("/identity/v3/endpoints", list_endpoints)
    r.add_get("/identity/v3/endpoints/{endpoint_id}", get_endpoint)
    r.add_get("/identity/v3/regions", list_regions)
