"""A server's networks: the `networks` of a create request turned into ports, and `addresses`.

Nova asks Neutron for ports while it builds; here the ports are created (or, for `port`,
claimed) in the create request's own transaction, so a boot that cannot get an address fails
with a clear error at once and leaves nothing behind, and the quota of ports is enforced with
the server's. The ports the server created are deleted with it; a port the user passed is only
released (Nova's `preserve_on_delete`).

`networks` as Nova takes it: a list of `{"uuid"}`, `{"uuid", "fixed_ip"}` or `{"port"}` (with an
optional `tag`), or, from microversion 2.37, the strings "auto" and "none". "auto" (and a
request with no `networks` before 2.37) uses the one network the project can use — its own or
a shared one; with none there is no NIC (this cloud has no auto-allocated topology to create),
and with several the request is ambiguous (409), as in Nova.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from api.auth import AuthContext
from api.compute.server_lookup import find
from api.context import caller, ctx, json_response
from api.errors import ApiError, BadRequest, Conflict, Forbidden, NotFound
from api.network import server_ports


@dataclasses.dataclass(frozen=True)
class RequestedNic:
    network_id: str | None = None
    port_id: str | None = None
    fixed_ip: str | None = None


AUTO = "auto"


def parse(networks: Any, version: tuple[int, int]) -> list[RequestedNic] | str:
    """The request's NICs, or AUTO; a 400 for anything Nova would refuse."""
    if networks is None:
        if version >= (2, 37):
            raise BadRequest("Invalid input for field/attribute server. 'networks' is a required property")
        return AUTO
    if networks in ("auto", "none"):
        if version < (2, 37):
            raise BadRequest(
                f"Invalid input for field/attribute networks. Value: {networks}. "
                f"'{networks}' is not of type 'array'"
            )
        return AUTO if networks == "auto" else []
    if not isinstance(networks, list):
        raise BadRequest(f"Invalid input for field/attribute networks. Value: {networks!r}.")
    nics = [_requested_nic(item) for item in networks]
    ports = [nic.port_id for nic in nics if nic.port_id]
    if len(ports) != len(set(ports)):
        raise BadRequest("Bad networks format: a port may be given once")
    return nics


def _requested_nic(item: Any) -> RequestedNic:
    """One entry of `networks`: a network (with a fixed IP or not) or a port."""
    if not isinstance(item, dict) or set(item) - {"uuid", "port", "fixed_ip", "tag"}:
        raise BadRequest(f"Bad networks format: {item!r}")
    network_id, port_id, fixed_ip = item.get("uuid"), item.get("port"), item.get("fixed_ip")
    for name, value in (("uuid", network_id), ("port", port_id)):
        if value is not None and not _is_uuid(value):
            raise BadRequest(f"Bad networks format: network {name} is not in proper format ({value!r})")
    if network_id is None and port_id is None:
        raise BadRequest("Bad networks format: a network needs a 'uuid' or a 'port'")
    if fixed_ip is not None:
        try:
            fixed_ip = str(ipaddress.ip_address(fixed_ip))
        except (ValueError, TypeError):
            raise BadRequest(f"Invalid fixed IP address ({fixed_ip!r})") from None
        if port_id is not None:
            raise BadRequest("Bad networks format: a fixed_ip goes with a network uuid, not a port")
    return RequestedNic(network_id=None if port_id else network_id, port_id=port_id, fixed_ip=fixed_ip)


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def resolve(
    conn: asyncpg.Connection, me: AuthContext, requested: list[RequestedNic] | str, count: int
) -> list[RequestedNic]:
    """Turn AUTO into the project's one usable network; check that a boot naming a port or a
    fixed IP is a single boot (max_count 1), as Nova's."""
    if requested == AUTO:
        rows = await server_ports.usable_networks(conn, me.project_id)
        if len(rows) > 1:
            raise Conflict("Multiple possible networks found, use a Network ID to be more specific.")
        return [RequestedNic(network_id=rows[0]["id"])] if rows else []
    assert isinstance(requested, list)
    if count > 1 and any(nic.network_id and nic.fixed_ip for nic in requested):
        raise BadRequest(
            "Failed to launch instances: max_count cannot be greater than 1 if an fixed_ip is specified."
        )
    if count > 1 and any(nic.port_id for nic in requested):
        raise BadRequest(
            "Failed to launch instances: Unable to launch multiple instances with a single configured "
            "port ID. Please launch your instance one by one with different ports."
        )
    return requested


async def allocate(
    conn: asyncpg.Connection,
    me: AuthContext,
    *,
    project_id: str,
    server_id: str,
    zone: str | None,
    nics: list[RequestedNic],
    security_groups: list[str] | None,
    shards: int,
) -> list[dict[str, Any]]:
    """Create or claim the server's ports (in the caller's transaction); the `nics` column. The
    ports it creates get `security_groups` (ids; None: the project's default group); the ports
    the user passed keep their own, as Nova leaves them."""
    owner = f"compute:{zone or 'nova'}"
    result = []
    for nic in nics:
        if nic.port_id is not None:
            port = await _claim(conn, me, nic.port_id, server_id, owner)
            delete = False
        else:
            port = await _new_port(
                conn,
                me,
                nic,
                project_id=project_id,
                server_id=server_id,
                owner=owner,
                security_groups=security_groups,
                shards=shards,
            )
            delete = True
        result.append(
            {
                "port_id": port["id"],
                "network_id": port["network_id"],
                "mac_address": str(port["mac_address"]),
                "delete_on_termination": delete,
            }
        )
    return result


