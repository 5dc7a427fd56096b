"""/networking/v2.0/subnets: create, list, show, update, delete.

A subnet is a part of its network (no lifecycle, no actor): it is seen by its project, by the
network's owner, and by everyone when the network is shared; it is created and changed by the
network's owner (or an admin). Validation is Neutron's: the CIDR's host bits are cleared, the
gateway defaults to the first address (`null`: none), the allocation pools default to the
whole usable range minus the gateway and must lie in the CIDR, not overlap, and not hold the
gateway; subnets of one network do not overlap.

Every change locks the network row first (and bumps its `version` and revision, as Neutron bumps
a network whose subnets change), so changes of one network's subnets and DHCP port happen one at
a time; a change of pools also takes the subnet's IPAM lock, so no allocation is in flight.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

import asyncpg
from aiohttp import web

from api import notifications
from api.auth import AuthContext
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict
from api.network import dhcp, ipam, networks, policy, query
from api.network.attributes import (
    STANDARD_READ_ONLY,
    Attr,
    IPAddress,
    IPNetwork,
    boolean,
    create_bodies,
    empty_list_only,
    ip_address,
    ip_subnet,
    null_only,
    parse,
    read_only,
    resource_body,
    string,
    tags,
    uuid_string,
)
from api.network.faults import (
    bad_attribute,
    bad_request,
    invalid_input,
    network_not_found,
    policy_denied,
    subnet_in_use,
    subnet_not_found,
)
from api.network.quotas import enforce
from api.times import iso_seconds

IPV6_MODES = ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")
MAX_NAMESERVERS = 5
MAX_HOST_ROUTES = 20


# --- attributes ---------------------------------------------------------------------------------


def _ip_version(name: str, value: Any) -> int:
    if value in (4, 6, "4", "6") and not isinstance(value, bool):
        return int(value)
    raise bad_attribute(name, f"'{value}' is not in [4, 6]")


def _optional_ip(name: str, value: Any) -> IPAddress | None:
    return None if value is None else ip_address(name, value)


def _pools(name: str, value: Any) -> list[tuple[IPAddress, IPAddress]]:
    if not isinstance(value, list):
        raise bad_attribute(name, f"Invalid data format for IP pool: '{value}'")
    pools = []
    for pool in value:
        if not isinstance(pool, dict) or set(pool) != {"start", "end"}:
            raise bad_attribute(name, f"Invalid data format for IP pool: '{pool}'")
        pools.append((ip_address(name, pool["start"]), ip_address(name, pool["end"])))
    return pools


def _nameservers(name: str, value: Any) -> list[IPAddress]:
    if not isinstance(value, list):
        raise bad_attribute(name, f"Invalid data format for nameserver: '{value}'")
    servers: list[IPAddress] = []
    for server in value:
        try:
            address = ipaddress.ip_address(server) if isinstance(server, str) else None
        except ValueError:
            address = None
        if address is None:
            raise bad_attribute(name, f"'{server}' is not a valid nameserver")
        if address in servers:
            raise bad_attribute(name, f"Duplicate nameserver '{server}'")
        servers.append(address)
    return servers


def _routes(name: str, value: Any) -> list[tuple[IPNetwork, IPAddress]]:
    if not isinstance(value, list):
        raise bad_attribute(name, f"Invalid data format for hostroute: '{value}'")
    routes: list[tuple[IPNetwork, IPAddress]] = []
    for route in value:
        if not isinstance(route, dict) or set(route) != {"destination", "nexthop"}:
            raise bad_attribute(name, f"Invalid data format for hostroute: '{route}'")
        item = (ip_subnet(name, route["destination"]), ip_address(name, route["nexthop"]))
        if item in routes:
            raise bad_attribute(name, f"Duplicate hostroute '{route}'")
        routes.append(item)
    return routes


def _ipv6_mode(name: str, value: Any) -> str | None:
    if value is None or value in IPV6_MODES:
        return value
    raise bad_attribute(name, f"'{value}' is not in {list(IPV6_MODES)}")


def _false_only(name: str, value: Any) -> bool:
    if boolean(name, value):
        raise bad_attribute(name, "Subnet pools are not available in this cloud")
    return False


ATTRS = {
    "name": Attr(string()),
    "description": Attr(string()),
    "network_id": Attr(uuid_string, put=False),
    "ip_version": Attr(_ip_version, put=False),
    "cidr": Attr(ip_subnet, put=False),
    "gateway_ip": Attr(_optional_ip),
    "allocation_pools": Attr(_pools),
    "dns_nameservers": Attr(_nameservers),
    "host_routes": Attr(_routes),
    "enable_dhcp": Attr(boolean),
    "ipv6_ra_mode": Attr(_ipv6_mode, put=False),
    "ipv6_address_mode": Attr(_ipv6_mode, put=False),
    "tags": Attr(tags, put=False),
    "project_id": Attr(string(), put=False),
    "tenant_id": Attr(string(), put=False),
    "subnetpool_id": Attr(null_only("Subnet pools"), put=False),
    "use_default_subnetpool": Attr(_false_only, put=False),
    "segment_id": Attr(null_only("Segments")),
    "service_types": Attr(empty_list_only("Service types")),
    **read_only(*STANDARD_READ_ONLY),
}

SELECT = (
    "SELECT s.*, net.shared AS network_shared, net.project_id AS network_project_id "
    "FROM subnets s JOIN networks net ON net.id = s.network_id"
)

COLLECTION = query.Collection(
    name="subnets",
    alias="s",
    select=SELECT,
    not_found=subnet_not_found,
    fields={
        "id": query.text("s.id"),
        "name": query.text("s.name"),
        "description": query.text("s.description"),
        "network_id": query.text("s.network_id"),
        "project_id": query.text("s.project_id"),
        "tenant_id": query.text("s.project_id"),
        "ip_version": query.number("s.ip_version"),
        "cidr": query.text("s.cidr::text"),
        "gateway_ip": query.text("coalesce(host(s.gateway_ip), '')"),
        "enable_dhcp": query.flag("s.enable_dhcp"),
        "ipv6_ra_mode": query.text("coalesce(s.ipv6_ra_mode, '')"),
        "ipv6_address_mode": query.text("coalesce(s.ipv6_address_mode, '')"),
        "revision_number": query.number("s.revision_number"),
        "subnetpool_id": query.text("NULL::text", sortable=False),  # no subnet pools, no segments
        "segment_id": query.text("NULL::text", sortable=False),
        "created_at": query.moment("s.created_at"),
        "updated_at": query.moment("s.updated_at"),
    },
)


# --- validation ---------------------------------------------------------------------------------


def _pool_text(pool: tuple[IPAddress, IPAddress]) -> str:
    return f"{pool[0]}-{pool[1]}"


def _usable_range(cidr: IPNetwork) -> tuple[IPAddress, IPAddress]:
    """The first and last address a pool may hold: not the network address, nor (IPv4) the
    broadcast address."""
    first = cidr.network_address + 1
    last = cidr.broadcast_address - 1 if cidr.version == 4 and cidr.prefixlen < 31 else cidr.broadcast_address
    return first, last


def default_pools(cidr: IPNetwork, gateway: IPAddress | None) -> list[tuple[IPAddress, IPAddress]]:
    first, last = _usable_range(cidr)
    if first > last:
        return []
    if gateway is None or not first <= gateway <= last:
        return [(first, last)]
    return [pool for pool in ((first, gateway - 1), (gateway + 1, last)) if pool[0] <= pool[1]]


def check_pools(
    pools: list[tuple[IPAddress, IPAddress]], cidr: IPNetwork
) -> list[tuple[IPAddress, IPAddress]]:
    """Neutron's validate_allocation_pools; the pools in address order."""
    first, last = _usable_range(cidr)
    for start, end in pools:
        if start.version != cidr.version or end.version != cidr.version or end < start:
            raise BadRequest(
                f"The allocation pool {_pool_text((start, end))} is not valid.", kind="InvalidAllocationPool"
            )
        if start < first or end > last:
            raise BadRequest(
                f"The allocation pool {_pool_text((start, end))} spans beyond the subnet cidr {cidr}.",
                kind="OutOfBoundsAllocationPool",
            )
    ordered = sorted(pools)
    for before, after in itertools.pairwise(ordered):
        if after[0] <= before[1]:
            raise Conflict(
                f"Found overlapping allocation pools: {_pool_text(before)} {_pool_text(after)} for "
                f"subnet {cidr}.",
                kind="OverlappingAllocationPools",
            )
    return ordered


