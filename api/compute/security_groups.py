"""/compute/v2.1/os-security-groups and /os-security-group-rules: Nova's deprecated proxy of
Neutron's security groups (microversions 2.1 to 2.35; from 2.36 on the routes answer 404, as
Nova's proxy APIs do), and Nova's shapes of groups and rules.

Nova keeps nothing of its own here: it asks Neutron and reshapes the answers
(nova/network/security_group_api.py, nova/api/openstack/compute/security_groups.py). So does
this module, through the network service's published api/network/security_group_proxy.py, in
one transaction per request. A group is `{id, name, description, tenant_id, rules}` with only
its ingress rules; a rule is `{id, parent_group_id, ip_protocol, from_port, to_port, ip_range,
group}`, its remote either a group (name and project) or a CIDR (no prefix: 0.0.0.0/0). Nova's
rules are ingress rules, their ethertype taken from the CIDR (IPv4 without one), ICMP's -1 any
type or code. Nova's words where it has its own checks; Neutron's where Nova passes Neutron's
refusal on, with Nova's status for it (a conflict on delete is 400, on create 403).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
import uuid
from typing import Any

from aiohttp import web

from api.auth import AuthContext
from api.compute import query_params
from api.compute.links import MAX_LIMIT
from api.compute.microversion import requested
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden, NotFound
from api.network import security_group_proxy as proxy
from api.query_doc import documented, param

MAX_VERSION = (2, 35)  # Nova's MAX_PROXY_API_SUPPORT_VERSION
POLICY = "os_compute_api:os-security-groups"
ANY_NETWORK = "0.0.0.0/0"


# --- Nova's shapes --------------------------------------------------------------------------------


def nova_rule(rule: dict[str, Any], remotes: dict[str, tuple[str, str]]) -> dict[str, Any] | None:
    """A Neutron rule as Nova shows it (`_convert_to_nova_security_group_rule_format`, then the
    API's format); None when its remote group is not one the caller may see (Nova leaves the
    rule out). A rule with a protocol and no ports shows TCP and UDP's whole range, -1 for
    the others."""
    protocol = rule["protocol"]
    if protocol and rule["port_range_min"] is None and rule["port_range_max"] is None:
        from_port, to_port = (1, 65535) if protocol.upper() in ("TCP", "UDP") else (-1, -1)
    else:
        from_port, to_port = rule["port_range_min"], rule["port_range_max"]
    shown: dict[str, Any] = {
        "id": rule["id"],
        "parent_group_id": rule["security_group_id"],
        "ip_protocol": protocol,
        "from_port": from_port,
        "to_port": to_port,
        "group": {},
        "ip_range": {},
    }
    if rule["remote_group_id"]:
        if rule["remote_group_id"] not in remotes:
            return None
        name, project_id = remotes[rule["remote_group_id"]]
        shown["group"] = {"name": name, "tenant_id": project_id}
    else:
        shown["ip_range"] = {"cidr": rule["remote_ip_prefix"] or ANY_NETWORK}
    return shown


def nova_group(group: dict[str, Any], remotes: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """A Neutron group as Nova shows it: its ingress rules only (Nova's rules are ingress)."""
    rules = [nova_rule(r, remotes) for r in group["security_group_rules"] if r["direction"] == "ingress"]
    return {
        "id": group["id"],
        "name": group["name"],
        "description": group["description"],
        "tenant_id": group["project_id"],
        "rules": [r for r in rules if r is not None],
    }


async def remotes_of(conn: Any, me: AuthContext, groups: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """(name, project) of the groups these groups' rules name as their remote, by id."""
    known = {g["id"]: (g["name"], g["project_id"]) for g in groups}
    wanted = {
        r["remote_group_id"]
        for g in groups
        for r in g["security_group_rules"]
        if r["remote_group_id"] and r["remote_group_id"] not in known
    }
    if wanted:
        known.update(await proxy.names(conn, me, sorted(wanted)))
    return known


async def nova_groups(conn: Any, me: AuthContext, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neutron's groups in Nova's shape, sorted as Nova sorts them (project, then name)."""
    remotes = await remotes_of(conn, me, groups)
    return sorted((nova_group(g, remotes) for g in groups), key=lambda g: (g["tenant_id"], g["name"]))


# --- Nova's checks ----------------------------------------------------------------------------------


def _proxy_version(request: web.Request) -> None:
    """The proxy APIs end at 2.35: later microversions do not have the route (Nova's
    VersionNotFoundForAPIMethod, a bare 404)."""
    if requested(request) > MAX_VERSION:
        raise NotFound("The resource could not be found.")


def group_id(value: Any) -> str:
    """Nova's validate_id."""
    if not isinstance(value, str):
        raise BadRequest("Security group id should be uuid")
    try:
        uuid.UUID(value)
    except ValueError:
        raise BadRequest("Security group id should be uuid") from None
    return value


def _from_body(document: Any, key: str) -> dict[str, Any]:
    if not document:
        raise BadRequest("The request body can't be empty")
    value = document.get(key) if isinstance(document, dict) else None
    if value is None:
        raise BadRequest(f"Missing parameter {key}")
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid input for field/attribute {key}. Value: {value!r}. It must be an object")
    return value


def _property(data: dict[str, Any], name: str) -> str:
    """Nova's validate_property for Neutron: any string of at most 255 characters (empty too)."""
    value = data.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name} is not a string or unicode")
    if len(value) > 255:
        raise BadRequest(f"{name} has {len(value)} characters, more than 255.")
    return value


def parse_cidr(value: Any) -> str:
    """Nova's parse_cidr: none is any IPv4 address; a network with a prefix length, as given."""
    if not value:
        return ANY_NETWORK
    text = urllib.parse.unquote(value) if isinstance(value, str) else ""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise BadRequest(f"{value} is not a valid IP network.") from None
    if "/" not in text or not text.split("/", 1)[1]:
        raise BadRequest(f"{value} is not a valid IP network.")
    return text


def _ports(protocol: str, from_port: Any, to_port: Any) -> tuple[int, int]:
    """Nova's checks of a rule's ports (ICMP: type and code) once a protocol is given."""
    upper = protocol.upper()
    try:
        low, high = int(from_port), int(to_port)
    except (TypeError, ValueError):
        reason = (
            "Type and Code must be integers for ICMP protocol type"
            if upper == "ICMP"
            else "To and From ports must be integers"
        )
        raise BadRequest(f"Invalid input received: {reason}") from None
    if upper not in ("TCP", "UDP", "ICMP"):
        raise BadRequest(f"Invalid IP protocol {protocol}.")
    if upper in ("TCP", "UDP") and low > high:
        raise BadRequest(f"Invalid port range {low}:{high}. Former value cannot be greater than the later")
    if upper in ("TCP", "UDP") and (low < 1 or high > 65535):
        raise BadRequest(f"Invalid port range {low}:{high}. Valid {upper} ports should be between 1-65535")
    if upper == "ICMP" and not (-1 <= low <= 255 and -1 <= high <= 255):
        raise BadRequest(f"Invalid port range {low}:{high}. For ICMP, the type:code must be valid")
    return low, high


def ingress_rule(
    protocol: Any, from_port: Any, to_port: Any, *, remote_group: str | None, cidr: str | None
) -> dict[str, Any] | None:
    """Nova's _new_ingress_rule: the rule's values, or None when a CIDR rule lacks its
    protocol or ports. A group rule without ports opens ICMP's every type and code and TCP and
    UDP's every port; one without a protocol opens everything."""
    values: dict[str, Any] = {}
    if remote_group:
        values["group_id"] = remote_group
        upper = str(protocol).upper() if protocol else ""
        if from_port is None and to_port is None:
            if upper == "ICMP":
                from_port = to_port = -1
            elif upper in ("TCP", "UDP"):
                from_port, to_port = 1, 65535
    elif cidr:
        values["cidr"] = cidr
    if protocol and from_port is not None and to_port is not None:
        values["protocol"] = str(protocol)
        values["from_port"], values["to_port"] = _ports(str(protocol), from_port, to_port)
    elif cidr:
        return None
    return values


def neutron_rule(parent_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """Nova's request to Neutron for the rule (_make_neutron_security_group_rules_list)."""
    cidr = values.get("cidr")
    ipv6 = cidr is not None and ipaddress.ip_network(cidr, strict=False).version == 6
    body: dict[str, Any] = {
        "security_group_id": parent_id,
        "direction": "ingress",
        "ethertype": "IPv6" if ipv6 else "IPv4",
        "protocol": values.get("protocol"),
        "remote_ip_prefix": cidr,
        "remote_group_id": values.get("group_id"),
    }
    if values.get("from_port", -1) != -1:
        body["port_range_min"] = values["from_port"]
    if values.get("to_port", -1) != -1:
        body["port_range_max"] = values["to_port"]
    return body


# --- /os-security-groups ------------------------------------------------------------------------


async def list_groups(request: web.Request) -> web.Response:
    """The caller's project's groups (with `all_tenants`, an admin's: every project's), paged by
    `offset` and `limit` in the order Neutron lists them, each page sorted as Nova sorts it."""
    _proxy_version(request)
    me = caller(request)
    offset = query_params.integer(request, "offset") or 0
    limit = min(query_params.integer(request, "limit") or MAX_LIMIT, MAX_LIMIT)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        groups = await proxy.groups(conn, me, all_projects="all_tenants" in request.query)
        shown = await nova_groups(conn, me, groups[offset : offset + limit])
    return json_response({"security_groups": shown})


async def show_group(request: web.Request) -> web.Response:
    _proxy_version(request)
    me = caller(request)
    wanted = group_id(request.match_info["group_id"])
    async with ctx(request).pool.acquire() as conn:
        group = await proxy.group(conn, me, wanted)
        (shown,) = await nova_groups(conn, me, [group])
    return json_response({"security_group": shown})


async def create_group(request: web.Request) -> web.Response:
    _proxy_version(request)
    me = caller(request)
    me.require_writer(f"{POLICY}:create")
    data = _from_body(await json_body(request), "security_group")
    name, description = _property(data, "name"), _property(data, "description")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        try:
            group = await proxy.create_group(conn, me, name, description)
        except Conflict as exc:
            # Nova: Neutron's 409 (over quota, a second "default") is SecurityGroupLimitExceeded
            raise Forbidden(exc.message) from None
        (shown,) = await nova_groups(conn, me, [group])
    return json_response({"security_group": shown})


async def update_group(request: web.Request) -> web.Response:
    _proxy_version(request)
    me = caller(request)
    me.require_writer(f"{POLICY}:update")
    wanted = group_id(request.match_info["group_id"])
    document = await json_body(request)
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        await proxy.group(conn, me, wanted)  # Nova finds the group before it reads the body
        data = _from_body(document, "security_group")
        name, description = _property(data, "name"), _property(data, "description")
        try:
            group = await proxy.update_group(
                conn,
                me,
                wanted,
                name,
                description,
                shards=context.shards,
                correlation_id=request["request_id"],
            )
        except Conflict as exc:  # the default group keeps its name
            raise BadRequest(exc.message) from None
        (shown,) = await nova_groups(conn, me, [group])
    return json_response({"security_group": shown})


async def delete_group(request: web.Request) -> web.Response:
    _proxy_version(request)
    me = caller(request)
    me.require_writer(f"{POLICY}:delete")
    wanted = group_id(request.match_info["group_id"])
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        try:
            await proxy.delete_group(
                conn, me, wanted, shards=context.shards, correlation_id=request["request_id"]
            )
        except Conflict as exc:  # Nova: Neutron's 409 (in use, the default group) is Invalid, 400
            raise BadRequest(exc.message) from None
    return web.Response(status=202)


# --- /os-security-group-rules --------------------------------------------------------------------


async def _new_rule(conn: Any, me: AuthContext, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The parent group's id and the rule's values, checked in Nova's order: the parent, the
    remote group, then the rule itself."""
    parent = (await proxy.group(conn, me, group_id(data.get("parent_group_id"))))["id"]
    remote = data.get("group_id")
    if remote is not None:
        remote = (await proxy.group(conn, me, group_id(remote)))["id"]
    cidr = None if remote is not None else parse_cidr(data.get("cidr"))
    values = ingress_rule(
        data.get("ip_protocol"), data.get("from_port"), data.get("to_port"), remote_group=remote, cidr=cidr
    )
    if values is None:
        raise BadRequest("Not enough parameters to build a valid rule.")
    if "cidr" in values:
        network, _, length = values["cidr"].partition("/")
        if network not in ("0.0.0.0", "::") and length == "0":
            raise BadRequest(f"Bad prefix for network in cidr {values['cidr']}")
    return parent, values


async def create_rule(request: web.Request) -> web.Response:
    _proxy_version(request)
    me = caller(request)
    me.require_writer(f"{POLICY}:rule:create")
    data = _from_body(await json_body(request), "security_group_rule")
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        parent, values = await _new_rule(conn, me, data)
        try:
            rule = await proxy.create_rule(
                conn,
                me,
                neutron_rule(parent, values),
                shards=context.shards,
                correlation_id=request["request_id"],
            )
        except Conflict as exc:
            if exc.kind == "SecurityGroupRuleExists":
                raise BadRequest(f"This rule already exists in group {parent}") from None
            raise Forbidden(exc.message) from None  # Nova: Neutron's other 409s (over quota)
        remotes = await proxy.names(conn, me, [rule["remote_group_id"]]) if rule["remote_group_id"] else {}
    return json_response({"security_group_rule": nova_rule(rule, remotes)})


async def delete_rule(request: web.Request) -> web.Response:
    _proxy_version(request)
    me = caller(request)
    me.require_writer(f"{POLICY}:rule:delete")
    wanted = group_id(request.match_info["rule_id"])
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        await proxy.delete_rule(conn, me, wanted, shards=context.shards, correlation_id=request["request_id"])
    return web.Response(status=202)


documented(
    list_groups, parameters=[param("all_tenants"), param("limit", "integer"), param("offset", "integer")]
)


def setup(app: web.Application) -> None:
    r = app.router
    groups = "/compute/v2.1/os-security-groups"
    r.add_get(groups, list_groups)
    r.add_post(groups, create_group)
    r.add_get(groups + "/{group_id}", show_group)
    r.add_put(groups + "/{group_id}", update_group)
    r.add_delete(groups + "/{group_id}", delete_group)
    rules = "/compute/v2.1/os-security-group-rules"
    r.add_post(rules, create_rule)
    r.add_delete(rules + "/{rule_id}", delete_rule)
