"""/compute/v2.1/os-aggregates: Nova's host aggregates (admin only).

An aggregate is a named set of compute hosts with metadata; its `availability_zone` metadata
makes an availability zone of its hosts: the scheduler places a server that asks for that zone
on them, and os-availability-zone and os-services show it (the `host_zone` SQL function). As in
Nova, a host is in one availability zone only (adding it to an aggregate of another zone, or
giving an aggregate a zone its hosts' other aggregates contradict, is refused), a zone changes
only while its hosts have no servers, an aggregate with hosts cannot be deleted, and the uuid
shows from microversion 2.41. Rows: `aggregates` and `aggregate_hosts`, written here in one
transaction per request.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from api import validate
from api.compute.microversion import requested
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, NotFound

AZ_KEY = "availability_zone"
_METADATA_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")


def _view(
    request: web.Request, row: asyncpg.Record, hosts: list[str], *, created: bool = False
) -> dict[str, Any]:
    """An aggregate as Nova marshalls it (its timestamps without a zone, as Nova's)."""
    metadata = dict(row["metadata"])
    view: dict[str, Any] = {
        "availability_zone": metadata.get(AZ_KEY),
        "created_at": row["created_at"].replace(tzinfo=None).isoformat(),
        "deleted": False,
        "deleted_at": None,
        "id": row["id"],
        "name": row["name"],
        "updated_at": row["updated_at"].replace(tzinfo=None).isoformat() if row["updated_at"] else None,
    }
    if not created:  # a create's answer has neither, as Nova's
        view["hosts"] = hosts
        view["metadata"] = metadata
    if requested(request) >= (2, 41):
        view["uuid"] = row["uuid"]
    return view


def _aggregate_id(request: web.Request) -> int:
    raw = request.match_info["aggregate_id"]
    if not re.fullmatch(r"-?[0-9]+", raw):
        raise BadRequest("Invalid input received: id must be an integer.")
    return int(raw)


async def _find(conn: Any, aggregate_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM aggregates WHERE id = $1 FOR UPDATE", aggregate_id)
    if row is None:
        raise NotFound(f"Aggregate {aggregate_id} could not be found.")
    return row


async def _hosts_of(conn: Any, aggregate_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT host FROM aggregate_hosts WHERE aggregate_id = $1 ORDER BY host", aggregate_id
    )
    return [r["host"] for r in rows]


def _name(value: Any) -> str:
    return validate.name({"name": value})


def _zone(value: Any) -> str | None:
    """An availability zone name: printable, no ':' and no leading or trailing space, or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 255 or ":" in value or value != value.strip():
        raise BadRequest(
            f"Invalid input for field/attribute availability_zone. Value: {value!r}. It must be 1 to "
            "255 printable characters except ':', with no leading or trailing whitespace"
        )
    return value


async def _check_zone(
    conn: Any, row: asyncpg.Record, zone: str | None, hosts: list[str], *, action: str, instances: bool
) -> None:
    """Nova's is_safe_to_update_az: the hosts' other aggregates must not name another zone;
    with `instances`, a zone that changes must not hold servers."""
    where = {"add": "Cannot add host to aggregate", "update": "Cannot update aggregate",
             "metadata": "Cannot update metadata of aggregate"}[action]  # fmt: skip
    if zone is None:
        return
    others = await conn.fetch(
        "SELECT DISTINCT a.metadata->>'availability_zone' AS zone FROM aggregates a "
        "JOIN aggregate_hosts ah ON ah.aggregate_id = a.id "
        "WHERE ah.host = ANY($1::text[]) AND a.id <> $2 AND a.metadata ? 'availability_zone' "
        "AND a.metadata->>'availability_zone' <> $3",
        hosts,
        row["id"],
        zone,
    )
    if others:
        zones = [r["zone"] for r in others]
        raise Conflict(
            f"{where} {row['id']}. Reason: One or more hosts already in availability zone(s) {zones}."
        )
    if instances and row["metadata"].get(AZ_KEY) != zone and hosts:
        busy = await conn.fetchval(
            "SELECT count(*) FROM servers WHERE host = ANY($1::text[]) AND vm_state <> 'deleted'", hosts
        )
        if busy:
            raise BadRequest(
                f"{where} {row['id']}. Reason: One or more hosts contain instances in this zone."
            )


async def list_aggregates(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-aggregates:index")
    async with ctx(request).pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM aggregates ORDER BY id")
        members = await conn.fetch("SELECT aggregate_id, host FROM aggregate_hosts ORDER BY host")
    hosts: dict[int, list[str]] = {}
    for member in members:
        hosts.setdefault(member["aggregate_id"], []).append(member["host"])
    return json_response({"aggregates": [_view(request, r, hosts.get(r["id"], [])) for r in rows]})


async def create(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-aggregates:create")
    data = validate.member(await json_body(request), "aggregate")
    validate.only(data, {"name", AZ_KEY}, "aggregate")
    validate.required(data, {"name"}, "aggregate")
    name, zone = _name(data["name"]), _zone(data.get(AZ_KEY))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                "INSERT INTO aggregates (uuid, name, metadata) VALUES ($1, $2, $3) RETURNING *",
                str(uuid.uuid4()),
                name,
                {AZ_KEY: zone} if zone else {},
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"Aggregate {name} already exists.") from None
    return json_response({"aggregate": _view(request, row, [], created=True)})


async def show(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-aggregates:show")
    aggregate_id = _aggregate_id(request)
    async with ctx(request).pool.acquire() as conn:
        row = await _find(conn, aggregate_id)
        hosts = await _hosts_of(conn, aggregate_id)
    return json_response({"aggregate": _view(request, row, hosts)})


async def update(request: web.Request) -> web.Response:
    """A new name and/or availability zone."""
    caller(request).require_admin("os_compute_api:os-aggregates:update")
    data = validate.member(await json_body(request), "aggregate")
    validate.only(data, {"name", AZ_KEY}, "aggregate")
    if not data:
        raise BadRequest(
            "Invalid input for field/attribute aggregate. 'name' or 'availability_zone' is required"
        )
    aggregate_id = _aggregate_id(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await _find(conn, aggregate_id)
        hosts = await _hosts_of(conn, aggregate_id)
        metadata = dict(row["metadata"])
        name = _name(data["name"]) if "name" in data else row["name"]
        if AZ_KEY in data:
            zone = _zone(data[AZ_KEY])
            if zone is None:
                raise BadRequest(
                    f"Cannot update aggregate {aggregate_id}. Reason: Aggregate {row['name']} does not "
                    "support empty named availability zone."
                )
            await _check_zone(conn, row, zone, hosts, action="update", instances=True)
            metadata[AZ_KEY] = zone
        try:
            row = await conn.fetchrow(
                "UPDATE aggregates SET name = $2, metadata = $3, updated_at = now() "
                "WHERE id = $1 RETURNING *",
                aggregate_id,
                name,
                metadata,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"Aggregate {name} already exists.") from None
    return json_response({"aggregate": _view(request, row, hosts)})


async def delete(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-aggregates:delete")
    aggregate_id = _aggregate_id(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        await _find(conn, aggregate_id)
        if await _hosts_of(conn, aggregate_id):
            raise BadRequest(f"Cannot delete aggregate {aggregate_id}. Reason: Host aggregate is not empty.")
        await conn.execute("DELETE FROM aggregates WHERE id = $1", aggregate_id)
    return web.Response(status=200)


def _host_argument(args: Any, action: str) -> str:
    if not isinstance(args, dict) or set(args) != {"host"} or not isinstance(args["host"], str):
        raise BadRequest(f"Invalid input for field/attribute {action}. 'host' is a required property")
    host: str = args["host"]
    if not 1 <= len(host) <= 255:
        raise BadRequest(f"Invalid input for field/attribute host. Value: {host!r}.")
    return host


async def _add_host(request: web.Request, aggregate_id: int, args: Any) -> asyncpg.Record:
    host = _host_argument(args, "add_host")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM compute_hosts WHERE name = $1", host) is None:
            raise NotFound(f"Compute host {host} could not be found.")
        row = await _find(conn, aggregate_id)
        await _check_zone(conn, row, row["metadata"].get(AZ_KEY), [host], action="add", instances=False)
        added = await conn.execute(
            "INSERT INTO aggregate_hosts (aggregate_id, host) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            aggregate_id,
            host,
        )
        if added == "INSERT 0 0":
            raise Conflict(f"Aggregate {aggregate_id} already has host {host}.")
        return row


async def _remove_host(request: web.Request, aggregate_id: int, args: Any) -> asyncpg.Record:
    host = _host_argument(args, "remove_host")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        gone = await conn.execute(
            "DELETE FROM aggregate_hosts WHERE aggregate_id = $1 AND host = $2", aggregate_id, host
        )
        row = await conn.fetchrow("SELECT * FROM aggregates WHERE id = $1", aggregate_id)
        if gone == "DELETE 0" or row is None:
            raise NotFound(f"Cannot remove host {host} in aggregate {aggregate_id}")
        return row


def _metadata_argument(args: Any) -> dict[str, str | None]:
    if not isinstance(args, dict) or set(args) != {"metadata"} or not isinstance(args["metadata"], dict):
        raise BadRequest("Invalid input for field/attribute set_metadata. 'metadata' is a required property")
    metadata: dict[str, str | None] = args["metadata"]
    for key, value in metadata.items():
        if not _METADATA_KEY.match(key):
            raise BadRequest(f"Invalid input for field/attribute metadata. Value: {key!r}. Invalid key")
        if value is not None and (not isinstance(value, str) or len(value) > 255):
            raise BadRequest(f"Invalid input for field/attribute {key}. Value: {value!r}.")
    return metadata


async def _set_metadata(request: web.Request, aggregate_id: int, args: Any) -> asyncpg.Record:
    """Nova's update_aggregate_metadata: the keys given are set, those set to null removed."""
    changes = _metadata_argument(args)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await _find(conn, aggregate_id)
        if AZ_KEY in changes:
            zone = changes[AZ_KEY]
            if not zone:
                raise BadRequest(
                    f"Cannot update metadata of aggregate {aggregate_id}. Reason: Aggregate {row['name']} "
                    "does not support empty named availability zone."
                )
            hosts = await _hosts_of(conn, aggregate_id)
            await _check_zone(conn, row, _zone(zone), hosts, action="metadata", instances=True)
        metadata = {**row["metadata"], **{k: v for k, v in changes.items() if v is not None}}
        for key in (k for k, v in changes.items() if v is None):
            metadata.pop(key, None)
        return await conn.fetchrow(
            "UPDATE aggregates SET metadata = $2, updated_at = now() WHERE id = $1 RETURNING *",
            aggregate_id,
            metadata,
        )


_ACTIONS = {"add_host": _add_host, "remove_host": _remove_host, "set_metadata": _set_metadata}


async def action(request: web.Request) -> web.Response:
    document = await json_body(request)
    if not isinstance(document, dict) or len(document) != 1:
        raise BadRequest("There is no such action: the body must name exactly one action.")
    ((name, args),) = document.items()
    handler = _ACTIONS.get(name)
    if handler is None:
        raise BadRequest(f"There is no such action: {name}")
    caller(request).require_admin(f"os_compute_api:os-aggregates:{name}")
    aggregate_id = _aggregate_id(request)
    row = await handler(request, aggregate_id, args)
    async with ctx(request).pool.acquire() as conn:
        hosts = await _hosts_of(conn, aggregate_id)
    return json_response({"aggregate": _view(request, row, hosts)})


def setup(app: web.Application) -> None:
    r = app.router
    base = "/compute/v2.1/os-aggregates"
    r.add_get(base, list_aggregates)
    r.add_post(base, create)
    r.add_get(base + "/{aggregate_id}", show)
    r.add_put(base + "/{aggregate_id}", update)
    r.add_delete(base + "/{aggregate_id}", delete)
    r.add_post(base + "/{aggregate_id}/action", action)
