"""/identity/v3/roles and role inference rules (/roles/{prior}/implies/{implied},
/role_inferences), as Keystone has them.

A role is global or specific to a domain (`domain_id`); a domain-specific role is never held
itself, only the global roles it implies are, and a global role cannot imply one. The built-in
roles (admin, member, reader) are immutable, as `keystone-manage bootstrap` makes them.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.auth import new_id
from api.bootstrap import ROLES as BUILT_IN
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden, NotFound
from api.identity import policy
from api.identity import validate as v
from api.identity.list_filters import add_text_filters, inexact
from api.identity.views import get_or_404, links, role_ref, role_view
from api.query_doc import documented, param
from api.sql import Sql

_KNOWN = {"name", "description", "domain_id", "options", "id"}
_PROHIBITED_IMPLIED = {"admin"}  # Keystone's [assignment] prohibited_implied_role


def _view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    view = role_view(row, base)
    if _immutable(row):
        view["options"] = {"immutable": True}
    return view


def _immutable(row: asyncpg.Record) -> bool:
    return row["domain_id"] is None and row["name"] in BUILT_IN


def _conflict(name: Any, domain_id: Any) -> Conflict:
    where = f" at domain ID {domain_id}" if domain_id else ""
    return Conflict(
        f"Conflict occurred attempting to store role - Duplicate entry found with name {name}{where}."
    )


async def list_roles(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "list_roles")
    context = ctx(request)
    sql = Sql()
    sql.where(f"domain_id IS NOT DISTINCT FROM {sql.arg(request.query.get('domain_id'))}::text")
    add_text_filters(sql, request.query, {"name": "name"})
    rows = await context.pool.fetch(f"SELECT * FROM roles WHERE {sql.clause()} ORDER BY name", *sql.args)
    return json_response(
        {"roles": [_view(r, context.base_url) for r in rows], "links": links(context.base_url, "roles")}
    )


async def create_role(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "create_role")
    context = ctx(request)
    data = v.member(await json_body(request), "role")
    name = v.text(data, "name", required=True, max_len=255)
    description = v.text(data, "description", max_len=255)
    domain_id = v.text(data, "domain_id", max_len=64)
    async with context.pool.acquire() as conn:
        if domain_id is not None:
            await get_or_404(conn, "domains", domain_id, "domain")
        try:
            row = await conn.fetchrow(
                "INSERT INTO roles (id, name, domain_id, description, extra) VALUES ($1, $2, $3, $4, $5) "
                "RETURNING *",
                new_id(),
                name,
                domain_id,
                description,
                v.extra(data, _KNOWN),
            )
        except asyncpg.UniqueViolationError:
            raise _conflict(name, domain_id) from None
    return json_response({"role": _view(row, context.base_url)}, status=201)


async def get_role(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "get_role")
    context = ctx(request)
    row = await get_or_404(context.pool, "roles", request.match_info["role_id"], "role")
    return json_response({"role": _view(row, context.base_url)})


def _refuse_immutable(row: asyncpg.Record) -> None:
    if _immutable(row):
        raise Forbidden(
            f"Unable to update or delete immutable role resource: `{row['id']}`. Set resource option "
            '"immutable" to false first.'
        )


async def update_role(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "update_role")
    context = ctx(request)
    role_id = request.match_info["role_id"]
    data = v.member(await json_body(request), "role")
    name = v.text(data, "name", max_len=255)
    if "name" in data and not (name or "").strip():
        raise BadRequest("Invalid input for field 'name': it may not be empty")
    description = v.text(data, "description", max_len=255)
    async with context.pool.acquire() as conn, conn.transaction():
        old = await get_or_404(conn, "roles", role_id, "role")
        _refuse_immutable(old)
        if "domain_id" in data and data["domain_id"] != old["domain_id"]:
            raise BadRequest("Update of `domain_id` is not allowed.")
        try:
            row = await conn.fetchrow(
                "UPDATE roles SET name = coalesce($2, name), description = coalesce($3, description), "
                "extra = extra || $4 WHERE id = $1 RETURNING *",
                role_id,
                name,
                description,
                v.extra(data, _KNOWN),
            )
        except asyncpg.UniqueViolationError:
            raise _conflict(name, old["domain_id"]) from None
    return json_response({"role": _view(row, context.base_url)})


async def delete_role(request: web.Request) -> web.Response:
    """Its assignments and inference rules go with it; tokens lose it at once (their roles are
    computed when they are used)."""
    policy.require_admin(caller(request), "delete_role")
    role_id = request.match_info["role_id"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await get_or_404(conn, "roles", role_id, "role")
        _refuse_immutable(row)
        await conn.execute("DELETE FROM roles WHERE id = $1", role_id)
    return web.Response(status=204)


# --- Role inference rules ---------------------------------------------------------------------


async def _pair(conn: Any, request: web.Request) -> tuple[asyncpg.Record, asyncpg.Record]:
    prior = await get_or_404(conn, "roles", request.match_info["prior_role_id"], "role")
    implied = await get_or_404(conn, "roles", request.match_info["implied_role_id"], "role")
    return prior, implied


def _rule_view(prior: asyncpg.Record, implied: asyncpg.Record, base: str) -> dict[str, Any]:
    return {
        "role_inference": {"prior_role": role_ref(prior, base), "implies": role_ref(implied, base)},
        "links": {"self": f"{base}/identity/v3/roles/{prior['id']}/implies/{implied['id']}"},
    }


async def create_rule(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "create_implied_role")
    context = ctx(request)
    async with context.pool.acquire() as conn:
        prior, implied = await _pair(conn, request)
        if (implied["domain_id"] is not None and prior["domain_id"] is None) or implied[
            "name"
        ] in _PROHIBITED_IMPLIED:
            raise Forbidden(f"{implied['id']} cannot be an implied roles.")
        await conn.execute(
            "INSERT INTO implied_roles (prior_role_id, implied_role_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            prior["id"],
            implied["id"],
        )
    return json_response(_rule_view(prior, implied, context.base_url), status=201)


async def _rule(conn: Any, request: web.Request) -> tuple[asyncpg.Record, asyncpg.Record]:
    prior, implied = await _pair(conn, request)
    found = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM implied_roles WHERE prior_role_id = $1 AND implied_role_id = $2)",
        prior["id"],
        implied["id"],
    )
    if not found:
        raise NotFound(f"{prior['id']} does not imply {implied['id']}.")
    return prior, implied


async def get_rule(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "get_implied_role")
    context = ctx(request)
    async with context.pool.acquire() as conn:
        prior, implied = await _rule(conn, request)
    return json_response(_rule_view(prior, implied, context.base_url))


async def check_rule(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "check_implied_role")
    async with ctx(request).pool.acquire() as conn:
        await _rule(conn, request)
    return web.Response(status=204)


async def delete_rule(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "delete_implied_role")
    async with ctx(request).pool.acquire() as conn:
        prior, implied = await _rule(conn, request)
        await conn.execute(
            "DELETE FROM implied_roles WHERE prior_role_id = $1 AND implied_role_id = $2",
            prior["id"],
            implied["id"],
        )
    return web.Response(status=204)


async def _implies(conn: Any, prior_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    rows = await conn.fetch(
        "SELECT i.prior_role_id AS prior, r.* FROM implied_roles i JOIN roles r ON r.id = i.implied_role_id "
        "WHERE i.prior_role_id = ANY($1::text[]) ORDER BY r.name",
        prior_ids,
    )
    found: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        found.setdefault(row["prior"], []).append(row)
    return found


async def list_rules_of(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "list_implied_roles")
    context = ctx(request)
    base = context.base_url
    async with context.pool.acquire() as conn:
        prior = await get_or_404(conn, "roles", request.match_info["prior_role_id"], "role")
        implied = (await _implies(conn, [prior["id"]])).get(prior["id"], [])
    return json_response(
        {
            "role_inference": {
                "prior_role": role_ref(prior, base),
                "implies": [role_ref(r, base) for r in implied],
            },
            "links": {"self": f"{base}/identity/v3/roles/{prior['id']}/implies"},
        }
    )


async def list_all_rules(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "list_role_inference_rules")
    context = ctx(request)
    base = context.base_url
    async with context.pool.acquire() as conn:
        priors = await conn.fetch(
            "SELECT * FROM roles WHERE id IN (SELECT prior_role_id FROM implied_roles) ORDER BY name"
        )
        implied = await _implies(conn, [p["id"] for p in priors])
    rules = [
        {"prior_role": role_ref(p, base), "implies": [role_ref(r, base) for r in implied.get(p["id"], [])]}
        for p in priors
    ]
    return json_response({"role_inferences": rules, "links": links(base, "role_inferences")})


documented(list_roles, parameters=[param("domain_id"), *inexact("name")])


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/roles", list_roles)
    r.add_post("/identity/v3/roles", create_role)
    r.add_get("/identity/v3/roles/{role_id}", get_role)
    r.add_patch("/identity/v3/roles/{role_id}", update_role)
    r.add_delete("/identity/v3/roles/{role_id}", delete_role)
    r.add_get("/identity/v3/roles/{prior_role_id}/implies", list_rules_of)
    rule = "/identity/v3/roles/{prior_role_id}/implies/{implied_role_id}"
    r.add_put(rule, create_rule)
    r.add_get(rule, get_rule, allow_head=False)
    r.add_head(rule, check_rule)
    r.add_delete(rule, delete_rule)
    r.add_get("/identity/v3/role_inferences", list_all_rules)
