"""The scheduler: a service kind that places servers on hosts with an atomic claim.

Filters (Nova's defaults): the host is enabled and up (heartbeat within `HOST_DOWN_AFTER`, not
forced down by an operator), in the requested availability zone (the one an aggregate of the host
names, else the one its agent reports: the `host_zone` SQL function), not one that already failed
this build, has the RAM, disk and vCPUs with its allocation ratios, and honours the server
group's affinity or anti-affinity.
Weigher: the most free RAM first (spread), the host name breaking ties.

The claim is one guarded UPDATE of the host's usage that re-checks the capacity under the row
lock, plus an allocation row, in the same transaction as the turn's inbox row and its reply. Two
concurrent claims can therefore never over-commit a host: the second one's UPDATE sees the first
one's usage and matches no row, and the scheduler moves on to the next candidate. Claims for
members of one server group are serialised by an advisory lock, so anti-affinity holds under
concurrency too. One SQL query filters and ranks the hosts; it stays fast at 10,000 hosts.
"""

from __future__ import annotations

import math
import os
from typing import Any

from actors import db
from actors.service import ServiceKind
from actors.table import Context, Send
from protocol import Target
from protocol import compute as m

HOST_DOWN_AFTER = float(os.environ.get("ACTORSTACK_HOST_DOWN_AFTER", "30"))  # seconds without heartbeat
CANDIDATES = 8  # hosts tried per round, in weigher order
ROUNDS = 10  # rounds of candidates before a claim that keeps losing races gives up

_FITS = """
    used_vcpus + $1 <= floor(vcpus * cpu_allocation_ratio)
    AND used_memory_mb + $2 <= floor((memory_mb - reserved_memory_mb) * ram_allocation_ratio)
    AND used_local_gb + $3 <= floor(local_gb * disk_allocation_ratio)
"""

# The weigher's free RAM is the expression of the index compute_hosts_free_ram, and the RAM
# filter is written against it too, so that PostgreSQL walks the index from the most free RAM
# down and stops at the first hosts that pass: constant work at any number of hosts (a full
# scan and sort took 4-7 ms at 10,000 hosts; bench/scheduler.py).
_FREE_RAM = "floor((memory_mb - reserved_memory_mb) * ram_allocation_ratio) - used_memory_mb"
_CANDIDATES = f"""
SELECT name FROM compute_hosts
WHERE enabled AND NOT forced_down
  AND heartbeat_at > now() - make_interval(secs => $4)
  AND ($5::text IS NULL OR host_zone(name, availability_zone) = $5)
  AND NOT (name = ANY($6::text[]))
  AND ($7::text[] IS NULL OR name = ANY($7::text[]))
  AND {_FREE_RAM} >= $2::integer
  AND {_FITS}
ORDER BY {_FREE_RAM} DESC, name
LIMIT $8
"""

_CLAIM = f"""
UPDATE compute_hosts
SET used_vcpus = used_vcpus + $1, used_memory_mb = used_memory_mb + $2,
    used_local_gb = used_local_gb + $3, generation = generation + 1
WHERE name = $4 AND enabled AND {_FITS}
RETURNING host_zone(name, availability_zone) AS availability_zone, hypervisor_hostname
"""


def demand(flavor: m.FlavorSpec) -> tuple[int, int, int]:
    """(vcpus, MiB of RAM, GiB of disk) a flavor takes from a host, as Nova counts them."""
    disk = flavor.disk + flavor.ephemeral + math.ceil(flavor.swap / 1024)
    return flavor.vcpus, flavor.ram, disk


async def _group_hosts(conn: db.Connection, group_id: str) -> tuple[str | None, list[str]]:
    """The group's policy and the hosts its members already use (locked for this turn)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"server-group:{group_id}")
    policy = await conn.fetchval("SELECT policy FROM server_groups WHERE id = $1", group_id)
    rows = await conn.fetch("SELECT DISTINCT host FROM allocations WHERE group_id = $1", group_id)
    return policy, [r["host"] for r in rows]


async def claim(conn: db.Connection, msg: m.SelectHost) -> m.Scheduled | m.NoValidHost:
    """Pick and claim a host for the server, inside the caller's transaction."""
    existing = await conn.fetchrow(
        "SELECT a.host, host_zone(h.name, h.availability_zone) AS availability_zone, h.hypervisor_hostname "
        "FROM allocations a "
        "JOIN compute_hosts h ON h.name = a.host WHERE a.server_id = $1",
        msg.server_id,
    )
    if existing is not None:  # already placed (a retried request): the same answer again
        return m.Scheduled(
            host=existing["host"],
            node=existing["hypervisor_hostname"],
            availability_zone=existing["availability_zone"],
        )
    vcpus, ram, disk = demand(msg.flavor)
    excluded = list(msg.excluded_hosts)
    only: list[str] | None = None
    if msg.group_id is not None:
        policy, used = await _group_hosts(conn, msg.group_id)
        if policy == "anti-affinity":
            excluded += used
        elif policy == "affinity" and used:
            only = used
    # Concurrent schedulers rank the same hosts: one can lose every candidate of a round to
    # other claims while room is left elsewhere. It asks again (the query sees the winners'
    # committed usage, so a host only comes back while it still has room) and gives up when no
    # host passes the filters, or after ROUNDS rounds.
    for _ in range(ROUNDS):
        candidates = await conn.fetch(
            _CANDIDATES, vcpus, ram, disk, HOST_DOWN_AFTER, msg.availability_zone, excluded, only, CANDIDATES
        )
        if not candidates:
            break
        for candidate in candidates:
            won = await conn.fetchrow(_CLAIM, vcpus, ram, disk, candidate["name"])
            if won is None:
                continue  # another claim took the room first: next candidate
            await conn.execute(
                "INSERT INTO allocations (server_id, host, project_id, group_id, vcpus, memory_mb, local_gb) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                msg.server_id,
                candidate["name"],
                msg.project_id,
                msg.group_id,
                vcpus,
                ram,
                disk,
            )
            return m.Scheduled(
                host=candidate["name"],
                node=won["hypervisor_hostname"],
                availability_zone=won["availability_zone"],
            )
    return m.NoValidHost(reason="There are not enough hosts available.")


async def release(conn: db.Connection, server_id: str, host: str) -> bool:
    """Give the server's claim back to its host; False when there was none (idempotent)."""
    row = await conn.fetchrow(
        "DELETE FROM allocations WHERE server_id = $1 AND host = $2 RETURNING vcpus, memory_mb, local_gb",
        server_id,
        host,
    )
    if row is None:
        return False
    await conn.execute(
        "UPDATE compute_hosts SET used_vcpus = used_vcpus - $2, used_memory_mb = used_memory_mb - $3, "
        "used_local_gb = used_local_gb - $4, generation = generation + 1 WHERE name = $1",
        host,
        row["vcpus"],
        row["memory_mb"],
        row["local_gb"],
    )
    return True


async def _select_host(conn: db.Connection, msg: m.SelectHost, ctx: Context) -> list[Any]:
    return [Send(Target("server", msg.server_id), await claim(conn, msg))]


async def _release_claim(conn: db.Connection, msg: m.ReleaseClaim, ctx: Context) -> list[Any]:
    await release(conn, msg.server_id, msg.host)
    return []


# Messages for one server go to the scheduler shard of that server id: its select and release
# are handled in order, and different servers are scheduled in parallel across shards.
KIND = ServiceKind("scheduler", {m.SelectHost: _select_host, m.ReleaseClaim: _release_claim})
