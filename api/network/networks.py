"""/networking/v2.0/networks: create, list, show, update, delete.

A network is seen by its project, by everyone when it is shared or external, and by admins; one
that cannot be seen is "not found". Only its project (or an admin) changes it; `shared`,
`router:external` and the provider attributes are the admin's (Neutron's default policy).

The network actor owns `status`, and `admin_state_up` once the network exists: a change of
`admin_state_up` is a `network.set_admin_state` message written in the request's transaction,
and every UPDATE the API makes of the row bumps `version`, so the actor's cached copy is never
written back over it.

Delete is Neutron's: refused while ports other than the network's DHCP port are on it;
otherwise the DHCP port, the subnets and the network go in one transaction.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from actors import outbox
from api import notifications
from api.auth import AuthContext
from api.context import caller, ctx, json_body, json_response
from api.errors import Conflict, NotFound
from api.network import policy, query
from api.network.attributes import (
    STANDARD_READ_ONLY,
    Attr,
    boolean,
    create_bodies,
    dns_domain,
    integer,
    parse,
    read_only,
    resource_body,
    string,
    string_list,
    tags,
)
from api.network.faults import invalid_input, network_in_use, network_not_found
from api.network.quotas import enforce
from api.times import iso_seconds
from protocol import Envelope, Target
from protocol import network as n
from protocol.states import NetworkStatus

DHCP_OWNER = "network:dhcp"
# Tenant networks are VXLAN (a VNI each, spanning the hosts: hostagent/network): the physical
# network's 1500 less the 50 bytes of VXLAN over IPv4; an admin may still ask for a host-local
# "local" network, which has no overhead.
PHYSICAL_MTU = 1500
VXLAN_OVERHEAD = 50
MAX_MTU = {"vxlan": PHYSICAL_MTU - VXLAN_OVERHEAD, "local": PHYSICAL_MTU}
MAX_VNI = 2**24 - 1
AVAILABILITY_ZONE = "nova"
_PROVIDER = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")


def _anything(name: str, value: Any) -> Any:
    return value


ATTRS = {
    "name": Attr(string()),
    "description": Attr(string()),
    "admin_state_up": Attr(boolean),
    "shared": Attr(boolean),
    "router:external": Attr(boolean),
    "mtu": Attr(integer(68, 0x7FFFFFFF)),
    "port_security_enabled": Attr(boolean),
    "dns_domain": Attr(dns_domain),
    "availability_zone_hints": Attr(string_list(255), put=False),
    "tags": Attr(tags, put=False),
    "project_id": Attr(string(), put=False),
    "tenant_id": Attr(string(), put=False),
    **{name: Attr(_anything, put=False) for name in _PROVIDER},
    **read_only(*STANDARD_READ_ONLY, "status", "subnets", "availability_zones"),
}
_COLUMNS = {
    "name": "name",
    "description": "description",
    "shared": "shared",
    "router:external": "external",
    "mtu": "mtu",
    "port_security_enabled": "port_security_enabled",
    "dns_domain": "dns_domain",
}

SELECT = (
    "SELECT n.*, ARRAY(SELECT s.id FROM subnets s WHERE s.network_id = n.id ORDER BY s.created_at, s.id) "
    "AS subnet_ids FROM networks n"
)

COLLECTION = query.Collection(
    name="networks",
    alias="n",
    select=SELECT,
    not_found=network_not_found,
    fields={
        "id": query.text("n.id"),
        "name": query.text("n.name"),
        "description": query.text("n.description"),
        "status": query.text("n.status"),
        "admin_state_up": query.flag("n.admin_state_up"),
        "shared": query.flag("n.shared"),
        "router:external": query.flag("n.external"),
        "mtu": query.number("n.mtu"),
        "port_security_enabled": query.flag("n.port_security_enabled"),
        "project_id": query.text("n.project_id"),
        "tenant_id": query.text("n.project_id"),
        "dns_domain": query.text("n.dns_domain"),
        "revision_number": query.number("n.revision_number"),
        "created_at": query.moment("n.created_at"),
        "updated_at": query.moment("n.updated_at"),
        "provider:network_type": query.text("n.network_type", admin_only=True),
        "provider:segmentation_id": query.number("n.segmentation_id", admin_only=True),
        # attributes no network here has a value of: a filter on them still filters
        "provider:physical_network": query.text("NULL::text", admin_only=True, sortable=False),
        "is_default": query.flag("false"),
        "qos_policy_id": query.text("NULL::text", sortable=False),
    },
)


def visible(me: AuthContext, row: asyncpg.Record) -> bool:
    return me.is_admin or row["project_id"] == me.project_id or row["shared"] or row["external"]


def _visible_sql(me: AuthContext) -> Any:
    def where(sql: query.Sql) -> None:
        if not me.is_admin:
            sql.where(f"(n.project_id = {sql.arg(me.project_id)} OR n.shared OR n.external)")

    return where


async def find(conn: Any, me: AuthContext, network_id: str, *, lock: str = "") -> asyncpg.Record:
    """The network if the caller may see it (404 NetworkNotFound otherwise); `lock` is a row
    lock clause ("FOR UPDATE", "FOR KEY SHARE") taken on it."""
    row = await conn.fetchrow(f"{SELECT} WHERE n.id = $1 {lock and lock + ' OF n'}", network_id)
    if row is None or not visible(me, row):
        raise network_not_found(network_id)
    return row


def view(row: asyncpg.Record, me: AuthContext, *, admin_state_up: bool | None = None) -> dict[str, Any]:
    network = {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "status": row["status"],
        "admin_state_up": row["admin_state_up"] if admin_state_up is None else admin_state_up,
        "shared": row["shared"],
        "router:external": row["external"],
        "mtu": row["mtu"],
        "port_security_enabled": row["port_security_enabled"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "subnets": list(row["subnet_ids"]),
        "availability_zone_hints": list(row["availability_zone_hints"]),
        "availability_zones": [AVAILABILITY_ZONE],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "is_default": False,
        "l2_adjacency": True,
        "qos_policy_id": None,
        "dns_domain": row["dns_domain"],
        "tags": list(row["tags"]),
        "revision_number": row["revision_number"],
        "created_at": iso_seconds(row["created_at"]),
        "updated_at": iso_seconds(row["updated_at"]),
    }
    if me.is_admin:
        network.update(
            {
                "provider:network_type": row["network_type"],
                "provider:physical_network": None,
                "provider:segmentation_id": row["segmentation_id"],
            }
        )
    return network


def _check(values: dict[str, Any], existing_type: str | None = None) -> None:
    """What the converters cannot know: this cloud's network types, MTU and zones. A new
    network's type defaults to vxlan (written into `values`); an update checks against the
    network's own (`existing_type`)."""
    network_type = values.get("provider:network_type") or existing_type or "vxlan"
    if network_type not in MAX_MTU:
        raise invalid_input(f"network_type value '{network_type}' not supported")
    if existing_type is None:
        values["provider:network_type"] = network_type
    if values.get("provider:physical_network") is not None:
        raise invalid_input(f"provider:physical_network specified for {network_type.upper()} network")
    segment = values.get("provider:segmentation_id")
    if network_type == "local" and segment is not None:
        raise invalid_input("provider:segmentation_id is not allowed for network_type 'local'")
    if segment is not None and (
        isinstance(segment, bool) or not isinstance(segment, int) or not 1 <= segment <= MAX_VNI
    ):
        raise invalid_input(f"{segment} is not a valid VXLAN VNI, VNI must be in the range 1 to {MAX_VNI}")
    if values.get("mtu", 0) > MAX_MTU[network_type]:
        raise invalid_input(f"Requested MTU is too big, maximum is {MAX_MTU[network_type]}")
    for zone in values.get("availability_zone_hints", []):
        if zone != AVAILABILITY_ZONE:
            raise NotFound(f"AvailabilityZone {zone} could not be found.", kind="AvailabilityZoneNotFound")


