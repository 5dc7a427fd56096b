"""/compute/v2.1/os-server-groups: affinity and anti-affinity groups (the scheduler enforces them)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from api import quotas
from api.compute.links import limit as page_limit
from api.compute.microversion import requested
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, NotFound
from api.query_doc import documented, param

_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")


async def _view(conn: Any, request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    members = await conn.fetch(
        "SELECT id FROM servers WHERE group_id = $1 AND vm_state <> 'deleted' ORDER BY created_at", row["id"]
    )
    group: dict[str, Any] = {"id": row["id"], "name": row["name"], "members": [r["id"] for r in members]}
    if requested(request) >= (2, 64):
        group.update(policy=row["policy"], rules=row["rules"])
    else:
        group.update(policies=[row["policy"]], metadata={})
    if requested(request) >= (2, 13):
        group.update(project_id=row["project_id"], user_id=row["user_id"])
    return group


async def _find(conn: Any, request: web.Request) -> asyncpg.Record:
    me = caller(request)
    group_id = request.match_info["group_id"]
    row = await conn.fetchrow("SELECT * FROM server_groups WHERE id = $1", group_id)
    if row is None or (row["project_id"] != me.project_id and not me.is_admin):
        raise NotFound(f"Instance group {group_id} could not be found.")
    return row


async def list_groups(request: web.Request) -> web.Response:
    me = caller(request)
    all_projects = me.is_admin and request.query.get("all_projects", "").lower() in ("1", "true", "yes")
    async with ctx(request).pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM server_groups WHERE $1::boolean OR project_id = $2 ORDER BY created_at LIMIT $3",
            all_projects,
            me.project_id,
            page_limit(request),
        )
        return json_response({"server_groups": [await _view(conn, request, r) for r in rows]})


async def show_group(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        return json_response({"server_group": await _view(conn, request, await _find(conn, request))})


async def create_group(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_writer("os_compute_api:os-server-groups:create")
    project_id = me.require_project()
    document = await json_body(request)
    data = document.get("server_group") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        raise BadRequest(
            "Invalid input for field/attribute server_group. 'server_group' is a required property"
        )
    name = data.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise BadRequest("Invalid input for field/attribute name. It must be a string of 1 to 255 characters")
    if requested(request) >= (2, 64):
        policy, rules = data.get("policy"), data.get("rules") or {}
        if set(data) - {"name", "policy", "rules"}:
            raise BadRequest("Additional properties are not allowed in server_group")
    else:
        policies, rules = data.get("policies"), {}
        if not isinstance(policies, list) or len(policies) != 1:
            raise BadRequest("Invalid input for field/attribute policies: exactly one policy is expected")
        policy = policies[0]
    if policy not in _POLICIES:
        raise BadRequest(
            f"Invalid input for field/attribute policy. Value: {policy!r}. "
            f"It must be one of {', '.join(_POLICIES)}"
        )
    if (
        not isinstance(rules, dict)
        or set(rules) - {"max_server_per_host"}
        or (rules and policy != "anti-affinity")
    ):
        raise BadRequest(
            "Invalid input for field/attribute rules: only max_server_per_host with anti-affinity"
        )
    async with ctx(request).pool.acquire() as conn, conn.transaction():

        async def usage(c: asyncpg.Connection) -> dict[str, int]:
            n = await c.fetchval("SELECT count(*) FROM server_groups WHERE project_id = $1", project_id)
            return {"server_groups": n}

        await quotas.enforce(conn, project_id, {"server_groups": 1}, usage)
        row = await conn.fetchrow(
            "INSERT INTO server_groups (id, name, project_id, user_id, policy, rules) "
            "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            str(uuid.uuid4()),
            name,
            project_id,
            me.user_id,
            policy,
            rules,
        )
        return json_response({"server_group": await _view(conn, request, row)})


async def delete_group(request: web.Request) -> web.Response:
    caller(request).require_writer("os_compute_api:os-server-groups:delete")
    async with ctx(request).pool.acquire() as conn:
        row = await _find(conn, request)
        await conn.execute("DELETE FROM server_groups WHERE id = $1", row["id"])
    return web.Response(status=204)


documented(
    list_groups,
    parameters=[param("all_projects", "boolean"), param("limit", "integer"), param("offset", "integer")],
)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/os-server-groups", list_groups)
    r.add_post("/compute/v2.1/os-server-groups", create_group)
    r.add_get("/compute/v2.1/os-server-groups/{group_id}", show_group)
    r.add_delete("/compute/v2.1/os-server-groups/{group_id}", delete_group)
