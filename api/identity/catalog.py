"""/identity/v3/services, /endpoints and /regions: the service catalog, as Keystone serves it.

The cloud's own services (api/catalog.py) are built in: their service rows are seeded by
api/bootstrap.py, their endpoints are computed from the API's public URL, and neither can be
changed or deleted (nor RegionOne, which they are in), so the catalog clients find this cloud
by always stays right. Beside them an admin adds services, endpoints (on any service, built-in
ones too) and regions as in Keystone; a token's catalog has every enabled endpoint of every
enabled service, the project's id put in the URLs that name one (`$(project_id)s`).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from api import catalog as catalog_
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden, NotFound
from api.identity import policy
from api.identity import validate as v
from api.identity.views import links
from api.query_doc import documented, param, strings

_SERVICE_KNOWN = {"id", "type", "name", "description", "enabled"}
_ENDPOINT_KNOWN = {
    "id",
    "service_id",
    "interface",
    "url",
    "region",
    "region_id",
    "enabled",
    "legacy_endpoint_id",
}
_REGION_KNOWN = {"id", "description", "parent_region_id"}
INTERFACES = ("public", "internal", "admin")
_SUBSTITUTION = re.compile(r"[$%]\((\w+)\)s")


def _extra(row: asyncpg.Record, view: dict[str, Any]) -> dict[str, Any]:
    return {**{k: val for k, val in (row["extra"] or {}).items() if k not in view}, **view}


def service_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row["id"],
        "type": row["type"],
        "enabled": row["enabled"],
        "links": {"self": f"{base}/identity/v3/services/{row['id']}"},
    }
    for key in ("name", "description"):
        if row[key] is not None:
            view[key] = row[key]
    return _extra(row, view)


def endpoint_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    return _extra(
        row,
        {
            "id": row["id"],
            "service_id": row["service_id"],
            "interface": row["interface"],
            "region": row["region_id"],
            "region_id": row["region_id"],
            "url": row["url"],
            "enabled": row["enabled"],
            "links": {"self": f"{base}/identity/v3/endpoints/{row['id']}"},
        },
    )


def region_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    return _extra(
        row,
        {
            "id": row["id"],
            "description": row["description"],
            "parent_region_id": row["parent_region_id"],
            "links": {"self": f"{base}/identity/v3/regions/{row['id']}"},
        },
    )


def _built_in_endpoints(base: str) -> list[dict[str, Any]]:
    return catalog_.endpoints(base)


def _refuse_built_in(what: str, id_: str) -> Forbidden:
    return Forbidden(f"The {what} {id_} is built into this cloud's catalog and cannot be changed or deleted.")


# --- The catalog a token carries ------------------------------------------------------------------


def _substituted(url: str, values: dict[str, str | None]) -> str | None:
    """The URL with Keystone's substitutions made; None when one has no value here."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        found = values.get(match.group(1))
        if found is None:
            missing = True
            return match.group(0)
        return found

    url = _SUBSTITUTION.sub(value, url)
    return None if missing else url


async def for_token(
    conn: Any, base_url: str, project_id: str | None, user_id: str | None = None
) -> list[dict[str, Any]]:
    """The catalog a token carries: the built-in services, and every enabled endpoint of every
    enabled service (those whose URL needs a project left out of a token without one)."""
    entries = {entry["id"]: entry for entry in catalog_.catalog(base_url, project_id)}
    rows = await conn.fetch(
        "SELECT e.*, s.type, s.name AS service_name FROM endpoints e JOIN services s ON s.id = e.service_id "
        "WHERE e.enabled AND s.enabled ORDER BY s.type, e.interface, e.id"
    )
    values = {"project_id": project_id, "tenant_id": project_id, "user_id": user_id}
    for row in rows:
        url = _substituted(row["url"], values)
        if url is None:
            continue
        entry = entries.setdefault(
            row["service_id"],
            {
                "id": row["service_id"],
                "type": row["type"],
                "name": row["service_name"] or "",
                "endpoints": [],
            },
        )
        entry["endpoints"].append(
            {
                "id": row["id"],
                "interface": row["interface"],
                "region": row["region_id"],
                "region_id": row["region_id"],
                "url": url,
            }
        )
    return [entry for entry in entries.values() if entry["endpoints"]]


# --- Services ---------------------------------------------------------------------------------------


async def list_services(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "list_services")
    context = ctx(request)
    rows = await context.pool.fetch(
        "SELECT * FROM services WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR name = $2) "
        "ORDER BY built_in DESC, type, id",
        request.query.get("type"),
        request.query.get("name"),
    )
    base = context.base_url
    return json_response(
        {"services": [service_view(r, base) for r in rows], "links": links(base, "services")}
    )