def check_gateway(
    gateway: IPAddress | None, cidr: IPNetwork, pools: list[tuple[IPAddress, IPAddress]]
) -> None:
    if gateway is None:
        return
    if gateway.version != cidr.version:
        raise invalid_input(f"gateway_ip '{gateway}' does not match the ip_version '{cidr.version}'")
    if gateway in cidr and (
        gateway == cidr.network_address
        or (cidr.version == 4 and cidr.prefixlen < 31 and gateway == cidr.broadcast_address)
    ):
        raise invalid_input("Gateway is not valid on subnet")
    for pool in pools:
        if pool[0] <= gateway <= pool[1]:
            raise Conflict(
                f"Gateway ip {gateway} conflicts with allocation pool {_pool_text(pool)}.",
                kind="GatewayConflictWithAllocationPools",
            )


def check_servers_and_routes(values: dict[str, Any], version: int) -> None:
    servers = values.get("dns_nameservers", [])
    if len(servers) > MAX_NAMESERVERS:
        raise BadRequest(
            f"Unable to complete operation for subnet. The number of DNS nameservers exceeds the limit "
            f"{MAX_NAMESERVERS}.",
            kind="DNSNameServersExhausted",
        )
    for server in servers:
        if server.version != version:
            raise invalid_input(f"dns_nameserver '{server}' does not match the ip_version '{version}'")
    routes = values.get("host_routes", [])
    if len(routes) > MAX_HOST_ROUTES:
        raise BadRequest(
            f"Unable to complete operation for subnet. The number of host routes exceeds the limit "
            f"{MAX_HOST_ROUTES}.",
            kind="HostRoutesExhausted",
        )
    for destination, nexthop in routes:
        if destination.version != version or nexthop.version != version:
            raise invalid_input(
                f"Invalid route: destination {destination} nexthop {nexthop} does not match the "
                f"ip_version '{version}'"
            )


