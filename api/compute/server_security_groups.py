"""A server's security groups in Nova's API: the `addSecurityGroup` and `removeSecurityGroup`
actions and GET /compute/v2.1/servers/{id}/os-security-groups (every microversion).

A server's groups are its ports' (Nova with Neutron keeps none of its own): the actions add the
group to, or remove it from, every port of the server, as Nova's add_to_instance and
remove_from_instance do, through the network service's published api/network/server_ports.py
(which nudges the hosts' firewalls), in one transaction: a refusal changes no port. Nova looks
the group up by name or id in the caller's project. Nova records no instance action for them,
and a locked server takes them too: Nova changes the ports in Neutron without the compute API's
lock check.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.compute.security_groups import nova_groups
from api.compute.server_lookup import find
from api.context import caller, ctx, json_response
from api.errors import BadRequest, NotFound
from api.network import security_group_proxy, server_ports

ADD = "addSecurityGroup"
REMOVE = "removeSecurityGroup"
POLICY = "os_compute_api:os-security-groups"


def _group_name(args: Any) -> str:
    """Nova's _parse of the action's body: `{"name": <name or id>}`."""
    if not isinstance(args, dict):
        raise BadRequest("Missing parameter dict")
    if "name" not in args:
        raise BadRequest("Security group not specified")
    name = args["name"]
    if not isinstance(name, str):
        raise BadRequest(
            f"Invalid input for field/attribute name. Value: {name!r}. {name!r} is not of type 'string'"
        )
    if not name.strip():
        raise BadRequest("Security group name cannot be empty")
    return name


async def change(request: web.Request, action: str, args: Any) -> web.Response:
    """addSecurityGroup or removeSecurityGroup: 202 with no body once every port has (or no port
    has) the group."""
    add = action == ADD
    me = caller(request)
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, request.match_info["server_id"])
        me.require_writer(f"{POLICY}:{'add' if add else 'remove'}")
        name = _group_name(args)
        project_id = me.require_project()
        try:
            (group_id,) = await server_ports.group_ids(conn, project_id, [name])
        except server_ports.GroupNotFound:
            raise NotFound(f"Security group {name} is not found for project {project_id}") from None
        try:
            ports, changed = await server_ports.change_server_group(
                conn, row["id"], group_id, add=add, shards=context.shards
            )
        except server_ports.GroupsNeedPortSecurity:
            raise BadRequest(
                "Network requires port_security_enabled and subnet associated in order to apply security "
                "groups."
            ) from None
        if not ports:
            raise NotFound(f"instance_id {row['id']} could not be found as device id on any ports")
        if add and changed < ports:
            # Nova asks Neutron for the port's groups and this one again: Neutron refuses the list.
            raise BadRequest(
                f"Invalid input for security_groups. Reason: Duplicate items in the list: '{group_id}'."
            )
        if not add and not changed:
            raise NotFound(f"Security group {name} not associated with the instance {row['id']}")
    return web.Response(status=202)


async def list_server_groups(request: web.Request) -> web.Response:
    """The groups of the server's ports that the caller may see, in Nova's shape and order."""
    me = caller(request)
    async with ctx(request).pool.acquire() as conn:
        row = await find(conn, me, request.match_info["server_id"])
        rows = await server_ports.server_group_rows(conn, row["id"])
        groups = await security_group_proxy.visible_groups(conn, me, list(rows))
        shown = await nova_groups(conn, me, groups)
    return json_response({"security_groups": shown})


def setup(app: web.Application) -> None:
    app.router.add_get("/compute/v2.1/servers/{server_id}/os-security-groups", list_server_groups)
