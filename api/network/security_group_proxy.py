"""What the network service offers Nova's security group proxy: groups and rules as
/compute/v2.1/os-security-groups and /os-security-group-rules read and change them.

This is one of the API's published cross-service modules (see `.importlinter`). Nova's proxy
calls Neutron for everything; here the same work is done in the compute request's own
transaction, with Neutron's rules and errors (api/network/security_groups.py): the default
group made on first use, quotas, the default group's protections, a group in use, rules checked
and de-duplicated as Neutron does, the hosts' firewalls nudged when rules change. What it
returns is what Neutron answers (its views of groups and rules), and what it raises is Neutron's
error; turning both into Nova's words stays with the compute API, as Nova does with Neutron's
answers.
"""

from __future__ import annotations

from typing import Any

from api.auth import AuthContext
from api.network import policy, security_groups
from api.network.attributes import parse


async def _views(conn: Any, rows: list[Any]) -> list[dict[str, Any]]:
    rules = await security_groups.rules_of(conn, [r["id"] for r in rows])
    return [security_groups.group_view(r, rules[r["id"]]) for r in rows]


async def groups(conn: Any, me: AuthContext, *, all_projects: bool) -> list[dict[str, Any]]:
    """The groups of the caller's project (every project's: an admin asking for all), oldest
    first; the caller's default group is made first if it has none, as Neutron's list does."""
    if me.project_id is not None:
        await security_groups.ensure_default(conn, me.project_id)
    rows = await conn.fetch(
        f"{security_groups.GROUP_SELECT} WHERE $1::boolean OR g.project_id = $2 ORDER BY g.created_at, g.id",
        all_projects and me.is_admin,
        me.project_id,
    )
    return await _views(conn, rows)


async def group(conn: Any, me: AuthContext, group_id: str) -> dict[str, Any]:
    """The group as Neutron shows it to the caller; NotFound (SecurityGroupNotFound) if it
    cannot see it."""
    return (await _views(conn, [await security_groups.find(conn, me, group_id)]))[0]


async def visible_groups(conn: Any, me: AuthContext, rows: list[Any]) -> list[dict[str, Any]]:
    """These group rows (a server's, from server_ports.server_group_rows) as Neutron shows the
    caller the ones it may see (Nova lists a server's groups through Neutron)."""
    return await _views(conn, [r for r in rows if security_groups.visible(me, r)])


async def names(conn: Any, me: AuthContext, group_ids: list[str]) -> dict[str, tuple[str, str]]:
    """(name, project) of each of these groups the caller may see, by id: the remote groups
    that Nova's rules name."""
    rows = await conn.fetch(
        "SELECT id, name, project_id FROM security_groups WHERE id = ANY($1::text[])", group_ids
    )
    return {r["id"]: (r["name"], r["project_id"]) for r in rows if security_groups.visible(me, r)}


async def create_group(conn: Any, me: AuthContext, name: str, description: str) -> dict[str, Any]:
    """A new group of the caller's project, as Neutron's POST /security-groups makes it."""
    project_id = policy.require_writer(me, "create_security_group")
    values = parse({"name": name, "description": description}, security_groups.GROUP_ATTRS, method="POST")
    return await security_groups.insert_group(conn, me, project_id, values)


async def update_group(
    conn: Any,
    me: AuthContext,
    group_id: str,
    name: str,
    description: str,
    *,
    shards: int,
    correlation_id: str,
) -> dict[str, Any]:
    """Rename and describe the group, as Neutron's PUT /security-groups/{id} (the default
    group keeps its name: Conflict, SecurityGroupCannotUpdateDefault)."""
    policy.require_writer(me, "update_security_group")
    values = parse({"name": name, "description": description}, security_groups.GROUP_ATTRS, method="PUT")
    return await security_groups.change_group(
        conn, me, group_id, values, shards=shards, correlation_id=correlation_id
    )


async def delete_group(
    conn: Any, me: AuthContext, group_id: str, *, shards: int, correlation_id: str
) -> None:
    """Delete the group as Neutron's DELETE /security-groups/{id} does: not the default group
    (but by an admin), not one a port uses (Conflict: SecurityGroupCannotRemoveDefault,
    SecurityGroupInUse); the rules of other groups naming it go with it, and their hosts learn."""
    policy.require_writer(me, "delete_security_group")
    await security_groups.remove_group(conn, me, group_id, shards=shards, correlation_id=correlation_id)


async def create_rule(
    conn: Any, me: AuthContext, body: dict[str, Any], *, shards: int, correlation_id: str
) -> dict[str, Any]:
    """A new rule from Neutron's request body (`security_group_rule`'s attributes), checked,
    de-duplicated (Conflict: SecurityGroupRuleExists) and counted as Neutron's POST
    /security-group-rules does; the hosts of its group learn."""
    policy.require_writer(me, "create_security_group_rule")
    values = parse(body, security_groups.RULE_ATTRS, method="POST")
    number = security_groups.check_rule(values)
    view = await security_groups.insert_rule(conn, me, values, number)
    await security_groups.notify_rules(conn, [view["security_group_id"]], shards, correlation_id)
    return view


async def rule(conn: Any, me: AuthContext, rule_id: str) -> dict[str, Any]:
    """The rule as Neutron shows it to the caller; NotFound (SecurityGroupRuleNotFound)."""
    return security_groups.rule_view(await security_groups.find_rule(conn, me, rule_id))


async def delete_rule(conn: Any, me: AuthContext, rule_id: str, *, shards: int, correlation_id: str) -> None:
    """Delete the rule as Neutron's DELETE /security-group-rules/{id} does; its hosts learn."""
    policy.require_writer(me, "delete_security_group_rule")
    await security_groups.remove_rule(conn, me, rule_id, shards=shards, correlation_id=correlation_id)