def check_dhcp(cidr: IPNetwork) -> None:
    """What Neutron refuses on a subnet that gets DHCP."""
    if cidr.prefixlen > cidr.max_prefixlen - 2:
        raise invalid_input("Subnet has a prefix length that is incompatible with DHCP service enabled")
    if cidr.is_multicast:
        raise invalid_input("Multicast IP subnet is not supported if enable_dhcp is True")
    if cidr.is_loopback:
        raise invalid_input("Loopback IP subnet is not supported if enable_dhcp is True")


def check_ipv6_modes(values: dict[str, Any], cidr: IPNetwork, enable_dhcp: bool) -> None:
    ra_mode, address_mode = values.get("ipv6_ra_mode"), values.get("ipv6_address_mode")
    if ra_mode is None and address_mode is None:
        return
    if cidr.version == 4:
        raise invalid_input("ipv6_ra_mode and ipv6_address_mode are not valid when ip_version is 4")
    if ra_mode is not None and address_mode is not None and ra_mode != address_mode:
        raise invalid_input(
            f"ipv6_ra_mode set to '{ra_mode}' with ipv6_address_mode set to '{address_mode}' is not "
            f"valid. If both attributes are set, they must be the same value"
        )
    if not enable_dhcp:
        raise invalid_input(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False"
        )
    if (address_mode or ra_mode) in ipam.AUTO_ADDRESS_MODES and cidr.prefixlen != 64:
        raise invalid_input(
            f"Invalid CIDR {cidr} for IPv6 address mode. OpenStack uses the EUI-64 address format, "
            f"which requires the prefix to be /64"
        )


# --- views and lookups --------------------------------------------------------------------------


def _pools_json(pools: list[tuple[IPAddress, IPAddress]]) -> list[dict[str, str]]:
    return [{"start": str(start), "end": str(end)} for start, end in pools]


