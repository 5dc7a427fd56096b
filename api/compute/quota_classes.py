"""/compute/v2.1/os-quota-class-sets/{class}: Nova's quota classes (admin only).

The class 'default' is the compute quota defaults (`quota_defaults`): what every project may use
unless its own quota says otherwise; updating it changes them for every project without an
override of its own. Any other class name is kept as Nova keeps it (`quota_classes`), shown
with the defaults for what it does not set, and limits nothing, as in Nova.

The keys follow the microversion, as Nova's: before 2.50 nova-network's (fixed_ips, floating_ips,
security_groups, security_group_rules) and no server groups; from 2.50 the server group keys
and not nova-network's; from 2.57 no injected files either.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import validate as v
from api.compute.microversion import Microversion, requested
from api.context import caller, ctx, json_response
from api.errors import BadRequest
from api.quotas import COMPUTE

DEFAULT = "default"
_NOVA_NETWORK = ("fixed_ips", "floating_ips", "security_groups", "security_group_rules")
_SERVER_GROUPS = ("server_groups", "server_group_members")
_INJECTED = ("injected_files", "injected_file_content_bytes", "injected_file_path_bytes")


def resources(version: Microversion) -> tuple[str, ...]:
    """The keys a quota class shows and takes at this microversion."""
    hidden: tuple[str, ...] = _SERVER_GROUPS if version < (2, 50) else _NOVA_NETWORK
    if version >= (2, 57):
        hidden += _INJECTED
    return tuple(r for r in COMPUTE if r not in hidden)


async def _values(conn: Any, name: str, keys: tuple[str, ...]) -> dict[str, int]:
    """The class's values: the defaults, overridden by what a class other than 'default' sets."""
    rows = await conn.fetch(
        "SELECT d.resource, coalesce(c.hard_limit, d.hard_limit) AS hard_limit FROM quota_defaults d "
        "LEFT JOIN quota_classes c ON c.resource = d.resource AND c.class_name = $1 "
        "WHERE d.resource = ANY($2::text[])",
        name,
        list(keys),
    )
    found = {r["resource"]: int(r["hard_limit"]) for r in rows}
    return {k: found[k] for k in keys if k in found}


async def show(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-quota-class-sets:show")
    name = request.match_info["class_name"]
    async with ctx(request).pool.acquire() as conn:
        values = await _values(conn, name, resources(requested(request)))
    return json_response({"quota_class_set": {"id": name, **values}})


def _changes(data: Any, keys: tuple[str, ...]) -> dict[str, int]:
    quota_set = v.member(data, "quota_class_set")
    v.only(quota_set, keys, "quota_class_set")
    return {key: v.integer(quota_set, key, minimum=-1, signed=True) for key in quota_set}


async def update(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-quota-class-sets:update")
    name = request.match_info["class_name"]
    if not 1 <= len(name) <= 255:
        raise BadRequest("Invalid input received: quota_class_name has a length of 1 to 255 characters.")
    keys = resources(requested(request))
    changes = _changes(await v.document(request), keys)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if name == DEFAULT:
            await conn.executemany(
                "UPDATE quota_defaults SET hard_limit = $2 WHERE resource = $1", list(changes.items())
            )
        else:
            await conn.executemany(
                "INSERT INTO quota_classes (class_name, resource, hard_limit) VALUES ($1, $2, $3) "
                "ON CONFLICT (class_name, resource) DO UPDATE SET hard_limit = EXCLUDED.hard_limit",
                [(name, key, value) for key, value in changes.items()],
            )
        values = await _values(conn, name, keys)
    return json_response({"quota_class_set": values})  # without the id, as Nova's update answers


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/os-quota-class-sets/{class_name}", show)
    r.add_put("/compute/v2.1/os-quota-class-sets/{class_name}", update)
