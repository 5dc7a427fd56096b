"""/identity/v3/projects and their tags, as Keystone has them.

Projects form a hierarchy inside their domain: a project's parent is another project (at most
five levels) or its domain. A project with projects below it cannot be deleted (unless the
whole disabled subtree is, `cascade`), nor disabled while one below is enabled, nor enabled
below a disabled one. Disabling or deleting a project revokes the tokens scoped to it.

A domain is a project acting as a domain in Keystone: `is_domain` creates one, and the project
routes reach it too (api/identity/domains.py keeps its rules).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.auth import new_id
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden, NotFound
from api.identity import domains, policy
from api.identity import validate as v
from api.identity.list_filters import add_text_filters, inexact
from api.identity.views import domain_as_project_view, get_or_404, links, project_view
from api.query_doc import documented, param, strings
from api.sql import Sql

MAX_DEPTH = 5  # Keystone's max_project_tree_depth
KNOWN = {"name", "domain_id", "description", "enabled", "tags", "parent_id", "is_domain", "options", "id"}


def _bool_query(request: web.Request, key: str) -> bool | None:
    raw = request.query.get(key)
    if raw is None:
        return None
    return raw.lower() not in ("0", "false", "no", "off")


def _tag_filters(sql: Sql, q: Any) -> None:
    """Keystone's tag filters: all of `tags`, any of `tags-any`, not all of `not-tags`, none of
    `not-tags-any` (each a comma-separated list)."""
    for key, test in (
        ("tags", "tags @> {}"),
        ("tags-any", "tags && {}"),
        ("not-tags", "NOT tags @> {}"),
        ("not-tags-any", "NOT tags && {}"),
    ):
        if q.get(key):
            sql.where(test.format(f"{sql.arg(q[key].split(','))}::text[]"))


async def _list_domains_as_projects(request: web.Request, only: str | None) -> web.Response:
    context = ctx(request)
    sql = Sql()
    if only is not None:
        sql.where(f"id = {sql.arg(only)}")
    add_text_filters(sql, request.query, {"name": "name"})
    rows = await context.pool.fetch(f"SELECT * FROM domains WHERE {sql.clause()} ORDER BY name", *sql.args)
    views = [domain_as_project_view(r, context.base_url) for r in rows]
    return json_response({"projects": views, "links": links(context.base_url, "projects")})


async def list_projects(request: web.Request) -> web.Response:
    only = policy.listable_domain(caller(request), "list_projects")
    if _bool_query(request, "is_domain"):
        return await _list_domains_as_projects(request, only)
    context = ctx(request)
    q = request.query
    sql = Sql()
    if only is not None:
        sql.where(f"domain_id = {sql.arg(only)}")
    add_text_filters(sql, q, {"name": "name", "domain_id": "domain_id"})
    if q.get("parent_id"):
        p = sql.arg(q["parent_id"])
        sql.where(f"(parent_id = {p} OR (parent_id IS NULL AND domain_id = {p}))")
    enabled = _bool_query(request, "enabled")
    if enabled is not None:
        sql.where(f"enabled = {sql.arg(enabled)}")
    _tag_filters(sql, q)
    rows = await context.pool.fetch(f"SELECT * FROM projects WHERE {sql.clause()} ORDER BY name", *sql.args)
    return json_response(
        {
            "projects": [project_view(r, context.base_url) for r in rows],
            "links": links(context.base_url, "projects"),
        }
    )


async def _parent(conn: Any, data: dict[str, Any]) -> tuple[str, str | None]:
    """(domain id, parent project id or None) of a new project, from its domain_id and parent_id."""
    parent_id = v.text(data, "parent_id", max_len=64)
    domain_id = v.text(data, "domain_id", max_len=64)
    if parent_id is None or parent_id == domain_id:
        domain = await conn.fetchrow("SELECT * FROM domains WHERE id = $1", domain_id or "default")
        if domain is None:
            raise NotFound(f"Could not find domain: {domain_id}.")
        return domain["id"], None
    parent = await conn.fetchrow("SELECT * FROM projects WHERE id = $1", parent_id)
    if parent is None:
        if (
            await conn.fetchval("SELECT id FROM domains WHERE id = $1", parent_id) is not None
            and domain_id is None
        ):
            return parent_id, None
        raise NotFound(f"Could not find project: {parent_id}.")
    if domain_id is not None and domain_id != parent["domain_id"]:
        raise BadRequest(
            f"Cannot create project, the parent ({parent_id}) is in a different domain "
            f"({parent['domain_id']})."
        )
    if not parent["enabled"]:
        raise BadRequest(f"Cannot create project, since its parent ({parent_id}) is disabled.")
    depth = await conn.fetchval(
        "WITH RECURSIVE up (id) AS (SELECT $1::text UNION SELECT p.parent_id FROM projects p "
        "JOIN up ON p.id = up.id WHERE p.parent_id IS NOT NULL) SELECT count(*) FROM up",
        parent_id,
    )
    if depth + 1 > MAX_DEPTH:
        raise Forbidden(f"Max hierarchy depth reached for {parent_id} branch.")
    return parent["domain_id"], parent_id


async def create_project(request: web.Request) -> web.Response:
    context = ctx(request)
    data = v.member(await json_body(request), "project")
    is_domain = v.flag(data, "is_domain")
    me = caller(request)
    async with context.pool.acquire() as conn:
        if is_domain:
            policy.require_admin(me, "create_domain")
            row = await domains.insert(conn, data)
            return json_response({"project": domain_as_project_view(row, context.base_url)}, status=201)
        name = v.text(data, "name", required=True, max_len=64)
        description = v.text(data, "description", max_len=65535) or ""
        enabled = v.flag(data, "enabled")
        tags = v.tags(data) or []
        domain_id, parent_id = await _parent(conn, data)
        if not (me.is_admin or policy.domain_admin(me, domain_id)):
            raise policy.denied("create_project")
        try:
            row = await conn.fetchrow(
                "INSERT INTO projects (id, name, domain_id, description, enabled, tags, parent_id, extra) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                new_id(),
                name,
                domain_id,
                description,
                True if enabled is None else enabled,
                tags,
                parent_id,
                v.extra(data, KNOWN),
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
        row = await conn.fetchrow("SELECT * FROM projects WHERE id = $1", project_id)
        if row is None:
            domain = await get_or_404(conn, "domains", project_id, "project")
            policy.require_reader(me, "get_project", domain_id=domain["id"])
            return json_response({"project": domain_as_project_view(domain, context.base_url)})
    if not (me.reads_all or policy.domain_reader(me, row["domain_id"]) or me.project_id == project_id):
        raise policy.denied("get_project")
    return json_response({"project": project_view(row, context.base_url)})


async def _check_enabled_change(conn: Any, old: asyncpg.Record, enabled: bool | None) -> None:
    if enabled is False and old["enabled"]:
        below = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM projects WHERE parent_id = $1 AND enabled)", old["id"]
        )
        if below:
            raise Forbidden(
                f"Cannot disable project {old['id']} since its subtree contains enabled projects."
            )
    if enabled and not old["enabled"] and old["parent_id"] is not None:
        parent_enabled = await conn.fetchval("SELECT enabled FROM projects WHERE id = $1", old["parent_id"])
        if not parent_enabled:
            raise Forbidden(f"Cannot enable project {old['id']} since it has disabled parents.")


def _refuse_moves(data: dict[str, Any], old: asyncpg.Record) -> None:
    if "domain_id" in data and data["domain_id"] != old["domain_id"]:
        raise BadRequest("Cannot change Domain ID")
    if "parent_id" in data and data["parent_id"] != (old["parent_id"] or old["domain_id"]):
        raise Forbidden("Update of `parent_id` is not allowed.")
    if data.get("is_domain"):
        raise BadRequest("Update of `is_domain` is not allowed.")


async def update_project(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    project_id = request.match_info["project_id"]
    data = v.member(await json_body(request), "project")
    name = v.text(data, "name", max_len=64)
    if "name" in data and not (name or "").strip():
        raise BadRequest("Invalid input for field 'name': it may not be empty")
    description = v.text(data, "description", max_len=65535)
    enabled = v.flag(data, "enabled")
    tags = v.tags(data)
    async with context.pool.acquire() as conn, conn.transaction():
        old = await conn.fetchrow("SELECT * FROM projects WHERE id = $1 FOR UPDATE", project_id)
        if old is None:
            policy.require_admin(me, "update_domain")
            row = await domains.update(conn, project_id, data)
            return json_response({"project": domain_as_project_view(row, context.base_url)})
        if not (me.is_admin or policy.domain_admin(me, old["domain_id"])):
            raise policy.denied("update_project")
        _refuse_moves(data, old)
        await _check_enabled_change(conn, old, enabled)
        try:
            row = await conn.fetchrow(
                "UPDATE projects SET name = coalesce($2, name), description = coalesce($3, description), "
                "enabled = coalesce($4, enabled), tags = coalesce($5, tags), extra = extra || $6 "
                "WHERE id = $1 RETURNING *",
                project_id,
                name,
                description,
                enabled,
                tags,
                v.extra(data, KNOWN),
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"Conflict occurred attempting to store project - duplicate name {name}."
            ) from None
        if enabled is False and old["enabled"]:
            await conn.execute("INSERT INTO token_revocations (project_id) VALUES ($1)", project_id)
    return json_response({"project": project_view(row, context.base_url)})


async def _subtree(conn: Any, project_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "WITH RECURSIVE below (id) AS (SELECT id FROM projects WHERE parent_id = $1 "
        "UNION SELECT p.id FROM projects p JOIN below b ON p.parent_id = b.id) "
        "SELECT p.* FROM projects p JOIN below b ON b.id = p.id",
        project_id,
    )


async def delete_project(request: web.Request) -> web.Response:
    me = caller(request)
    project_id = request.match_info["project_id"]
    cascade = _bool_query(request, "cascade")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM projects WHERE id = $1 FOR UPDATE", project_id)
        if row is None:
            policy.require_admin(me, "delete_domain")
            await domains.delete(conn, project_id)
            return web.Response(status=204)
        if not (me.is_admin or policy.domain_admin(me, row["domain_id"])):
            raise policy.denied("delete_project")
        below = await _subtree(conn, project_id)
        if below and not cascade:
            raise Forbidden(
                f"Cannot delete the project {project_id} since it is not a leaf in the hierarchy. "
                "Use the cascade option if you want to delete a whole subtree."
            )
        if any(p["enabled"] for p in below):
            raise Forbidden(
                f"Cannot delete project {project_id} since its subtree contains enabled projects."
            )
        await conn.execute("DELETE FROM projects WHERE id = $1", project_id)
        await conn.executemany(
            "INSERT INTO token_revocations (project_id) VALUES ($1)",
            [(p,) for p in [project_id, *(b["id"] for b in below)]],
        )
    return web.Response(status=204)


# --- Tags -------------------------------------------------------------------------------------


async def _tagged(request: web.Request, conn: Any, *, change: bool) -> asyncpg.Record:
    me = caller(request)
    row = await get_or_404(conn, "projects", request.match_info["project_id"], "project")
    if change:
        if not (me.is_admin or policy.domain_admin(me, row["domain_id"])):
            raise policy.denied("update_project_tags")
    elif not (me.reads_all or policy.domain_reader(me, row["domain_id"]) or me.project_id == row["id"]):
        raise policy.denied("get_project_tags")
    return row


async def list_tags(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        row = await _tagged(request, conn, change=False)
    return json_response({"tags": list(row["tags"])})


async def replace_tags(request: web.Request) -> web.Response:
    data = await json_body(request)
    if not isinstance(data, dict) or not isinstance(data.get("tags"), list):
        raise BadRequest("Expecting to find tags in request body.")
    tags = v.tags(data) or []
    async with ctx(request).pool.acquire() as conn:
        row = await _tagged(request, conn, change=True)
        row = await conn.fetchrow(
            "UPDATE projects SET tags = $2 WHERE id = $1 RETURNING tags", row["id"], tags
        )
    return json_response({"tags": list(row["tags"])})


async def clear_tags(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        row = await _tagged(request, conn, change=True)
        await conn.execute("UPDATE projects SET tags = '{}' WHERE id = $1", row["id"])
    return web.Response(status=204)


async def check_tag(request: web.Request) -> web.Response:
    tag = request.match_info["tag"]
    async with ctx(request).pool.acquire() as conn:
        row = await _tagged(request, conn, change=False)
    if tag not in row["tags"]:
        raise NotFound(f"Could not find project tag: {tag}.")
    return web.Response(status=204)


async def add_tag(request: web.Request) -> web.Response:
    tag = v.tag(request.match_info["tag"], "tag")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await _tagged(request, conn, change=True)
        tags = list(dict.fromkeys([*row["tags"], tag]))
        if len(tags) > 80:
            raise BadRequest("Invalid input for field 'tags': a project has at most 80 tags")
        await conn.execute("UPDATE projects SET tags = $2 WHERE id = $1", row["id"], tags)
    # 201 and no body, as Keystone (and the API working group's tags guideline) answer.
    return web.Response(status=201, headers={"Location": str(request.url)})


async def remove_tag(request: web.Request) -> web.Response:
    tag = request.match_info["tag"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await _tagged(request, conn, change=True)
        if tag not in row["tags"]:
            raise NotFound(f"Could not find project tag: {tag}.")
        await conn.execute("UPDATE projects SET tags = array_remove(tags, $2) WHERE id = $1", row["id"], tag)
    return web.Response(status=204)


documented(
    list_projects,
    parameters=[
        *strings("domain_id", "parent_id", "tags", "tags-any", "not-tags", "not-tags-any"),
        param("enabled", "boolean"),
        param("is_domain", "boolean"),
        *inexact("name"),
    ],
)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/projects", list_projects)
    r.add_post("/identity/v3/projects", create_project)
    r.add_get("/identity/v3/projects/{project_id}", get_project)
    r.add_patch("/identity/v3/projects/{project_id}", update_project)
    r.add_delete("/identity/v3/projects/{project_id}", delete_project)
    r.add_get("/identity/v3/projects/{project_id}/tags", list_tags)
    r.add_put("/identity/v3/projects/{project_id}/tags", replace_tags)
    r.add_delete("/identity/v3/projects/{project_id}/tags", clear_tags)
    one = "/identity/v3/projects/{project_id}/tags/{tag}"
    r.add_get(one, check_tag, allow_head=False)
    r.add_head(one, check_tag)
    r.add_put(one, add_tag)
    r.add_delete(one, remove_tag)
