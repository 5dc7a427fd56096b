"""/compute/v2.1/flavors: list (brief and detail), show, create, update (2.55+) and delete.

A private flavor (is_public false) is visible only to admins and to the projects on its access
list (flavor_access). Responses follow the requested microversion as Nova's do: `description`
from 2.55, `extra_specs` inline from 2.61, `swap` 0 instead of "" from 2.75.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from api import validate as v
from api.auth import AuthContext
from api.compute import query_params
from api.compute.links import limit, next_links, resource_links
from api.compute.microversion import requested
from api.context import caller, ctx, json_response
from api.errors import BadRequest, Conflict, NotFound
from api.query_doc import documented, param

# Nova's sort keys (its column names) -> our expression over a flavors row aliased {t}.
_SORT_KEYS = {
    "flavorid": "{t}.id",
    "id": "{t}.created_at",  # Nova's internal id: creation order
    "created_at": "{t}.created_at",
    "updated_at": "{t}.created_at",  # flavors are never updated but for description and specs
    "name": "{t}.name",
    "memory_mb": "{t}.ram",
    "root_gb": "{t}.disk",
    "ephemeral_gb": "{t}.ephemeral",
    "swap": "{t}.swap",
    "vcpus": "{t}.vcpus",
    "rxtx_factor": "{t}.rxtx_factor",
    "is_public": "{t}.is_public",
    "description": "coalesce({t}.description, '')",
    "disabled": "false",  # no flavor is ever disabled here
    "vcpu_weight": "0",  # not a flavor attribute here
}
_SORT_DIRS = ("asc", "desc")
_EPHEMERAL = "OS-FLV-EXT-DATA:ephemeral"
_IS_PUBLIC = "os-flavor-access:is_public"
_LIST_PARAMS = ("limit", "marker", "is_public", "minRam", "minDisk", "sort_key", "sort_dir")
_ID_PATTERN = re.compile(r"^(?! )[a-zA-Z0-9. _-]+(?<! )$")
_RXTX = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_FLOAT_MAX = 3.40282e38
_TRUE_STRINGS = ("1", "t", "true", "on", "y", "yes")
_FALSE_STRINGS = ("0", "f", "false", "off", "n", "no")


def _visible(project_param: str) -> str:
    """SQL: the flavor row `f` is public or shared with the project in `project_param`."""
    return (
        f"(f.is_public OR EXISTS (SELECT 1 FROM flavor_access a "
        f"WHERE a.flavor_id = f.id AND a.project_id = {project_param}))"
    )


def not_found(flavor_id: str) -> NotFound:
    return NotFound(f"Flavor {flavor_id} could not be found.")


async def find(conn: Any, me: AuthContext, flavor_id: str) -> asyncpg.Record:
    """The flavor if the caller may see it (admins see every flavor); 404 otherwise."""
    if me.is_admin:
        row = await conn.fetchrow("SELECT * FROM flavors f WHERE f.id = $1", flavor_id)
    else:
        row = await conn.fetchrow(
            f"SELECT * FROM flavors f WHERE f.id = $1 AND {_visible('$2')}", flavor_id, me.project_id
        )
    if row is None:
        raise not_found(flavor_id)
    return row


def brief_view(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "links": resource_links(request, "flavors", row["id"]),
    }
    if requested(request) >= (2, 55):
        view["description"] = row["description"]
    return view


def detail_view(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    version = requested(request)
    view: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "ram": row["ram"],
        "disk": row["disk"],
        "swap": row["swap"] if version >= (2, 75) else (row["swap"] or ""),
        _EPHEMERAL: row["ephemeral"],
        "OS-FLV-DISABLED:disabled": False,
        "vcpus": row["vcpus"],
        _IS_PUBLIC: row["is_public"],
        "rxtx_factor": row["rxtx_factor"],
        "links": resource_links(request, "flavors", row["id"]),
    }
    if version >= (2, 55):
        view["description"] = row["description"]
    if version >= (2, 61):
        view["extra_specs"] = dict(row["extra_specs"])
    return view


def _public_filter(request: web.Request, me: AuthContext) -> bool | None:
    """Nova's is_public filter: only admins choose; None means every flavor."""
    raw = request.query.get("is_public")
    if not me.is_admin or raw is None:
        return True
    if raw.lower() == "none":
        return None
    if raw.lower() in _TRUE_STRINGS:
        return True
    if raw.lower() in _FALSE_STRINGS:
        return False
    raise BadRequest(f"Invalid is_public filter [{raw}]")