def _routes_json(routes: list[tuple[IPNetwork, IPAddress]]) -> list[dict[str, str]]:
    return [{"destination": str(destination), "nexthop": str(nexthop)} for destination, nexthop in routes]


def view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "network_id": row["network_id"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "ip_version": row["ip_version"],
        "cidr": str(row["cidr"]),
        "gateway_ip": str(row["gateway_ip"]) if row["gateway_ip"] is not None else None,
        "allocation_pools": row["allocation_pools"],
        "dns_nameservers": list(row["dns_nameservers"]),
        "host_routes": row["host_routes"],
        "enable_dhcp": row["enable_dhcp"],
        "ipv6_ra_mode": row["ipv6_ra_mode"],
        "ipv6_address_mode": row["ipv6_address_mode"],
        "subnetpool_id": None,
        "segment_id": None,
        "service_types": [],
        "tags": list(row["tags"]),
        "revision_number": row["revision_number"],
        "created_at": iso_seconds(row["created_at"]),
        "updated_at": iso_seconds(row["updated_at"]),
    }


def visible(me: AuthContext, row: asyncpg.Record) -> bool:
    return (
        me.is_admin
        or row["network_shared"]
        or me.project_id in (row["project_id"], row["network_project_id"])
    )


def _visible_sql(me: AuthContext) -> Any:
    def where(sql: query.Sql) -> None:
        if not me.is_admin:
            project = sql.arg(me.project_id)
            sql.where(f"(s.project_id = {project} OR s.network_shared OR s.network_project_id = {project})")

    return where


async def find(conn: Any, me: AuthContext, subnet_id: str, *, lock: str = "") -> asyncpg.Record:
    row = await conn.fetchrow(f"{SELECT} WHERE s.id = $1 {lock and lock + ' OF s'}", subnet_id)
    if row is None or not visible(me, row):
        raise subnet_not_found(subnet_id)
    return row


async def _lock_network(conn: Any, network_id: str) -> asyncpg.Record:
    """Lock the network against other subnet changes and note the change on it (its `subnets`
    changed: Neutron bumps its revision; the version bump keeps the actor's copy honest)."""
    row = await conn.fetchrow(
        "UPDATE networks SET version = version + 1, revision_number = revision_number + 1, "
        "updated_at = now() WHERE id = $1 RETURNING *",
        network_id,
    )
    if row is None:
        raise network_not_found(network_id)
    return row


def _may_change(me: AuthContext, row: asyncpg.Record, action: str) -> None:
    if not (policy.owns(me, row["project_id"]) or policy.owns(me, row["network_project_id"])):
        raise policy_denied(f"rule:{action}")


# --- handlers -----------------------------------------------------------------------------------


