"""Application credentials' access rules (/identity/v3/users/{id}/access_rules), as Keystone
has them: which calls a token made from the credential may make, each a service type, an HTTP
method and a path pattern (`*` one path segment, `**` any number), the path relative to the
service's endpoint (e.g. compute's `/v2.1/servers/*/ips`). The API's authentication enforces
them on every request (api/auth.py, as keystonemiddleware does in each OpenStack service).

A user's rules are shared by their credentials (the same rule asked twice is one rule) and
outlive them; a rule still used by a credential cannot be deleted.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from api.context import caller, ctx, json_response
from api.errors import BadRequest, Forbidden, NotFound
from api.identity import policy
from api.identity.views import get_or_404, links

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def rule_view(row: Any) -> dict[str, Any]:
    """A rule as an application credential shows it."""
    return {"id": row["id"], "service": row["service"], "path": row["path"], "method": row["method"]}


def _view(row: Any, base: str) -> dict[str, Any]:
    return {
        **rule_view(row),
        "links": {"self": f"{base}/identity/v3/users/{row['user_id']}/access_rules/{row['id']}"},
    }


def parse(raw: Any) -> list[dict[str, str]] | None:
    """The access rules of a credential request: each {service, path, method} or {id}."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequest("Invalid input for field 'access_rules': a list was expected")
    rules = []
    for rule in raw:
        if not isinstance(rule, dict):
            raise BadRequest("Invalid input for field 'access_rules': each rule must be an object")
        if set(rule) == {"id"} and isinstance(rule["id"], str):
            rules.append({"id": rule["id"]})
            continue
        extra = set(rule) - {"id", "service", "path", "method"}
        if extra:
            raise BadRequest(f"Invalid input for field 'access_rules': unexpected {', '.join(sorted(extra))}")
        service, path, method = rule.get("service"), rule.get("path"), rule.get("method")
        if not isinstance(service, str) or not service or len(service) > 64:
            raise BadRequest("Invalid input for field 'access_rules': 'service' must be a service type")
        if not isinstance(path, str) or not path.startswith("/") or len(path) > 128:
            raise BadRequest("Invalid input for field 'access_rules': 'path' must start with '/'")
        if method not in METHODS:
            raise BadRequest(
                f"Invalid input for field 'access_rules': 'method' must be one of {', '.join(METHODS)}"
            )
        rules.append({"service": service, "path": path, "method": method})
    return rules


async def attach(
    conn: Any, user_id: str, app_cred_id: str, rules: list[dict[str, str]]
) -> list[asyncpg.Record]:
    """Give the credential these rules (the user's existing ones reused); the rules' rows."""
    rows = []
    for rule in rules:
        if "id" in rule:
            row = await conn.fetchrow(
                "SELECT * FROM access_rules WHERE id = $1 AND user_id = $2", rule["id"], user_id
            )
            if row is None:
                raise NotFound(f"Could not find access rule: {rule['id']}.")
        else:
            await conn.execute(
                "INSERT INTO access_rules (id, user_id, service, path, method) VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (user_id, service, path, method) DO NOTHING",
                uuid.uuid4().hex,
                user_id,
                rule["service"],
                rule["path"],
                rule["method"],
            )
            row = await conn.fetchrow(
                "SELECT * FROM access_rules WHERE user_id = $1 AND service = $2 AND path = $3 AND method = "
                "$4",
                user_id,
                rule["service"],
                rule["path"],
                rule["method"],
            )
        rows.append(row)
    unique = list({r["id"]: r for r in rows}.values())
    await conn.executemany(
        "INSERT INTO application_credential_access_rules (application_credential_id, access_rule_id) "
        "VALUES ($1, $2)",
        [(app_cred_id, r["id"]) for r in unique],
    )
    return unique


async def of_credentials(conn: Any, app_cred_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    rows = await conn.fetch(
        "SELECT c.application_credential_id AS cred, r.* FROM application_credential_access_rules c "
        "JOIN access_rules r ON r.id = c.access_rule_id WHERE c.application_credential_id = ANY($1::text[]) "
        "ORDER BY r.service, r.path, r.method",
        app_cred_ids,
    )
    found: dict[str, list[dict[str, Any]]] = {i: [] for i in app_cred_ids}
    for row in rows:
        found[row["cred"]].append(rule_view(row))
    return found


async def list_rules(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    policy.require_reader(caller(request), "list_access_rules", owner=user_id)
    context = ctx(request)
    q = request.query
    async with context.pool.acquire() as conn:
        await get_or_404(conn, "users", user_id, "user")
        rows = await conn.fetch(
            "SELECT * FROM access_rules WHERE user_id = $1 AND ($2::text IS NULL OR service = $2) "
            "AND ($3::text IS NULL OR path = $3) AND ($4::text IS NULL OR method = $4) ORDER BY service, "
            "path, method",
            user_id,
            q.get("service"),
            q.get("path"),
            q.get("method"),
        )
    base = context.base_url
    return json_response(
        {
            "access_rules": [_view(r, base) for r in rows],
            "links": links(base, f"users/{user_id}/access_rules"),
        }
    )


async def _rule(conn: Any, request: web.Request) -> asyncpg.Record:
    m = request.match_info
    row = await conn.fetchrow(
        "SELECT * FROM access_rules WHERE id = $1 AND user_id = $2", m["access_rule_id"], m["user_id"]
    )
    if row is None:
        raise NotFound(f"Could not find access rule: {m['access_rule_id']}.")
    return row


async def get_rule(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "get_access_rule", owner=request.match_info["user_id"])
    context = ctx(request)
    async with context.pool.acquire() as conn:
        row = await _rule(conn, request)
    return json_response({"access_rule": _view(row, context.base_url)})


async def delete_rule(request: web.Request) -> web.Response:
    policy.require_admin_or_owner(caller(request), "delete_access_rule", request.match_info["user_id"])
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await _rule(conn, request)
        used = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM application_credential_access_rules WHERE access_rule_id = $1)",
            row["id"],
        )
        if used:
            raise Forbidden(f"Access rule {row['id']} is still in use by an application credential.")
        await conn.execute("DELETE FROM access_rules WHERE id = $1", row["id"])
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/users/{user_id}/access_rules", list_rules)
    r.add_get("/identity/v3/users/{user_id}/access_rules/{access_rule_id}", get_rule)
    r.add_delete("/identity/v3/users/{user_id}/access_rules/{access_rule_id}", delete_rule)