# A minimum beyond any value the columns can hold matches nothing; it is compared as that bound.
_BIGINT = 2**63 - 1


def _min_filter(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"Invalid {key} filter [{raw}]") from None
    return max(min(value, _BIGINT), -_BIGINT)


def _enum_query(request: web.Request, key: str, allowed: Any, default: str) -> str:
    value = request.query.get(key) or default
    if value not in allowed:
        raise BadRequest(
            f"Invalid input for query parameters {key}. Value: {value}. "
            f"{value!r} is not one of {sorted(allowed)!r}"
        )
    return value


async def _list(request: web.Request) -> list[asyncpg.Record]:
    me = caller(request)
    query_params.only_known(request, _LIST_PARAMS)
    sort_key = _enum_query(request, "sort_key", _SORT_KEYS, "flavorid")
    sort_dir = _enum_query(request, "sort_dir", _SORT_DIRS, "asc")
    page = limit(request)
    is_public = _public_filter(request, me)
    min_ram, min_disk = _min_filter(request, "minRam"), _min_filter(request, "minDisk")
    marker = request.query.get("marker")

    args: list[Any] = []
    where = []
    if is_public is True:
        args.append(me.project_id)
        where.append(_visible(f"${len(args)}"))  # public, or shared with the caller's project (admins too)
    elif is_public is False:
        where.append("NOT f.is_public")
    if min_ram is not None:
        args.append(min_ram)
        where.append(f"f.ram >= ${len(args)}::bigint")
    if min_disk is not None:
        args.append(min_disk)
        where.append(f"f.disk >= ${len(args)}::bigint")
    sort = _SORT_KEYS[sort_key]
    async with ctx(request).pool.acquire() as conn:
        if marker is not None:
            try:
                await find(conn, me, marker)
            except NotFound:
                raise BadRequest(f"marker [{marker}] not found") from None
            args.append(marker)
            op = ">" if sort_dir == "asc" else "<"
            where.append(
                f"({sort.format(t='f')}, f.id) {op} "
                f"(SELECT {sort.format(t='m')}, m.id FROM flavors m WHERE m.id = ${len(args)})"
            )
        args.append(page)
        sql = (
            f"SELECT * FROM flavors f WHERE {' AND '.join(where) or 'true'} "
            f"ORDER BY {sort.format(t='f')} {sort_dir}, f.id {sort_dir} LIMIT ${len(args)}"
        )
        return await conn.fetch(sql, *args)


def _listing(
    request: web.Request, rows: list[asyncpg.Record], collection: str, views: list[Any]
) -> web.Response:
    body: dict[str, Any] = {"flavors": views}
    links = next_links(request, collection, len(rows), rows[-1]["id"] if rows else None)
    if links:
        body["flavors_links"] = links
    return json_response(body)


async def list_flavors(request: web.Request) -> web.Response:
    rows = await _list(request)
    return _listing(request, rows, "flavors", [brief_view(request, r) for r in rows])


async def list_flavors_detail(request: web.Request) -> web.Response:
    rows = await _list(request)
    return _listing(request, rows, "flavors/detail", [detail_view(request, r) for r in rows])


