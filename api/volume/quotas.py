"""Block Storage quota sets, in Cinder's shapes: /volume/v3/{project_id}/os-quota-sets/{target}
(?usage=True for limit, in_use and reserved), …/defaults, PUT to set (admin) and DELETE to revert
to the defaults (admin).

Members read their own project's quotas, admins any project's. Like Cinder, an unknown target
project is not an error: it simply has the default quotas. Volumes and gigabytes are counted from
the `volumes` rows; snapshots, backups and groups do not exist yet and their usage is 0.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest
from api.quotas import VOLUME, defaults, limits, lock, reset, set_limits

_NON_QUOTA_KEYS = ("tenant_id", "id")
_MAX_INT = 0x7FFFFFFF
_TRUE = ("1", "t", "true", "on", "y", "yes")
_FALSE = ("0", "f", "false", "off", "n", "no")


def _usage_wanted(request: web.Request) -> bool:
    raw = request.query.get("usage", "false")
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise BadRequest(f"Invalid input received: Value '{raw}' for 'usage' is not a boolean.")


async def volume_usage(conn: Any, project_id: str) -> dict[str, int]:
    """In-use count of each block storage quota resource, counted from the rows themselves: every
    volume of the project (whatever its status, until its row is gone) and its size, a volume being
    extended counting at its target size. Snapshots, backups and groups do not exist yet: 0."""
    row = await conn.fetchrow(
        "SELECT count(*) AS volumes, coalesce(sum(greatest(size, coalesce(target_size, 0))), 0) AS gigabytes "
        "FROM volumes WHERE project_id = $1",
        project_id,
    )
    used = dict.fromkeys(VOLUME, 0)
    used.update(volumes=int(row["volumes"]), gigabytes=int(row["gigabytes"]))
    return used


async def show(request: web.Request) -> web.Response:
    target = request.match_info["target_project_id"]
    caller(request).require_project_access(target, "volume_extension:quotas:show")
    usage = _usage_wanted(request)
    async with ctx(request).pool.acquire() as conn:
        hard = await limits(conn, target, VOLUME)
        used = await volume_usage(conn, target) if usage else {}
    body: dict[str, Any] = {"id": target}
    for key in VOLUME:
        body[key] = {"limit": hard[key], "in_use": used[key], "reserved": 0} if usage else hard[key]
    return json_response({"quota_set": body})


async def show_defaults(request: web.Request) -> web.Response:
    target = request.match_info["target_project_id"]
    values = await defaults(ctx(request).pool, VOLUME)
    return json_response({"quota_set": {"id": target, **values}})


def _integer(key: str, value: Any) -> int:
    """Cinder's utils.validate_integer: anything whose text is an integer in -1..MAX_INT."""
    if isinstance(value, bool):
        raise BadRequest(f"Invalid input received: {key} must be an integer.")
    try:
        number = int(str(value))
    except ValueError:
        raise BadRequest(f"Invalid input received: {key} must be an integer.") from None
    if number < -1:
        raise BadRequest(f"Invalid input received: {key} must be >= -1")
    if number > _MAX_INT:
        raise BadRequest(f"Invalid input received: {key} must be <= {_MAX_INT}")
    return number


async def update(request: web.Request) -> web.Response:
    target = request.match_info["target_project_id"]
    caller(request).require_admin("volume_extension:quotas:update")
    data = await json_body(request)
    if not isinstance(data, dict) or not isinstance(data.get("quota_set"), dict):
        raise BadRequest(
            "Invalid input for field/attribute quota_set. 'quota_set' is a required property of type 'object'"
        )
    extra = sorted(set(data) - {"quota_set"})
    if extra:
        raise BadRequest(f"Additional properties are not allowed ({', '.join(extra)} unexpected)")
    quota_set = data["quota_set"]
    bad = [key for key in quota_set if key not in VOLUME and key not in _NON_QUOTA_KEYS]
    if bad:
        raise BadRequest(f"Invalid input received: Bad key(s) in quota set: {', '.join(bad)}")
    values = {key: _integer(key, value) for key, value in quota_set.items() if key in VOLUME}
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        await lock(conn, target, values)  # no volume created meanwhile slips under the new limit
        used = await volume_usage(conn, target)
        for key, value in values.items():
            if value != -1 and value < used[key]:
                raise BadRequest(
                    f"Invalid input received: Quota {key} limit must be equal or greater than "
                    "existing resources."
                )
        await set_limits(conn, target, values)
        hard = await limits(conn, target, VOLUME)
    return json_response({"quota_set": hard})


async def revert(request: web.Request) -> web.Response:
    target = request.match_info["target_project_id"]
    caller(request).require_admin("volume_extension:quotas:delete")
    async with ctx(request).pool.acquire() as conn:
        await reset(conn, target, VOLUME)
    return web.Response(status=200)


def setup(app: web.Application) -> None:
    r = app.router
    base = "/volume/v3/{project_id}/os-quota-sets/{target_project_id}"
    r.add_get(base, show)
    r.add_put(base, update)
    r.add_delete(base, revert)
    r.add_get(base + "/defaults", show_defaults)
