"""/networking/v2.0/ports, and the entry points the compute API uses to give servers ports.

`visible_network`, `create_port` and `port_addresses` are the reusable part: they run in the
caller's transaction and raise the same errors the HTTP API answers with, so a server boot
that cannot get a port fails exactly as `openstack port create` would. The handlers below are
thin around them.

A port is seen by its project, by the owner of its network, and by admins. The port actor owns
`status`, the binding (`binding:host_id`, `binding:vif_type`) and `admin_state_up` once the port
exists: a change of `admin_state_up` is a `port.set_admin_state` message in the request's
transaction, and every UPDATE the API makes of the row bumps `version`. The network's DHCP port
(device_owner network:dhcp) is the network's: it comes and goes with its DHCP subnets, and the
port API refuses to delete it or to move its addresses.

MAC addresses are random `fa:16:3e:xx:xx:xx`, unique per network by the table's UNIQUE
constraint: a collision is retried in a savepoint, and a MAC the user asked for that is taken
is Neutron's MacAddressInUse.
"""

from __future__ import annotations

import ipaddress
import secrets
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from actors import firewall, outbox
from api import notifications
from api.auth import AuthContext
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, ServiceUnavailable
from api.network import ipam, networks, policy, query, security_groups
from api.network.attributes import (
    STANDARD_READ_ONLY,
    Attr,
    boolean,
    create_bodies,
    dns_name,
    empty_list_only,
    ip_address,
    ip_subnet,
    mac_address,
    nullable_string,
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
    mac_in_use,
    network_not_found,
    policy_denied,
    port_not_found,
)
from api.network.quotas import enforce
from api.times import iso_seconds
from protocol import Envelope, Target
from protocol import firewall as f
from protocol import network as n
from protocol.states import PortStatus

DHCP_OWNER = networks.DHCP_OWNER
MAC_PREFIX = "fa:16:3e"
_MAC_ATTEMPTS = 8
_DNS_DOMAIN = "openstacklocal."  # Neutron's default dns_domain
_MAX_ADDRESS_PAIRS = 10
_VNIC_TYPES = ("normal",)


# --- attributes ---------------------------------------------------------------------------------


def fixed_ip_list(name: str, value: Any) -> list[dict[str, Any]]:
    """A list of {subnet_id}, {ip_address} or both; addresses parsed."""
    if not isinstance(value, list):
        raise bad_attribute(name, f"Invalid data format for fixed IP: '{value}'")
    result = []
    for entry in value:
        if not isinstance(entry, dict) or not entry or set(entry) - {"subnet_id", "ip_address"}:
            raise bad_attribute(name, f"Invalid data format for fixed IP: '{entry}'")
        item: dict[str, Any] = {}
        if "subnet_id" in entry:
            item["subnet_id"] = uuid_string(name, entry["subnet_id"])
        if "ip_address" in entry:
            raw = entry["ip_address"]
            item["ip_address"] = (
                raw
                if isinstance(raw, (ipaddress.IPv4Address, ipaddress.IPv6Address))
                else ip_address(name, raw)
            )
        result.append(item)
    addresses = [str(e["ip_address"]) for e in result if "ip_address" in e]
    if len(addresses) != len(set(addresses)):
        raise bad_attribute(name, f"Duplicate IP address in '{', '.join(addresses)}'")
    return result


def address_pairs(name: str, value: Any) -> list[dict[str, str]]:
    """[{ip_address: address or CIDR, mac_address?}]; the port's MAC fills a missing one later."""
    if not isinstance(value, list):
        raise bad_attribute(name, f"Allowed address pairs must be a list, not '{value}'")
    if len(value) > _MAX_ADDRESS_PAIRS:
        raise bad_attribute(name, f"Exceeded maximum amount of allowed address pairs ({_MAX_ADDRESS_PAIRS})")
    pairs = []
    for pair in value:
        if (
            not isinstance(pair, dict)
            or "ip_address" not in pair
            or set(pair) - {"ip_address", "mac_address"}
        ):
            raise bad_attribute(name, f"Invalid allowed address pair '{pair}'")
        raw = pair["ip_address"]
        ip = str(ip_subnet(name, raw)) if isinstance(raw, str) and "/" in raw else str(ip_address(name, raw))
        item = {"ip_address": ip}
        if pair.get("mac_address") is not None:
            item["mac_address"] = mac_address(name, pair["mac_address"])
        if item in pairs:
            raise bad_attribute(name, f"Duplicate address pair '{pair}'")
        pairs.append(item)
    return pairs