async def show_flavor(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        row = await find(conn, caller(request), request.match_info["flavor_id"])
    return json_response({"flavor": detail_view(request, row)})


def _flavor_id(data: dict[str, Any]) -> str:
    """The requested id as Nova stores it (a string); a new UUID when absent, null or "auto"."""
    value = data.get("id")
    if value is None or value == "auto":
        return str(uuid.uuid4())
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise v.invalid("id", value, f"{value!r} is not of type 'string', 'number', 'null'")
    if isinstance(value, str):
        if not 1 <= len(value) <= 255 or not _ID_PATTERN.match(value):
            raise v.invalid("id", value, f"{value!r} does not match '^(?! )[a-zA-Z0-9. _-]+(?<! )$'")
        return value
    return str(value)


def _rxtx_factor(data: dict[str, Any]) -> float:
    value = data.get("rxtx_factor", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise v.invalid("rxtx_factor", value, f"{value!r} is not of type 'number', 'string'")
    if isinstance(value, str) and not _RXTX.match(value):
        raise v.invalid("rxtx_factor", value, f"{value!r} does not match '^[0-9]+(\\.[0-9]+)?$'")
    number = float(value)
    if not 0 < number <= _FLOAT_MAX:
        raise v.invalid("rxtx_factor", value, f"{value!r} must be a float between 0 and {_FLOAT_MAX:g}")
    return number


async def create_flavor(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-flavor-manage:create")
    version = requested(request)
    data = v.member(await v.document(request), "flavor")
    allowed = {"name", "id", "ram", "vcpus", "disk", _EPHEMERAL, "swap", "rxtx_factor", _IS_PUBLIC}
    if version >= (2, 55):
        allowed.add("description")
    v.only(data, allowed, "flavor")
    v.required(data, ("name", "ram", "vcpus", "disk"), "flavor")
    name = v.name(data)
    flavor_id = _flavor_id(data)
    ram = v.integer(data, "ram", minimum=1)
    vcpus = v.integer(data, "vcpus", minimum=1)
    disk = v.integer(data, "disk", minimum=0)
    ephemeral = v.integer(data, _EPHEMERAL, minimum=0) if _EPHEMERAL in data else 0
    swap = v.integer(data, "swap", minimum=0) if "swap" in data else 0
    rxtx_factor = _rxtx_factor(data)
    is_public = v.boolean(data, _IS_PUBLIC) if _IS_PUBLIC in data else True
    description = v.description(data) if "description" in data else None
    try:
        row = await ctx(request).pool.fetchrow(
            "INSERT INTO flavors (id, name, ram, vcpus, disk, ephemeral, swap, rxtx_factor, is_public, "
            "description) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
            flavor_id,
            name,
            ram,
            vcpus,
            disk,
            ephemeral,
            swap,
            rxtx_factor,
            is_public,
            description,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "flavors_pkey":
            raise Conflict(f"Flavor with ID {flavor_id} already exists.") from None
        raise Conflict(f"Flavor with name {name} already exists.") from None
    # Nova answers a flavor create with 200, not 201.
    return json_response({"flavor": detail_view(request, row)})


async def update_flavor(request: web.Request) -> web.Response:
    if requested(request) < (2, 55):
        raise NotFound("The resource could not be found.")
    caller(request).require_admin("os_compute_api:os-flavor-manage:update")
    data = v.member(await v.document(request), "flavor")
    v.only(data, {"description"}, "flavor")
    v.required(data, ("description",), "flavor")
    description = v.description(data)
    flavor_id = request.match_info["flavor_id"]
    row = await ctx(request).pool.fetchrow(
        "UPDATE flavors SET description = $2 WHERE id = $1 RETURNING *", flavor_id, description
    )
    if row is None:
        raise not_found(flavor_id)
    return json_response({"flavor": detail_view(request, row)})


async def delete_flavor(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-flavor-manage:delete")
    flavor_id = request.match_info["flavor_id"]
    status = await ctx(request).pool.execute("DELETE FROM flavors WHERE id = $1", flavor_id)
    if status == "DELETE 0":
        raise not_found(flavor_id)
    return web.Response(status=202)


documented(
    list_flavors,
    list_flavors_detail,
    parameters=[
        param("limit", "integer"),
        param("marker"),
        param("is_public", enum=["true", "false", "none", "True", "False", "None", "1", "0"]),
        param("minRam", "integer", "At least this much RAM (MiB)"),
        param("minDisk", "integer", "At least this much disk (GiB)"),
        param("sort_key"),
        param("sort_dir", enum=["asc", "desc"]),
    ],
)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/flavors", list_flavors)
    r.add_post("/compute/v2.1/flavors", create_flavor)
    r.add_get("/compute/v2.1/flavors/detail", list_flavors_detail)
    r.add_get("/compute/v2.1/flavors/{flavor_id}", show_flavor)
    r.add_put("/compute/v2.1/flavors/{flavor_id}", update_flavor)
    r.add_delete("/compute/v2.1/flavors/{flavor_id}", delete_flavor)
