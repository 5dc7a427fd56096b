"""/networking/v2.0/security-groups and /security-group-rules: Neutron's security groups.

A group and its rules are rows the API owns; a port names its groups (`ports.security_group_ids`,
api/network/ports.py). The hosts enforce them (hostagent/network/firewall.py) from the internal
API, nudged by the `security_group` service (actors/firewall.py): a rule created or deleted here
writes `FanOut(rules=True)` for its group in the same transaction; a membership change arms the
group's coalesced fan-out (`actors.firewall.arm`).

Neutron's behaviour, word for word where clients match on it: every project has a `default`
group, made on first use (listing groups, creating a group, a rule or a port) with Neutron's
four rules (egress anywhere over IPv4 and IPv6; ingress from members of the same group); a new
group gets the two egress rules; the default group cannot be renamed, nor deleted but by an
admin; a group in use by a port cannot be deleted (SecurityGroupInUse), and deleting one
deletes the rules of other groups that name it as their remote group. Rules are checked as
Neutron checks them (direction, ethertype, protocol by name or number 0-255, port ranges only
for the protocols that have ports, ICMP type and code, prefix or remote group but not both, a
prefix of the rule's ethertype) and de-duplicated by meaning (SecurityGroupRuleExists, 409,
naming the rule that exists), whatever the concurrency (a unique index). A group or rule the
caller cannot see is "not found"; a rule may not name another project's group.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg
from aiohttp import web

from actors import firewall, outbox
from api import notifications
from api.auth import AuthContext
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, NotFound
from api.network import policy, query
from api.network.attributes import (
    STANDARD_READ_ONLY,
    Attr,
    boolean,
    create_bodies,
    parse,
    read_only,
    resource_body,
    string,
    tags,
    uuid_string,
)
from api.network.faults import bad_attribute
from api.network.quotas import enforce
from api.times import iso_seconds

DEFAULT_NAME = "default"
DEFAULT_DESCRIPTION = "Default security group"
ETHERTYPES = ("IPv4", "IPv6")
DIRECTIONS = ("ingress", "egress")

# Neutron's protocol names (neutron_lib IP_PROTOCOL_MAP) and their numbers.
PROTOCOLS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2,
    "ip": 0, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58,
    "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46,
    "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}  # fmt: skip
PORTED = frozenset({6, 17, 33, 132, 136})  # tcp, udp, dccp, sctp, udplite: port ranges
ICMP = frozenset({1, 58})
ICMPV6 = 58


# --- errors ---------------------------------------------------------------------------------------


def group_not_found(group_id: str) -> NotFound:
    return NotFound(f"Security group {group_id} does not exist", kind="SecurityGroupNotFound")


def rule_not_found(rule_id: str) -> NotFound:
    return NotFound(f"Security group rule {rule_id} does not exist", kind="SecurityGroupRuleNotFound")


def group_in_use(group_id: str) -> Conflict:
    return Conflict(f"Security Group {group_id} in use.", kind="SecurityGroupInUse")


def _bad(kind: str, message: str) -> BadRequest:
    return BadRequest(message, kind=kind)


# --- attributes -----------------------------------------------------------------------------------


def _not_default(name: str, value: Any) -> str:
    text = string(255)(name, value)
    if text.lower() == DEFAULT_NAME:
        raise Conflict("Default security group already exists.", kind="SecurityGroupDefaultAlreadyExists")
    return text


def _direction(name: str, value: Any) -> str:
    if value not in DIRECTIONS:
        raise bad_attribute(name, f"'{value}' is not in {list(DIRECTIONS)}")
    return str(value)


def _ethertype(name: str, value: Any) -> str:
    for ethertype in ETHERTYPES:
        if isinstance(value, str) and value.lower() == ethertype.lower():
            return ethertype
    raise _bad(
        "SecurityGroupRuleInvalidEtherType",
        f"Security group rule for ethertype '{value}' not supported. Allowed values are {list(ETHERTYPES)}.",
    )


def _invalid_protocol(value: Any) -> BadRequest:
    return _bad(
        "SecurityGroupRuleInvalidProtocol",
        f"Security group rule protocol {value} not supported. Only protocol values "
        f"{[None, *sorted(PROTOCOLS)]} and integer representations [0 to 255] are supported.",
    )


def _protocol(name: str, value: Any) -> str | None:
    """A name (any case, kept lower), a number 0-255 (kept as its text), or null/"any": any."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _invalid_protocol(value)
    text = str(value).strip().lower()
    if text == "any":
        return None
    if text in PROTOCOLS:
        return text
    try:
        number = int(text)
    except ValueError:
        raise _invalid_protocol(value) from None
    if not 0 <= number <= 255:
        raise _invalid_protocol(value)
    return str(number)