def _vnic_type(name: str, value: Any) -> str:
    if value not in _VNIC_TYPES:
        raise bad_attribute(name, f"'{value}' is not in {list(_VNIC_TYPES)}")
    return value


def _group_ids(name: str, value: Any) -> list[str]:
    """Security group ids (Neutron's convert_to_uuid_list_or_none); null is none."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_attribute(name, f"'{value}' is not a list")
    ids = [uuid_string(name, v) for v in value]
    duplicates = sorted({v for v in ids if ids.count(v) > 1})
    if duplicates:
        raise bad_attribute(name, f"Duplicate items in the list: '{', '.join(duplicates)}'")
    return ids


def _profile(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_attribute(name, f"'{value}' is not a dictionary")
    return value


ATTRS = {
    "network_id": Attr(uuid_string, put=False),
    "name": Attr(string()),
    "description": Attr(string()),
    "admin_state_up": Attr(boolean),
    "mac_address": Attr(mac_address),
    "fixed_ips": Attr(fixed_ip_list),
    "device_id": Attr(nullable_string(255)),
    "device_owner": Attr(nullable_string(255)),
    "allowed_address_pairs": Attr(address_pairs),
    "port_security_enabled": Attr(boolean),
    "dns_name": Attr(dns_name),
    "binding:host_id": Attr(nullable_string(255)),
    "binding:profile": Attr(_profile),
    "binding:vnic_type": Attr(_vnic_type),
    "tags": Attr(tags, put=False),
    "project_id": Attr(string(), put=False),
    "tenant_id": Attr(string(), put=False),
    "security_groups": Attr(_group_ids),
    "extra_dhcp_opts": Attr(empty_list_only("Extra DHCP options")),
    **read_only(*STANDARD_READ_ONLY, "status", "binding:vif_type", "binding:vif_details", "dns_assignment"),
}
_BINDING = ("binding:host_id", "binding:profile")
_COLUMNS = {
    "name": "name",
    "description": "description",
    "device_id": "device_id",
    "device_owner": "device_owner",
    "mac_address": "mac_address",
    "allowed_address_pairs": "allowed_address_pairs",
    "port_security_enabled": "port_security_enabled",
    "dns_name": "dns_name",
    "binding:host_id": "binding_host_id",
    "binding:profile": "binding_profile",
    "binding:vnic_type": "binding_vnic_type",
}

SELECT = (
    "SELECT p.*, net.project_id AS network_project_id FROM ports p JOIN networks net ON net.id = p.network_id"
)


def _fixed_ip_filters(sql: query.Sql, params: Any) -> None:
    """`fixed_ips=ip_address=X` and `fixed_ips=subnet_id=Y`: one allocation matching both."""
    wanted: dict[str, list[str]] = {}
    for raw in params.getall("fixed_ips", []):
        key, sep, value = raw.partition("=")
        if not sep or key not in ("ip_address", "subnet_id", "ip_address_substr"):
            raise bad_request(
                f"Invalid input for fixed_ips. Reason: '{raw}' is not a valid fixed_ips filter."
            )
        wanted.setdefault(key, []).append(value)
    if not wanted:
        return
    conditions = ["a.port_id = p.id"]
    if "ip_address" in wanted:
        conditions.append(f"host(a.ip_address) = ANY({sql.arg(wanted['ip_address'])}::text[])")
    if "subnet_id" in wanted:
        conditions.append(f"a.subnet_id = ANY({sql.arg(wanted['subnet_id'])}::text[])")
    for substring in wanted.get("ip_address_substr", []):
        conditions.append(f"strpos(host(a.ip_address), {sql.arg(substring)}) > 0")
    sql.where(f"EXISTS (SELECT 1 FROM ip_allocations a WHERE {' AND '.join(conditions)})")


COLLECTION = query.Collection(
    name="ports",
    alias="p",
    select=SELECT,
    not_found=port_not_found,
    extra_filters=_fixed_ip_filters,
    extra_filter_names=frozenset({"fixed_ips"}),
    fields={
        "id": query.text("p.id"),
        "name": query.text("p.name"),
        "description": query.text("p.description"),
        "network_id": query.text("p.network_id"),
        "project_id": query.text("p.project_id"),
        "tenant_id": query.text("p.project_id"),
        "status": query.text("p.status"),
        "admin_state_up": query.flag("p.admin_state_up"),
        "mac_address": query.Field("p.mac_address::text", parse=lambda name, value: value.lower()),
        "device_id": query.text("p.device_id"),
        "device_owner": query.text("p.device_owner"),
        "dns_name": query.text("p.dns_name"),
        "port_security_enabled": query.flag("p.port_security_enabled"),
        "binding:host_id": query.text("p.binding_host_id", admin_only=True, sortable=False),
        "binding:vnic_type": query.text("p.binding_vnic_type"),
        "revision_number": query.number("p.revision_number"),
        "qos_policy_id": query.text("NULL::text", sortable=False),  # no QoS policies
        "created_at": query.moment("p.created_at"),
        "updated_at": query.moment("p.updated_at"),
    },
)


# --- the entry points ---------------------------------------------------------------------------


async def visible_network(conn: Any, me: AuthContext, network_id: str) -> asyncpg.Record:
    """The network if the caller may see it; api.errors.NotFound (NetworkNotFound) otherwise."""
    return await networks.find(conn, me, network_id)


def random_mac() -> str:
    return f"{MAC_PREFIX}:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


async def insert_row(conn: Any, network_id: str, *, mac: str | None = None, **columns: Any) -> asyncpg.Record:
    """Insert a ports row (version 1) with the given MAC, or a random one retried on a
    collision; MacAddressInUse when a given MAC is taken on the network."""
    names = ["id", "version", "revision_number", "network_id", "mac_address", *columns]
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    sql = f"INSERT INTO ports ({', '.join(names)}) VALUES ({placeholders}) RETURNING *"
    for _ in range(1 if mac else _MAC_ATTEMPTS):
        candidate = mac or random_mac()
        try:
            async with conn.transaction():
                return await conn.fetchrow(
                    sql, str(uuid.uuid4()), 1, 1, network_id, candidate, *columns.values()
                )
        except asyncpg.UniqueViolationError:
            if mac:
                raise mac_in_use(network_id, mac) from None
        except asyncpg.ForeignKeyViolationError:
            raise network_not_found(network_id) from None
    raise ServiceUnavailable(
        f"Unable to generate unique mac on network {network_id}.", kind="MacAddressGenerationFailure"
    )


async def create_port(
    conn: Any,
    me: AuthContext,
    network: asyncpg.Record,
    *,
    project_id: str,
    device_id: str = "",
    device_owner: str = "",
    name: str = "",
    fixed_ips: list[dict[str, Any]] | None = None,
    description: str = "",
    admin_state_up: bool = True,
    mac_address: str | None = None,
    port_security_enabled: bool | None = None,
    allowed_address_pairs: list[dict[str, str]] | None = None,
    dns_name: str = "",
    binding_host_id: str = "",
    binding_profile: dict[str, Any] | None = None,
    binding_vnic_type: str = "normal",
    tags: list[str] | None = None,
    security_groups: list[str] | None = None,
    shards: int | None = None,
) -> asyncpg.Record:
    """Create a port on `network` (from `visible_network`) for `project_id`, in the caller's
    transaction: Neutron's policy checks for `me`, the port quota (atomically), the MAC and the
    fixed IPs (`fixed_ips` as in the API: {subnet_id}, {ip_address} or both; None: Neutron's
    default). Returns the ports row. Raises what the API answers: NetworkNotFound,
    OverQuota, IpAddressGenerationFailure, IpAddressAlreadyAllocated, InvalidIpForSubnet,
    MacAddressInUse, PolicyNotAuthorized, BadRequest, SecurityGroupNotFound. `security_groups`:
    the port's group ids (None: the project's default group when port security is on, Neutron's
    default); `shards` given: its groups' members changed, their hosts are nudged."""
    policy.require_writer(me, "create_port")
    if project_id != me.project_id and not me.is_admin:
        raise bad_request(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request "
            "requires admin privileges"
        )
    if fixed_ips is not None:
        fixed_ips = fixed_ip_list("fixed_ips", fixed_ips)  # the compute API passes addresses as text
    if device_owner == DHCP_OWNER:
        raise bad_request(f"device_owner {DHCP_OWNER} is reserved for the network's own DHCP port")
    async with conn.transaction():
        # Locked against a concurrent delete or unsharing; its current state decides.
        network = await networks.find(conn, me, network["id"], lock="FOR KEY SHARE")
        owner = policy.owns(me, network["project_id"])
        if not owner and not network["shared"]:
            raise policy_denied("rule:create_port")
        _network_owner_only(owner, device_owner.startswith("network:"), "device_owner")
        _network_owner_only(owner, any("ip_address" in f for f in fixed_ips or []), "fixed_ips:ip_address")
        _network_owner_only(owner, mac_address is not None, "mac_address")
        _network_owner_only(owner, bool(allowed_address_pairs), "allowed_address_pairs")
        _network_owner_only(owner, port_security_enabled is not None, "port_security_enabled")
        if (binding_host_id or binding_profile) and not me.is_admin:
            raise policy_denied("(rule:create_port and rule:create_port:binding:host_id)")
        security = (
            network["port_security_enabled"] if port_security_enabled is None else port_security_enabled
        )
        if allowed_address_pairs and not security:
            raise _pairs_need_security()
        groups = await _groups_for_new_port(conn, me, project_id, device_owner, security, security_groups)
        await enforce(conn, project_id, "port")
        row = await insert_row(
            conn,
            network["id"],
            mac=mac_address,
            project_id=project_id,
            name=name,
            description=description,
            admin_state_up=admin_state_up,
            status=PortStatus.DOWN,
            device_id=device_id,
            device_owner=device_owner,
            port_security_enabled=security,
            allowed_address_pairs=allowed_address_pairs or [],
            dns_name=dns_name,
            binding_host_id=binding_host_id,
            binding_profile=binding_profile or {},
            binding_vnic_type=binding_vnic_type,
            tags=tags or [],
            security_group_ids=groups,
        )
        if shards is not None:
            await firewall.arm(conn, groups, shards)
        await ipam.allocate_for_port(conn, network["id"], row["id"], str(row["mac_address"]), fixed_ips)
        addresses = (await ipam.addresses(conn, [row["id"]]))[row["id"]]
        request = {
            "network_id": network["id"],
            "name": name,
            "device_id": device_id,
            "device_owner": device_owner,
            "fixed_ips": fixed_ips,
            "admin_state_up": admin_state_up,
        }
        await notifications.neutron(conn, "create", "port", view(row, addresses, me), request)
    return row