def _prepare(me: AuthContext, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One network of a create, checked before anything is written: its project and values."""
    values = parse(body, ATTRS, method="POST")
    project_id = policy.project_for(me, values)
    policy.admin_only(
        me,
        "create_network",
        values,
        ("shared", "router:external", *_PROVIDER),
        defaults={"shared": False, "router:external": False, **dict.fromkeys(_PROVIDER)},
    )
    _check(values)
    return project_id, values


async def _next_vni(conn: Any) -> int:
    """A VXLAN network's VNI: the next of the vxlan_vni sequence that no network holds (an admin
    may have named one ahead of it). Unique by construction, and by the unique index on
    (network_type, segmentation_id) should two transactions ever race for a named one."""
    while True:
        vni = int(await conn.fetchval("SELECT nextval('vxlan_vni')"))
        if not await conn.fetchval(
            "SELECT 1 FROM networks WHERE network_type = 'vxlan' AND segmentation_id = $1", vni
        ):
            return vni


async def _insert(conn: Any, me: AuthContext, project_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """Insert one prepared network in the caller's transaction, under the project's quota; its view."""
    admin_state_up = values.get("admin_state_up", True)
    network_type = values["provider:network_type"]
    segment = values.get("provider:segmentation_id")
    await enforce(conn, project_id, "network")
    if segment is not None and await conn.fetchval(
        "SELECT 1 FROM networks WHERE network_type = $1 AND segmentation_id = $2", network_type, segment
    ):
        raise Conflict(
            f"Unable to create the network. The tunnel ID {segment} is in use.", kind="TunnelIdInUse"
        )
    if network_type == "vxlan" and segment is None:
        segment = await _next_vni(conn)
    row = await conn.fetchrow(
        "INSERT INTO networks (id, version, project_id, name, description, status, admin_state_up, "
        "shared, external, mtu, port_security_enabled, dns_domain, availability_zone_hints, tags, "
        "revision_number, network_type, segmentation_id) VALUES (gen_random_uuid()::text, 1, $1, $2, $3, "
        "$4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $14) RETURNING *, '{}'::text[] AS subnet_ids",
        project_id,
        values.get("name", ""),
        values.get("description", ""),
        NetworkStatus.ACTIVE if admin_state_up else NetworkStatus.DOWN,
        admin_state_up,
        values.get("shared", False),
        values.get("router:external", False),
        values.get("mtu", MAX_MTU[network_type]),
        values.get("port_security_enabled", True),
        values.get("dns_domain", ""),
        list(dict.fromkeys(values.get("availability_zone_hints", []))),
        values.get("tags", []),
        network_type,
        segment,
    )
    await notifications.neutron(conn, "create", "network", view(row, me), values)
    return view(row, me)


async def create(request: web.Request) -> web.Response:
    """One network, or several (`{"networks": [...]}`) in one transaction: all or none."""
    me = caller(request)
    policy.require_writer(me, "create_network")
    bodies, bulk = create_bodies(await json_body(request), "network")
    prepared = [_prepare(me, body) for body in bodies]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        created = [await _insert(conn, me, project_id, values) for project_id, values in prepared]
    return json_response({"networks": created} if bulk else {"network": created[0]}, status=201)


async def list_networks(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn:
        rows, links = await query.fetch(conn, request, COLLECTION, _visible_sql(me), is_admin=me.is_admin)
    body: dict[str, Any] = {"networks": [query.select_fields(view(r, me), request.query) for r in rows]}
    if links:
        body["networks_links"] = links
    return json_response(body)


async def show(request: web.Request) -> web.Response:
    me = caller(request)
    row = await find(ctx(request).pool, me, request.match_info["network_id"])
    return json_response({"network": query.select_fields(view(row, me), request.query)})


async def _refuse_unsharing(conn: Any, row: asyncpg.Record) -> None:
    """Neutron's InvalidSharedSetting: a network other projects use stays shared."""
    used = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ports WHERE network_id = $1 AND project_id <> $2) "
        "OR EXISTS (SELECT 1 FROM subnets WHERE network_id = $1 AND project_id <> $2)",
        row["id"],
        row["project_id"],
    )
    if used:
        raise Conflict(
            f"Unable to reconfigure sharing settings for network {row['id']}. Multiple tenants are using it.",
            kind="InvalidSharedSetting",
        )