def _prepare(me: AuthContext, body: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """One subnet of a create, checked before anything is written: its project, its values
    and what follows from them (gateway, pools, DHCP)."""
    values = parse(body, ATTRS, method="POST")
    for required in ("network_id", "ip_version"):
        if required not in values:
            raise bad_request(f"Failed to parse request. Required attribute '{required}' not specified")
    if "cidr" not in values:
        raise BadRequest(
            "Bad subnets request: a subnetpool must be specified in the absence of a cidr.", kind="BadRequest"
        )
    project_id = policy.project_for(me, values)
    cidr: IPNetwork = values["cidr"]
    if cidr.version != values["ip_version"]:
        raise invalid_input(f"cidr '{cidr}' does not match the ip_version '{values['ip_version']}'")
    enable_dhcp = values.get("enable_dhcp", True)
    gateway = values["gateway_ip"] if "gateway_ip" in values else cidr.network_address + 1
    if "allocation_pools" in values:
        pools = check_pools(values["allocation_pools"], cidr)
    else:
        pools = default_pools(cidr, gateway)
    check_gateway(gateway, cidr, pools)
    check_servers_and_routes(values, cidr.version)
    check_ipv6_modes(values, cidr, enable_dhcp)
    if enable_dhcp:
        check_dhcp(cidr)
    return project_id, values, {"cidr": cidr, "gateway": gateway, "pools": pools, "enable_dhcp": enable_dhcp}


async def _insert(
    conn: Any, me: AuthContext, project_id: str, values: dict[str, Any], derived: dict[str, Any]
) -> dict[str, Any]:
    """Insert one prepared subnet in the caller's transaction (its network locked, the quota
    taken, overlaps refused, the DHCP port served); its view."""
    cidr = derived["cidr"]
    network = await networks.find(conn, me, values["network_id"])
    if not policy.owns(me, network["project_id"]):
        raise policy_denied("rule:create_subnet")
    await enforce(conn, project_id, "subnet")
    network = await _lock_network(conn, network["id"])
    overlapping = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM subnets WHERE network_id = $1 AND cidr && $2::cidr)",
        network["id"],
        cidr,
    )
    if overlapping:
        raise invalid_input(
            f"Requested subnet with cidr: {cidr} for network: {network['id']} overlaps with another subnet"
        )
    row = await conn.fetchrow(
        "INSERT INTO subnets (id, network_id, project_id, name, description, ip_version, cidr, "
        "gateway_ip, enable_dhcp, dns_nameservers, allocation_pools, host_routes, ipv6_ra_mode, "
        "ipv6_address_mode, tags) VALUES (gen_random_uuid()::text, $1, $2, $3, $4, $5, $6, $7, $8, $9, "
        "$10, $11, $12, $13, $14) RETURNING *",
        network["id"],
        project_id,
        values.get("name", ""),
        values.get("description", ""),
        cidr.version,
        cidr,
        derived["gateway"],
        derived["enable_dhcp"],
        [str(s) for s in values.get("dns_nameservers", [])],
        _pools_json(derived["pools"]),
        _routes_json(values.get("host_routes", [])),
        values.get("ipv6_ra_mode"),
        values.get("ipv6_address_mode"),
        values.get("tags", []),
    )
    if derived["enable_dhcp"]:
        await dhcp.serve(conn, network, row["id"])
    if ipam.Subnet.of(row).auto_address:
        await _address_existing_ports(conn, row["id"], network["id"])
    await notifications.neutron(conn, "create", "subnet", view(row), values)
    return view(row)


async def create(request: web.Request) -> web.Response:
    """One subnet, or several (`{"subnets": [...]}`) in one transaction: all or none."""
    me = caller(request)
    policy.require_writer(me, "create_subnet")
    bodies, bulk = create_bodies(await json_body(request), "subnet")
    prepared = [_prepare(me, body) for body in bodies]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        created = [await _insert(conn, me, *item) for item in prepared]
    return json_response({"subnets": created} if bulk else {"subnet": created[0]}, status=201)


async def _address_existing_ports(conn: Any, subnet_id: str, network_id: str) -> None:
    """A new SLAAC subnet gives every port of the network its automatic address (Neutron's
    _add_auto_addrs_on_network_ports); the DHCP port already got its own."""
    ports = await conn.fetch(
        "SELECT id, mac_address FROM ports WHERE network_id = $1 AND device_owner <> $2",
        network_id,
        networks.DHCP_OWNER,
    )
    for port in ports:
        await ipam.allocate(conn, subnet_id, port["id"], mac=str(port["mac_address"]))
        await conn.execute(
            "UPDATE ports SET version = version + 1, revision_number = revision_number + 1, "
            "updated_at = now() WHERE id = $1",
            port["id"],
        )