async def _new_port(
    conn: asyncpg.Connection,
    me: AuthContext,
    nic: RequestedNic,
    *,
    project_id: str,
    server_id: str,
    owner: str,
    security_groups: list[str] | None,
    shards: int,
) -> asyncpg.Record:
    """A new port on the NIC's network, with its fixed IP if it names one."""
    assert nic.network_id is not None
    try:
        network = await server_ports.visible_network(conn, me, nic.network_id)
    except NotFound:
        raise BadRequest(f"Network {nic.network_id} could not be found.") from None
    fixed = [{"ip_address": nic.fixed_ip}] if nic.fixed_ip else None
    try:
        return await server_ports.create_port(
            conn,
            me,
            network,
            project_id=project_id,
            device_id=server_id,
            device_owner=owner,
            fixed_ips=fixed,
            security_groups=security_groups,
            shards=shards,
        )
    except server_ports.GroupsNeedPortSecurity:
        raise BadRequest(
            "Network requires port_security_enabled and subnet associated in order to apply security groups."
        ) from None
    except ApiError as exc:
        raise _as_compute_error(exc, nic) from None


async def _claim(
    conn: asyncpg.Connection, me: AuthContext, port_id: str, server_id: str, owner: str
) -> asyncpg.Record:
    if await server_ports.visible_port(conn, me, port_id) is None:
        raise NotFound(f"Port id {port_id} could not be found.")
    claimed = await server_ports.claim_port(conn, port_id, server_id, owner)
    if claimed is None:
        raise Conflict(f"Port {port_id} is still in use.")
    return claimed


def _as_compute_error(exc: ApiError, nic: RequestedNic) -> ApiError:
    """Neutron's refusal in Nova's words: a full quota is 403, a taken fixed IP 400, an exhausted
    network 409; the message keeps Neutron's reason."""
    if exc.status == 409 and "uota" in exc.message:
        return Forbidden(f"Maximum number of ports exceeded: {exc.message}")
    if exc.status == 409 and nic.fixed_ip and "already" in exc.message:
        return BadRequest(f"Fixed IP address {nic.fixed_ip} is already in use on instance.")
    if exc.status in (400, 404):
        return BadRequest(exc.message)
    return Conflict(exc.message)


# --- security groups -------------------------------------------------------------------------


async def security_group_ids(conn: Any, project_id: str, names: list[str] | None) -> list[str] | None:
    """The ids of the groups a boot names (None: none named), as Nova resolves them: a name no
    group of the project has is SecurityGroupNotFound (400 at create)."""
    if names is None:
        return None
    try:
        return await server_ports.group_ids(conn, project_id, names)
    except server_ports.GroupNotFound as exc:
        raise BadRequest(f"Security group {exc.name} not found.") from None


async def security_group_names(conn: Any, server_ids: list[str]) -> dict[str, list[str]]:
    """Each server's security groups as its view names them (its ports' groups, each once)."""
    return await server_ports.server_groups(conn, server_ids)


# --- addresses ------------------------------------------------------------------------------


async def addresses(conn: Any, server_ids: list[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Nova's `addresses` of each server: network name -> its fixed IPs, port by port in the
    order of the server's NICs."""
    if not server_ids:
        return {}
    rows = await server_ports.fixed_ips(conn, server_ids)
    result: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        per_network = result.setdefault(row["device_id"], {})
        per_network.setdefault(row["network"], []).append(
            {
                "version": row["version"],
                "addr": row["ip"],
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": row["mac"],
            }
        )
    return result


# --- /servers/{id}/ips (os-server-ips) ---------------------------------------------------------


async def list_ips(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        row = await find(conn, caller(request), request.match_info["server_id"])
        found = (await addresses(conn, [row["id"]])).get(row["id"], {})
    return json_response(
        {
            "addresses": {
                net: [{"version": a["version"], "addr": a["addr"]} for a in ips] for net, ips in found.items()
            }
        }
    )


async def show_ips(request: web.Request) -> web.Response:
    network = request.match_info["network"]
    async with ctx(request).pool.acquire() as conn:
        row = await find(conn, caller(request), request.match_info["server_id"])
        found = (await addresses(conn, [row["id"]])).get(row["id"], {})
    if network not in found:
        raise NotFound("Instance is not a member of specified network")
    return json_response({network: [{"version": a["version"], "addr": a["addr"]} for a in found[network]]})


def setup(app: web.Application) -> None:
    app.router.add_get("/compute/v2.1/servers/{server_id}/ips", list_ips)
    app.router.add_get("/compute/v2.1/servers/{server_id}/ips/{network}", show_ips)
