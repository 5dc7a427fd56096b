"""The compute hosts: their liveness, and the admin views os-services and os-availability-zone
(os-hypervisors is hypervisors.py, built on `rows`).

A host is up when its agent's heartbeat is younger than the scheduler's HOST_DOWN_AFTER, the
same rule the scheduler filters by; an operator disables a host through os-services. The same
rule gives a server's `host_status` (`host_statuses`), as Nova derives it from its compute
service: MAINTENANCE when disabled, UP while alive, UNKNOWN once silent, "" without a host.
"""

from __future__ import annotations

import dataclasses
import uuid
import zlib
from collections.abc import Iterable
from typing import Any

import asyncpg
from aiohttp import web

from actors.scheduler import HOST_DOWN_AFTER
from api.compute.microversion import requested
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, NotFound
from api.times import iso_micro

_NS = uuid.UUID("2f6c9b0e-6a54-4c1e-9d0a-7b3e5c1f4a21")
_HOSTS = """
SELECT h.*, heartbeat_at > now() - make_interval(secs => $1) AS up,
       (SELECT count(*) FROM allocations a WHERE a.host = h.name) AS running_vms
FROM compute_hosts h ORDER BY name
"""


# Nova's HostStatus values (nova/objects/fields.py) that actorstack shows ("DOWN" is for a service
# forced down, which it has not); "" (NONE) for a server without a host.
HOST_UP, HOST_MAINTENANCE, HOST_UNKNOWN, HOST_NONE = "UP", "MAINTENANCE", "UNKNOWN", ""
_HOST_STATES = """
SELECT name, enabled, heartbeat_at > now() - make_interval(secs => $2) AS up
FROM compute_hosts WHERE name = ANY($1::text[])
"""


@dataclasses.dataclass(frozen=True, slots=True)
class HostState:
    status: str  # Nova's host_status
    up: bool  # its agent's heartbeat is within the window: what the host reported still holds


async def host_statuses(conn: Any, names: Iterable[str | None]) -> dict[str, HostState]:
    """{host: its state} for these hosts; the status as Nova's _get_instance_host_status decides
    it: a disabled service is MAINTENANCE, a live one UP, a silent one UNKNOWN (Nova's DOWN is
    for a service forced down, which actorstack has not). A host with no row is UNKNOWN."""
    wanted = sorted({name for name in names if name})
    if not wanted:
        return {}
    rows = {r["name"]: r for r in await conn.fetch(_HOST_STATES, wanted, HOST_DOWN_AFTER)}
    states = {}
    for name in wanted:
        row = rows.get(name)
        if row is None:
            states[name] = HostState(HOST_UNKNOWN, False)
        elif not row["enabled"]:
            states[name] = HostState(HOST_MAINTENANCE, bool(row["up"]))
        else:
            states[name] = HostState(HOST_UP if row["up"] else HOST_UNKNOWN, bool(row["up"]))
    return states


def host_uuid(name: str, what: str) -> str:
    return str(uuid.uuid5(_NS, f"{what}:{name}"))


def legacy_id(name: str) -> int:
    """The integer id older microversions (< 2.53) show: stable across processes and restarts."""
    return zlib.crc32(name.encode()) % 10**6


async def rows(conn: Any) -> list[asyncpg.Record]:
    """Every compute host with its liveness (`up`) and the servers placed on it (`running_vms`)."""
    return await conn.fetch(_HOSTS, HOST_DOWN_AFTER)


async def _hosts(request: web.Request) -> list[asyncpg.Record]:
    return await rows(ctx(request).pool)


def _service(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    """The host's nova-compute service as Nova shows it; `forced_down` from microversion 2.11."""
    version = requested(request)
    service = {
        "id": host_uuid(row["name"], "service") if version >= (2, 53) else legacy_id(row["name"]),
        "binary": "nova-compute",
        "host": row["name"],
        "zone": row["availability_zone"],
        "status": "enabled" if row["enabled"] else "disabled",
        "state": "up" if row["up"] else "down",
        "updated_at": iso_micro(row["heartbeat_at"]),
        "disabled_reason": row["disabled_reason"],
    }
    if version >= (2, 11):
        service["forced_down"] = False
    return service


async def list_services(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-services:list")
    rows = await _hosts(request)
    host, binary = request.query.get("host"), request.query.get("binary")
    services = [_service(request, r) for r in rows]
    services = [
        s for s in services if (not host or s["host"] == host) and (not binary or s["binary"] == binary)
    ]
    return json_response({"services": services})


async def update_service(request: web.Request) -> web.Response:
    """Enable or disable a compute host (microversion 2.53 form: PUT /os-services/{uuid})."""
    caller(request).require_admin("os_compute_api:os-services:update")
    data = await json_body(request)
    if not isinstance(data, dict) or not set(data) <= {"status", "disabled_reason", "forced_down"}:
        raise BadRequest("Invalid input: only status, disabled_reason and forced_down may be set.")
    status = data.get("status")
    if status not in (None, "enabled", "disabled"):
        raise BadRequest(f"Invalid input for field/attribute status. Value: {status!r}.")
    reason = data.get("disabled_reason")
    if reason is not None and (status != "disabled" or not isinstance(reason, str) or len(reason) > 255):
        raise BadRequest(
            "disabled_reason is only allowed with status 'disabled', as a string of at most 255."
        )
    wanted = request.match_info["service_id"]
    for row in await _hosts(request):
        if wanted == host_uuid(row["name"], "service"):
            if status is not None:
                await ctx(request).pool.execute(
                    "UPDATE compute_hosts SET enabled = $2, disabled_reason = $3 WHERE name = $1",
                    row["name"],
                    status == "enabled",
                    reason if status == "disabled" else None,
                )
            fresh = [r for r in await _hosts(request) if r["name"] == row["name"]][0]
            return json_response({"service": _service(request, fresh)})
    raise NotFound(f"Service {wanted} could not be found.")


async def availability_zones(request: web.Request) -> web.Response:
    rows = await _hosts(request)
    zones = sorted({r["availability_zone"] for r in rows if r["enabled"]}) or ["nova"]
    return json_response(
        {
            "availabilityZoneInfo": [
                {"zoneName": z, "zoneState": {"available": True}, "hosts": None} for z in zones
            ]
        }
    )


async def availability_zones_detail(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-availability-zone:detail")
    rows = await _hosts(request)
    zones: dict[str, dict[str, Any]] = {}
    for r in rows:
        zone = zones.setdefault(r["availability_zone"], {})
        zone[r["name"]] = {
            "nova-compute": {
                "available": bool(r["up"] and r["enabled"]),
                "active": bool(r["enabled"]),
                "updated_at": iso_micro(r["heartbeat_at"]),
            }
        }
    return json_response(
        {
            "availabilityZoneInfo": [
                {"zoneName": z, "zoneState": {"available": True}, "hosts": hosts}
                for z, hosts in sorted(zones.items())
            ]
        }
    )


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/os-services", list_services)
    r.add_put("/compute/v2.1/os-services/{service_id}", update_service)
    r.add_get("/compute/v2.1/os-availability-zone", availability_zones)
    r.add_get("/compute/v2.1/os-availability-zone/detail", availability_zones_detail)