async def list_subnets(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn:
        rows, links = await query.fetch(conn, request, COLLECTION, _visible_sql(me), is_admin=me.is_admin)
    body: dict[str, Any] = {"subnets": [query.select_fields(view(r), request.query) for r in rows]}
    if links:
        body["subnets_links"] = links
    return json_response(body)


async def show(request: web.Request) -> web.Response:
    row = await find(ctx(request).pool, caller(request), request.match_info["subnet_id"])
    return json_response({"subnet": query.select_fields(view(row), request.query)})


_COLUMNS = (
    "name",
    "description",
    "gateway_ip",
    "allocation_pools",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
)


async def update(request: web.Request) -> web.Response:
    me = caller(request)
    policy.require_writer(me, "update_subnet")
    subnet_id = request.match_info["subnet_id"]
    values = parse(resource_body(await json_body(request), "subnet"), ATTRS, method="PUT")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, subnet_id)
        _may_change(me, row, "update_subnet")
        network = await _lock_network(conn, row["network_id"])
        await ipam.lock(conn, subnet_id)
        row = await find(conn, me, subnet_id, lock="FOR UPDATE")
        cidr: IPNetwork = row["cidr"]
        current = ipam.Subnet.of(row)
        pools = (
            check_pools(values["allocation_pools"], cidr)
            if "allocation_pools" in values
            else list(current.pools)
        )
        gateway = values.get("gateway_ip", current.gateway_ip)
        if "gateway_ip" in values or "allocation_pools" in values:
            check_gateway(gateway, cidr, pools)
        check_servers_and_routes(values, cidr.version)
        enable_dhcp = values.get("enable_dhcp", row["enable_dhcp"])
        if enable_dhcp and not row["enable_dhcp"]:
            check_dhcp(cidr)
        if not enable_dhcp and (row["ipv6_ra_mode"] or row["ipv6_address_mode"]):
            raise invalid_input(
                "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False"
            )
        changes = {
            "name": values.get("name"),
            "description": values.get("description"),
            "gateway_ip": gateway,
            "allocation_pools": _pools_json(pools),
            "dns_nameservers": [str(s) for s in values["dns_nameservers"]]
            if "dns_nameservers" in values
            else None,
            "host_routes": _routes_json(values["host_routes"]) if "host_routes" in values else None,
            "enable_dhcp": enable_dhcp,
        }
        row = await conn.fetchrow(
            "UPDATE subnets SET name = coalesce($2, name), description = coalesce($3, description), "
            "gateway_ip = $4, allocation_pools = $5, dns_nameservers = coalesce($6, dns_nameservers), "
            "host_routes = coalesce($7, host_routes), enable_dhcp = $8, "
            "revision_number = revision_number + 1, updated_at = now() WHERE id = $1 RETURNING *",
            subnet_id,
            *(changes[c] for c in _COLUMNS),
        )
        if enable_dhcp and not current.enable_dhcp:
            await dhcp.serve(conn, network, subnet_id)
        elif current.enable_dhcp and not enable_dhcp:
            await dhcp.unserve(conn, network["id"], subnet_id)
    return json_response({"subnet": view(row)})


async def delete(request: web.Request) -> web.Response:
    me = caller(request)
    policy.require_writer(me, "delete_subnet")
    subnet_id = request.match_info["subnet_id"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, subnet_id)
        _may_change(me, row, "delete_subnet")
        await _lock_network(conn, row["network_id"])
        await ipam.lock(conn, subnet_id)
        if ipam.Subnet.of(row).auto_address:
            # Neutron takes automatic (SLAAC) addresses back from the ports instead of refusing.
            await conn.execute(
                "WITH gone AS (DELETE FROM ip_allocations WHERE subnet_id = $1 RETURNING port_id) "
                "UPDATE ports SET version = version + 1, revision_number = revision_number + 1, "
                "updated_at = now() WHERE id IN (SELECT port_id FROM gone) AND device_owner <> $2",
                subnet_id,
                networks.DHCP_OWNER,
            )
        in_use = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM ip_allocations a JOIN ports p ON p.id = a.port_id "
            "WHERE a.subnet_id = $1 AND p.device_owner <> $2)",
            subnet_id,
            networks.DHCP_OWNER,
        )
        if in_use:
            raise subnet_in_use(subnet_id)
        if row["enable_dhcp"]:
            await dhcp.unserve(conn, row["network_id"], subnet_id)
        await conn.execute("DELETE FROM ip_allocations WHERE subnet_id = $1", subnet_id)
        await conn.execute("DELETE FROM subnets WHERE id = $1", subnet_id)
        await notifications.neutron(conn, "delete", "subnet", view(row))
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/networking/v2.0/subnets", query.described(list_subnets, query.parameters(COLLECTION)))
    r.add_post("/networking/v2.0/subnets", create)
    r.add_get("/networking/v2.0/subnets/{subnet_id}", query.described(show, [query.fields_parameter()]))
    r.add_put("/networking/v2.0/subnets/{subnet_id}", update)
    r.add_delete("/networking/v2.0/subnets/{subnet_id}", delete)