async def _groups_for_new_port(
    conn: Any,
    me: AuthContext,
    project_id: str,
    device_owner: str,
    security: bool,
    asked: list[str] | None,
) -> list[str]:
    """A new port's security groups: those asked for (the project's, locked against a delete),
    or the project's default group when port security is on (not for the network's own
    service ports, as Neutron)."""
    if asked:
        if not security:
            raise _security_needed_for_groups()
        return await security_groups.for_port(conn, me, project_id, asked)
    if asked is None and security and not device_owner.startswith("network:"):
        return [await security_groups.ensure_default(conn, project_id)]
    return []


def _security_needed_for_groups() -> BadRequest:
    return BadRequest(
        "Port security must be enabled and port must have an IP address in order to use security groups.",
        kind="PortSecurityAndIPRequiredForSecurityGroups",
    )


def _groups_need_no_security() -> Conflict:
    return Conflict(
        "Port has security group associated. Cannot disable port security or ip address until security "
        "group is removed",
        kind="PortSecurityPortHasSecurityGroup",
    )


def _network_owner_only(owner: bool, asked: bool, attribute: str) -> None:
    if asked and not owner:
        raise policy_denied(f"(rule:create_port and rule:create_port:{attribute})")


def _pairs_need_security() -> Conflict:
    return Conflict(
        "Port Security must be enabled in order to have allowed address pairs on a port.",
        kind="AddressPairAndPortSecurityRequired",
    )


