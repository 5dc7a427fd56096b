"""/compute/v2.1/os-quota-sets/{project_id}: Nova's quota sets (show, detail, defaults, update,
revert to defaults).

Anyone in a project may read its quotas; admins read and change any project's. Like Nova, a
project id Keystone does not know is refused with 400 when the caller could have looked it up
(Nova asks Keystone with the caller's token; a member asking about another project gets no answer
there, and Nova then takes the id on trust). The keys shown follow the microversion: nova-network's
four are gone from 2.36, the injected-file ones from 2.57.

Limits are per project (api/quotas.py), and, as in Nova, an admin may give one user of a project
limits of their own (?user_id=, the `quota_user_limits` rows): at most the project's, at least
what the user already uses; show and detail with ?user_id= give that user's limits (their own,
else the project's) and usage (their servers and key pairs), and a delete with ?user_id= drops
them. A server's create is held to its user's limits as well as its project's
(server_create.py). Key pairs are counted per user: detail without ?user_id= counts the caller's.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import validate as v
from api.auth import AuthContext
from api.compute import query_params
from api.compute.microversion import requested
from api.compute.usage import compute_usage, user_usage
from api.context import caller, ctx, json_response
from api.errors import BadRequest
from api.microversion import Microversion
from api.query_doc import documented, param
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


async def user_limits(conn: Any, project_id: str, user_id: str, keys: tuple[str, ...]) -> dict[str, int]:
    """A user's limits in a project: their own where set, else the project's."""
    hard = await limits(conn, project_id, keys)
    rows = await conn.fetch(
        "SELECT resource, hard_limit FROM quota_user_limits WHERE project_id = $1 AND user_id = $2",
        project_id,
        user_id,
    )
    hard.update({r["resource"]: int(r["hard_limit"]) for r in rows if r["resource"] in hard})
    return hard


async def show(request: web.Request) -> web.Response:
    me, project_id = caller(request), request.match_info["project_id"]
    query_params.only_known(request, ("user_id",))
    me.require_project_access(project_id, "os_compute_api:os-quota-sets:show")
    keys = resources(requested(request))
    user_id = request.query.get("user_id")
    async with ctx(request).pool.acquire() as conn:
        await _check_project(conn, me, project_id)
        if user_id:
            hard = await user_limits(conn, project_id, user_id, keys)
        else:
            hard = await limits(conn, project_id, keys)
    return json_response({"quota_set": {"id": project_id, **{k: hard[k] for k in keys}}})


async def detail(request: web.Request) -> web.Response:
    me, project_id = caller(request), request.match_info["project_id"]
    query_params.only_known(request, ("user_id",))
    me.require_project_access(project_id, "os_compute_api:os-quota-sets:detail")
    keys = resources(requested(request))
    user_id = request.query.get("user_id")
    async with ctx(request).pool.acquire() as conn:
        await _check_project(conn, me, project_id)
        if user_id:
            hard = await user_limits(conn, project_id, user_id, keys)
            used = await user_usage(conn, project_id, user_id)
        else:
            hard = await limits(conn, project_id, keys)
            used = await compute_usage(conn, project_id, me.user_id)
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


def _check_limit(key: str, value: int, minimum: int, maximum: int) -> None:
    """Nova's _validate_quota_limit (-1 is infinite)."""

    def inf(number: int) -> float:
        return float("inf") if number == -1 else number

    if inf(value) < inf(minimum):
        raise BadRequest(
            f"Quota limit {value} for {key} must be greater than or equal to already used and "
            f"reserved {minimum}."
        )
    if inf(value) > inf(maximum):
        raise BadRequest(f"Quota limit {value} for {key} must be less than or equal to {maximum}.")


async def _update_project(conn: Any, project_id: str, values: dict[str, int], force: bool) -> None:
    if not force:
        used = await compute_usage(conn, project_id, None)
        for key, value in values.items():
            if key in _COUNTED:
                _check_limit(key, value, used[key], -1)
    await set_limits(conn, project_id, values)


async def _update_user(conn: Any, project_id: str, user_id: str, values: dict[str, int], force: bool) -> None:
    """A user's own limits: at most the project's, at least what the user uses (unless forced)."""
    project = await limits(conn, project_id, values)
    used = await user_usage(conn, project_id, user_id)
    for key, value in values.items():
        _check_limit(key, value, 0 if force else used[key], project[key])
    await conn.executemany(
        "INSERT INTO quota_user_limits (project_id, user_id, resource, hard_limit) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (project_id, user_id, resource) DO UPDATE SET hard_limit = EXCLUDED.hard_limit",
        [(project_id, user_id, key, value) for key, value in values.items()],
    )


async def update(request: web.Request) -> web.Response:
    me, project_id = caller(request), request.match_info["project_id"]
    query_params.only_known(request, ("user_id",))
    me.require_admin("os_compute_api:os-quota-sets:update")
    values, force = _update_values(request, await v.document(request))
    keys = resources(requested(request))
    user_id = request.query.get("user_id")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        await _check_project(conn, me, project_id)
        if user_id:
            await _update_user(conn, project_id, user_id, values, force)
            hard = await user_limits(conn, project_id, user_id, keys)
        else:
            await _update_project(conn, project_id, values, force)
            hard = await limits(conn, project_id, keys)
    # Nova leaves the id out of an update's answer.
    return json_response({"quota_set": {k: hard[k] for k in keys}})


async def revert(request: web.Request) -> web.Response:
    """The project's limits back to the defaults, or (?user_id=) the user's back to the project's."""
    me, project_id = caller(request), request.match_info["project_id"]
    query_params.only_known(request, ("user_id",))
    me.require_admin("os_compute_api:os-quota-sets:delete")
    user_id = request.query.get("user_id")
    async with ctx(request).pool.acquire() as conn:
        if user_id:
            await conn.execute(
                "DELETE FROM quota_user_limits WHERE project_id = $1 AND user_id = $2", project_id, user_id
            )
        else:  # Nova's destroy_all_by_project: the users' limits in the project go too
            await reset(conn, project_id, COMPUTE)
            await conn.execute("DELETE FROM quota_user_limits WHERE project_id = $1", project_id)
    return web.Response(status=202)


documented(show, detail, parameters=[param("user_id", description="The quota of this user in the project")])


def setup(app: web.Application) -> None:
    r = app.router
    base = "/compute/v2.1/os-quota-sets/{project_id}"
    r.add_get(base, show)
    r.add_put(base, update)
    r.add_delete(base, revert)
    r.add_get(base + "/detail", detail)
    r.add_get(base + "/defaults", show_defaults)
