"""/compute/v2.1/os-quota-sets/{project_id}: Nova's quota sets (show, detail, defaults, update,
revert to defaults).

Anyone in a project may read its quotas; admins read and change any project's. Like Nova, a
project id Keystone does not know is refused with 400 when the caller could have looked it up
(Nova asks Keystone with the caller's token; a member asking about another project gets no answer
there, and Nova then takes the id on trust). The keys shown follow the microversion: nova-network's
four are gone from 2.36, the injected-file ones from 2.57.

Limits are per project (api/quotas.py); there are no per-user overrides, so ?user_id= shows the
project's limits and cannot be used to set any. Key pairs are counted per user: detail counts
those of ?user_id=, else the caller's.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import validate as v
from api.auth import AuthContext
from api.compute import query_params
from api.compute.microversion import requested
from api.compute.usage import compute_usage
from api.context import caller, ctx, json_response
from api.errors import BadRequest
from api.microversion import Microversion
from api.quotas import COMPUTE, defaults, limits, reset, set_limits

NOVA_NETWORK = ("fixed_ips", "floating_ips", "security_groups", "security_group_rules")
INJECTED_FILES = ("injected_files", "injected_file_content_bytes", "injected_file_path_bytes")
# Counted per project (the minimum a new limit may be); Nova leaves the per-user key pairs and
# server group members out of that check.
_COUNTED = ("instances", "cores", "ram", "server_groups")


def resources(version: Microversion) -> tuple[str, ...]:
    """The quota keys Nova shows and accepts at this microversion."""
    hidden: tuple[str, ...] = ()
    if version >= (2, 36):
        hidden += NOVA_NETWORK
    if version >= (2, 57):
        hidden += INJECTED_FILES
    return tuple(r for r in COMPUTE if r not in hidden)


async def _check_project(conn: Any, me: AuthContext, project_id: str) -> None:
    """Nova's identity.verify_project_id, answered from our own identity tables."""
    if not me.is_admin and project_id != me.project_id:
        return  # Keystone would refuse the caller the lookup; Nova proceeds
    if await conn.fetchval("SELECT 1 FROM projects WHERE id = $1", project_id) is None:
        raise BadRequest(f"Project ID {project_id} is not a valid project.")


async def show(request: web.Request) -> web.Response:
    me, project_id = caller(request), request.match_info["project_id"]
    query_params.only_known(request, ("user_id",))
    me.require_project_access(project_id, "os_compute_api:os-quota-sets:show")
    keys = resources(requested(request))
    async with ctx(request).pool.acquire() as conn:
        await _check_project(conn, me, project_id)
        hard = await limits(conn, project_id, keys)
    return json_response({"quota_set": {"id": project_id, **{k: hard[k] for k in keys}}})


async def detail(request: web.Request) -> web.Response:
    me, project_id = caller(request), request.match_info["project_id"]
    query_params.only_known(request, ("user_id",))
    me.require_project_access(project_id, "os_compute_api:os-quota-sets:detail")
    keys = resources(requested(request))
    user_id = request.query.get("user_id") or me.user_id
    async with ctx(request).pool.acquire() as conn:
        await _check_project(conn, me, project_id)
        hard = await limits(conn, project_id, keys)
        used = await compute_usage(conn, project_id, user_id)
    body = {k: {"limit": hard[k], "in_use": used[k], "reserved": 0} for k in keys}
    return json_response({"quota_set": {"id": project_id, **body}})


async def show_defaults(request: web.Request) -> web.Response:
    me, project_id = caller(request), request.match_info["project_id"]
    keys = resources(requested(request))
    async with ctx(request).pool.acquire() as conn:
        await _check_project(conn, me, project_id)
        values = await defaults(conn, keys)
    return json_response({"quota_set": {"id": project_id, **{k: values[k] for k in keys}}})


def _update_values(request: web.Request, data: Any) -> tuple[dict[str, int], bool]:
    version = requested(request)
    quota_set = v.member(data, "quota_set")
    accepted = set(resources(version)) | {"force"}
    if version < (2, 36):
        accepted.add("networks")  # accepted by the schema only to be refused below, as Nova does
    v.only(quota_set, accepted, "quota_set")
    if "networks" in quota_set:
        raise BadRequest("The networks quota has been removed")
    force = v.boolean(quota_set, "force") if "force" in quota_set else False
    values = {key: v.integer(quota_set, key, minimum=-1, signed=True) for key in quota_set if key != "force"}
    return values, force


async def update(request: web.Request) -> web.Response:
    me, project_id = caller(request), request.match_info["project_id"]
    query_params.only_known(request, ("user_id",))
    me.require_admin("os_compute_api:os-quota-sets:update")
    if request.query.get("user_id"):
        raise BadRequest("Per-user quotas are not supported by this cloud; set the project's quota instead.")
    values, force = _update_values(request, await v.document(request))
    keys = resources(requested(request))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        await _check_project(conn, me, project_id)
        if not force:
            used = await compute_usage(conn, project_id, None)
            for key, value in values.items():
                if key in _COUNTED and value != -1 and value < used[key]:
                    raise BadRequest(
                        f"Quota limit {value} for {key} must be greater than or equal to "
                        f"already used and reserved {used[key]}."
                    )
        await set_limits(conn, project_id, values)
        hard = await limits(conn, project_id, keys)
    # Nova leaves the id out of an update's answer.
    return json_response({"quota_set": {k: hard[k] for k in keys}})


async def revert(request: web.Request) -> web.Response:
    me, project_id = caller(request), request.match_info["project_id"]
    query_params.only_known(request, ("user_id",))
    me.require_admin("os_compute_api:os-quota-sets:delete")
    if not request.query.get("user_id"):  # a user has no overrides of their own to drop
        async with ctx(request).pool.acquire() as conn:
            await reset(conn, project_id, COMPUTE)
    return web.Response(status=202)


def setup(app: web.Application) -> None:
    r = app.router
    base = "/compute/v2.1/os-quota-sets/{project_id}"
    r.add_get(base, show)
    r.add_put(base, update)
    r.add_delete(base, revert)
    r.add_get(base + "/detail", detail)
    r.add_get(base + "/defaults", show_defaults)