async def port_addresses(conn: Any, port_ids: list[str]) -> dict[str, list[tuple[str, int]]]:
    """Each port's fixed IPs as (address, IP version), IPv4 first, then by address."""
    found = await ipam.addresses(conn, port_ids)
    return {
        pid: [(a["ip_address"], ipaddress.ip_address(a["ip_address"]).version) for a in ips]
        for pid, ips in found.items()
    }


# --- views --------------------------------------------------------------------------------------


def view(
    row: asyncpg.Record,
    addresses: list[dict[str, str]],
    me: AuthContext,
    *,
    admin_state_up: bool | None = None,
) -> dict[str, Any]:
    mac = str(row["mac_address"])
    host_names = row["dns_name"] or None
    port = {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "network_id": row["network_id"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "mac_address": mac,
        "admin_state_up": row["admin_state_up"] if admin_state_up is None else admin_state_up,
        "status": row["status"],
        "device_id": row["device_id"],
        "device_owner": row["device_owner"],
        "fixed_ips": addresses,
        "allowed_address_pairs": [
            {"ip_address": p["ip_address"], "mac_address": p.get("mac_address") or mac}
            for p in row["allowed_address_pairs"]
        ],
        "extra_dhcp_opts": [],
        "security_groups": list(row["security_group_ids"]),
        "port_security_enabled": row["port_security_enabled"],
        "dns_name": row["dns_name"],
        "dns_assignment": [
            {"hostname": hostname, "ip_address": a["ip_address"], "fqdn": f"{hostname}.{_DNS_DOMAIN}"}
            for a in addresses
            for hostname in [host_names or "host-" + a["ip_address"].replace(".", "-").replace(":", "-")]
        ],
        "binding:vnic_type": row["binding_vnic_type"],
        "qos_policy_id": None,
        "qos_network_policy_id": None,
        "propagate_uplink_status": False,
        "tags": list(row["tags"]),
        "revision_number": row["revision_number"],
        "created_at": iso_seconds(row["created_at"]),
        "updated_at": iso_seconds(row["updated_at"]),
    }
    if me.is_admin:
        bound = row["binding_vif_type"] not in ("unbound", "binding_failed")
        port.update(
            {
                "binding:host_id": row["binding_host_id"],
                "binding:vif_type": row["binding_vif_type"],
                "binding:vif_details": {"port_filter": False} if bound else {},
                "binding:profile": row["binding_profile"],
            }
        )
    return port


# --- handlers -----------------------------------------------------------------------------------


def visible(me: AuthContext, row: asyncpg.Record) -> bool:
    return me.is_admin or me.project_id in (row["project_id"], row["network_project_id"])


def _visible_sql(me: AuthContext) -> Any:
    def where(sql: query.Sql) -> None:
        if not me.is_admin:
            project = sql.arg(me.project_id)
            sql.where(f"(p.project_id = {project} OR p.network_project_id = {project})")

    return where


async def find(conn: Any, me: AuthContext, port_id: str, *, lock: str = "") -> asyncpg.Record:
    row = await conn.fetchrow(f"{SELECT} WHERE p.id = $1 {lock and lock + ' OF p'}", port_id)
    if row is None or not visible(me, row):
        raise port_not_found(port_id)
    return row


def _prepare(me: AuthContext, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One port of a create, checked before anything is written: its project and values."""
    values = parse(body, ATTRS, method="POST")
    if "network_id" not in values:
        raise bad_request("Failed to parse request. Required attribute 'network_id' not specified")
    return policy.project_for(me, values), values


async def _insert(
    conn: Any, me: AuthContext, project_id: str, values: dict[str, Any], ctx_shards: int
) -> dict[str, Any]:
    """Create one prepared port in the caller's transaction; its view."""
    network = await visible_network(conn, me, values["network_id"])
    row = await create_port(
        conn,
        me,
        network,
        project_id=project_id,
        device_id=values.get("device_id", ""),
        device_owner=values.get("device_owner", ""),
        name=values.get("name", ""),
        fixed_ips=values.get("fixed_ips"),
        description=values.get("description", ""),
        admin_state_up=values.get("admin_state_up", True),
        mac_address=values.get("mac_address"),
        port_security_enabled=values.get("port_security_enabled"),
        allowed_address_pairs=values.get("allowed_address_pairs"),
        dns_name=values.get("dns_name", ""),
        binding_host_id=values.get("binding:host_id", ""),
        binding_profile=values.get("binding:profile"),
        binding_vnic_type=values.get("binding:vnic_type", "normal"),
        tags=values.get("tags"),
        security_groups=values.get("security_groups"),
        shards=ctx_shards,
    )
    addresses = (await ipam.addresses(conn, [row["id"]]))[row["id"]]
    return view(row, addresses, me)


async def create(request: web.Request) -> web.Response:
    """One port, or several (`{"ports": [...]}`) in one transaction: all or none."""
    me = caller(request)
    policy.require_writer(me, "create_port")
    bodies, bulk = create_bodies(await json_body(request), "port")
    prepared = [_prepare(me, body) for body in bodies]
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        created = [
            await _insert(conn, me, project_id, values, context.shards) for project_id, values in prepared
        ]
    return json_response({"ports": created} if bulk else {"port": created[0]}, status=201)


async def list_ports(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn:
        rows, links = await query.fetch(conn, request, COLLECTION, _visible_sql(me), is_admin=me.is_admin)
        addresses = await ipam.addresses(conn, [r["id"] for r in rows])
    body: dict[str, Any] = {
        "ports": [query.select_fields(view(r, addresses[r["id"]], me), request.query) for r in rows]
    }
    if links:
        body["ports_links"] = links
    return json_response(body)


async def show(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn:
        row = await find(conn, me, request.match_info["port_id"])
        addresses = (await ipam.addresses(conn, [row["id"]]))[row["id"]]
    return json_response({"port": query.select_fields(view(row, addresses, me), request.query)})


# What the firewall of a port is made of: a change of any of them reaches its host (and, for
# its addresses and groups, the hosts that filter by its groups' members).
_FILTERING = frozenset(
    {"security_groups", "port_security_enabled", "fixed_ips", "allowed_address_pairs", "mac_address"}
)


async def _firewall_changed(conn: Any, shards: int, row: asyncpg.Record, groups: set[str]) -> None:
    """In the update's transaction: nudge the port's own host (when bound) and arm the fan-out
    of every group it was or is in."""
    if row["binding_host_id"]:
        nudge = f.RefreshFirewall(security_group_id="")
        await outbox.send(conn, [Envelope.new(Target("agent", row["binding_host_id"]), nudge)], shards)
    await firewall.arm(conn, groups, shards)


async def _updated_groups(
    conn: Any, me: AuthContext, row: asyncpg.Record, values: dict[str, Any], security: bool
) -> list[str]:
    """The port's groups after the update (those asked for, locked; or its own), refused when
    the port's security is, or is being, turned off while it has groups (Neutron's rules)."""
    groups = list(row["security_group_ids"])
    if "security_groups" in values:
        groups = await security_groups.for_port(conn, me, row["project_id"], values["security_groups"])
    if not security and groups:
        if values.get("port_security_enabled") is False:
            raise _groups_need_no_security()
        raise _security_needed_for_groups()
    return groups


async def set_security_groups(conn: Any, row: asyncpg.Record, groups: list[str], shards: int) -> None:
    """Replace a port's groups (Nova's add/remove of a server's group), in the caller's
    transaction, with what an update of `security_groups` does: its revision, the firewall."""
    await conn.fetch(
        "SELECT id FROM security_groups WHERE id = ANY($1::text[]) ORDER BY id FOR KEY SHARE", groups
    )
    await conn.execute(
        "UPDATE ports SET security_group_ids = $2, version = version + 1, "
        "revision_number = revision_number + 1, updated_at = now() WHERE id = $1",
        row["id"],
        groups,
    )
    await _firewall_changed(conn, shards, row, set(groups) | set(row["security_group_ids"]))


def _check_update(me: AuthContext, row: asyncpg.Record, values: dict[str, Any]) -> None:
    """Neutron's update policies, and what this cloud keeps for the actors and the network."""
    owner_of_network = policy.owns(me, row["network_project_id"])
    for attribute in ("fixed_ips", "mac_address", "allowed_address_pairs", "port_security_enabled"):
        if attribute in values and not owner_of_network:
            raise policy_denied(f"(rule:update_port and rule:update_port:{attribute})")
    policy.admin_only(me, "update_port", values, ("mac_address", *_BINDING))
    bound = bool(row["binding_host_id"])
    if bound and ("mac_address" in values or any(name in values for name in _BINDING)):
        raise Conflict(
            f"Unable to complete operation on port {row['id']}, port is already bound, port type: "
            f"{row['binding_vif_type']}, old_mac {row['mac_address']}, new_mac "
            f"{values.get('mac_address', row['mac_address'])}.",
            kind="PortBound",
        )
    if values.get("device_owner") == DHCP_OWNER and row["device_owner"] != DHCP_OWNER:
        raise bad_request(f"device_owner {DHCP_OWNER} is reserved for the network's own DHCP port")
    if row["device_owner"] == DHCP_OWNER:
        for attribute in ("fixed_ips", "mac_address", "device_id", "device_owner"):
            if attribute in values:
                raise Conflict(
                    f"Port {row['id']} is the DHCP port of network {row['network_id']}: its {attribute} "
                    f"follows the network's DHCP subnets.",
                    kind="PortInUse",
                )


async def update(request: web.Request) -> web.Response:
    me = caller(request)
    policy.require_writer(me, "update_port")
    port_id = request.match_info["port_id"]
    values = parse(resource_body(await json_body(request), "port"), ATTRS, method="PUT")
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, port_id, lock="FOR UPDATE")
        old_groups = list(row["security_group_ids"])
        if row["network_project_id"] != me.project_id:
            policy.require_owner(me, row["project_id"], "update_port")
        _check_update(me, row, values)
        security = values.get("port_security_enabled", row["port_security_enabled"])
        if not security and values.get("allowed_address_pairs", row["allowed_address_pairs"]):
            raise _pairs_need_security()
        groups = await _updated_groups(conn, me, row, values, security)
        changes = {_COLUMNS[name]: value for name, value in values.items() if name in _COLUMNS}
        if "security_groups" in values:
            changes["security_group_ids"] = groups
        if changes or "fixed_ips" in values:
            if changes:
                assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
                try:
                    async with conn.transaction():
                        await conn.execute(
                            f"UPDATE ports SET {assignments} WHERE id = $1", port_id, *changes.values()
                        )
                except asyncpg.UniqueViolationError:
                    raise mac_in_use(row["network_id"], values["mac_address"]) from None
            if "fixed_ips" in values:
                await ipam.replace_for_port(
                    conn,
                    row["network_id"],
                    port_id,
                    str(changes.get("mac_address", row["mac_address"])),
                    values["fixed_ips"],
                )
            await conn.execute(
                "UPDATE ports SET version = version + 1, revision_number = revision_number + 1, "
                "updated_at = now() WHERE id = $1",
                port_id,
            )
            row = await find(conn, me, port_id)
        if "admin_state_up" in values:
            await outbox.send(
                conn,
                [
                    Envelope.new(
                        Target("port", port_id),
                        n.SetPortAdminState(admin_state_up=values["admin_state_up"]),
                        correlation_id=request["request_id"],
                    )
                ],
                context.shards,
            )
        if _FILTERING.intersection(values):
            await _firewall_changed(conn, context.shards, row, set(groups) | set(old_groups))
        addresses = (await ipam.addresses(conn, [port_id]))[port_id]
        await notifications.neutron(
            conn,
            "update",
            "port",
            view(row, addresses, me, admin_state_up=values.get("admin_state_up")),
            values,
        )
    return json_response({"port": view(row, addresses, me, admin_state_up=values.get("admin_state_up"))})


async def delete(request: web.Request) -> web.Response:
    me = caller(request)
    policy.require_writer(me, "delete_port")
    port_id = request.match_info["port_id"]
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, port_id, lock="FOR UPDATE")
        if row["network_project_id"] != me.project_id:
            policy.require_owner(me, row["project_id"], "delete_port")
        if row["device_owner"] == DHCP_OWNER:
            raise Conflict(
                f"Port {port_id} cannot be deleted directly via the port API: it is the DHCP port of "
                f"network {row['network_id']}, removed with the network's last DHCP subnet.",
                kind="ServicePortInUse",
            )
        addresses = (await ipam.addresses(conn, [port_id]))[port_id]
        await conn.execute("DELETE FROM ports WHERE id = $1", port_id)  # its ip_allocations cascade
        await firewall.arm(conn, row["security_group_ids"], context.shards)
        await notifications.neutron(conn, "delete", "port", view(row, addresses, me))
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    listed = query.parameters(COLLECTION, query.FIXED_IPS_PARAMETER)
    r.add_get("/networking/v2.0/ports", query.described(list_ports, listed))
    r.add_post("/networking/v2.0/ports", create)
    r.add_get("/networking/v2.0/ports/{port_id}", query.described(show, [query.fields_parameter()]))
    r.add_put("/networking/v2.0/ports/{port_id}", update)
    r.add_delete("/networking/v2.0/ports/{port_id}", delete)
