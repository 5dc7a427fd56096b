"""The scheduler's claim against the real PostgreSQL: filters, spread, groups, and never an
over-committed host under concurrent claims."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from actors import scheduler
from protocol import compute as m

TINY = m.FlavorSpec(id="1", name="m1.tiny", ram=512, vcpus=1, disk=1)


@pytest.fixture
async def zone(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A fresh availability zone: the test's hosts are the only candidates in it. Its hosts and
    their claims are removed afterwards (they would show as down hypervisors otherwise)."""
    name = f"az-{uuid.uuid4().hex[:8]}"
    yield name
    await pool.execute(
        "DELETE FROM allocations WHERE host IN (SELECT name FROM compute_hosts WHERE availability_zone = $1)",
        name,
    )
    await pool.execute("DELETE FROM compute_hosts WHERE availability_zone = $1", name)


async def add_host(
    pool: asyncpg.Pool,
    zone: str,
    name: str,
    *,
    vcpus: int = 2,
    memory_mb: int = 1024,
    local_gb: int = 10,
    enabled: bool = True,
    heartbeat_age: float = 0.0,
) -> str:
    host = f"{zone}-{name}"
    await pool.execute(
        "INSERT INTO compute_hosts (name, availability_zone, enabled, virt_type, hypervisor_hostname, vcpus, "
        "memory_mb, local_gb, cpu_allocation_ratio, heartbeat_at) "
        "VALUES ($1, $2, $3, 'test', $1, $4, $5, $6, 1.0, now() - make_interval(secs => $7))",
        host,
        zone,
        enabled,
        vcpus,
        memory_mb,
        local_gb,
        heartbeat_age,
    )
    return host


def request(zone: str, **kw: object) -> m.SelectHost:
    return m.SelectHost(
        server_id=str(uuid.uuid4()), project_id="p", flavor=TINY, availability_zone=zone, **kw
    )


async def claim(pool: asyncpg.Pool, msg: m.SelectHost) -> m.Scheduled | m.NoValidHost:
    async with pool.acquire() as conn, conn.transaction():
        return await scheduler.claim(conn, msg)


async def test_concurrent_claims_never_over_commit_a_host(pool: asyncpg.Pool, zone: str) -> None:
    hosts = [await add_host(pool, zone, f"h{i}") for i in range(3)]  # room for 2 tiny servers each
    results = await asyncio.gather(*(claim(pool, request(zone)) for _ in range(50)))
    placed = [r for r in results if isinstance(r, m.Scheduled)]
    refused = [r for r in results if isinstance(r, m.NoValidHost)]
    assert len(placed) == 6 and len(refused) == 44
    assert refused[0].reason == "There are not enough hosts available."
    rows = await pool.fetch(
        "SELECT name, used_vcpus, used_memory_mb, "
        "(SELECT count(*) FROM allocations a WHERE a.host = h.name) AS n "
        "FROM compute_hosts h WHERE name = ANY($1::text[])",
        hosts,
    )
    for row in rows:
        assert (row["used_vcpus"], row["used_memory_mb"], row["n"]) == (2, 1024, 2)


async def test_a_claim_that_loses_every_candidate_asks_again_while_room_is_left(
    pool: asyncpg.Pool, zone: str
) -> None:
    """20 hosts with room for one server each and 20 claims at once: every claim ranks the same
    top hosts, so most lose all of their first candidates; each must still find a free host."""
    count = 20
    hosts = [await add_host(pool, zone, f"one{i}", vcpus=1, memory_mb=512 + i) for i in range(count)]
    results = await asyncio.gather(*(claim(pool, request(zone)) for _ in range(count)))
    placed = sorted(r.host for r in results if isinstance(r, m.Scheduled))
    assert placed == sorted(hosts), [r for r in results if isinstance(r, m.NoValidHost)]


async def test_claims_spread_by_free_ram_and_skip_excluded_down_and_disabled_hosts(
    pool: asyncpg.Pool, zone: str
) -> None:
    a, b = await add_host(pool, zone, "a", memory_mb=4096), await add_host(pool, zone, "b", memory_mb=2048)
    await add_host(pool, zone, "down", memory_mb=8192, heartbeat_age=scheduler.HOST_DOWN_AFTER + 5)
    await add_host(pool, zone, "off", memory_mb=8192, enabled=False)
    first = await claim(pool, request(zone))
    assert isinstance(first, m.Scheduled) and first.host == a  # the most free RAM
    second = await claim(pool, request(zone, excluded_hosts=[a]))
    assert isinstance(second, m.Scheduled) and second.host == b
    third = await claim(pool, request(zone, excluded_hosts=[a, b]))
    assert isinstance(third, m.NoValidHost)


async def test_a_repeated_request_gets_the_same_claim_and_release_frees_it_once(
    pool: asyncpg.Pool, zone: str
) -> None:
    host = await add_host(pool, zone, "h", vcpus=1)
    msg = request(zone)
    first = await claim(pool, msg)
    assert isinstance(first, m.Scheduled) and await claim(pool, msg) == first
    assert isinstance(await claim(pool, request(zone)), m.NoValidHost)  # full now
    async with pool.acquire() as conn:
        assert await scheduler.release(conn, msg.server_id, host) is True
        assert await scheduler.release(conn, msg.server_id, host) is False
    assert await pool.fetchval("SELECT used_vcpus FROM compute_hosts WHERE name = $1", host) == 0
    assert isinstance(await claim(pool, request(zone)), m.Scheduled)


@pytest.mark.parametrize("policy", ["anti-affinity", "affinity"])
async def test_server_group_policies_hold_under_concurrent_claims(
    pool: asyncpg.Pool, zone: str, policy: str
) -> None:
    hosts = [await add_host(pool, zone, f"h{i}", vcpus=8, memory_mb=8192) for i in range(3)]
    group = str(uuid.uuid4())
    await pool.execute(
        "INSERT INTO server_groups (id, name, project_id, user_id, policy) VALUES ($1, 'g', 'p', 'u', $2)",
        group,
        policy,
    )
    results = await asyncio.gather(*(claim(pool, request(zone, group_id=group)) for _ in range(4)))
    chosen = [r.host for r in results if isinstance(r, m.Scheduled)]
    if policy == "anti-affinity":
        assert sorted(chosen) == sorted(hosts) and sum(isinstance(r, m.NoValidHost) for r in results) == 1
    else:
        assert len(chosen) == 4 and len(set(chosen)) == 1


def test_demand_counts_ephemeral_and_swap_as_nova_does() -> None:
    flavor = m.FlavorSpec(id="x", name="x", ram=1024, vcpus=2, disk=10, ephemeral=5, swap=1536)
    assert scheduler.demand(flavor) == (2, 1024, 17)
