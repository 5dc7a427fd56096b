"""/compute/v2.1/os-hypervisors: the compute hosts as Nova's hypervisors (admin only).

Each host row of `compute_hosts` is one hypervisor (Nova's compute node) and its one
nova-compute service. What Nova's API shows per microversion:
- 2.1: list, detail, show, `statistics` (the sums over the enabled hosts), `{id}/uptime`,
  `{pattern}/search` and `{pattern}/servers` (hostname contains the pattern; 404 when none does);
  integer ids; `cpu_info` a string.
- 2.28: `cpu_info` an object.
- 2.33: `limit` and `marker` paging, `hypervisors_links` when a page is full.
- 2.53: uuid ids; search and servers become the `hypervisor_hostname_pattern` and `with_servers`
  query parameters of the list (the old routes are gone), unknown query parameters are refused.
- 2.75: `servers` always present (empty) when `with_servers` asks for it.
- 2.88: the inventory fields leave the detail view, which shows `uptime` instead; the
  `statistics` and `uptime` routes are gone.

A hypervisor's uptime is its host agent's: the time since the agent started on the host (its
row's `started_at`), in the form of the `uptime` command's first fields. The agent does not
report the host's load or logged-in users, so those are left out rather than made up.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from api.compute import hosts, query_params
from api.compute.links import MAX_LIMIT, next_links
from api.compute.microversion import Microversion, requested
from api.context import caller, ctx, json_response
from api.errors import BadRequest, NotFound
from api.query_doc import documented, param

UUID_IDS = (2, 53)  # ids are uuids, search and servers are query parameters
WITHOUT_INVENTORY = (2, 88)  # the detail view loses the inventory and gains uptime

# Nova's current_workload: the instances on the host busy with one of these tasks (or building).
_WORKLOAD_TASKS = (
    "resize_migrating",
    "rebuilding",
    "resize_prep",
    "image_snapshot",
    "image_backup",
    "rescuing",
    "unshelving",
    "shelving",
)
_WORKLOAD = f"""
SELECT host, count(*) AS busy FROM servers
WHERE host = ANY($1::text[]) AND vm_state <> 'deleted'
  AND (vm_state = 'building' OR task_state IN ({", ".join(f"'{t}'" for t in _WORKLOAD_TASKS)}))
