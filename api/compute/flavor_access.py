"""Private flavor access: GET /compute/v2.1/flavors/{id}/os-flavor-access and the
addTenantAccess / removeTenantAccess actions on POST /compute/v2.1/flavors/{id}/action.

Admin-only, as in Nova (the list names other projects). The projects are checked against the
identity tables: Nova asks Keystone and refuses an unknown project with 400.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api import validate as v
from api.compute import flavors
from api.compute.microversion import requested
from api.context import caller, ctx, json_response
from api.errors import BadRequest, Conflict, NotFound

_ACTIONS = ("addTenantAccess", "removeTenantAccess")


async def _access_list(conn: Any, flavor_id: str) -> dict[str, Any]:
    rows = await conn.fetch(
        "SELECT project_id FROM flavor_access WHERE flavor_id = $1 ORDER BY project_id", flavor_id
    )
    return {"flavor_access": [{"flavor_id": flavor_id, "tenant_id": r["project_id"]} for r in rows]}


async def list_access(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_admin("os_compute_api:os-flavor-access")
    async with ctx(request).pool.acquire() as conn:
        row = await flavors.find(conn, me, request.match_info["flavor_id"])
        if row["is_public"]:
            raise NotFound("Access list not available for public flavors.")
        return json_response(await _access_list(conn, row["id"]))


def _tenant(data: dict[str, Any], action: str) -> str:
    v.only(data, {"tenant"}, action)
    v.required(data, ("tenant",), action)
    tenant = data["tenant"]
    if not isinstance(tenant, str):
        raise v.invalid("tenant", tenant, f"{tenant!r} is not of type 'string'")
    if not 1 <= len(tenant) <= 255:
        raise v.invalid("tenant", tenant, f"{tenant!r} is {'too short' if not tenant else 'too long'}")
    return tenant


async def flavor_action(request: web.Request) -> web.Response:
    me = caller(request)
    data = await v.document(request)
    if not isinstance(data, dict) or len(data) != 1:
        raise BadRequest("Malformed request body")
    action, body = next(iter(data.items()))
    if action not in _ACTIONS:
        raise BadRequest(f"There is no such action: {action}")
    policy = "add_tenant_access" if action == "addTenantAccess" else "remove_tenant_access"
    me.require_admin(f"os_compute_api:os-flavor-access:{policy}")
    if not isinstance(body, dict):
        raise v.invalid(action, body, f"{body!r} is not of type 'object'")
    tenant = _tenant(body, action)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM projects WHERE id = $1", tenant) is None:
            raise BadRequest(f"Project ID {tenant} is not a valid project.")
        row = await flavors.find(conn, me, request.match_info["flavor_id"])
        flavor_id = row["id"]
        if action == "addTenantAccess":
            if row["is_public"] and requested(request) >= (2, 7):
                raise Conflict("Can not add access to a public flavor.")
            try:
                await conn.execute(
                    "INSERT INTO flavor_access (flavor_id, project_id) VALUES ($1, $2)", flavor_id, tenant
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(
                    f"Flavor access already exists for flavor {flavor_id} and project {tenant} combination."
                ) from None
        else:
            status = await conn.execute(
                "DELETE FROM flavor_access WHERE flavor_id = $1 AND project_id = $2", flavor_id, tenant
            )
            if status == "DELETE 0":
                raise NotFound(f"Flavor access not found for {flavor_id} / {tenant} combination.")
        return json_response(await _access_list(conn, flavor_id))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/flavors/{flavor_id}/os-flavor-access", list_access)
    r.add_post("/compute/v2.1/flavors/{flavor_id}/action", flavor_action)
