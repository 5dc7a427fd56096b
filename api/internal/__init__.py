"""The internal API: what host agents read, scoped to their hosts (`/internal/v1`).

Host agents hold no database credentials (Nova's conductor rule: a compromised hypervisor must
not own the cloud). Everything they report travels by messages to the `host` service
(actors/hosts.py); everything they need to read comes from here, over HTTP, with the host token
of `api.internal.credentials` in `X-Host-Token`. Each answer is limited to the hosts the token
names (403 for another host's, 404 for what none of them may see), so one host's credential
shows nothing of the others' servers, ports or instance data:

    GET /internal/v1/config                                  shards, cloud id, owner tag, the token's hosts
    GET /internal/v1/hosts/{host}/servers                    {server id: vm_state} placed there
    GET /internal/v1/network/desired?host=…                  taps, subnets, addresses (one snapshot)
    GET /internal/v1/network/firewall?host=…                 ports, rules, remote group members
    GET /internal/v1/network/servers/{id}/ports?host=…       a server's ports bound to those hosts
    GET /internal/v1/network/servers/{id}/bound?host=…       its ports' ids and networks (unplug)
    GET /internal/v1/metadata/instance?network=&ip=          the server owning that address
    GET /internal/v1/metadata/servers/{id}/interfaces        its ports, addresses and subnets
    GET /internal/v1/images/{id}                             status, format, size, checksums
    GET /internal/v1/images/{id}/file                        the bytes, streamed

Errors have Keystone's shape (`{"error": {...}}`), as every path outside the five services.
"""

from __future__ import annotations

import asyncio
import ipaddress

from aiohttp import web

from actors import db
from api.context import CTX, ctx, host_only, json_response
from api.errors import BadRequest, Forbidden, NotFound, Unauthorized
from api.image.store import image_path
from api.internal import credentials, queries

PREFIX = "/internal/v1"
HOSTS = "actorstack.internal.hosts"
CHUNK = 1024 * 1024


def _hosts(request: web.Request) -> frozenset[str]:
    """The hosts the request's token names; 401 without a valid one."""
    token = request.headers.get(credentials.HEADER)
    if not token:
        raise Unauthorized(f"The internal API requires a host token ({credentials.HEADER}).")
    try:
        return credentials.verify(request.app[CTX].host_key, token)
    except credentials.BadHostToken as exc:
        raise Unauthorized(f"The host token is not valid: {exc}.") from None


def _asked_hosts(request: web.Request, mine: frozenset[str]) -> list[str]:
    """The `host` query parameters (default: every host of the token), each one the token's."""
    asked = request.query.getall("host", [])
    for host in asked:
        if host not in mine:
            raise Forbidden(f"The host token does not cover host {host!r}.")
    return sorted(set(asked) or mine)


@host_only
async def config(request: web.Request) -> web.Response:
    hosts = _hosts(request)
    context = ctx(request)
    cloud_id = await db.cluster_setting(context.pool, "cloud_id")
    database = await context.pool.fetchval("SELECT current_database()")
    # The tag on every kernel object the hosts create: the database's name makes a test run's
    # links easy to find (its databases are named after the run), the cloud id makes it unique.
    owner = f"actorstack:{database}:{cloud_id}"
    return json_response(
        {"shards": context.shards, "cloud_id": cloud_id, "owner": owner, "hosts": sorted(hosts)}
    )


@host_only
async def placed_servers(request: web.Request) -> web.Response:
    host = request.match_info["host"]
    if host not in _hosts(request):
        raise Forbidden(f"The host token does not cover host {host!r}.")
    async with ctx(request).pool.acquire() as conn:
        return json_response({"servers": await queries.placed(conn, host)})


@host_only
async def desired_network(request: web.Request) -> web.Response:
    hosts = _asked_hosts(request, _hosts(request))
    async with (
        ctx(request).pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        return json_response(await queries.desired_network(conn, hosts))


@host_only
async def desired_firewall(request: web.Request) -> web.Response:
    hosts = _asked_hosts(request, _hosts(request))
    async with ctx(request).pool.acquire() as conn:  # one statement: one snapshot
        return web.Response(text=await queries.desired_firewall(conn, hosts), content_type="application/json")


async def _ports(request: web.Request, sql: str) -> web.Response:
    """A server's ports bound to the asked hosts, as `sql` selects them."""
    hosts = _asked_hosts(request, _hosts(request))
    records = await ctx(request).pool.fetch(sql, request.match_info["server_id"], hosts)
    return json_response({"ports": queries.rows(records)})


@host_only
async def server_ports(request: web.Request) -> web.Response:
    return await _ports(request, queries.PORTS_OF_SERVER_SQL)


@host_only
async def bound_ports(request: web.Request) -> web.Response:
    return await _ports(request, queries.DEVICE_PORTS_SQL)


@host_only
async def metadata_instance(request: web.Request) -> web.Response:
    hosts = sorted(_hosts(request))
    network_id = request.query.get("network", "")
    ip = request.query.get("ip", "")
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        raise BadRequest(f"ip {ip!r} is not an IPv4 address.") from None
    record = await ctx(request).pool.fetchrow(queries.INSTANCE_SQL, network_id, ip, hosts)
    if record is None:
        raise NotFound(f"No server on these hosts owns {ip} on network {network_id}.")
    return json_response({"instance": queries.rows([record])[0]})


@host_only
async def metadata_interfaces(request: web.Request) -> web.Response:
    hosts = sorted(_hosts(request))
    records = await ctx(request).pool.fetch(queries.INTERFACES_SQL, request.match_info["server_id"], hosts)
    return json_response({"interfaces": queries.rows(records)})


async def _image(request: web.Request) -> dict[str, object]:
    hosts = sorted(_hosts(request))
    record = await ctx(request).pool.fetchrow(queries.IMAGE_SQL, request.match_info["image_id"], hosts)
    if record is None:
        raise NotFound(f"No image with ID {request.match_info['image_id']} for these hosts.")
    return queries.rows([record])[0]


@host_only
async def image(request: web.Request) -> web.Response:
    return json_response({"image": await _image(request)})


@host_only
async def image_file(request: web.Request) -> web.StreamResponse:
    found = await _image(request)
    if found["status"] != "active":
        raise NotFound(f"Image {found['id']} is not active (its status is {found['status']}).")
    path = image_path(ctx(request).state_dir, str(found["id"]))
    try:
        source = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError:
        raise NotFound(f"Image {found['id']} has no data.") from None
    try:
        size = await asyncio.to_thread(lambda: source.seek(0, 2))
        await asyncio.to_thread(source.seek, 0)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        while chunk := await asyncio.to_thread(source.read, CHUNK):
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        await asyncio.to_thread(source.close)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/config", config)
    r.add_get(f"{PREFIX}/hosts/{{host}}/servers", placed_servers)
    r.add_get(f"{PREFIX}/network/desired", desired_network)
    r.add_get(f"{PREFIX}/network/firewall", desired_firewall)
    r.add_get(f"{PREFIX}/network/servers/{{server_id}}/ports", server_ports)
    r.add_get(f"{PREFIX}/network/servers/{{server_id}}/bound", bound_ports)
    r.add_get(f"{PREFIX}/metadata/instance", metadata_instance)
    r.add_get(f"{PREFIX}/metadata/servers/{{server_id}}/interfaces", metadata_interfaces)
    r.add_get(f"{PREFIX}/images/{{image_id}}", image)
    r.add_get(f"{PREFIX}/images/{{image_id}}/file", image_file)