GROUP BY host
"""


def _gone() -> NotFound:
    """A route this microversion does not have (Nova's VersionNotFoundForAPIMethod)."""
    return NotFound("The resource could not be found.")


def _not_found(wanted: str) -> NotFound:
    return NotFound(f"Hypervisor with ID '{wanted}' could not be found.")


def hypervisor_id(row: asyncpg.Record, version: Microversion) -> str | int:
    return hosts.host_uuid(row["name"], "hypervisor") if version >= UUID_IDS else hosts.legacy_id(row["name"])


def _service_id(row: asyncpg.Record, version: Microversion) -> str | int:
    return hosts.host_uuid(row["name"], "service") if version >= UUID_IDS else hosts.legacy_id(row["name"])


def uptime(row: asyncpg.Record, now: datetime.datetime) -> str:
    """The host agent's uptime as `uptime` prints it: " 14:02:11 up 3 days,  2:05"."""
    minutes = max(0, int((now - row["started_at"]).total_seconds()) // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    clock = f"{hours:2d}:{minutes:02d}" if hours else f"{minutes} min"
    if days:
        clock = f"{days} day{'s' if days != 1 else ''}, {clock}"
    return f" {now:%H:%M:%S} up {clock}"


def _inventory(row: asyncpg.Record, version: Microversion, busy: int) -> dict[str, Any]:
    """The fields the detail view shows before 2.88 (Nova's compute node inventory and usage)."""
    free_ram = (
        int((row["memory_mb"] - row["reserved_memory_mb"]) * row["ram_allocation_ratio"])
        - row["used_memory_mb"]
    )
    free_disk = row["local_gb"] - row["used_local_gb"]
    return {
        "vcpus": row["vcpus"],
        "memory_mb": row["memory_mb"],
        "local_gb": row["local_gb"],
        "vcpus_used": row["used_vcpus"],
        "memory_mb_used": row["used_memory_mb"],
        "local_gb_used": row["used_local_gb"],
        "free_ram_mb": free_ram,
        "free_disk_gb": free_disk,
        "current_workload": busy,
        "running_vms": row["running_vms"],
        "disk_available_least": free_disk,
        # The agent reports no CPU model or topology: Nova's empty cpu_info, a JSON string
        # before 2.28 and an object from then on.
        "cpu_info": {} if version >= (2, 28) else "{}",
    }


def _view(
    row: asyncpg.Record,
    version: Microversion,
    *,
    detail: bool,
    now: datetime.datetime,
    busy: int = 0,
    servers: list[asyncpg.Record] | None = None,
) -> dict[str, Any]:
    """One hypervisor as Nova's _view_hypervisor shows it (`servers`: None when not asked for)."""
    view: dict[str, Any] = {
        "id": hypervisor_id(row, version),
        "hypervisor_hostname": row["hypervisor_hostname"],
        "state": "up" if row["up"] else "down",
        "status": "enabled" if row["enabled"] else "disabled",
    }
    if detail:
        view.update(
            {
                "hypervisor_type": "QEMU" if row["virt_type"] in ("qemu", "kvm") else "test",
                "hypervisor_version": 9000000,
                "host_ip": row["host_ip"],
                "service": {
                    "id": _service_id(row, version),
                    "host": row["name"],
                    "disabled_reason": row["disabled_reason"],
                },
            }
        )
        if version < WITHOUT_INVENTORY:
            view.update(_inventory(row, version, busy))
        else:
            view["uptime"] = uptime(row, now) if row["up"] else None
    if servers:
        view["servers"] = [{"name": s["display_name"], "uuid": s["id"]} for s in servers]
    elif servers is not None and version >= (2, 75):
        view["servers"] = []
    return view


async def _workloads(conn: Any, rows: list[asyncpg.Record]) -> dict[str, int]:
    found = await conn.fetch(_WORKLOAD, [r["name"] for r in rows])
    return {r["host"]: r["busy"] for r in found}


async def _servers_on(conn: Any, rows: list[asyncpg.Record]) -> dict[str, list[asyncpg.Record]]:
    found = await conn.fetch(
        "SELECT id, display_name, host FROM servers WHERE host = ANY($1::text[]) "
        "AND vm_state <> 'deleted' ORDER BY created_at, id",
        [r["name"] for r in rows],
    )
    on: dict[str, list[asyncpg.Record]] = {}
    for server in found:
        on.setdefault(server["host"], []).append(server)
    return on


async def _matching(conn: Any, pattern: str) -> list[asyncpg.Record]:
    """The hosts whose hypervisor hostname contains `pattern` (Nova's LIKE '%pattern%'); 404
    when none does."""
    rows = [r for r in await hosts.rows(conn) if pattern in r["hypervisor_hostname"]]
    if not rows:
        raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
    return rows


def _with_servers(request: web.Request) -> bool:
    raw = request.query.get("with_servers")
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("1", "t", "true", "on", "y", "yes"):
        return True
    if value in ("0", "f", "false", "off", "n", "no"):
        return False
    raise BadRequest(
        f"Invalid input for query parameters with_servers. Value: {raw}. '{raw}' is not one of "
        "['True', 'true', 'False', 'false', '1', '0', 'on', 'off', 'yes', 'no', 'y', 'n', 't', 'f']"
    )


def _page(request: web.Request, rows: list[asyncpg.Record], version: Microversion) -> list[asyncpg.Record]:
    """Nova's limit and marker paging of the hypervisor list (2.33 on); markers are ids."""
    if version < (2, 33):
        return rows
    marker = request.query.get("marker")
    if marker is not None:
        ids = [str(hypervisor_id(r, version)) for r in rows]
        if marker not in ids:
            raise BadRequest(f"marker [{marker}] not found")
        rows = rows[ids.index(marker) + 1 :]
    limit = query_params.integer(request, "limit")
    return rows[: min(MAX_LIMIT if limit is None else limit, MAX_LIMIT)]


async def _list(request: web.Request, *, detail: bool) -> web.Response:
    version = requested(request)
    if version >= UUID_IDS:
        query_params.only_known(
            request, ("limit", "marker", "hypervisor_hostname_pattern", "with_servers"), since=UUID_IDS
        )
    pattern = request.query.get("hypervisor_hostname_pattern") if version >= UUID_IDS else None
    with_servers = _with_servers(request) if version >= UUID_IDS else False
    async with ctx(request).pool.acquire() as conn:
        if pattern is not None:
            if "limit" in request.query or "marker" in request.query:
                raise BadRequest(
                    "Paging over hypervisors with the hypervisor_hostname_pattern query parameter "
                    "is not supported."
                )
            rows = await _matching(conn, pattern)
        else:
            rows = _page(request, await hosts.rows(conn), version)
        busy = await _workloads(conn, rows) if detail else {}
        on = await _servers_on(conn, rows) if with_servers else {}
        now = await conn.fetchval("SELECT now()")
    body: dict[str, Any] = {
        "hypervisors": [
            _view(
                r,
                version,
                detail=detail,
                now=now,
                busy=busy.get(r["name"], 0),
                servers=on.get(r["name"], []) if with_servers else None,
            )
            for r in rows
        ]
    }
    if version >= (2, 33) and pattern is None:
        collection = "os-hypervisors/detail" if detail else "os-hypervisors"
        last = body["hypervisors"][-1]["id"] if body["hypervisors"] else None
        links = next_links(request, collection, len(rows), None if last is None else str(last))
        if links:
            body["hypervisors_links"] = links
    return json_response(body)


async def list_hypervisors(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-hypervisors:list")
    return await _list(request, detail=False)


async def list_hypervisors_detail(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-hypervisors:list-detail")
    return await _list(request, detail=True)


async def _find(conn: Any, request: web.Request) -> asyncpg.Record:
    """The hypervisor of the path's id: a uuid from 2.53 (400 otherwise), an integer before
    (404 otherwise), as Nova's _validate_id."""
    wanted, version = request.match_info["hypervisor_id"], requested(request)
    if version >= UUID_IDS:
        try:
            uuid.UUID(wanted)
        except ValueError:
            raise BadRequest(f"Invalid uuid {wanted}") from None
    elif not wanted.lstrip("-").isdigit():
        raise _not_found(wanted)
    for row in await hosts.rows(conn):
        if str(hypervisor_id(row, version)) == wanted.lower():
            return row
    raise _not_found(wanted)


async def show_hypervisor(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-hypervisors:show")
    version = requested(request)
    if version >= UUID_IDS:
        query_params.only_known(request, ("with_servers",), since=UUID_IDS)
    with_servers = _with_servers(request) if version >= UUID_IDS else False
    async with ctx(request).pool.acquire() as conn:
        row = await _find(conn, request)
        busy = await _workloads(conn, [row])
        on = await _servers_on(conn, [row]) if with_servers else {}
        now = await conn.fetchval("SELECT now()")
    servers = on.get(row["name"], []) if with_servers else None
    view = _view(row, version, detail=True, now=now, busy=busy.get(row["name"], 0), servers=servers)
    return json_response({"hypervisor": view})


async def show_uptime(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-hypervisors:uptime")
    version = requested(request)
    if version >= WITHOUT_INVENTORY:
        raise _gone()
    async with ctx(request).pool.acquire() as conn:
        row = await _find(conn, request)
        now = await conn.fetchval("SELECT now()")
    if not row["up"]:
        # Nova's ComputeServiceUnavailable: a host that does not answer has no uptime to give.
        raise BadRequest(f"Compute service of {row['name']} is unavailable at this time.")
    view = _view(row, version, detail=False, now=now)
    view["uptime"] = uptime(row, now)
    return json_response({"hypervisor": view})


async def statistics(request: web.Request) -> web.Response:
    """The sums over the enabled hosts (Nova's compute_node_statistics)."""
    caller(request).require_admin("os_compute_api:os-hypervisors:statistics")
    version = requested(request)
    if version >= WITHOUT_INVENTORY:
        raise _gone()
    async with ctx(request).pool.acquire() as conn:
        rows = [r for r in await hosts.rows(conn) if r["enabled"]]
        busy = await _workloads(conn, rows)
    keys = (
        "vcpus",
        "memory_mb",
        "local_gb",
        "vcpus_used",
        "memory_mb_used",
        "local_gb_used",
        "free_ram_mb",
        "free_disk_gb",
        "current_workload",
        "running_vms",
        "disk_available_least",
    )
    stats = dict.fromkeys(keys, 0)
    for row in rows:
        inventory = _inventory(row, version, busy.get(row["name"], 0))
        for key in keys:
            stats[key] += inventory[key]
    return json_response({"hypervisor_statistics": {"count": len(rows), **stats}})


async def search(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-hypervisors:search")
    version = requested(request)
    if version >= UUID_IDS:
        raise _gone()
    async with ctx(request).pool.acquire() as conn:
        rows = await _matching(conn, request.match_info["pattern"])
        now = await conn.fetchval("SELECT now()")
    return json_response({"hypervisors": [_view(r, version, detail=False, now=now) for r in rows]})


async def servers(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-hypervisors:servers")
    version = requested(request)
    if version >= UUID_IDS:
        raise _gone()
    async with ctx(request).pool.acquire() as conn:
        rows = await _matching(conn, request.match_info["pattern"])
        on = await _servers_on(conn, rows)
        now = await conn.fetchval("SELECT now()")
    views = [_view(r, version, detail=False, now=now, servers=on.get(r["name"], [])) for r in rows]
    return json_response({"hypervisors": views})


documented(
    list_hypervisors,
    list_hypervisors_detail,
    parameters=[
        param("hypervisor_hostname_pattern", description="Hosts whose name contains this (2.53)"),
        param("with_servers", "boolean", "With their servers (2.53)"),
        param("limit", "integer"),
        param("marker"),
    ],
)


def setup(app: web.Application) -> None:
    r = app.router
    base = "/compute/v2.1/os-hypervisors"
    r.add_get(base, list_hypervisors)
    r.add_get(base + "/detail", list_hypervisors_detail)
    r.add_get(base + "/statistics", statistics)
    r.add_get(base + "/{hypervisor_id}", show_hypervisor)
    r.add_get(base + "/{hypervisor_id}/uptime", show_uptime)
    r.add_get(base + "/{pattern}/search", search)
    r.add_get(base + "/{pattern}/servers", servers)