async def get_service(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "get_service")
    context = ctx(request)
    row = await _service(context.pool, request.match_info["service_id"])
    return json_response({"service": service_view(row, context.base_url)})


async def _service(conn: Any, service_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM services WHERE id = $1", service_id)
    if row is None:
        raise NotFound(f"Could not find service: {service_id}.")
    return row


def _service_fields(
    data: dict[str, Any], *, create: bool
) -> tuple[str | None, str | None, str | None, bool | None]:
    type_ = v.text(data, "type", required=create, max_len=255)
    if "type" in data and not (type_ or "").strip():
        raise BadRequest("Invalid input for field 'type': it may not be empty")
    return (
        type_,
        v.text(data, "name", max_len=255),
        v.text(data, "description", max_len=65535),
        v.flag(data, "enabled"),
    )


async def create_service(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "create_service")
    context = ctx(request)
    data = v.member(await json_body(request), "service")
    type_, name, description, enabled = _service_fields(data, create=True)
    row = await context.pool.fetchrow(
        "INSERT INTO services (id, type, name, description, enabled, extra) VALUES ($1, $2, $3, $4, $5, $6) "
        "RETURNING *",
        uuid.uuid4().hex,
        type_,
        name,
        description,
        True if enabled is None else enabled,
        v.extra(data, _SERVICE_KNOWN),
    )
    return json_response({"service": service_view(row, context.base_url)}, status=201)


async def update_service(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "update_service")
    context = ctx(request)
    data = v.member(await json_body(request), "service")
    type_, name, description, enabled = _service_fields(data, create=False)
    async with context.pool.acquire() as conn, conn.transaction():
        old = await _service(conn, request.match_info["service_id"])
        if old["built_in"]:
            raise _refuse_built_in("service", old["id"])
        row = await conn.fetchrow(
            "UPDATE services SET type = coalesce($2, type), name = coalesce($3, name), "
            "description = coalesce($4, description), enabled = coalesce($5, enabled), extra = extra || $6 "
            "WHERE id = $1 RETURNING *",
            old["id"],
            type_,
            name,
            description,
            enabled,
            v.extra(data, _SERVICE_KNOWN),
        )
    return json_response({"service": service_view(row, context.base_url)})


async def delete_service(request: web.Request) -> web.Response:
    """Its endpoints go with it, as in Keystone."""
    policy.require_admin(caller(request), "delete_service")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        old = await _service(conn, request.match_info["service_id"])
        if old["built_in"]:
            raise _refuse_built_in("service", old["id"])
        await conn.execute("DELETE FROM services WHERE id = $1", old["id"])
    return web.Response(status=204)


# --- Endpoints --------------------------------------------------------------------------------------


def _matches(endpoint: dict[str, Any], q: Any) -> bool:
    return all(
        q.get(key) is None or endpoint[field] == q[key]
        for key, field in (
            ("service_id", "service_id"),
            ("interface", "interface"),
            ("region_id", "region_id"),
        )
    )


async def all_endpoints(conn: Any, base: str) -> list[dict[str, Any]]:
    """Every endpoint of the catalog as Keystone shows it: the built-in ones, then the added ones."""
    rows = await conn.fetch("SELECT * FROM endpoints ORDER BY service_id, interface, id")
    return [*_built_in_endpoints(base), *(endpoint_view(r, base) for r in rows)]


async def list_endpoints(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "list_endpoints")
    context = ctx(request)
    base = context.base_url
    q = request.query
    if q.get("interface") is not None and q["interface"] not in INTERFACES:
        raise BadRequest(f"Invalid interface: {q['interface']}; one of {', '.join(INTERFACES)} was expected.")
    async with context.pool.acquire() as conn:
        found = [e for e in await all_endpoints(conn, base) if _matches(e, q)]
    return json_response({"endpoints": found, "links": links(base, "endpoints")})


async def _endpoint(conn: Any, endpoint_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM endpoints WHERE id = $1", endpoint_id)
    if row is None:
        raise NotFound(f"Could not find endpoint: {endpoint_id}.")
    return row


async def get_endpoint(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "get_endpoint")
    context = ctx(request)
    endpoint_id = request.match_info["endpoint_id"]
    for endpoint in _built_in_endpoints(context.base_url):
        if endpoint["id"] == endpoint_id:
            return json_response({"endpoint": endpoint})
    row = await _endpoint(context.pool, endpoint_id)
    return json_response({"endpoint": endpoint_view(row, context.base_url)})


async def _region_for(conn: Any, data: dict[str, Any]) -> str | None:
    """The endpoint's region (`region_id`, or the older `region`); created when it does not
    exist yet, as Keystone does."""
    region_id = v.text(data, "region_id", max_len=255) or v.text(data, "region", max_len=255)
    if region_id is not None:
        await conn.execute("INSERT INTO regions (id) VALUES ($1) ON CONFLICT DO NOTHING", region_id)
    return region_id


def _interface(data: dict[str, Any], *, required: bool) -> str | None:
    interface = v.text(data, "interface", required=required, max_len=10)
    if interface is not None and interface not in INTERFACES:
        raise BadRequest(
            f"Invalid input for field 'interface': {interface!r} is not one of {list(INTERFACES)}"
        )
    return interface


def _url(data: dict[str, Any], *, required: bool) -> str | None:
    url = v.text(data, "url", required=required, max_len=225)
    if url is not None and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$", url):
        raise BadRequest(f"Invalid input for field 'url': {url!r} is not a valid URL")
    return url


async def create_endpoint(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "create_endpoint")
    context = ctx(request)
    data = v.member(await json_body(request), "endpoint")
    interface, url, enabled = (
        _interface(data, required=True),
        _url(data, required=True),
        v.flag(data, "enabled"),
    )
    service_id = v.text(data, "service_id", required=True, max_len=64)
    async with context.pool.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT id FROM services WHERE id = $1", service_id) is None:
            raise BadRequest(f"Could not find service: {service_id}.")
        row = await conn.fetchrow(
            "INSERT INTO endpoints (id, service_id, interface, url, region_id, enabled, extra) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
            uuid.uuid4().hex,
            service_id,
            interface,
            url,
            await _region_for(conn, data),
            True if enabled is None else enabled,
            v.extra(data, _ENDPOINT_KNOWN),
        )
    return json_response({"endpoint": endpoint_view(row, context.base_url)}, status=201)


async def update_endpoint(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "update_endpoint")
    context = ctx(request)
    endpoint_id = request.match_info["endpoint_id"]
    if any(e["id"] == endpoint_id for e in _built_in_endpoints(context.base_url)):
        raise _refuse_built_in("endpoint", endpoint_id)
    data = v.member(await json_body(request), "endpoint")
    interface, url, enabled = (
        _interface(data, required=False),
        _url(data, required=False),
        v.flag(data, "enabled"),
    )
    service_id = v.text(data, "service_id", max_len=64)
    async with context.pool.acquire() as conn, conn.transaction():
        old = await _endpoint(conn, endpoint_id)
        if (
            service_id is not None
            and await conn.fetchval("SELECT id FROM services WHERE id = $1", service_id) is None
        ):
            raise BadRequest(f"Could not find service: {service_id}.")
        row = await conn.fetchrow(
            "UPDATE endpoints SET service_id = coalesce($2, service_id), interface = coalesce($3, "
            "interface), "
            "url = coalesce($4, url), region_id = coalesce($5, region_id), enabled = coalesce($6, enabled), "
            "extra = extra || $7 WHERE id = $1 RETURNING *",
            old["id"],
            service_id,
            interface,
            url,
            await _region_for(conn, data),
            enabled,
            v.extra(data, _ENDPOINT_KNOWN),
        )
    return json_response({"endpoint": endpoint_view(row, context.base_url)})


async def delete_endpoint(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "delete_endpoint")
    context = ctx(request)
    endpoint_id = request.match_info["endpoint_id"]
    if any(e["id"] == endpoint_id for e in _built_in_endpoints(context.base_url)):
        raise _refuse_built_in("endpoint", endpoint_id)
    status = await context.pool.execute("DELETE FROM endpoints WHERE id = $1", endpoint_id)
    if status == "DELETE 0":
        raise NotFound(f"Could not find endpoint: {endpoint_id}.")
    return web.Response(status=204)


# --- Regions ----------------------------------------------------------------------------------------


async def list_regions(request: web.Request) -> web.Response:
    """Keystone lets any authenticated user list and show regions."""
    context = ctx(request)
    rows = await context.pool.fetch(
        "SELECT * FROM regions WHERE ($1::text IS NULL OR parent_region_id = $1) ORDER BY id",
        request.query.get("parent_region_id"),
    )
    base = context.base_url
    return json_response({"regions": [region_view(r, base) for r in rows], "links": links(base, "regions")})


async def _region(conn: Any, region_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM regions WHERE id = $1", region_id)
    if row is None:
        raise NotFound(f"Could not find region: {region_id}.")
    return row


async def get_region(request: web.Request) -> web.Response:
    context = ctx(request)
    row = await _region(context.pool, request.match_info["region_id"])
    return json_response({"region": region_view(row, context.base_url)})


async def _parent_region(conn: Any, data: dict[str, Any], region_id: str | None) -> str | None:
    parent = v.text(data, "parent_region_id", max_len=255)
    if parent is None:
        return None
    await _region(conn, parent)
    if region_id is not None:
        ancestry = await conn.fetch(
            "WITH RECURSIVE up (id) AS (SELECT $1::text UNION SELECT r.parent_region_id FROM regions r "
            "JOIN up ON r.id = up.id WHERE r.parent_region_id IS NOT NULL) SELECT id FROM up",
            parent,
        )
        if region_id in {r["id"] for r in ancestry}:
            raise BadRequest(f"Circular reference or a repeated entry found in region tree - {region_id}.")
    return parent


async def create_region(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "create_region")
    context = ctx(request)
    data = v.member(await json_body(request), "region")
    region_id = request.match_info.get("region_id")
    if region_id is not None and data.get("id", region_id) != region_id:
        raise BadRequest("Conflicting region IDs specified: the path and the body name different regions.")
    region_id = region_id or v.text(data, "id", max_len=255) or uuid.uuid4().hex
    description = v.text(data, "description", max_len=255) or ""
    async with context.pool.acquire() as conn, conn.transaction():
        parent = await _parent_region(conn, data, None)
        try:
            row = await conn.fetchrow(
                "INSERT INTO regions (id, description, parent_region_id, extra) VALUES ($1, $2, $3, $4) "
                "RETURNING *",
                region_id,
                description,
                parent,
                v.extra(data, _REGION_KNOWN),
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"Conflict occurred attempting to store region - Duplicate ID, {region_id}."
            ) from None
    return json_response({"region": region_view(row, context.base_url)}, status=201)


async def update_region(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "update_region")
    context = ctx(request)
    data = v.member(await json_body(request), "region")
    description = v.text(data, "description", max_len=255)
    async with context.pool.acquire() as conn, conn.transaction():
        old = await _region(conn, request.match_info["region_id"])
        parent = await _parent_region(conn, data, old["id"])
        row = await conn.fetchrow(
            "UPDATE regions SET description = coalesce($2, description), "
            "parent_region_id = CASE WHEN $3 THEN $4 ELSE parent_region_id END, extra = extra || $5 "
            "WHERE id = $1 RETURNING *",
            old["id"],
            description,
            "parent_region_id" in data,
            parent,
            v.extra(data, _REGION_KNOWN),
        )
    return json_response({"region": region_view(row, context.base_url)})


async def delete_region(request: web.Request) -> web.Response:
    """With the regions below it, unless an endpoint is in one of them (RegionOne holds the
    built-in endpoints)."""
    policy.require_admin(caller(request), "delete_region")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        old = await _region(conn, request.match_info["region_id"])
        tree = [
            r["id"]
            for r in await conn.fetch(
                "WITH RECURSIVE below (id) AS (SELECT $1::text UNION SELECT r.id FROM regions r "
                "JOIN below b ON r.parent_region_id = b.id) SELECT id FROM below",
                old["id"],
            )
        ]
        used = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM endpoints WHERE region_id = ANY($1::text[]))", tree
        )
        if used or catalog_.REGION in tree:
            raise Forbidden(
                f"Unable to delete region {old['id']} because it or its child regions have associated "
                "endpoints."
            )
        await conn.execute("DELETE FROM regions WHERE id = $1", old["id"])
    return web.Response(status=204)


documented(list_services, parameters=strings("type", "name"))
documented(
    list_endpoints,
    parameters=[
        param("service_id"),
        param("interface", enum=["public", "internal", "admin"]),
        param("region_id"),
    ],
)
documented(list_regions, parameters=strings("parent_region_id"))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/services", list_services)
    r.add_post("/identity/v3/services", create_service)
    r.add_get("/identity/v3/services/{service_id}", get_service)
    r.add_patch("/identity/v3/services/{service_id}", update_service)
    r.add_delete("/identity/v3/services/{service_id}", delete_service)
    r.add_get("/identity/v3/endpoints", list_endpoints)
    r.add_post("/identity/v3/endpoints", create_endpoint)
    r.add_get("/identity/v3/endpoints/{endpoint_id}", get_endpoint)
    r.add_patch("/identity/v3/endpoints/{endpoint_id}", update_endpoint)
    r.add_delete("/identity/v3/endpoints/{endpoint_id}", delete_endpoint)
    r.add_get("/identity/v3/regions", list_regions)
    r.add_post("/identity/v3/regions", create_region)
    r.add_get("/identity/v3/regions/{region_id}", get_region)
    r.add_put("/identity/v3/regions/{region_id}", create_region)
    r.add_patch("/identity/v3/regions/{region_id}", update_region)
    r.add_delete("/identity/v3/regions/{region_id}", delete_region)
