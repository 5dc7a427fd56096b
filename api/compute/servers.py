"""/compute/v2.1/servers: the routes of a server, and its show and update.

The create is server_create.py (parse, resolve, quota, insert), the list server_list.py (Nova's
filters, sorting and paging), the delete and the actions server_actions.py (messages to the
server actor, lock), the tags server_tags.py. A server's metadata, its instance actions, its
view and the lookup by id live beside them (server_metadata.py, instance_actions.py,
server_views.py, server_lookup.py).
"""

from __future__ import annotations

from aiohttp import web

from api import validate
from api.compute import hosts as compute_hosts
from api.compute import server_actions, server_create, server_list, server_networks
from api.compute.microversion import Microversion, requested
from api.compute.server_lookup import find
from api.compute.server_views import view
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest
from api.volume import server_attachments

FULL_UPDATE_VIEW = (2, 75)  # from here an update answers with every attribute, as show does
SERVER_GROUPS = (2, 71)  # show and update list the server's groups


async def show(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        row = await find(conn, caller(request), request.match_info["server_id"])
        found = await server_networks.addresses(conn, [row["id"]])
        volumes = await server_attachments.attached_volumes(conn, [row["id"]])
        hosts = await compute_hosts.host_statuses(conn, [row["host"]])
        groups = await server_networks.security_group_names(conn, [row["id"]])
    server = view(request, row, found, volumes, hosts, server_groups=True, security_groups=groups)
    return json_response({"server": server})


def _update_keys(version: Microversion) -> set[str]:
    """What an update may change at this microversion (Nova's base_update schemas)."""
    keys = {"name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"}
    if version >= (2, 19):
        keys.add("description")
    if version >= (2, 90):
        keys.add("hostname")
    return keys


def _changes(data: dict[str, object], version: Microversion) -> dict[str, object]:
    """The columns an update body sets (only what it names; description may be set to null)."""
    unknown = set(data) - _update_keys(version)
    if unknown:
        raise BadRequest(
            "Invalid input for field/attribute server. Additional properties are not allowed "
            f"({', '.join(sorted(unknown))} {'was' if len(unknown) == 1 else 'were'} unexpected)"
        )
    changes: dict[str, object] = {}
    if "name" in data:
        name = server_create.text(data, "name")
        if name is None or not server_create.NAME.match(name):
            raise BadRequest(f"Invalid input for field/attribute name. Value: {name!r}.")
        changes["display_name"] = name
    if "description" in data:
        description = server_create.text(data, "description")
        changes["description"] = validate.printable_or_none(description, "description")
    if "hostname" in data:
        changes["hostname"] = server_create.hostname_asked(data, 1, version)
    access_v4, access_v6 = server_create.access_ips(data)
    if "accessIPv4" in data:
        changes["access_ip_v4"] = access_v4
    if "accessIPv6" in data:
        changes["access_ip_v6"] = access_v6
    if "OS-DCF:diskConfig" in data:
        changes["auto_disk_config"] = server_create.disk_config(data)
    return changes


async def update(request: web.Request) -> web.Response:
    """PUT /servers/{id}: Nova's update view answers, which before 2.75 leaves out what the
    update cannot have changed (see server_views.view)."""
    me = caller(request)
    version = requested(request)
    document = await json_body(request)
    if not isinstance(document, dict) or not isinstance(document.get("server"), dict):
        raise BadRequest("Invalid input for field/attribute server. 'server' is a required property")
    changes = _changes(document["server"], version)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, request.match_info["server_id"])
        me.require_writer("os_compute_api:servers:update")
        if changes:
            columns = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
            row = await conn.fetchrow(
                f"UPDATE servers SET {columns}, updated_at = extract(epoch from now()), "
                "version = version + 1 WHERE id = $1 RETURNING *",
                row["id"],
                *changes.values(),
            )
        full = version >= FULL_UPDATE_VIEW
        found = await server_networks.addresses(conn, [row["id"]])
        volumes = await server_attachments.attached_volumes(conn, [row["id"]]) if full else {}
        hosts = await compute_hosts.host_statuses(conn, [row["host"]])
        groups = await server_networks.security_group_names(conn, [row["id"]]) if full else {}
    server = view(request, row, found, volumes, hosts, full=full, server_groups=True, security_groups=groups)
    return json_response({"server": server})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/servers", server_list.list_servers)
    r.add_post("/compute/v2.1/servers", server_create.create)
    r.add_get("/compute/v2.1/servers/detail", server_list.list_servers_detail)
    r.add_get("/compute/v2.1/servers/{server_id}", show)
    r.add_put("/compute/v2.1/servers/{server_id}", update)
    r.add_delete("/compute/v2.1/servers/{server_id}", server_actions.delete)
    r.add_post("/compute/v2.1/servers/{server_id}/action", server_actions.action)
