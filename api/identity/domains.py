"""/identity/v3/domains, as Keystone has them.

A domain owns its projects, users, groups and domain-specific roles. Disabled, its users cannot
authenticate, its projects cannot be scoped to, and every token of its users or on it or its
projects is revoked. Only a disabled domain may be deleted, and everything it owns goes with it.
The Default domain holds the cloud's admin: it can be neither disabled nor deleted.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.auth import new_id
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden
from api.identity import policy
from api.identity import validate as v
from api.identity.list_filters import add_text_filters, inexact
from api.identity.views import domain_view, get_or_404, links
from api.query_doc import documented, param
from api.sql import Sql

DEFAULT = "default"
KNOWN = {"name", "description", "enabled", "tags", "options", "explicit_domain_id", "id"}


def _bool_query(raw: str | None) -> bool | None:
    if raw is None:
        return None
    return raw.lower() not in ("0", "false", "no", "off")


def _conflict(name: Any) -> Conflict:
    return Conflict(f"Conflict occurred attempting to store domain - Duplicate entry found with name {name}.")


async def list_domains(request: web.Request) -> web.Response:
    only = policy.listable_domain(caller(request), "list_domains")
    context = ctx(request)
    sql = Sql()
    if only is not None:
        sql.where(f"id = {sql.arg(only)}")
    add_text_filters(sql, request.query, {"name": "name"})
    enabled = _bool_query(request.query.get("enabled"))
    if enabled is not None:
        sql.where(f"enabled = {sql.arg(enabled)}")
    rows = await context.pool.fetch(f"SELECT * FROM domains WHERE {sql.clause()} ORDER BY name", *sql.args)
    return json_response(
        {
            "domains": [domain_view(r, context.base_url) for r in rows],
            "links": links(context.base_url, "domains"),
        }
    )


def may_read(request: web.Request, domain_id: str) -> None:
    """Keystone's identity:get_domain: admin, system reader, a reader of the domain, or a token on
    the domain or on one of its projects."""
    me = caller(request)
    if (
        me.reads_all
        or policy.domain_reader(me, domain_id)
        or domain_id in (me.domain_id, me.payload.project_domain_id)
    ):
        return
    raise policy.denied("get_domain")


async def get_domain(request: web.Request) -> web.Response:
    context = ctx(request)
    row = await get_or_404(context.pool, "domains", request.match_info["domain_id"], "domain")
    may_read(request, row["id"])
    return json_response({"domain": domain_view(row, context.base_url)})


async def insert(conn: Any, data: dict[str, Any]) -> asyncpg.Record:
    """A new domain from a domain (or is_domain project) request body."""
    name = v.text(data, "name", required=True, max_len=64)
    description = v.text(data, "description", max_len=65535) or ""
    enabled = v.flag(data, "enabled")
    tags = v.tags(data) or []
    domain_id = v.text(data, "explicit_domain_id", max_len=64) or new_id()
    try:
        return await conn.fetchrow(
            "INSERT INTO domains (id, name, description, enabled, tags, extra) "
            "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            domain_id,
            name,
            description,
            True if enabled is None else enabled,
            tags,
            v.extra(data, KNOWN | {"domain_id", "parent_id", "is_domain"}),
        )
    except asyncpg.UniqueViolationError:
        raise _conflict(name) from None


async def create_domain(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "create_domain")
    context = ctx(request)
    data = v.member(await json_body(request), "domain")
    async with context.pool.acquire() as conn:
        row = await insert(conn, data)
    return json_response({"domain": domain_view(row, context.base_url)}, status=201)


async def update(conn: Any, domain_id: str, data: dict[str, Any]) -> asyncpg.Record:
    """Change a domain (from a domain or an is_domain project request body); disabling it revokes
    its tokens."""
    name = v.text(data, "name", max_len=64)
    if "name" in data and not (name or "").strip():
        raise BadRequest("Invalid input for field 'name': it may not be empty")
    description = v.text(data, "description", max_len=65535)
    enabled = v.flag(data, "enabled")
    tags = v.tags(data)
    old = await get_or_404(conn, "domains", domain_id, "domain")
    if enabled is False and old["id"] == DEFAULT:
        raise Forbidden("The default domain cannot be disabled.")
    try:
        row = await conn.fetchrow(
            "UPDATE domains SET name = coalesce($2, name), description = coalesce($3, description), "
            "enabled = coalesce($4, enabled), tags = coalesce($5, tags), extra = extra || $6 WHERE id = $1 "
            "RETURNING *",
            domain_id,
            name,
            description,
            enabled,
            tags,
            v.extra(data, KNOWN | {"domain_id", "parent_id", "is_domain"}),
        )
    except asyncpg.UniqueViolationError:
        raise _conflict(name) from None
    if enabled is False and old["enabled"]:
        await conn.execute("INSERT INTO token_revocations (domain_id) VALUES ($1)", domain_id)
    return row


async def update_domain(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "update_domain")
    context = ctx(request)
    data = v.member(await json_body(request), "domain")
    async with context.pool.acquire() as conn, conn.transaction():
        row = await update(conn, request.match_info["domain_id"], data)
    return json_response({"domain": domain_view(row, context.base_url)})


async def delete(conn: Any, domain_id: str) -> None:
    """Delete a disabled domain and all it owns (its projects, users, groups and roles go with
    it, and with them their assignments, credentials and memberships)."""
    row = await get_or_404(conn, "domains", domain_id, "domain")
    if row["id"] == DEFAULT:
        raise Forbidden("The default domain cannot be deleted.")
    if row["enabled"]:
        raise Forbidden("Cannot delete a domain that is enabled, please disable it first.")
    await conn.execute("DELETE FROM users WHERE domain_id = $1", domain_id)
    await conn.execute("DELETE FROM projects WHERE domain_id = $1", domain_id)
    await conn.execute("DELETE FROM domains WHERE id = $1", domain_id)
    await conn.execute("INSERT INTO token_revocations (domain_id) VALUES ($1)", domain_id)


async def delete_domain(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "delete_domain")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        await delete(conn, request.match_info["domain_id"])
    return web.Response(status=204)


documented(list_domains, parameters=[param("enabled", "boolean"), *inexact("name")])


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/domains", list_domains)
    r.add_post("/identity/v3/domains", create_domain)
    r.add_get("/identity/v3/domains/{domain_id}", get_domain)
    r.add_patch("/identity/v3/domains/{domain_id}", update_domain)
    r.add_delete("/identity/v3/domains/{domain_id}", delete_domain)
