"""Networking quotas, in Neutron's shapes: /networking/v2.0/quotas (admins: the projects with
non-default quotas), /quotas/{project_id} (GET, PUT by admins, DELETE by admins to revert to the
defaults), /quotas/{project_id}/details (limit, used, reserved) and /quotas/{project_id}/default.

Members read their own project's quotas, admins any project's. Like Neutron, an unknown project is
not an error: it has the default quotas. Networks, subnets and ports are counted from their rows
(a network's DHCP port counts for the network's project, as in Neutron, but is never refused for
quota), security groups and their rules; routers and the rest do not exist in this cloud and are 0.

`enforce` is the check every create runs in its own transaction, under the quota lock of
(project, resource), so concurrent creates are counted one after the other.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.auth import AuthContext
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Forbidden
from api.network.faults import over_quota
from api.quotas import NETWORK, UNLIMITED, defaults, limits, lock, reset, set_limits

_MAX_INT = 0x7FFFFFFF
_CONTROL_KEYS = ("force", "check_limit")  # Neutron's quota-check-limit extension


def _may_read(me: AuthContext, project_id: str) -> None:
    if not me.is_admin and project_id != me.project_id:
        raise Forbidden("rule:get_quota is disallowed by policy")


# quota resource -> its table
_COUNTED = {
    "network": "networks",
    "subnet": "subnets",
    "port": "ports",
    "security_group": "security_groups",
    "security_group_rule": "security_group_rules",
}


async def network_usage(conn: Any, project_id: str) -> dict[str, int]:
    """In-use count of each networking quota resource, from the rows themselves."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM networks WHERE project_id = $1) AS network, "
        "(SELECT count(*) FROM subnets WHERE project_id = $1) AS subnet, "
        "(SELECT count(*) FROM ports WHERE project_id = $1) AS port, "
        "(SELECT count(*) FROM security_groups WHERE project_id = $1) AS security_group, "
        "(SELECT count(*) FROM security_group_rules WHERE project_id = $1) AS security_group_rule",
        project_id,
    )
    return {**dict.fromkeys(NETWORK, 0), **{resource: int(row[resource]) for resource in _COUNTED}}


async def enforce(conn: Any, project_id: str, resource: str, amount: int = 1) -> None:
    """Inside the caller's transaction: refuse with Neutron's OverQuota (409) if `amount` more
    of `resource` would pass the project's limit. The lock holds until the transaction ends,
    so the caller's insert is counted by the next request."""
    await lock(conn, project_id, (resource,))
    limit = (await limits(conn, project_id, (resource,)))[resource]
    if limit == UNLIMITED:
        return
    used = await conn.fetchval(f"SELECT count(*) FROM {_COUNTED[resource]} WHERE project_id = $1", project_id)
    if used + amount > limit:
        raise over_quota(resource)


async def list_quotas(request: web.Request) -> web.Response:
    me = caller(request)
    if not me.is_admin:
        raise Forbidden("rule:get_quota is disallowed by policy")
    async with ctx(request).pool.acquire() as conn:
        projects = await conn.fetch(
            "SELECT DISTINCT project_id FROM quota_limits WHERE resource = ANY($1::text[]) "
            "ORDER BY project_id",
            list(NETWORK),
        )
        result = []
        for row in projects:
            values = await limits(conn, row["project_id"], NETWORK)
            result.append({**values, "project_id": row["project_id"], "tenant_id": row["project_id"]})
    return json_response({"quotas": result})


async def show(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    _may_read(caller(request), project_id)
    return json_response({"quota": await limits(ctx(request).pool, project_id, NETWORK)})


async def details(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    _may_read(caller(request), project_id)
    async with ctx(request).pool.acquire() as conn:
        hard = await limits(conn, project_id, NETWORK)
        used = await network_usage(conn, project_id)
    return json_response({"quota": {k: {"limit": hard[k], "used": used[k], "reserved": 0} for k in NETWORK}})


async def show_default(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    _may_read(caller(request), project_id)
    return json_response({"quota": await defaults(ctx(request).pool, NETWORK)})


def _limit(key: str, value: Any) -> int:
    """Neutron's convert_to_int and range check: -1 (unlimited) up to the largest integer."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRequest(f"Invalid input for {key}. Reason: '{value}' is not an integer.")
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"Invalid input for {key}. Reason: '{value}' is not an integer.") from None
    if number < -1:
        raise BadRequest(f"Invalid input for {key}. Reason: '{number}' is too small - must be at least '-1'.")
    if number > _MAX_INT:
        raise BadRequest(
            f"Invalid input for {key}. Reason: '{number}' is too large - must be no larger than '{_MAX_INT}'."
        )
    return number


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise BadRequest(f"Invalid input for {key}. Reason: '{value}' cannot be converted to boolean.")


async def update(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    caller(request).require_admin("update_quota")
    data = await json_body(request)
    if not isinstance(data, dict) or not isinstance(data.get("quota"), dict) or set(data) != {"quota"}:
        raise BadRequest("Resource body required")
    quota = data["quota"]
    unknown = sorted(set(quota) - set(NETWORK) - set(_CONTROL_KEYS))
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    check_limit = _flag("check_limit", quota["check_limit"]) if "check_limit" in quota else False
    force = _flag("force", quota["force"]) if "force" in quota else False
    values = {key: _limit(key, value) for key, value in quota.items() if key in NETWORK}
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if check_limit and not force:
            used = await network_usage(conn, project_id)
            for key, value in values.items():
                if value != -1 and value < used[key]:
                    raise BadRequest(
                        f"Quota limit {value} for {key} must be greater than or equal to already "
                        f"used {used[key]}."
                    )
        await set_limits(conn, project_id, values)
        hard = await limits(conn, project_id, NETWORK)
    return json_response({"quota": hard})


async def revert(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    caller(request).require_admin("delete_quota")
    async with ctx(request).pool.acquire() as conn:
        await reset(conn, project_id, NETWORK)
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/networking/v2.0/quotas", list_quotas)
    r.add_get("/networking/v2.0/quotas/{project_id}", show)
    r.add_put("/networking/v2.0/quotas/{project_id}", update)
    r.add_delete("/networking/v2.0/quotas/{project_id}", revert)
    r.add_get("/networking/v2.0/quotas/{project_id}/details", details)
    r.add_get("/networking/v2.0/quotas/{project_id}/default", show_default)
