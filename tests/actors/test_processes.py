"""Guarantees that need real processes: crashes (kill -9 at chosen points), restarts, two
runtime processes sharing the shards, and graceful shutdown."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from actors.client import ActorClient
from actors.crashpoints import EXIT_CODE
from protocol import Target
from tests.actors.probe import Add, Arm, Create, Forward
from tests.conftest import wait_until


def probes(n: int) -> list[Target]:
    return [Target("probe", f"p-{uuid.uuid4()}") for _ in range(n)]


async def count_of(pool: asyncpg.Pool, target: Target) -> int | None:
    return await pool.fetchval("SELECT count FROM probes WHERE id = $1", target.id)


async def all_exist(pool: asyncpg.Pool, targets: list[Target]) -> bool:
    n = await pool.fetchval("SELECT count(*) FROM probes WHERE id = ANY($1::text[])", [t.id for t in targets])
    return n == len(targets)


async def members(pool: asyncpg.Pool) -> dict[int, str]:
    rows = await pool.fetch(
        "SELECT pid, member_id FROM runtime_members WHERE heartbeat_at > now() - interval '1.5 seconds'"
    )
    return {r["pid"]: r["member_id"] for r in rows}


async def handlers_of(pool: asyncpg.Pool, message_ids: list[str]) -> list[str]:
    rows = await pool.fetch("SELECT member_id FROM inbox WHERE message_id = ANY($1::uuid[])", message_ids)
    return [r["member_id"] for r in rows]


async def test_crash_between_commit_and_ack_causes_no_duplicate_effect(
    spawn_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    (target,) = probes(1)
    # Rows may be created by whoever owns the decision (as the API will): no turn needed.
    await pool.execute("INSERT INTO probes (id, version, state) VALUES ($1, 1, 'idle')", target.id)
    first = spawn_runtime("turn.after_commit")
    add = await client.send(target, Add(amount=1))
    assert await first.exited() == EXIT_CODE  # died after committing the add, before the ack
    assert await count_of(pool, target) == 1

    second = spawn_runtime()
    # The add is redelivered to the second process, recognised as handled, and acked.
    await wait_until(
        lambda: _async(
            f'"message_id": "{add.id}"' in second.log() and "duplicate message skipped" in second.log()
        ),
        what="the redelivered add to be skipped",
    )
    await client.send(target, Add(amount=10))
    await wait_until(lambda: _eq(count_of(pool, target), 11), what="the next add")
    assert await pool.fetchval("SELECT version FROM probes WHERE id = $1", target.id) == 3


async def test_crash_between_commit_and_publish_loses_no_message(
    spawn_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    source, dest = probes(2)
    first = spawn_runtime("relay.before_publish")
    await client.send(source, Create())
    await client.send(dest, Create())
    await wait_until(lambda: all_exist(pool, [source, dest]), what="both probes")
    await client.send(source, Forward(to=dest.id, amount=7))
    assert await first.exited() == EXIT_CODE  # committed the forward, died before publishing it
    assert await count_of(pool, dest) == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE routing_key LIKE 'actor.probe.%'") >= 1

    spawn_runtime()
    await wait_until(lambda: _eq(count_of(pool, dest), 7), what="the forwarded add")
    await asyncio.sleep(0.5)
    assert await count_of(pool, dest) == 7  # exactly once, not twice


async def test_timers_fire_after_a_restart(
    spawn_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    (target,) = probes(1)
    first = spawn_runtime()
    await client.send(target, Create())
    await client.send(target, Arm(after=1.0))
    await wait_until(lambda: _eq(_state(pool, target), "armed"), what="armed")
    first.kill()
    await asyncio.sleep(1.5)  # the timer came due while no runtime was running
    assert await _state(pool, target) == "armed"
    spawn_runtime()
    await wait_until(lambda: _eq(_state(pool, target), "rung"), what="the timer after restart")


async def test_two_processes_share_the_shards_and_one_takes_over_when_the_other_dies(
    spawn_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    a, b = spawn_runtime(), spawn_runtime()
    live = await wait_until(lambda: _live_pair(pool, {a.pid, b.pid}), what="both processes in the membership")
    await asyncio.sleep(1.0)  # each has seen the other and yielded the shards it does not prefer
    targets = probes(64)
    creates = [(await client.send(t, Create())).id for t in targets]
    await wait_until(lambda: all_exist(pool, targets), what="64 probes")
    first_round = await handlers_of(pool, creates)
    assert set(first_round) == {live[a.pid], live[b.pid]}, "both processes should handle shards"

    a.kill()
    adds = [(await client.send(t, Add())).id for t in targets]

    async def all_added() -> bool:
        return await pool.fetchval(
            "SELECT count(*) FROM probes WHERE id = ANY($1::text[]) AND count = 1", [t.id for t in targets]
        ) == len(targets)

    await wait_until(all_added, timeout=30, what="every probe handled after the kill")
    assert set(await handlers_of(pool, adds)) == {live[b.pid]}


async def test_per_actor_order_holds_under_concurrent_senders(
    spawn_runtime: Any, broker: Any, shards: int, pool: asyncpg.Pool
) -> None:
    spawn_runtime()
    spawn_runtime()
    targets = probes(3)
    async with ActorClient(broker, shards) as setup:
        for t in targets:
            await setup.send(t, Create())
    per_sender = 150

    async def sender(name: str) -> None:
        async with ActorClient(broker, shards) as own:  # its own channel, like a separate client
            for seq in range(1, per_sender + 1):
                for t in targets:
                    await own.send(t, Add(sender=name, seq=seq))

    await asyncio.gather(*(sender(f"s{i}") for i in range(4)))

    async def done() -> bool:
        rows = await pool.fetch(
            "SELECT count FROM probes WHERE id = ANY($1::text[])", [t.id for t in targets]
        )
        return len(rows) == 3 and all(r["count"] == 4 * per_sender for r in rows)

    await wait_until(done, timeout=60, what="every add handled")
    rows = await pool.fetch(
        "SELECT out_of_order, last_seq FROM probes WHERE id = ANY($1::text[])", [t.id for t in targets]
    )
    for row in rows:
        assert row["out_of_order"] == 0
        assert row["last_seq"] == {f"s{i}": per_sender for i in range(4)}


async def test_graceful_shutdown_finishes_the_turn_in_progress_and_loses_nothing(
    spawn_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    (target,) = probes(1)
    first = spawn_runtime()
    await client.send(target, Create())
    total = 400
    for _ in range(total):
        await client.send(target, Add())
    await wait_until(lambda: _at_least(count_of(pool, target), 20), what="some adds handled")
    assert await first.stop() == 0
    assert "runtime stopped" in first.log()
    stopped_at = await count_of(pool, target)
    handled = await pool.fetchval("SELECT count(*) FROM inbox WHERE actor_id = $1", target.id)
    assert handled == stopped_at + 1  # every recorded turn has its effect: none was cut in half

    spawn_runtime()
    await wait_until(lambda: _eq(count_of(pool, target), total), timeout=60, what="the rest after restart")
    await asyncio.sleep(0.3)
    assert await count_of(pool, target) == total


async def _live_pair(pool: asyncpg.Pool, pids: set[int]) -> dict[int, str] | None:
    live = await members(pool)
    return live if pids <= set(live) else None


async def _state(pool: asyncpg.Pool, target: Target) -> str | None:
    return await pool.fetchval("SELECT state FROM probes WHERE id = $1", target.id)


async def _eq(value: Any, expected: Any) -> bool:
    return (await value) == expected


async def _at_least(value: Any, expected: int) -> bool:
    got = await value
    return got is not None and got >= expected


async def _async(value: Any) -> Any:
    return value
