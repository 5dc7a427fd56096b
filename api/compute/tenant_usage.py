"""/compute/v2.1/os-simple-tenant-usage: what each project's servers used over a period, as
Nova's simple tenant usage computes it.

A server counts over the part of the period it existed for: from its launch (`launched_at`, set
by the server actor when it became active) to its deletion (`terminated_at`) or the period's end,
the period ending no later than now. Its hours times its flavor's vCPUs, RAM and disk (root plus
ephemeral, the flavor the server kept) give the project's totals; deleted servers count for the
time they lived, servers never launched not at all. The list (admin only) gives one summary per
project (with each server's usage when `detailed=1`); show gives one project's, to its members
too. From 2.40 both page over the servers with `limit` and `marker` (a server id) and link the
next page.
"""

from __future__ import annotations

import datetime
from typing import Any

import asyncpg
from aiohttp import web

from api.compute import query_params
from api.compute.links import MAX_LIMIT, next_links
from api.compute.microversion import requested
from api.context import caller, ctx, json_response
from api.errors import BadRequest
from api.query_doc import documented, param

_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S.%f")
_QUERY = ("start", "end", "detailed", "limit", "marker")


def _moment(raw: str | None, now: datetime.datetime) -> datetime.datetime:
    """Nova's _parse_datetime: one of three formats, UTC; now when absent."""
    if not raw:
        return now
    for fmt in _FORMATS:
        try:
            return datetime.datetime.strptime(raw, fmt).replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
    raise BadRequest("Invalid datetime string: Datetime is in invalid format")


def _period(request: web.Request, now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
    start = _moment(request.query.get("start"), now)
    stop = _moment(request.query.get("end"), now + datetime.timedelta(microseconds=1))
    if not start < stop:
        raise BadRequest("Invalid start time. The start time cannot occur after the end time.")
    return start, min(stop, now)


def _naive(moment: datetime.datetime) -> str:
    """A timestamp as Nova's JSON gives a naive datetime: ISO 8601 with microseconds, no zone."""
    return moment.astimezone(datetime.UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def _at(epoch: float | None) -> datetime.datetime | None:
    return None if epoch is None else datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def server_usage(
    row: asyncpg.Record, start: datetime.datetime, stop: datetime.datetime, now: datetime.datetime
) -> dict[str, Any]:
    """One server's usage over [start, stop] (Nova's _hours_for and its server_usages entry)."""
    launched, terminated = _at(row["launched_at"]), _at(row["terminated_at"])
    assert launched is not None
    begin, end = max(launched, start), min(stop, terminated) if terminated else stop
    hours = max((end - begin).total_seconds(), 0.0) / 3600.0 if launched <= stop else 0.0
    flavor = row["flavor"]
    return {
        "instance_id": row["id"],
        "name": row["display_name"],
        "tenant_id": row["project_id"],
        "flavor": flavor.get("name", ""),
        "hours": hours,
        "memory_mb": flavor["ram"],
        "local_gb": flavor["disk"] + flavor.get("ephemeral", 0),
        "vcpus": flavor["vcpus"],
        "started_at": _naive(launched),
        "ended_at": _naive(terminated) if terminated else None,
        "state": "terminated" if terminated else row["vm_state"],
        "uptime": int(((terminated or now) - launched).total_seconds()),
    }


async def _servers(
    conn: Any, request: web.Request, start: datetime.datetime, stop: datetime.datetime, project_id: str | None
) -> list[asyncpg.Record]:
    """The servers alive at some time of the period (Nova's get_active_by_window_joined), by
    creation; from 2.40 the page after `marker`, `limit` long."""
    rows = list(
        await conn.fetch(
            "SELECT * FROM servers WHERE launched_at IS NOT NULL AND launched_at < $1 "
            "AND (terminated_at IS NULL OR terminated_at > $2) AND ($3::text IS NULL OR project_id = $3) "
            "ORDER BY created_at, id",
            stop.timestamp(),
            start.timestamp(),
            project_id,
        )
    )
    if requested(request) < (2, 40):
        return rows
    marker = request.query.get("marker")
    if marker is not None:
        ids = [r["id"] for r in rows]
        if marker not in ids:
            raise BadRequest(f"Marker {marker} could not be found.")
        rows = rows[ids.index(marker) + 1 :]
    limit = query_params.integer(request, "limit")
    return rows[: min(MAX_LIMIT if limit is None else limit, MAX_LIMIT)]


def _summaries(
    usages: list[dict[str, Any]], start: datetime.datetime, stop: datetime.datetime, *, detailed: bool
) -> list[dict[str, Any]]:
    summaries: dict[str, dict[str, Any]] = {}
    for usage in usages:
        summary = summaries.setdefault(
            usage["tenant_id"],
            {
                "tenant_id": usage["tenant_id"],
                **({"server_usages": []} if detailed else {}),
                "total_local_gb_usage": 0.0,
                "total_vcpus_usage": 0.0,
                "total_memory_mb_usage": 0.0,
                "total_hours": 0.0,
                "start": _naive(start),
                "stop": _naive(stop),
            },
        )
        summary["total_local_gb_usage"] += usage["local_gb"] * usage["hours"]
        summary["total_vcpus_usage"] += usage["vcpus"] * usage["hours"]
        summary["total_memory_mb_usage"] += usage["memory_mb"] * usage["hours"]
        summary["total_hours"] += usage["hours"]
        if detailed:
            summary["server_usages"].append(usage)
    return list(summaries.values())


async def _usages(
    request: web.Request, project_id: str | None
) -> tuple[list[dict[str, Any]], datetime.datetime, datetime.datetime]:
    query_params.only_known(request, _QUERY)
    async with ctx(request).pool.acquire() as conn:
        now = await conn.fetchval("SELECT now()")
        start, stop = _period(request, now)
        rows = await _servers(conn, request, start, stop, project_id)
    return [server_usage(r, start, stop, now) for r in rows], start, stop


def _links(request: web.Request, usages: list[dict[str, Any]], collection: str) -> list[dict[str, str]]:
    if requested(request) < (2, 40) or not usages:
        return []
    return next_links(request, collection, len(usages), usages[-1]["instance_id"])


async def list_usages(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-simple-tenant-usage:list")
    usages, start, stop = await _usages(request, None)
    detailed = request.query.get("detailed", "0") == "1"
    body: dict[str, Any] = {"tenant_usages": _summaries(usages, start, stop, detailed=detailed)}
    links = _links(request, usages, "os-simple-tenant-usage")
    if links:
        body["tenant_usages_links"] = links
    return json_response(body)


async def show_usage(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    caller(request).require_project_access(project_id, "os_compute_api:os-simple-tenant-usage:show")
    usages, start, stop = await _usages(request, project_id)
    summaries = _summaries(usages, start, stop, detailed=True)
    body: dict[str, Any] = {"tenant_usage": summaries[0] if summaries else {}}
    links = _links(request, usages, f"os-simple-tenant-usage/{project_id}")
    if links:
        body["tenant_usage_links"] = links
    return json_response(body)


documented(
    list_usages,
    parameters=[
        param("start", description="From this time (default: now)"),
        param("end", description="Until this time (default: now)"),
        param("detailed", enum=["0", "1"]),
        param("limit", "integer"),
        param("marker"),
    ],
)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/os-simple-tenant-usage", list_usages)
    r.add_get("/compute/v2.1/os-simple-tenant-usage/{project_id}", show_usage)
