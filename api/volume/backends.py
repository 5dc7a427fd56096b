"""The storage backends as the API sees them: where a new volume goes, which availability zones
exist, and Cinder's admin views of its volume services (`openstack volume service list`) and
pools (`openstack volume backend pool list`).

A backend is a `volume_backends` row kept by its storage agent (heartbeat, capacity). It is up
while its heartbeat is younger than HOST_DOWN_AFTER, the compute scheduler's rule. The API places
a volume itself, in the transaction that inserts it: the enabled, up backend of the zone with the
most free space that fits. What a backend holds is counted from the volume rows on it (so a
volume the actor deleted frees its space at once and nothing drifts), under a lock of the
backend's row, so two concurrent creates can never over-commit a backend; `allocated_gb` is
refreshed from that count at every placement.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from actors.scheduler import HOST_DOWN_AFTER
from api.context import caller, ctx, json_response
from api.times import iso_micro
from api.volume.microversion import requested

DEFAULT_ZONE = "nova"
_NS = uuid.UUID("8c3f0d7e-2b1a-4f6e-9a55-1d2c3b4a5e6f")

# What each backend holds, counted from the volume rows themselves (a volume being extended at
# its target size), so that a volume the actor deleted frees its space without anyone keeping a
# counter right.
_USED = (
    "SELECT backend, sum(greatest(size, coalesce(target_size, 0))) AS used FROM volumes "
    "WHERE backend IS NOT NULL GROUP BY backend"
)
_CANDIDATES = f"""
SELECT b.name, b.availability_zone FROM volume_backends b LEFT JOIN ({_USED}) u ON u.backend = b.name
WHERE b.enabled AND b.heartbeat_at > now() - make_interval(secs => $1)
  AND ($2::text IS NULL OR b.availability_zone = $2)
  AND b.total_gb - coalesce(u.used, 0) >= $3
ORDER BY b.total_gb - coalesce(u.used, 0) DESC, b.name
"""


async def claim(conn: asyncpg.Connection, zone: str | None, size: int) -> asyncpg.Record | None:
    """Inside the caller's transaction: place `size` GiB on the enabled, up backend (in `zone`, or
    in any zone when None) with the most free space that fits. Its (name, availability_zone), or
    None when no backend fits.

    The chosen backend's row is locked, then what it holds is counted again in a new statement,
    which sees every volume a concurrent claim of this backend committed before it let go: two
    creates can never together over-commit it. `allocated_gb` is stored as counted plus `size`."""
    for candidate in await conn.fetch(_CANDIDATES, HOST_DOWN_AFTER, zone, size):
        total = await conn.fetchval(
            "SELECT total_gb FROM volume_backends WHERE name = $1 AND enabled FOR UPDATE", candidate["name"]
        )
        used = await conn.fetchval(
            "SELECT coalesce(sum(greatest(size, coalesce(target_size, 0))), 0) "
            "FROM volumes WHERE backend = $1",
            candidate["name"],
        )
        if total is not None and total - used >= size:
            await conn.execute(
                "UPDATE volume_backends SET allocated_gb = $2 WHERE name = $1", candidate["name"], used + size
            )
            return candidate
    return None


async def zones(conn: Any) -> set[str]:
    """The zones a volume may be created in: the backends' zones, and always 'nova' (Cinder's
    storage_availability_zone)."""
    rows = await conn.fetch("SELECT DISTINCT availability_zone FROM volume_backends")
    return {r["availability_zone"] for r in rows} | {DEFAULT_ZONE}


def service_host(backend: str, driver: str | None) -> str:
    """Cinder's `host@backend` of a volume service: a storage agent's name already reads so
    (`<hostname>@file`); a bare name gets its driver."""
    return backend if "@" in backend else f"{backend}@{driver or 'file'}"


def host_of(backend: str | None, driver: str | None) -> str | None:
    """Cinder's `host@backend#pool` for a volume on this backend (one pool per backend)."""
    if backend is None:
        return None
    return f"{service_host(backend, driver)}#{driver or 'file'}"


def service_uuid(backend: str | None) -> str | None:
    return None if backend is None else str(uuid.uuid5(_NS, backend))


_BACKENDS = f"""
SELECT b.*, heartbeat_at > now() - make_interval(secs => $1) AS up, coalesce(u.used, 0) AS used_gb
FROM volume_backends b LEFT JOIN ({_USED}) u ON u.backend = b.name ORDER BY name
"""


async def _backends(request: web.Request) -> list[asyncpg.Record]:
    return await ctx(request).pool.fetch(_BACKENDS, HOST_DOWN_AFTER)


async def list_zones(request: web.Request) -> web.Response:
    rows = await _backends(request)
    available: dict[str, bool] = {}
    for row in rows:
        zone = row["availability_zone"]
        available[zone] = available.get(zone, False) or row["enabled"]
    if not available:
        available[DEFAULT_ZONE] = True
    return json_response(
        {
            "availabilityZoneInfo": [
                {"zoneName": zone, "zoneState": {"available": up}} for zone, up in sorted(available.items())
            ]
        }
    )


async def list_services(request: web.Request) -> web.Response:
    caller(request).require_admin("volume_extension:services:index")
    version = requested(request)
    # openstacksdk sends an unset filter as the text "None"
    host, binary = (request.query.get(key) for key in ("host", "binary"))
    host, binary = (None if value == "None" else value for value in (host, binary))
    services = []
    for row in await _backends(request):
        name = service_host(row["name"], row["driver"])
        if host and host not in (name, row["name"]):
            continue
        if binary and binary != "cinder-volume":
            continue
        service: dict[str, Any] = {
            "binary": "cinder-volume",
            "host": name,
            "zone": row["availability_zone"],
            "status": "enabled" if row["enabled"] else "disabled",
            "state": "up" if row["up"] else "down",
            "updated_at": iso_micro(row["heartbeat_at"]),
            "disabled_reason": None,
            "replication_status": "disabled",
            "active_backend_id": None,
            "frozen": False,
        }
        if version >= (3, 7):
            service["cluster"] = None
        if version >= (3, 49):
            service["backend_state"] = "up" if row["up"] else "down"
        services.append(service)
    return json_response({"services": services})


async def list_pools(request: web.Request) -> web.Response:
    caller(request).require_admin("scheduler_extension:scheduler_stats:get_pools")
    detail = request.query.get("detail", "").lower() in ("1", "true", "yes", "on")
    pools = []
    for row in await _backends(request):
        pool: dict[str, Any] = {"name": host_of(row["name"], row["driver"])}
        if detail:
            pool["capabilities"] = {
                "pool_name": row["driver"],
                "volume_backend_name": row["name"],
                "storage_protocol": row["driver"],
                "vendor_name": "actorstack",
                "driver_version": "1.0",
                "total_capacity_gb": row["total_gb"],
                "allocated_capacity_gb": row["used_gb"],
                "free_capacity_gb": max(row["total_gb"] - row["used_gb"], 0),
                "reserved_percentage": 0,
                "thin_provisioning_support": True,
                "thick_provisioning_support": False,
                "QoS_support": False,
                "multiattach": False,
                "timestamp": iso_micro(row["heartbeat_at"]),
            }
        pools.append(pool)
    return json_response({"pools": pools})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/volume/v3/{project_id}/os-availability-zone", list_zones)
    r.add_get("/volume/v3/{project_id}/os-services", list_services)
    r.add_get("/volume/v3/{project_id}/scheduler-stats/get_pools", list_pools)