def _port(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _bad("SecurityGroupInvalidPortValue", f"Invalid value for port {value}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _bad("SecurityGroupInvalidPortValue", f"Invalid value for port {value}") from None


def _prefix(name: str, value: Any) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    """A CIDR, kept as given (host bits and all, as Neutron shows it back; `normalized_cidr` and
    the hosts use its network); an address alone is its /32 or /128."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_attribute(name, f"'{value}' is not a valid IP subnet")
    try:
        return ipaddress.ip_interface(value.strip())
    except ValueError:
        raise bad_attribute(name, f"'{value}' is not a valid IP subnet") from None


def _group_id(name: str, value: Any) -> str | None:
    """A group's id as Neutron takes it: any string (one no group has is SecurityGroupNotFound)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_attribute(name, f"'{value}' is not a valid string")
    return value


def _nullable_uuid(name: str, value: Any) -> str | None:
    return None if value is None else uuid_string(name, value)


GROUP_ATTRS = {
    "name": Attr(_not_default),
    "description": Attr(string()),
    "stateful": Attr(boolean),
    "tags": Attr(tags, put=False),
    "project_id": Attr(string(), put=False),
    "tenant_id": Attr(string(), put=False),
    **read_only(*STANDARD_READ_ONLY, "security_group_rules", "shared"),
}

RULE_ATTRS = {
    "security_group_id": Attr(_group_id, put=False),
    "direction": Attr(_direction, put=False),
    "ethertype": Attr(_ethertype, put=False),
    "protocol": Attr(_protocol, put=False),
    "port_range_min": Attr(_port, put=False),
    "port_range_max": Attr(_port, put=False),
    "remote_ip_prefix": Attr(_prefix, put=False),
    "remote_group_id": Attr(_group_id, put=False),
    "remote_address_group_id": Attr(_nullable_uuid, put=False),
    "description": Attr(string()),
    "project_id": Attr(string(), put=False),
    "tenant_id": Attr(string(), put=False),
    **read_only(*STANDARD_READ_ONLY, "normalized_cidr", "belongs_to_default_sg"),
}


# --- rows and views ---------------------------------------------------------------------------------

GROUP_SELECT = "SELECT g.* FROM security_groups g"
RULE_SELECT = (
    "SELECT r.*, g.is_default AS in_default_group FROM security_group_rules r "
    "JOIN security_groups g ON g.id = r.security_group_id"
)

GROUPS = query.Collection(
    name="security_groups",
    alias="g",
    select=GROUP_SELECT,
    not_found=group_not_found,
    fields={
        "id": query.text("g.id"),
        "name": query.text("g.name"),
        "description": query.text("g.description"),
        "project_id": query.text("g.project_id"),
        "tenant_id": query.text("g.project_id"),
        "stateful": query.flag("g.stateful"),
        "shared": query.flag("false"),
        "revision_number": query.number("g.revision_number"),
        "created_at": query.moment("g.created_at"),
        "updated_at": query.moment("g.updated_at"),
    },
)

RULES = query.Collection(
    name="security_group_rules",
    alias="r",
    select=RULE_SELECT,
    not_found=rule_not_found,
    taggable=False,
    fields={
        "id": query.text("r.id"),
        "security_group_id": query.text("r.security_group_id"),
        "direction": query.text("r.direction"),
        "ethertype": query.text("r.ethertype"),
        "protocol": query.text("coalesce(r.protocol, '')"),
        "port_range_min": query.number("coalesce(r.port_range_min, -1)"),
        "port_range_max": query.number("coalesce(r.port_range_max, -1)"),
        "remote_ip_prefix": query.text("coalesce(r.remote_ip_prefix::text, '')"),
        "remote_group_id": query.text("coalesce(r.remote_group_id, '')"),
        "description": query.text("r.description"),
        "project_id": query.text("r.project_id"),
        "tenant_id": query.text("r.project_id"),
        "belongs_to_default_sg": query.flag("r.in_default_group"),
        "revision_number": query.number("r.revision_number"),
        "created_at": query.moment("r.created_at"),
        "updated_at": query.moment("r.updated_at"),
    },
)


def rule_view(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    prefix = normalized = None
    if row["remote_ip_prefix"] is not None:
        given = ipaddress.ip_interface(str(row["remote_ip_prefix"]))  # an address alone is its /32
        prefix, normalized = str(given), str(given.network)
    return {
        "id": row["id"],
        "security_group_id": row["security_group_id"],
        "direction": row["direction"],
        "ethertype": row["ethertype"],
        "protocol": row["protocol"],
        "port_range_min": row["port_range_min"],
        "port_range_max": row["port_range_max"],
        "remote_ip_prefix": prefix,
        "normalized_cidr": normalized,
        "remote_group_id": row["remote_group_id"],
        "remote_address_group_id": None,
        "description": row["description"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "belongs_to_default_sg": row["in_default_group"],
        "revision_number": row["revision_number"],
        "created_at": iso_seconds(row["created_at"]),
        "updated_at": iso_seconds(row["updated_at"]),
    }


def group_view(row: asyncpg.Record, rules: Iterable[asyncpg.Record]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "project_id": row["project_id"],
        "tenant_id": row["project_id"],
        "stateful": row["stateful"],
        "shared": False,
        "security_group_rules": [rule_view(r) for r in rules],
        "tags": list(row["tags"]),
        "revision_number": row["revision_number"],
        "created_at": iso_seconds(row["created_at"]),
        "updated_at": iso_seconds(row["updated_at"]),
    }


async def rules_of(conn: Any, group_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    found: dict[str, list[asyncpg.Record]] = {g: [] for g in group_ids}
    if group_ids:
        for row in await conn.fetch(
            f"{RULE_SELECT} WHERE r.security_group_id = ANY($1::text[]) ORDER BY r.created_at, r.id",
            group_ids,
        ):
            found[row["security_group_id"]].append(row)
    return found


def visible(me: AuthContext, row: asyncpg.Record) -> bool:
    return me.is_admin or row["project_id"] == me.project_id


def _visible_sql(me: AuthContext, alias: str) -> Any:
    def where(sql: query.Sql) -> None:
        if not me.is_admin:
            sql.where(f"{alias}.project_id = {sql.arg(me.project_id)}")

    return where


async def find(conn: Any, me: AuthContext, group_id: str, *, lock: str = "") -> asyncpg.Record:
    row = await conn.fetchrow(f"{GROUP_SELECT} WHERE g.id = $1 {lock}", group_id)
    if row is None or not visible(me, row):
        raise group_not_found(group_id)
    return row


# --- the default group ----------------------------------------------------------------------------


def _rule_row(
    group_id: str,
    project_id: str,
    direction: str,
    ethertype: str,
    *,
    remote_group_id: str | None = None,
) -> tuple[Any, ...]:
    return (str(uuid.uuid4()), group_id, project_id, direction, ethertype, remote_group_id)


async def _insert_plain_rules(conn: Any, rows: list[tuple[Any, ...]]) -> None:
    await conn.executemany(
        "INSERT INTO security_group_rules (id, security_group_id, project_id, direction, ethertype, "
        "remote_group_id) VALUES ($1, $2, $3, $4, $5, $6)",
        rows,
    )


async def ensure_default(conn: Any, project_id: str) -> str:
    """The project's default group, made now if it has none (with Neutron's four rules): its id.
    Two requests racing to make it end with one (the unique index; the loser reads the winner's)."""
    found = await conn.fetchval(
        "SELECT id FROM security_groups WHERE project_id = $1 AND is_default", project_id
    )
    if found is not None:
        return str(found)
    group_id = str(uuid.uuid4())
    async with conn.transaction():
        inserted = await conn.fetchval(
            "INSERT INTO security_groups (id, project_id, name, description, is_default) "
            "VALUES ($1, $2, $3, $4, true) ON CONFLICT DO NOTHING RETURNING id",
            group_id,
            project_id,
            DEFAULT_NAME,
            DEFAULT_DESCRIPTION,
        )
        if inserted is not None:
            rows = [_rule_row(group_id, project_id, "egress", e) for e in ETHERTYPES]
            rows += [
                _rule_row(group_id, project_id, "ingress", e, remote_group_id=group_id) for e in ETHERTYPES
            ]
            await _insert_plain_rules(conn, rows)
            return group_id
    return str(
        await conn.fetchval("SELECT id FROM security_groups WHERE project_id = $1 AND is_default", project_id)
    )


async def for_port(conn: Any, me: AuthContext, project_id: str, group_ids: list[str]) -> list[str]:
    """The groups a port of `project_id` may have (its project's, or any for an admin), locked
    against a concurrent delete until the caller's transaction ends; SecurityGroupNotFound for
    one that does not exist or is another project's."""
    ids = list(dict.fromkeys(group_ids))
    if not ids:
        return []
    rows = await conn.fetch(
        "SELECT id, project_id FROM security_groups WHERE id = ANY($1::text[]) ORDER BY id FOR KEY SHARE", ids
    )
    owners = {r["id"]: r["project_id"] for r in rows}
    for group_id in ids:
        if group_id not in owners or (owners[group_id] != project_id and not me.is_admin):
            raise group_not_found(group_id)
    return ids


async def by_names(conn: Any, project_id: str, names: list[str]) -> dict[str, str]:
    """Nova's lookup: each name (or id) to the id of the project's group of that name; a name
    two groups share is ambiguous (Nova's NoUniqueMatch, 409). Missing names are left out."""
    await ensure_default(conn, project_id)
    rows = await conn.fetch(
        "SELECT id, name FROM security_groups WHERE project_id = $1 AND (name = ANY($2::text[]) "
        "OR id = ANY($2::text[])) ORDER BY created_at, id",
        project_id,
        names,
    )
    found: dict[str, str] = {}
    for name in names:
        by_id = [r["id"] for r in rows if r["id"] == name]
        matches = by_id or [r["id"] for r in rows if r["name"] == name]
        if len(matches) > 1:
            raise Conflict(
                f"Multiple security_group matches found for name '{name}', use an ID to be more specific.",
                kind="NoUniqueMatch",
            )
        if matches:
            found[name] = matches[0]
    return found


# --- security groups ------------------------------------------------------------------------------


async def notify_rules(conn: Any, group_ids: Iterable[str], shards: int, correlation_id: str) -> None:
    envelopes = [firewall.rules_changed(g, correlation_id) for g in sorted(set(group_ids))]
    if envelopes:
        await outbox.send(conn, envelopes, shards)


async def insert_group(conn: Any, me: AuthContext, project_id: str, values: dict[str, Any]) -> dict[str, Any]:
    await ensure_default(conn, project_id)
    await enforce(conn, project_id, "security_group")
    group_id = str(uuid.uuid4())
    row = await conn.fetchrow(
        "INSERT INTO security_groups (id, project_id, name, description, stateful, tags) "
        "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        group_id,
        project_id,
        values.get("name", ""),
        values.get("description", ""),
        values.get("stateful", True),
        values.get("tags", []),
    )
    await _insert_plain_rules(conn, [_rule_row(group_id, project_id, "egress", e) for e in ETHERTYPES])
    view = group_view(row, (await rules_of(conn, [group_id]))[group_id])
    await notifications.neutron(conn, "create", "security_group", view, values)
    return view


async def create_group(request: web.Request) -> web.Response:
    me = caller(request)
    policy.require_writer(me, "create_security_group")
    bodies, bulk = create_bodies(await json_body(request), "security_group")
    prepared = []
    for body in bodies:
        values = parse(body, GROUP_ATTRS, method="POST")
        prepared.append((policy.project_for(me, values), values))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        created = [await insert_group(conn, me, project_id, values) for project_id, values in prepared]
    body = {"security_groups": created} if bulk else {"security_group": created[0]}
    return json_response(body, status=201)


async def list_groups(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn:
        if me.project_id is not None:
            await ensure_default(conn, me.project_id)
        rows, links = await query.fetch(conn, request, GROUPS, _visible_sql(me, "g"), is_admin=me.is_admin)
        rules = await rules_of(conn, [r["id"] for r in rows])
    views = [query.select_fields(group_view(r, rules[r["id"]]), request.query) for r in rows]
    body: dict[str, Any] = {"security_groups": views}
    if links:
        body["security_groups_links"] = links
    return json_response(body)


async def show_group(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn:
        row = await find(conn, me, request.match_info["group_id"])
        rules = await rules_of(conn, [row["id"]])
    return json_response(
        {"security_group": query.select_fields(group_view(row, rules[row["id"]]), request.query)}
    )


async def change_group(
    conn: Any, me: AuthContext, group_id: str, values: dict[str, Any], *, shards: int, correlation_id: str
) -> dict[str, Any]:
    """Update a group (parsed `values`) in the caller's transaction, as Neutron's PUT does: the
    default group keeps its name, a group in use keeps its statefulness; its view."""
    row = await find(conn, me, group_id, lock="FOR UPDATE")
    policy.require_owner(me, row["project_id"], "update_security_group")
    if row["is_default"] and values.get("name", row["name"]) != row["name"]:
        raise Conflict(
            "Updating default security group not allowed.", kind="SecurityGroupCannotUpdateDefault"
        )
    if "stateful" in values and values["stateful"] != row["stateful"] and await in_use(conn, group_id):
        raise Conflict(
            f"Security Group {group_id} in use: its stateful attribute cannot change while ports use it.",
            kind="SecurityGroupInUse",
        )
    changes = {k: v for k, v in values.items() if k in ("name", "description", "stateful")}
    if changes:
        assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
        row = await conn.fetchrow(
            f"UPDATE security_groups SET {assignments}, revision_number = revision_number + 1, "
            "updated_at = now() WHERE id = $1 RETURNING *",
            group_id,
            *changes.values(),
        )
        if "stateful" in changes:
            await notify_rules(conn, [group_id], shards, correlation_id)
    view = group_view(row, (await rules_of(conn, [group_id]))[group_id])
    await notifications.neutron(conn, "update", "security_group", view, values)
    return view


async def update_group(request: web.Request) -> web.Response:
    me = caller(request)
    policy.require_writer(me, "update_security_group")
    values = parse(resource_body(await json_body(request), "security_group"), GROUP_ATTRS, method="PUT")
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        view = await change_group(
            conn,
            me,
            request.match_info["group_id"],
            values,
            shards=context.shards,
            correlation_id=request["request_id"],
        )
    return json_response({"security_group": view})


async def in_use(conn: Any, group_id: str) -> bool:
    """Whether a port has the group."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM ports WHERE security_group_ids @> ARRAY[$1::text])", group_id
        )
    )


async def remove_group(
    conn: Any, me: AuthContext, group_id: str, *, shards: int, correlation_id: str
) -> None:
    """Delete a group in the caller's transaction as Neutron's DELETE does: not the default
    group (but by an admin), not one a port has; the rules of other groups naming it go with
    it, and their hosts learn."""
    row = await find(conn, me, group_id, lock="FOR UPDATE")
    policy.require_owner(me, row["project_id"], "delete_security_group")
    if row["is_default"] and not me.is_admin:
        raise Conflict(
            "Insufficient rights for removing default security group.",
            kind="SecurityGroupCannotRemoveDefault",
        )
    if await in_use(conn, group_id):
        raise group_in_use(group_id)
    referencing = await conn.fetch(
        "SELECT DISTINCT security_group_id FROM security_group_rules "
        "WHERE remote_group_id = $1 AND security_group_id <> $1",
        group_id,
    )
    view = group_view(row, [])
    await conn.execute("DELETE FROM security_groups WHERE id = $1", group_id)  # its rules cascade
    await notify_rules(conn, [r[0] for r in referencing], shards, correlation_id)
    await notifications.neutron(conn, "delete", "security_group", view)


async def delete_group(request: web.Request) -> web.Response:
    me = caller(request)
    policy.require_writer(me, "delete_security_group")
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        await remove_group(
            conn,
            me,
            request.match_info["group_id"],
            shards=context.shards,
            correlation_id=request["request_id"],
        )
    return web.Response(status=204)


# --- rules ------------------------------------------------------------------------------------------


def ip_protocol(protocol: str | None, ethertype: str) -> int | None:
    """A rule's protocol as a number (None: any). "icmp" in an IPv6 rule is ICMPv6 (Neutron's
    legacy spelling)."""
    if protocol is None:
        return None
    number = PROTOCOLS[protocol] if protocol in PROTOCOLS else int(protocol)
    if number == 1 and ethertype == "IPv6":
        return ICMPV6
    return number


def _check_ports(values: dict[str, Any], number: int | None) -> None:
    low, high = values.get("port_range_min"), values.get("port_range_max")
    if low is None and high is None:
        return
    protocol = values.get("protocol")
    if number is None:
        raise _bad(
            "SecurityGroupProtocolRequiredWithPorts", "Must also specify protocol if port range is given."
        )
    if number in ICMP:
        for field, attr, value in (("type", "port_range_min", low), ("code", "port_range_max", high)):
            if value is not None and not 0 <= value <= 255:
                raise _bad(
                    "SecurityGroupInvalidIcmpValue",
                    f"Invalid value for ICMP {field} ({attr}) {value}. It must be 0 to 255.",
                )
        if low is None and high is not None:
            raise _bad(
                "SecurityGroupMissingIcmpType",
                f"ICMP code (port-range-max) {high} is provided but ICMP type (port-range-min) is missing.",
            )
        return
    if number not in PORTED:
        raise _bad(
            "SecurityGroupInvalidProtocolForPort",
            f"Invalid protocol {protocol} for port range, only supported for TCP, UDP, UDPLITE, SCTP "
            "and DCCP.",
        )
    if low == 0 or high == 0:
        raise _bad("SecurityGroupInvalidPortValue", "Invalid value for port 0")
    for value in (low, high):
        if value is not None and not 1 <= value <= 65535:
            raise _bad("SecurityGroupInvalidPortValue", f"Invalid value for port {value}")
    if low is None or high is None or low > high:
        raise _bad(
            "SecurityGroupInvalidPortRange", "For TCP/UDP protocols, port_range_min must be <= port_range_max"
        )


def check_rule(values: dict[str, Any]) -> int | None:
    """Neutron's rule validation of the converted values (completed in place with defaults);
    the rule's protocol number."""
    values.setdefault("ethertype", "IPv4")
    if "security_group_id" not in values:
        raise BadRequest(
            "Failed to parse request. Required attribute 'security_group_id' not specified",
            kind="HTTPBadRequest",
        )
    if "direction" not in values:
        raise BadRequest(
            "Failed to parse request. Required attribute 'direction' not specified", kind="HTTPBadRequest"
        )
    if values.get("remote_address_group_id") is not None:
        raise NotFound(
            f"Address group {values['remote_address_group_id']} could not be found.",
            kind="AddressGroupNotFound",
        )
    remote = [k for k in ("remote_ip_prefix", "remote_group_id") if values.get(k) is not None]
    if len(remote) > 1:
        raise _bad(
            "SecurityGroupRemoteGroupAndRemoteIpPrefix",
            "Only remote_ip_prefix or remote_group_id may be provided.",
        )
    ethertype = values["ethertype"]
    prefix = values.get("remote_ip_prefix")
    if prefix is not None and prefix.version != (4 if ethertype == "IPv4" else 6):
        raise _bad(
            "SecurityGroupRuleParameterConflict", f"Conflicting value ethertype {ethertype} for CIDR {prefix}"
        )
    protocol = values.get("protocol")
    if ethertype == "IPv4" and protocol in ("ipv6-icmp", "icmpv6", "58"):
        raise _bad(
            "SecurityGroupEthertypeConflictWithProtocol",
            f"Invalid ethertype {ethertype} for protocol {protocol}.",
        )
    number = ip_protocol(protocol, ethertype)
    _check_ports(values, number)
    return number


async def _existing_rule(conn: Any, group_id: str, values: dict[str, Any], number: int | None) -> str | None:
    prefix = values.get("remote_ip_prefix")
    return await conn.fetchval(
        "SELECT id FROM security_group_rules WHERE security_group_id = $1 AND direction = $2 "
        "AND ethertype = $3 AND ip_protocol IS NOT DISTINCT FROM $4 "
        "AND port_range_min IS NOT DISTINCT FROM $5 AND port_range_max IS NOT DISTINCT FROM $6 "
        "AND network(remote_ip_prefix) IS NOT DISTINCT FROM network($7::inet) "
        "AND remote_group_id IS NOT DISTINCT FROM $8",
        group_id,
        values["direction"],
        values["ethertype"],
        number,
        values.get("port_range_min"),
        values.get("port_range_max"),
        str(prefix) if prefix is not None else None,
        values.get("remote_group_id"),
    )


def _rule_exists(rule_id: str) -> Conflict:
    return Conflict(
        f"Security group rule already exists. Rule id is {rule_id}.", kind="SecurityGroupRuleExists"
    )


async def insert_rule(
    conn: Any, me: AuthContext, values: dict[str, Any], number: int | None
) -> dict[str, Any]:
    group = await find(conn, me, values["security_group_id"], lock="FOR KEY SHARE")
    policy.require_owner(me, group["project_id"], "create_security_group_rule")
    project_id = policy.project_for(me, values) if ("project_id" in values or "tenant_id" in values) else None
    project_id = project_id or group["project_id"]
    if project_id != group["project_id"] and not me.is_admin:
        raise group_not_found(group["id"])
    remote = values.get("remote_group_id")
    if remote is not None and remote != group["id"]:
        remote_row = await conn.fetchrow(
            "SELECT project_id FROM security_groups WHERE id = $1 FOR KEY SHARE", remote
        )
        if remote_row is None or (remote_row["project_id"] != group["project_id"] and not me.is_admin):
            raise group_not_found(remote)
    existing = await _existing_rule(conn, group["id"], values, number)
    if existing is not None:
        raise _rule_exists(existing)
    await enforce(conn, project_id, "security_group_rule")
    prefix = values.get("remote_ip_prefix")
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO security_group_rules (id, security_group_id, project_id, direction, ethertype, "
                "protocol, ip_protocol, port_range_min, port_range_max, remote_ip_prefix, remote_group_id, "
                "description) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::inet, $11, $12) RETURNING *, "
                "$13::boolean AS in_default_group",
                str(uuid.uuid4()),
                group["id"],
                project_id,
                values["direction"],
                values["ethertype"],
                values.get("protocol"),
                number,
                values.get("port_range_min"),
                values.get("port_range_max"),
                str(prefix) if prefix is not None else None,
                remote,
                values.get("description", ""),
                group["is_default"],
            )
    except asyncpg.UniqueViolationError:
        raise _rule_exists(await _existing_rule(conn, group["id"], values, number) or "unknown") from None
    view = rule_view(row)
    await notifications.neutron(conn, "create", "security_group_rule", view, values)
    return view


async def create_rule(request: web.Request) -> web.Response:
    me = caller(request)
    policy.require_writer(me, "create_security_group_rule")
    bodies, bulk = create_bodies(await json_body(request), "security_group_rule")
    prepared = []
    for body in bodies:
        values = parse(body, RULE_ATTRS, method="POST")
        prepared.append((values, check_rule(values)))
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        created = [await insert_rule(conn, me, values, number) for values, number in prepared]
        await notify_rules(
            conn, [v["security_group_id"] for v in created], context.shards, request["request_id"]
        )
    body = {"security_group_rules": created} if bulk else {"security_group_rule": created[0]}
    return json_response(body, status=201)


def _rule_visible_sql(me: AuthContext) -> Any:
    """A project sees the rules of its groups (and those it created, Neutron's owner rule)."""

    def where(sql: query.Sql) -> None:
        if not me.is_admin:
            project = sql.arg(me.project_id)
            sql.where(
                f"(r.project_id = {project} OR r.security_group_id IN "
                f"(SELECT id FROM security_groups WHERE project_id = {project}))"
            )

    return where


async def find_rule(conn: Any, me: AuthContext, rule_id: str, *, lock: str = "") -> asyncpg.Record:
    row = await conn.fetchrow(f"{RULE_SELECT} WHERE r.id = $1 {lock}", rule_id)
    if row is None:
        raise rule_not_found(rule_id)
    if not me.is_admin and me.project_id != row["project_id"]:
        owner = await conn.fetchval(
            "SELECT project_id FROM security_groups WHERE id = $1", row["security_group_id"]
        )
        if owner != me.project_id:
            raise rule_not_found(rule_id)
    return row


async def list_rules(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn:
        if me.project_id is not None:
            await ensure_default(conn, me.project_id)
        rows, links = await query.fetch(conn, request, RULES, _rule_visible_sql(me), is_admin=me.is_admin)
    body: dict[str, Any] = {
        "security_group_rules": [query.select_fields(rule_view(r), request.query) for r in rows]
    }
    if links:
        body["security_group_rules_links"] = links
    return json_response(body)


async def show_rule(request: web.Request) -> web.Response:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn:
        row = await find_rule(conn, me, request.match_info["rule_id"])
    return json_response({"security_group_rule": query.select_fields(rule_view(row), request.query)})


async def update_rule(request: web.Request) -> web.Response:
    """Only the description changes (Neutron's rules are otherwise immutable)."""
    me = caller(request)
    policy.require_writer(me, "update_security_group_rule")
    values = parse(resource_body(await json_body(request), "security_group_rule"), RULE_ATTRS, method="PUT")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await find_rule(conn, me, request.match_info["rule_id"], lock="FOR UPDATE OF r")
        policy.require_owner(me, row["project_id"], "update_security_group_rule")
        if "description" in values:
            await conn.execute(
                "UPDATE security_group_rules SET description = $2, revision_number = revision_number + 1, "
                "updated_at = now() WHERE id = $1",
                row["id"],
                values["description"],
            )
            row = await find_rule(conn, me, row["id"])
        view = rule_view(row)
        await notifications.neutron(conn, "update", "security_group_rule", view, values)
    return json_response({"security_group_rule": view})


async def remove_rule(conn: Any, me: AuthContext, rule_id: str, *, shards: int, correlation_id: str) -> None:
    """Delete a rule in the caller's transaction; the hosts of its group's members learn."""
    row = await find_rule(conn, me, rule_id, lock="FOR UPDATE OF r")
    owner = await conn.fetchval(
        "SELECT project_id FROM security_groups WHERE id = $1", row["security_group_id"]
    )
    if not (me.is_admin or me.project_id in (row["project_id"], owner)):
        raise rule_not_found(row["id"])
    await conn.execute("DELETE FROM security_group_rules WHERE id = $1", row["id"])
    await notify_rules(conn, [row["security_group_id"]], shards, correlation_id)
    await notifications.neutron(conn, "delete", "security_group_rule", rule_view(row))


async def delete_rule(request: web.Request) -> web.Response:
    me = caller(request)
    policy.require_writer(me, "delete_security_group_rule")
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        await remove_rule(
            conn,
            me,
            request.match_info["rule_id"],
            shards=context.shards,
            correlation_id=request["request_id"],
        )
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    base = "/networking/v2.0/security-groups"
    r.add_get(base, query.described(list_groups, query.parameters(GROUPS)))
    r.add_post(base, create_group)
    r.add_get(base + "/{group_id}", query.described(show_group, [query.fields_parameter()]))
    r.add_put(base + "/{group_id}", update_group)
    r.add_delete(base + "/{group_id}", delete_group)
    rules = "/networking/v2.0/security-group-rules"
    r.add_get(rules, query.described(list_rules, query.parameters(RULES)))
    r.add_post(rules, create_rule)
    r.add_get(rules + "/{rule_id}", query.described(show_rule, [query.fields_parameter()]))
    r.add_put(rules + "/{rule_id}", update_rule)
    r.add_delete(rules + "/{rule_id}", delete_rule)
