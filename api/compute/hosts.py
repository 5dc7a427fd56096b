"""The compute hosts: their liveness, and the admin views os-services and os-availability-zone
(os-hypervisors is hypervisors.py, built on `rows`).

A host is up when its agent's heartbeat is younger than the scheduler's HOST_DOWN_AFTER and no
operator forced it down, the same rule the scheduler filters by; an operator disables a host or
forces it down through os-services. The same rule gives a server's `host_status`
(`host_statuses`), as Nova derives it from its compute service: DOWN when forced down,
MAINTENANCE when disabled, UP while alive, UNKNOWN once silent, "" without a host. A host's
availability zone is the one an aggregate of it names, else the one its agent reports
(the `host_zone` SQL function).
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
from api.errors import BadRequest, Conflict, NotFound
from api.query_doc import documented, strings
from api.times import iso_micro

_NS = uuid.UUID("2f6c9b0e-6a54-4c1e-9d0a-7b3e5c1f4a21")
_HOSTS = """
SELECT h.*, host_zone(h.name, h.availability_zone) AS zone,
       NOT h.forced_down AND heartbeat_at > now() - make_interval(secs => $1) AS up,
       (SELECT count(*) FROM allocations a WHERE a.host = h.name) AS running_vms
FROM compute_hosts h ORDER BY name
"""


# Nova's HostStatus values (nova/objects/fields.py); "" (NONE) for a server without a host.
HOST_UP, HOST_DOWN, HOST_MAINTENANCE, HOST_UNKNOWN, HOST_NONE = "UP", "DOWN", "MAINTENANCE", "UNKNOWN", ""
_HOST_STATES = """
SELECT name, enabled, forced_down, heartbeat_at > now() - make_interval(secs => $2) AS alive
FROM compute_hosts WHERE name = ANY($1::text[])
"""


@dataclasses.dataclass(frozen=True, slots=True)
class HostState:
    status: str  # Nova's host_status
    up: bool  # its agent's heartbeat is within the window: what the host reported still holds


async def host_statuses(conn: Any, names: Iterable[str | None]) -> dict[str, HostState]:
    """{host: its state} for these hosts; the status as Nova's get_instance_host_status decides
    it: a service forced down is DOWN, a disabled one MAINTENANCE, a live one UP, a silent one
    UNKNOWN. A host with no row is UNKNOWN."""
    wanted = sorted({name for name in names if name})
    if not wanted:
        return {}
    rows = {r["name"]: r for r in await conn.fetch(_HOST_STATES, wanted, HOST_DOWN_AFTER)}
    states = {}
    for name in wanted:
        row = rows.get(name)
        if row is None:
            states[name] = HostState(HOST_UNKNOWN, False)
            continue
        alive = bool(row["alive"])
        if row["forced_down"]:
            status = HOST_DOWN
        elif not row["enabled"]:
            status = HOST_MAINTENANCE
        else:
            status = HOST_UP if alive else HOST_UNKNOWN
        states[name] = HostState(status, alive)
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
        "id": host_uuid(row["name"], "service") if version >= UUID_IDS else legacy_id(row["name"]),
        "binary": BINARY,
        "host": row["name"],
        "zone": row["zone"],
        "status": "enabled" if row["enabled"] else "disabled",
        "state": "up" if row["up"] else "down",
        "updated_at": iso_micro(row["heartbeat_at"]),
        "disabled_reason": row["disabled_reason"],
    }
    if version >= (2, 11):
        service["forced_down"] = row["forced_down"]
    return service


BINARY = "nova-compute"  # the one service binary of a compute host (the others are not listed)
UUID_IDS = (2, 53)  # services have uuid ids, and are updated by id


async def list_services(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-services:list")
    rows = await _hosts(request)
    host, binary = request.query.get("host"), request.query.get("binary")
    services = [_service(request, r) for r in rows]
    services = [
        s for s in services if (not host or s["host"] == host) and (not binary or s["binary"] == binary)
    ]
    return json_response({"services": services})


def _nova_bool(data: dict[str, Any], key: str) -> bool:
    value = data[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on", "off", "yes", "no"):
        return value.lower() in ("true", "1", "on", "yes")
    raise BadRequest(
        f"Invalid input for field/attribute {key}. Value: {value!r}. {value!r} is not of type 'boolean'"
    )


async def _store(conn: Any, name: str, changes: dict[str, Any]) -> asyncpg.Record:
    columns = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
    await conn.execute(f"UPDATE compute_hosts SET {columns} WHERE name = $1", name, *changes.values())
    fresh: asyncpg.Record = next(r for r in await rows(conn) if r["name"] == name)
    return fresh


def _service_changes(data: Any) -> dict[str, Any]:
    """Nova's 2.53 service update: status (with an optional disabled_reason when disabling)
    and/or forced_down."""
    if not isinstance(data, dict) or set(data) - {"status", "disabled_reason", "forced_down"}:
        raise BadRequest(
            "Invalid input for field/attribute service. Additional properties are not allowed; "
            "status, disabled_reason and forced_down may be set"
        )
    changes: dict[str, Any] = {}
    status, reason = data.get("status"), data.get("disabled_reason")
    if "status" in data and status not in ("enabled", "disabled"):
        raise BadRequest(
            f"Invalid input for field/attribute status. Value: {status!r}. {status!r} is not one of "
            "['enabled', 'disabled']"
        )
    if reason is not None and (not isinstance(reason, str) or not 1 <= len(reason) <= 255):
        raise BadRequest(f"Invalid input for field/attribute disabled_reason. Value: {reason!r}.")
    if status == "enabled":
        if reason:
            raise BadRequest("Specifying 'disabled_reason' with status 'enabled' is invalid.")
        changes.update(enabled=True, disabled_reason=None)
    elif status == "disabled":
        changes.update(enabled=False, disabled_reason=reason)
    if "forced_down" in data:
        changes["forced_down"] = _nova_bool(data, "forced_down")
    if not changes:
        raise BadRequest("No updates were requested. Fields 'status' or 'forced_down' should be specified.")
    return changes


async def update_service(request: web.Request) -> web.Response:
    """PUT /os-services/{uuid} from 2.53; before, PUT /os-services/{enable, disable,
    disable-log-reason, force-down} naming the host and binary in the body."""
    caller(request).require_admin("os_compute_api:os-services:update")
    if requested(request) < UUID_IDS:
        return await _legacy_update(request)
    wanted = request.match_info["service_id"]
    try:
        uuid.UUID(wanted)
    except ValueError:
        raise BadRequest(f"Invalid uuid {wanted}") from None
    changes = _service_changes(await json_body(request))
    async with ctx(request).pool.acquire() as conn:
        for row in await rows(conn):
            if wanted == host_uuid(row["name"], "service"):
                fresh = await _store(conn, row["name"], changes)
                return json_response({"service": _service(request, fresh)})
    raise NotFound(f"Service {wanted} could not be found.")


_LEGACY_ACTIONS = ("enable", "disable", "disable-log-reason", "force-down")


async def _legacy_update(request: web.Request) -> web.Response:
    action = request.match_info["service_id"]
    if action not in _LEGACY_ACTIONS or (action == "force-down" and requested(request) < (2, 11)):
        raise NotFound("Unknown action")
    data = await json_body(request)
    allowed = {"host", "binary", "disabled_reason"} | (
        {"forced_down"} if requested(request) >= (2, 11) else set()
    )
    if not isinstance(data, dict) or set(data) - allowed or not {"host", "binary"} <= set(data):
        raise BadRequest(
            "Invalid input for field/attribute service: 'host' and 'binary' are required properties"
        )
    host, binary = data["host"], data["binary"]
    if binary != BINARY:
        raise BadRequest(
            f"Updating a {binary} service is not supported. Only nova-compute services can be updated."
        )
    answer: dict[str, Any] = {"host": host, "binary": binary}
    if action == "enable":
        changes: dict[str, Any] = {"enabled": True, "disabled_reason": None}
        answer["status"] = "enabled"
    elif action == "disable":
        changes = {"enabled": False, "disabled_reason": None}
        answer["status"] = "disabled"
    elif action == "disable-log-reason":
        if "disabled_reason" not in data:
            raise BadRequest("Missing disabled reason field")
        changes = {"enabled": False, "disabled_reason": data["disabled_reason"]}
        answer.update(status="disabled", disabled_reason=data["disabled_reason"])
    else:
        if "forced_down" not in data:
            raise BadRequest("Missing forced_down field")
        changes = {"forced_down": _nova_bool(data, "forced_down")}
        answer["forced_down"] = changes["forced_down"]
    async with ctx(request).pool.acquire() as conn:
        if not any(r["name"] == host for r in await rows(conn)):
            raise NotFound(f"Host '{host}' is not mapped to any cell")
        await _store(conn, host, changes)
    return json_response({"service": answer})


async def delete_service(request: web.Request) -> web.Response:
    """Nova's service delete: a compute host with no servers (409 otherwise) leaves the cloud,
    with its aggregate memberships; its agent, should it still run, stops heartbeating."""
    caller(request).require_admin("os_compute_api:os-services:delete")
    wanted = request.match_info["service_id"]
    version = requested(request)
    if version >= UUID_IDS:
        try:
            uuid.UUID(wanted)
        except ValueError:
            raise BadRequest(f"Invalid uuid {wanted}") from None
    elif not wanted.isdigit():
        raise BadRequest(f"Invalid input received: id must be an integer, not {wanted!r}.")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        for row in await rows(conn):
            if wanted == str(
                host_uuid(row["name"], "service") if version >= UUID_IDS else legacy_id(row["name"])
            ):
                busy = await conn.fetchval(
                    "SELECT count(*) FROM servers WHERE host = $1 AND vm_state <> 'deleted'", row["name"]
                )
                if busy:
                    raise Conflict(
                        "Unable to delete compute service that is hosting instances. Migrate or "
                        "delete the instances first."
                    )
                await conn.execute("DELETE FROM aggregate_hosts WHERE host = $1", row["name"])
                await conn.execute("DELETE FROM compute_hosts WHERE name = $1", row["name"])
                return web.Response(status=204)
    raise NotFound(f"Service {wanted} not found.")


def _zones(hosts: list[asyncpg.Record]) -> tuple[list[str], list[str]]:
    """Nova's get_availability_zones: the zones of the enabled hosts (available), and those of
    the disabled ones that no enabled host shares (not available)."""
    available = sorted({h["zone"] for h in hosts if h["enabled"]})
    unavailable = sorted({h["zone"] for h in hosts if not h["enabled"]} - set(available))
    return available, unavailable


async def availability_zones(request: web.Request) -> web.Response:
    available, unavailable = _zones(await _hosts(request))
    return json_response(
        {
            "availabilityZoneInfo": [
                *({"zoneName": z, "zoneState": {"available": True}, "hosts": None} for z in available),
                *({"zoneName": z, "zoneState": {"available": False}, "hosts": None} for z in unavailable),
            ]
        }
    )


async def availability_zones_detail(request: web.Request) -> web.Response:
    """Each available zone with its enabled hosts and their service; the unavailable ones bare."""
    caller(request).require_admin("os_compute_api:os-availability-zone:detail")
    hosts = await _hosts(request)
    available, unavailable = _zones(hosts)
    listed: dict[str, dict[str, Any]] = {zone: {} for zone in available}
    for host in hosts:
        if host["enabled"]:
            listed[host["zone"]][host["name"]] = {
                BINARY: {
                    "available": bool(host["up"]),
                    "active": True,
                    "updated_at": iso_micro(host["heartbeat_at"]),
                }
            }
    return json_response(
        {
            "availabilityZoneInfo": [
                *({"zoneName": z, "zoneState": {"available": True}, "hosts": listed[z]} for z in available),
                *({"zoneName": z, "zoneState": {"available": False}, "hosts": None} for z in unavailable),
            ]
        }
    )


documented(list_services, parameters=strings("host", "binary"))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/os-services", list_services)
    r.add_put("/compute/v2.1/os-services/{service_id}", update_service)
    r.add_delete("/compute/v2.1/os-services/{service_id}", delete_service)
    r.add_get("/compute/v2.1/os-availability-zone", availability_zones)
    r.add_get("/compute/v2.1/os-availability-zone/detail", availability_zones_detail)
