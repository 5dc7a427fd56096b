"""Issue 10: RabbitMQ crashes and comes back in the middle of 50 boots.

A whole cloud (`actorstack up`, two simulated hosts) runs on a private PostgreSQL and a private
RabbitMQ; the broker is killed (SIGKILL, no clean shutdown) or stopped (it closes every
connection first) while some servers are ACTIVE and others still building, and started again on
the same data directory, where its durable quorum queues survive. The cloud's process is
never restarted: its connections must come back by themselves, and the outbox must publish
what the broker did not confirm, so that every server still reaches a final state.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aio_pika
import aiormq
import pytest

from tests.faults.private import (
    BootStorm,
    FaultCloud,
    PrivateRabbit,
    check_consistent,
    delete_all,
    listening,
    non_loopback_listeners,
    storm_until_mixed,
    unclean_answers,
    wait_for,
)

pytestmark = pytest.mark.faults

SERVERS = 50


OUTAGE_BOOTS = 5


async def probe_api(
    cloud: FaultCloud, storm: BootStorm, booted: asyncio.Event, until: asyncio.Event
) -> list[str]:
    """Reads, and a few boots, while the broker is away (every answer is recorded and judged
    later); the ids of the boots accepted then. The API needs no broker to accept a boot: the
    server's row and its build message are committed together, and the outbox relay publishes
    the message once the broker is back."""
    accepted: list[str] = []
    probes = 0
    while not until.is_set() and probes < 200:
        await cloud.request("GET", "/compute/v2.1/servers/detail?limit=5")
        await cloud.request("GET", f"/compute/v2.1/servers/{next(iter(storm.accepted.values()))}")
        if probes < OUTAGE_BOOTS:
            answer = await cloud.boot(f"broker-fault-outage-{probes}", storm.flavor_id, storm.image_id)
            if answer.status == 202:
                accepted.append(answer.body["server"]["id"])
        else:
            booted.set()
        probes += 1
        await asyncio.sleep(0.2)
    return accepted


def queues_without_their_consumer(rabbit: PrivateRabbit) -> list[str]:
    """The cloud's queues without exactly one consumer: every actor shard and every host agent's
    queue must have one, the runtime and the agents being the only processes there."""
    return sorted(q for q, n in rabbit.consumers().items() if q.startswith(("actor.", "agent.")) and n != 1)


@pytest.mark.parametrize("crash", [True, False], ids=["killed", "stopped"])
async def test_servers_reach_a_final_state_across_a_broker_restart(
    fault_cloud: FaultCloud, rabbit: PrivateRabbit, crash: bool
) -> None:
    cloud = fault_cloud
    pid = cloud.proc.pid if cloud.proc else 0

    async def resubscribed() -> bool:
        return not await asyncio.to_thread(queues_without_their_consumer, rabbit)

    await wait_for(resubscribed, 60, "every shard and agent queue to have its consumer", interval=1)
    flavor_id, image_id = await cloud.prepare(SERVERS + OUTAGE_BOOTS)
    storm = BootStorm(cloud, flavor_id, image_id)
    names = [f"broker-fault-{i:02d}" for i in range(SERVERS)]

    # 20 boots first, the rest as the broker goes down (and OUTAGE_BOOTS more while it is away).
    second_wave, before = await storm_until_mixed(cloud, storm, names)
    if crash:
        rabbit.kill()  # SIGKILL: no connection.close for anyone, unconfirmed publishes lost
    else:
        await asyncio.to_thread(rabbit.stop)  # the broker closes every connection first
    booted, outage_over = asyncio.Event(), asyncio.Event()
    prober = asyncio.create_task(probe_api(cloud, storm, booted, outage_over))
    try:
        await asyncio.wait_for(booted.wait(), 120)  # the broker stays away until those were answered
        rabbit.launch()
        await asyncio.to_thread(rabbit.wait_ready)
    finally:
        outage_over.set()
        during = await prober
    await second_wave
    await storm.retry_refused()
    assert len(storm.accepted) == SERVERS

    rows = await check_consistent(cloud, storm)
    assert cloud.alive and cloud.proc is not None and cloud.proc.pid == pid, (
        "the cloud's process was restarted"
    )
    assert rabbit.starts == 2 and before["building"] > 0
    assert during, "no boot was accepted while the broker was away"
    assert {r["id"]: r["vm_state"] for r in rows if r["id"] in during} == dict.fromkeys(during, "active")
    await wait_for(resubscribed, 60, "every shard and agent queue to have its consumer again", interval=1)
    bad = unclean_answers(cloud)
    assert not bad, f"answers during the outage that no client can use: {bad[:3]}"
    # The broker's durable state survived and the outbox re-published what it had not
    # confirmed: nothing was lost, so every boot made it.
    errors = [dict(r) for r in rows if r["vm_state"] == "error"]
    assert not errors, f"servers in ERROR after a broker restart: {errors[:3]}"
    assert not non_loopback_listeners(rabbit.pid) and not non_loopback_listeners(pid)

    await delete_all(cloud)
    assert await cloud.stop() == 0, (
        f"actorstack up did not stop cleanly after the outage:\n{cloud.log_tail()}"
    )


async def test_a_private_broker_keeps_durable_messages_across_a_crash_and_leaves_nothing() -> None:
    """The harness itself: loopback only, a quorum queue's message survives SIGKILL, and closing
    leaves no process, port or directory behind."""
    server = PrivateRabbit()
    try:
        server.start()
        assert not non_loopback_listeners(server.pid)
        connection = await aio_pika.connect(server.url)
        async with connection:
            channel = await connection.channel()  # publisher confirms: the broker has it on disk
            await channel.declare_queue("probe", durable=True, arguments={"x-queue-type": "quorum"})
            await channel.default_exchange.publish(
                aio_pika.Message(b"kept", delivery_mode=aio_pika.DeliveryMode.PERSISTENT), "probe"
            )

        async def counted() -> bool:
            # RabbitMQ 3.10 may not recover a quorum queue killed within a second of its
            # declaration; the tests' queues are older than that, and so is this one then.
            return (
                "probe\t1"
                in (await asyncio.to_thread(server.ctl, "list_queues", "-q", "name", "messages")).stdout
            )

        await wait_for(counted, 30, "the broker to count the message", interval=0.5)
        pid = server.pid
        server.restart(crash=True)
        assert server.pid != pid
        assert (
            await wait_for(lambda: _quietly(consume_one(server.url, "probe")), 60, "the message back")
            == b"kept"
        )
    finally:
        server.close()
    assert not server.root.exists()
    assert not listening(server.port) and not listening(server.dist_port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def consume_one(url: str, queue_name: str) -> bytes:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                return message.body
    raise AssertionError("the consumer ended without a message")


async def _quietly(coro: Any) -> Any:
    """None instead of the errors of a queue that is not ready yet (bounded by a timeout)."""
    try:
        return await asyncio.wait_for(coro, 10)
    except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException, TimeoutError, OSError):
        return None
