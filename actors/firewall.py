"""The `security_group` service: which hosts a security group's change reaches, and when.

Security groups are data the API owns (api/network/security_groups.py) and the ports follow:
a port row names its groups (`ports.security_group_ids`). A host compiles the firewall of its
own ports from the internal API; this service only decides which hosts must do so now, one
group at a time (its id is the service's actor id, so one group's fan-outs are handled in order):

- the group's rules changed (`FanOut(rules=True)`, sent by the API in the rule's transaction):
  the hosts with a port in the group;
- its membership changed (`FanOut(members=True)`): the hosts with a port in a group whose rules
  name this group as `remote_group_id` (their nftables sets of this group's addresses).

Membership changes are frequent (every boot and delete of a server in the default group) and
each reaches many hosts, so they are coalesced: the first change arms the group's `fan_out`
timer FAN_OUT_DELAY ahead, and every change until it fires rides on it (`arm`, an INSERT that
does nothing when the timer is armed: a storm can never push a fan-out back). A group fans out
at most once per FAN_OUT_INTERVAL (the service notes when, in `security_groups.fanned_out_at`),
so a boot storm in one group costs its hosts two nudges a second, not one per boot. A host that
misses a nudge still converges at its next periodic pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from actors import db, outbox
from actors.service import ServiceKind
from actors.table import Context, Send
from protocol import Envelope, Target
from protocol import firewall as f

KIND_NAME = "security_group"
FAN_OUT_DELAY = 0.25  # seconds a membership change waits for others to share its fan-out
FAN_OUT_INTERVAL = 0.5  # seconds at least between two fan-outs of a group's membership
TIMER = "fan_out"

_ARM = """
INSERT INTO timers (kind, actor_id, name, fire_at, message_id, routing_key, body)
SELECT $1, t.g, $2,
       greatest(now() + make_interval(secs => $3), sg.fanned_out_at + make_interval(secs => $8)), m, r, b
FROM unnest($4::text[], $5::uuid[], $6::text[], $7::bytea[]) AS t(g, m, r, b)
LEFT JOIN security_groups sg ON sg.id = t.g
ON CONFLICT (kind, actor_id, name) DO NOTHING
"""

# The hosts with a (bound) port in the group: a change of its rules reaches them.
RULE_HOSTS_SQL = """
SELECT DISTINCT binding_host_id FROM ports
WHERE binding_host_id <> '' AND security_group_ids @> ARRAY[$1::text]
"""

# The hosts with a port in a group that uses this group as a remote group: a change of its
# members reaches them.
MEMBER_HOSTS_SQL = """
SELECT DISTINCT binding_host_id FROM ports
WHERE binding_host_id <> '' AND security_group_ids && ARRAY(
    SELECT DISTINCT security_group_id FROM security_group_rules WHERE remote_group_id = $1)
"""


async def arm(conn: db.Connection, group_ids: Iterable[str], shards: int) -> None:
    """In the caller's transaction: these groups' members changed; arm each one's fan-out
    timer unless it is armed, and wake the runtimes' timer wheels at commit."""
    groups = sorted(set(group_ids))
    if not groups:
        return
    rows = [
        outbox.to_actor(Envelope.new(Target(KIND_NAME, g), f.FanOut(members=True)), shards) for g in groups
    ]
    await conn.execute(
        _ARM,
        KIND_NAME,
        TIMER,
        FAN_OUT_DELAY,
        groups,
        [r.message_id for r in rows],
        [r.routing_key for r in rows],
        [r.body for r in rows],
        FAN_OUT_INTERVAL,
    )
    await conn.execute(f"NOTIFY {outbox.CHANNEL}")


def rules_changed(group_id: str, correlation_id: str | None = None) -> Envelope:
    """The message the API writes (in the rule's transaction) when a group's rules change."""
    return Envelope.new(Target(KIND_NAME, group_id), f.FanOut(rules=True), correlation_id=correlation_id)


async def hosts_to_nudge(conn: db.Connection, group_id: str, *, rules: bool, members: bool) -> list[str]:
    hosts: set[str] = set()
    if rules:
        hosts.update(r[0] for r in await conn.fetch(RULE_HOSTS_SQL, group_id))
    if members:
        hosts.update(r[0] for r in await conn.fetch(MEMBER_HOSTS_SQL, group_id))
    return sorted(hosts)


async def _members_changed(conn: db.Connection, msg: f.MembersChanged, ctx: Context) -> list[Any]:
    shards = int(await conn.fetchval("SELECT value FROM cluster_settings WHERE key = 'shards'"))
    await arm(conn, [ctx.self_target.id], shards)
    return []


async def _fan_out(conn: db.Connection, msg: f.FanOut, ctx: Context) -> list[Any]:
    group_id = ctx.self_target.id
    hosts = await hosts_to_nudge(conn, group_id, rules=msg.rules, members=msg.members)
    if msg.members:
        await conn.execute("UPDATE security_groups SET fanned_out_at = now() WHERE id = $1", group_id)
    return [Send(Target("agent", host), f.RefreshFirewall(security_group_id=group_id)) for host in hosts]


KIND = ServiceKind(KIND_NAME, {f.MembersChanged: _members_changed, f.FanOut: _fan_out})
