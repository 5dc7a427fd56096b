"""The runtime's guarantees, against the real PostgreSQL and RabbitMQ, in this process."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import asyncpg

from actors.client import ActorClient
from protocol import Envelope, Target, encode
from protocol.routing import DEAD_LETTER_QUEUE, REASON_HEADER, route
from tests.actors.probe import Add, Arm, Create, Explode, Freeze, Remove
from tests.conftest import FAST, wait_until


def new_probe() -> Target:
    return Target("probe", f"p-{uuid.uuid4()}")


async def probe_row(pool: asyncpg.Pool, target: Target) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM probes WHERE id = $1", target.id)


async def created(client: ActorClient, pool: asyncpg.Pool, target: Target) -> None:
    reply = await client.ask(target, Create(project_id="proj-1"))
    assert reply.ok and reply.state == "idle"


async def test_ask_gets_the_reply_of_the_turn(
    start_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    await start_runtime()
    target = new_probe()
    await created(client, pool, target)
    reply = await client.ask(target, Add(amount=5))
    assert reply.ok and reply.result == {"count": 5}
    assert (await probe_row(pool, target))["count"] == 5


async def test_redelivered_message_has_one_effect(
    start_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    runtime = await start_runtime()
    target = new_probe()
    await created(client, pool, target)
    envelope = Envelope.new(target, Add(amount=1))
    for _ in range(3):  # the same message id three times, as a broker redelivery would
        await client.publish(envelope)
    reply = await client.ask(target, Add(amount=10))  # queued after the copies: handled after them
    assert reply.ok and reply.result == {"count": 11}
    assert runtime.counters["duplicate"] >= 2


async def test_illegal_message_is_refused_and_changes_nothing(
    start_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    await start_runtime()
    target = new_probe()
    await created(client, pool, target)
    assert (await client.ask(target, Freeze())).ok
    before = await probe_row(pool, target)
    reply = await client.ask(target, Add(amount=3))
    assert not reply.ok and reply.error == "conflict" and reply.state == "frozen"
    assert "cannot accept probe.add while in state frozen" in (reply.reason or "")
    assert await probe_row(pool, target) == before


async def test_message_for_a_missing_actor_is_not_found(start_runtime: Any, client: ActorClient) -> None:
    await start_runtime()
    reply = await client.ask(new_probe(), Add())
    assert not reply.ok and reply.error == "not_found"


async def test_poison_message_is_dead_lettered_and_the_actor_faulted(
    start_runtime: Any, client: ActorClient, pool: asyncpg.Pool, broker: Any
) -> None:
    await start_runtime()
    target = new_probe()
    await created(client, pool, target)
    poison = await client.send(target, Explode())
    await wait_until(lambda: _state_is(pool, target, "error"), what="the probe in error")

    fault = await pool.fetchrow("SELECT * FROM actor_faults WHERE actor_id = $1", target.id)
    assert fault["message_id"] == poison.id and fault["message_type"] == "probe.explode"
    assert (
        "probe exploded as asked" in fault["reason"]
        and f"failed {FAST.handler_attempts} times" in fault["reason"]
    )
    event = await pool.fetchrow("SELECT * FROM events WHERE actor_id = $1 AND type = 'fault'", target.id)
    assert event["prev_state"] == "idle" and event["new_state"] == "error"
    assert await pool.fetchval("SELECT count(*) FROM dead_letters WHERE message_id = $1", poison.id) == 1

    found = await _find_in_dead_letter_queue(broker, poison.id)
    assert "probe exploded as asked" in found[REASON_HEADER]

    # The actor's error state is a state like any other: messages are judged against it.
    reply = await client.ask(target, Add())
    assert not reply.ok and reply.state == "error"


async def test_undecodable_messages_are_dead_lettered_and_the_consumer_goes_on(
    start_runtime: Any, client: ActorClient, pool: asyncpg.Pool, shards: int
) -> None:
    await start_runtime()
    target = new_probe()
    await created(client, pool, target)
    key = route("probe", target.id, shards)
    good = Envelope.new(target, Add())
    wire = encode(good)
    marker = uuid.uuid4().hex
    bad = [
        f"garbage {marker}".encode(),
        wire.replace(b'"probe.add"', b'"probe.nonesuch"').replace(b'"amount":1', f'"m":"{marker}"'.encode()),
        wire.replace(b'"version":1', b'"version":99').replace(
            b'"amount":1', f'"amount":1,"m":"{marker}"'.encode()
        ),
        wire.replace(b'"amount":1', f'"amount":"{marker}"'.encode()),
    ]
    for body in bad:
        await client.publish_raw(key, body)
    reply = await client.ask(target, Add(amount=2))
    assert reply.ok and reply.result == {"count": 2}
    reasons = await pool.fetch(
        "SELECT reason FROM dead_letters WHERE position($1 in convert_from(body, 'UTF8')) > 0", marker
    )
    text = " | ".join(r["reason"] for r in reasons)
    assert len(reasons) == 4, text
    for expected in (
        "malformed envelope",
        "unknown message type",
        "unsupported version 99",
        "malformed body",
    ):
        assert expected in text


async def test_timer_fires_its_message(start_runtime: Any, client: ActorClient, pool: asyncpg.Pool) -> None:
    await start_runtime()
    target = new_probe()
    await created(client, pool, target)
    assert (await client.ask(target, Arm(after=0.3))).state == "armed"
    await wait_until(lambda: _state_is(pool, target, "rung"), timeout=30, what="the timer")
    assert await pool.fetchval("SELECT count(*) FROM timers WHERE actor_id = $1", target.id) == 0


async def test_idle_actor_is_passivated_and_reactivated(
    start_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    runtime = await start_runtime(dataclasses.replace(FAST, passivate_after=0.2))
    target = new_probe()
    await created(client, pool, target)
    key = ("probe", target.id)
    assert key in runtime.activations
    await wait_until(lambda: _async(key not in runtime.activations), timeout=30, what="passivation")
    assert (await client.ask(target, Add(amount=2))).result == {"count": 2}
    assert key in runtime.activations


async def test_a_row_changed_behind_the_cache_is_not_overwritten(
    start_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    runtime = await start_runtime()
    target = new_probe()
    await created(client, pool, target)
    assert ("probe", target.id) in runtime.activations
    await pool.execute("UPDATE probes SET count = 100, version = version + 1 WHERE id = $1", target.id)
    assert (await client.ask(target, Add(amount=1))).result == {"count": 101}


async def test_every_state_change_writes_an_event_in_the_turn(
    start_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    await start_runtime()
    target = new_probe()
    await created(client, pool, target)
    await client.ask(target, Add())  # no state change: no event
    await client.ask(target, Freeze())
    await client.ask(target, Remove())
    rows = await pool.fetch("SELECT * FROM events WHERE actor_id = $1 ORDER BY id", target.id)
    assert [(r["type"], r["prev_state"], r["new_state"]) for r in rows] == [
        ("probe.create", None, "idle"),
        ("probe.freeze", "idle", "frozen"),
        ("probe.remove", "frozen", None),
    ]
    assert {r["project_id"] for r in rows} == {"proj-1"}
    assert await probe_row(pool, target) is None


async def _state_is(pool: asyncpg.Pool, target: Target, state: str) -> bool:
    return await pool.fetchval("SELECT state FROM probes WHERE id = $1", target.id) == state


async def _async(value: Any) -> Any:
    return value


async def _find_in_dead_letter_queue(broker: Any, message_id: str) -> dict[str, Any]:
    """Look through the dead-letter queue without taking anything out of it."""
    channel = await broker.channel()
    try:
        queue = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=False)
        for _ in range(10_000):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            if message.message_id == message_id:
                return dict(message.headers or {})
        raise AssertionError(f"{message_id} is not in {DEAD_LETTER_QUEUE}")
    finally:
        await channel.close()  # returns every message we looked at


async def test_a_runtime_bug_on_one_delivery_does_not_stop_the_shard(
    start_runtime: Any, client: ActorClient, pool: asyncpg.Pool, monkeypatch: Any
) -> None:
    runtime = await start_runtime()
    target = new_probe()
    shard = route("probe", target.id, runtime.shards)
    # Another actor on the same shard: the one that hit the bug is faulted (by the dead-letter
    # intake, concurrently), this one shows that the shard went on past the bad delivery.
    other = next(t for t in iter(new_probe, None) if route("probe", t.id, runtime.shards) == shard)
    await created(client, pool, target)
    await created(client, pool, other)
    worker = runtime.workers[shard]
    real_handle = worker._handle
    calls = {"n": 0}

    async def flaky(message: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("a bug in the runtime")
        await real_handle(message)

    monkeypatch.setattr(worker, "_handle", flaky)
    lost = await client.send(target, Add(amount=100))
    reply = await client.ask(other, Add(amount=1))
    assert reply.ok and reply.result == {"count": 1}
    # The delivery that hit the bug went to the dead-letter intake and was recorded, with its
    # actor faulted: the message was never applied, so the actor may be missing its effect.
    reason = await wait_until(
        lambda: pool.fetchval("SELECT reason FROM dead_letters WHERE message_id = $1", lost.id),
        what="the rejected delivery recorded as a dead letter",
    )
    assert "rejected by its consumer" in reason
    await wait_until(lambda: _state_is(pool, target, "error"), what="the actor faulted")


async def test_a_service_kind_runs_its_sql_in_the_turn_with_the_same_guarantees(
    start_runtime: Any, client: ActorClient, pool: asyncpg.Pool
) -> None:
    from tests.actors.probe import Deposit

    await start_runtime()
    target = new_probe()
    await created(client, pool, target)
    account = f"acct-{uuid.uuid4()}"
    ledger = Target("ledger", account)
    first = Envelope.new(ledger, Deposit(account=account, amount=5, notify=target.id))
    await client.publish(first)
    await client.publish(first)  # a redelivery: one row, one notification
    reply = await client.ask(ledger, Deposit(account=account, amount=-20))
    assert not reply.ok and reply.error == "conflict" and "would be overdrawn" in (reply.reason or "")
    assert (await client.ask(ledger, Deposit(account=account, amount=1))).ok
    rows = await pool.fetch("SELECT amount FROM ledger WHERE account = $1 ORDER BY amount", account)
    assert [r["amount"] for r in rows] == [1, 5]  # the refused deposit's insert was rolled back
    await wait_until(lambda: _async_count(pool, target, 5), what="the notification")
    events = await pool.fetch(
        "SELECT payload FROM events WHERE kind = 'ledger' AND actor_id = $1 ORDER BY id", account
    )
    assert [e["payload"]["balance"] for e in events] == [5, 6]


async def _async_count(pool: asyncpg.Pool, target: Target, expected: int) -> bool:
    return (await probe_row(pool, target) or {}).get("count") == expected