async def update(request: web.Request) -> web.Response:
    me = caller(request)
    policy.require_writer(me, "update_network")
    network_id = request.match_info["network_id"]
    values = parse(resource_body(await json_body(request), "network"), ATTRS, method="PUT")
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, network_id, lock="FOR UPDATE")
        _check(values, row["network_type"])
        policy.require_owner(me, row["project_id"], "update_network")
        policy.admin_only(me, "update_network", values, ("shared", "router:external"))
        if row["shared"] and values.get("shared") is False:
            await _refuse_unsharing(conn, row)
        changes = {_COLUMNS[name]: value for name, value in values.items() if name in _COLUMNS}
        if changes:
            assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
            await conn.execute(
                f"UPDATE networks SET {assignments}, version = version + 1, "
                "revision_number = revision_number + 1, updated_at = now() WHERE id = $1",
                network_id,
                *changes.values(),
            )
            row = await find(conn, me, network_id)
        if "admin_state_up" in values:
            await outbox.send(
                conn,
                [
                    Envelope.new(
                        Target("network", network_id),
                        n.SetNetworkAdminState(admin_state_up=values["admin_state_up"]),
                        correlation_id=request["request_id"],
                    )
                ],
                context.shards,
            )
        await notifications.neutron(
            conn, "update", "network", view(row, me, admin_state_up=values.get("admin_state_up")), values
        )
    return json_response({"network": view(row, me, admin_state_up=values.get("admin_state_up"))})


async def delete(request: web.Request) -> web.Response:
    me = caller(request)
    policy.require_writer(me, "delete_network")
    network_id = request.match_info["network_id"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, network_id, lock="FOR UPDATE")
        policy.require_owner(me, row["project_id"], "delete_network")
        in_use = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM ports WHERE network_id = $1 AND device_owner <> $2)",
            network_id,
            DHCP_OWNER,
        )
        if in_use:
            raise network_in_use(network_id)
        await conn.execute(
            "DELETE FROM ports WHERE network_id = $1", network_id
        )  # the DHCP port; its IPs cascade
        await conn.execute("DELETE FROM subnets WHERE network_id = $1", network_id)
        await conn.execute("DELETE FROM networks WHERE id = $1", network_id)
        await notifications.neutron(conn, "delete", "network", view(row, me))
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/networking/v2.0/networks", query.described(list_networks, query.parameters(COLLECTION)))
    r.add_post("/networking/v2.0/networks", create)
    r.add_get("/networking/v2.0/networks/{network_id}", query.described(show, [query.fields_parameter()]))
    r.add_put("/networking/v2.0/networks/{network_id}", update)
    r.add_delete("/networking/v2.0/networks/{network_id}", delete)
