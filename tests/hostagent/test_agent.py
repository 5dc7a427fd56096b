"""A real HostAgent on libvirt's test driver, in this process, against the real PostgreSQL and
RabbitMQ: registration and heartbeat, requests through `agent.<host>` and the replies the
server actors get, idempotency, power-state sync, failed spawns, restarts."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from actors.client import ActorClient
from hostagent.agent import HostAgent
from hostagent.virt.libvirt import LibvirtDriver
from protocol import Envelope, Message, Target, decode
from protocol import compute as m
from protocol.routing import ACTOR_EXCHANGE, agent_queue, route
from protocol.states import PowerState
from tests.conftest import wait_until
from tests.hostagent.conftest import PREFIX, SYNC, StartAgent, make_image

TINY = m.FlavorSpec(id="1", name="m1.tiny", ram=512, vcpus=1, disk=1)


class ServerInbox:
    """What a server actor would receive: a temporary queue bound like its shard queue."""

    def __init__(self, server_id: str) -> None:
        self.server_id = server_id
        self.received: asyncio.Queue[Envelope] = asyncio.Queue()

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        envelope = decode(message.body)
        if envelope.target == Target("server", self.server_id):
            self.received.put_nowait(envelope)

    async def next(self, timeout: float = 10.0) -> Envelope:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def next_of(self, kind: type[Message], timeout: float = 10.0) -> Envelope:
        """The next message of this type, skipping others (power-state reports, say)."""

        async def find() -> Envelope:
            while True:
                envelope = await self.received.get()
                if isinstance(envelope.body, kind):
                    return envelope

        return await asyncio.wait_for(find(), timeout)

    def nothing_more(self) -> bool:
        return self.received.empty()


@pytest.fixture
async def inbox(broker: Any, shards: int) -> AsyncIterator[Callable[[str], Awaitable[ServerInbox]]]:
    channel = await broker.channel()

    async def open_inbox(server_id: str) -> ServerInbox:
        box = ServerInbox(server_id)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(ACTOR_EXCHANGE, routing_key=route("server", server_id, shards))
        await queue.consume(box._on_message, no_ack=True)
        return box

    yield open_inbox
    await channel.close()


def spawn_request(server_id: str, image_id: str | None, flavor: m.FlavorSpec = TINY) -> m.Spawn:
    return m.Spawn(server_id=server_id, name=f"{PREFIX} server", flavor=flavor, image_id=image_id)


async def spawned(client: ActorClient, agent: HostAgent, box: ServerInbox, image_id: str) -> Envelope:
    await client.send(Target("agent", agent.name), spawn_request(box.server_id, image_id))
    reply = await box.next_of(m.Spawned)
    return reply


# --- registration -------------------------------------------------------------------------------


async def test_the_agent_registers_its_host_and_heartbeats(
    start_agent: StartAgent, pool: asyncpg.Pool
) -> None:
    agent = await start_agent()
    row = await pool.fetchrow("SELECT * FROM compute_hosts WHERE name = $1", agent.name)
    assert row is not None
    assert (row["availability_zone"], row["virt_type"], row["hypervisor_hostname"], row["host_ip"]) == (
        "nova",
        "test",
        agent.name,
        "127.0.0.1",
    )
    assert (row["vcpus"], row["memory_mb"], row["reserved_memory_mb"]) == (64, 262144, 0)
    statvfs = os.statvfs(agent.storage.instances_dir)
    assert row["local_gb"] == statvfs.f_blocks * statvfs.f_frsize // 1024**3 > 0
    assert (row["cpu_allocation_ratio"], row["ram_allocation_ratio"], row["disk_allocation_ratio"]) == (
        4.0,
        1.0,
        1.0,
    )
    assert (row["used_vcpus"], row["used_memory_mb"], row["used_local_gb"], row["enabled"]) == (0, 0, 0, True)
    first = row["heartbeat_at"]
    await wait_until(lambda: _heartbeat_after(pool, agent.name, first), timeout=30, what="a newer heartbeat")


async def _heartbeat_after(pool: asyncpg.Pool, name: str, when: Any) -> bool:
    return bool(
        await pool.fetchval("SELECT heartbeat_at > $2 FROM compute_hosts WHERE name = $1", name, when)
    )


async def test_a_restart_updates_the_inventory_but_not_the_usage_or_the_operators_columns(
    start_agent: StartAgent, pool: asyncpg.Pool
) -> None:
    agent = await start_agent()
    await pool.execute(
        "UPDATE compute_hosts SET used_vcpus = 3, used_memory_mb = 1536, used_local_gb = 3, generation = 7, "
        "enabled = false, disabled_reason = 'maintenance' WHERE name = $1",
        agent.name,
    )
    await agent.stop()
    again = await start_agent(agent.name, availability_zone=f"{PREFIX}-az", cpu_allocation_ratio=2.0)
    row = await pool.fetchrow("SELECT * FROM compute_hosts WHERE name = $1", again.name)
    assert (row["availability_zone"], row["cpu_allocation_ratio"]) == (f"{PREFIX}-az", 2.0)
    assert (row["used_vcpus"], row["used_memory_mb"], row["used_local_gb"], row["generation"]) == (
        3,
        1536,
        3,
        7,
    )
    assert (row["enabled"], row["disabled_reason"]) == (False, "maintenance")


# --- requests and replies -----------------------------------------------------------------------


async def test_spawn_is_answered_with_spawned_and_a_redelivery_is_idempotent(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path
) -> None:
    agent = await start_agent()
    image_id = make_image(image_dir)
    box = await inbox(str(uuid.uuid4()))
    request = Envelope.new(Target("agent", agent.name), spawn_request(box.server_id, image_id))
    await client.publish(request)
    reply = await box.next()
    assert isinstance(reply.body, m.Spawned)
    assert (reply.body.host, reply.body.power_state) == (agent.name, PowerState.RUNNING)
    assert (reply.correlation_id, reply.causation_id) == (request.correlation_id, request.id)
    assert await agent.driver.power_state(box.server_id) is PowerState.RUNNING
    paths = agent.storage.paths(box.server_id)
    assert sorted(os.listdir(paths.directory)) == ["console.log", "disk", "disk.info", "libvirt.xml"]

    await client.publish(request)  # the same message again, as after a crash before the ack
    again = await box.next()
    assert isinstance(again.body, m.Spawned) and again.body.power_state == PowerState.RUNNING
    assert again.id == reply.id  # so the server actor's inbox takes it for the duplicate it is
    assert await agent.driver.instances() == {box.server_id: PowerState.RUNNING}


async def test_a_console_question_is_answered_to_the_asker_and_changes_nothing(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path
) -> None:
    """The API's console question (reply_to set) gets the log's tail back on the asker's reply
    queue, not a report to the server actor; a server without an instance here, or a name that
    is not a server id, gets no console (None)."""
    agent = await start_agent()
    box = await inbox(str(uuid.uuid4()))
    await client.publish(
        Envelope.new(Target("agent", agent.name), spawn_request(box.server_id, make_image(image_dir)))
    )
    assert isinstance((await box.next()).body, m.Spawned)
    agent.storage.paths(box.server_id).console_log.write_bytes(b"boot\n" * 10 + b"login: ")
    asked = Target("agent", agent.name)
    reply = await client.ask(
        asked, m.ConsoleOutputOnHost(server_id=box.server_id, max_bytes=12), question=True
    )
    assert reply.ok and reply.result == {"output": base64.b64encode(b"boot\nlogin: ").decode()}
    for other in (str(uuid.uuid4()), "../../etc/passwd"):
        reply = await client.ask(asked, m.ConsoleOutputOnHost(server_id=other, max_bytes=100), question=True)
        assert reply.ok and reply.result == {"output": None}
    await asyncio.sleep(0.5)
    assert box.nothing_more()  # the server actor heard nothing of it


async def test_power_actions_are_answered_and_one_in_effect_is_done(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path
) -> None:
    agent = await start_agent()
    box = await inbox(str(uuid.uuid4()))
    await spawned(client, agent, box, make_image(image_dir))
    target = Target("agent", agent.name)

    await client.send(target, m.PowerActionOnHost(server_id=box.server_id, action="stop"))
    done = (await box.next_of(m.ActionDone)).body
    assert (done.action, done.power_state) == ("stop", PowerState.SHUTDOWN)
    assert await agent.driver.power_state(box.server_id) is PowerState.SHUTDOWN

    await client.send(target, m.PowerActionOnHost(server_id=box.server_id, action="stop"))
    assert (await box.next_of(m.ActionDone)).body.power_state == PowerState.SHUTDOWN

    await client.send(target, m.PowerActionOnHost(server_id=box.server_id, action="pause"))
    failed = (await box.next_of(m.ActionFailed)).body
    assert (failed.action, failed.power_state) == (
        "pause",
        PowerState.SHUTDOWN,
    ) and "SHUTDOWN" in failed.reason

    await client.send(target, m.PowerActionOnHost(server_id=box.server_id, action="start"))
    assert (await box.next_of(m.ActionDone)).body.power_state == PowerState.RUNNING

    missing = await inbox(str(uuid.uuid4()))
    await client.send(target, m.PowerActionOnHost(server_id=missing.server_id, action="stop"))
    lost = (await missing.next_of(m.ActionFailed)).body
    assert lost.power_state == PowerState.NOSTATE and "could not be found" in lost.reason


async def test_destroy_removes_the_domain_and_the_files_and_is_idempotent(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path
) -> None:
    agent = await start_agent()
    box = await inbox(str(uuid.uuid4()))
    await spawned(client, agent, box, make_image(image_dir))
    for _ in range(2):  # the second finds nothing, and says so the same way
        await client.send(Target("agent", agent.name), m.Destroy(server_id=box.server_id))
        assert (await box.next_of(m.Destroyed)).body.host == agent.name
        assert await agent.driver.power_state(box.server_id) is None
        assert not agent.storage.paths(box.server_id).directory.exists()


async def test_requests_for_one_server_are_handled_in_order(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path
) -> None:
    agent = await start_agent()
    image_id = make_image(image_dir)
    boxes = [await inbox(str(uuid.uuid4())) for _ in range(3)]
    target = Target("agent", agent.name)
    for box in boxes:  # interleaved across servers: each server's own sequence must hold
        await client.send(target, spawn_request(box.server_id, image_id))
    for action in ("pause", "unpause", "stop"):
        for box in boxes:
            await client.send(target, m.PowerActionOnHost(server_id=box.server_id, action=action))
    for box in boxes:
        await client.send(target, m.Destroy(server_id=box.server_id))
    for box in boxes:
        replies: list[Message] = []
        while len(replies) < 5:
            body = (await box.next()).body
            if not isinstance(body, m.PowerStateReport):
                replies.append(body)
        assert [type(r) for r in replies] == [
            m.Spawned,
            m.ActionDone,
            m.ActionDone,
            m.ActionDone,
            m.Destroyed,
        ]
        assert [r.power_state for r in replies[1:4]] == [  # type: ignore[attr-defined]
            PowerState.PAUSED,
            PowerState.RUNNING,
            PowerState.SHUTDOWN,
        ]
    assert await agent.driver.instances() == {}


# --- failed spawns --------------------------------------------------------------------------------


async def test_a_spawn_without_its_image_fails_and_leaves_nothing_behind(
    start_agent: StartAgent, client: ActorClient, inbox: Any
) -> None:
    agent = await start_agent()
    box = await inbox(str(uuid.uuid4()))
    missing_image = str(uuid.uuid4())
    await client.send(Target("agent", agent.name), spawn_request(box.server_id, missing_image))
    failed = (await box.next_of(m.SpawnFailed)).body
    assert failed.host == agent.name and missing_image in failed.reason
    assert await agent.driver.power_state(box.server_id) is None
    assert not agent.storage.paths(box.server_id).directory.exists()
    assert not agent.storage.base_path(missing_image).exists()


async def test_a_spawn_libvirt_refuses_fails_and_removes_the_files_it_made(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path
) -> None:
    agent = await start_agent()
    box = await inbox(str(uuid.uuid4()))
    impossible = m.FlavorSpec(id="0", name="zero", ram=512, vcpus=0, disk=1)  # libvirt wants a vCPU
    await client.send(
        Target("agent", agent.name), spawn_request(box.server_id, make_image(image_dir), impossible)
    )
    failed = (await box.next_of(m.SpawnFailed)).body
    assert "libvirt" in failed.reason
    assert await agent.driver.power_state(box.server_id) is None
    assert not agent.storage.paths(box.server_id).directory.exists()


# --- power-state sync -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vm_state", "restored"),
    [("active", PowerState.RUNNING), ("paused", PowerState.PAUSED), ("stopped", PowerState.SHUTDOWN)],
)
async def test_every_instance_comes_back_as_its_server_was_and_is_reported_once_after_start(
    start_agent: StartAgent,
    client: ActorClient,
    inbox: Any,
    image_dir: Path,
    pool: asyncpg.Pool,
    vm_state: str,
    restored: PowerState,
) -> None:
    agent = await start_agent()
    box = await inbox(str(uuid.uuid4()))
    await spawned(client, agent, box, make_image(image_dir))
    await agent.stop()
    # The database places the server here: adopted (an instance it does not know is reaped).
    await pool.execute(
        "INSERT INTO servers (id, version, project_id, user_id, display_name, vm_state, flavor, host, "
        "reservation_id) VALUES ($1, 1, $2, $2, $2, $3, $4, $5, $2)",
        box.server_id,
        PREFIX,
        vm_state,
        {},
        agent.name,
    )
    try:
        # The test hypervisor forgot the domain with its connection; the new agent defines it
        # again from the definition it kept, as its server was, and reports it once.
        again = await start_agent(agent.name)
        report = (await box.next_of(m.PowerStateReport)).body
        assert (report.host, report.power_state) == (agent.name, restored)
        assert await again.driver.power_state(box.server_id) is restored
        await asyncio.sleep(3 * SYNC)
        assert box.nothing_more()  # unchanged: reported once
        await client.send(
            Target("agent", again.name), m.PowerActionOnHost(server_id=box.server_id, action="stop")
        )
        assert (await box.next_of(m.ActionDone)).body.power_state == PowerState.SHUTDOWN
    finally:
        await pool.execute("DELETE FROM servers WHERE id = $1", box.server_id)


async def test_a_domain_changed_behind_the_agents_back_is_reported(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path
) -> None:
    agent = await start_agent()
    box = await inbox(str(uuid.uuid4()))
    await spawned(client, agent, box, make_image(image_dir))
    driver = agent.driver
    assert isinstance(driver, LibvirtDriver)
    dom = await asyncio.to_thread(driver.connection.lookupByUUIDString, box.server_id)

    await asyncio.to_thread(dom.destroy)  # libvirt's destroy: the domain is stopped, not removed
    report = await box.next_of(m.PowerStateReport, timeout=2 * SYNC)
    assert (report.body.host, report.body.power_state) == (agent.name, PowerState.SHUTDOWN)

    await asyncio.to_thread(dom.undefine)
    report = await box.next_of(m.PowerStateReport, timeout=2 * SYNC)
    assert report.body.power_state == PowerState.NOSTATE
    await asyncio.sleep(3 * SYNC)
    assert box.nothing_more()


async def test_the_periodic_sync_reports_an_instance_whose_domain_vanished(
    start_agent: StartAgent, inbox: Any
) -> None:
    """No lifecycle event here: only the periodic sync can notice."""
    agent = await start_agent()
    box = await inbox(str(uuid.uuid4()))
    agent.storage.paths(box.server_id).directory.mkdir(parents=True)
    report = await box.next_of(m.PowerStateReport, timeout=2 * SYNC + 1)
    assert (report.body.host, report.body.power_state) == (agent.name, PowerState.NOSTATE)


# --- the queue -----------------------------------------------------------------------------------------


async def test_an_unreadable_request_is_dead_lettered_and_the_agent_goes_on(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path, pool: asyncpg.Pool
) -> None:
    agent = await start_agent()
    marker = f"{PREFIX}-{uuid.uuid4().hex}"
    await client.publish_raw(
        agent_queue(agent.name), f'{{"not": "an envelope", "marker": "{marker}"}}'.encode(), exchange=""
    )
    elsewhere = Envelope.new(Target("agent", f"{agent.name}-other"), m.Destroy(server_id=str(uuid.uuid4())))
    from protocol import encode

    await client.publish_raw(agent_queue(agent.name), encode(elsewhere), message_id=elsewhere.id, exchange="")
    await wait_until(lambda: _dead_letters(pool, agent.name, 2), timeout=30, what="two dead letters")
    reasons = [
        r["reason"]
        for r in await pool.fetch(
            "SELECT reason FROM dead_letters WHERE queue = $1 ORDER BY id", agent_queue(agent.name)
        )
    ]
    assert reasons[0].startswith("malformed envelope")
    assert "arrived on" in reasons[1]
    box = await inbox(str(uuid.uuid4()))
    await spawned(client, agent, box, make_image(image_dir))


async def _dead_letters(pool: asyncpg.Pool, name: str, count: int) -> bool:
    return (
        await pool.fetchval("SELECT count(*) FROM dead_letters WHERE queue = $1", agent_queue(name)) >= count
    )


async def test_stop_finishes_the_request_in_flight_before_it_returns(
    start_agent: StartAgent, client: ActorClient, inbox: Any, image_dir: Path, broker: Any
) -> None:
    agent = await start_agent()
    box = await inbox(str(uuid.uuid4()))
    locks = agent._locks  # white box: hold the server's lock so the request stays in flight
    async with locks.hold(box.server_id):
        await client.send(Target("agent", agent.name), spawn_request(box.server_id, make_image(image_dir)))
        await wait_until(
            lambda: _async(locks._users.get(box.server_id) == 2),
            timeout=30,
            what="the request waiting for the server's lock",
        )
        stopping = asyncio.create_task(agent.stop())
        await asyncio.sleep(0.5)
        assert not stopping.done()  # waits for the request it was given
    await asyncio.wait_for(stopping, 10)
    assert isinstance((await box.next_of(m.Spawned, timeout=1)).body, m.Spawned)
    paths = agent.storage.paths(box.server_id)
    assert sorted(os.listdir(paths.directory)) == ["console.log", "disk", "disk.info", "libvirt.xml"]
    channel = await broker.channel()
    queue = await channel.declare_queue(agent_queue(agent.name), passive=True)
    assert queue.declaration_result.message_count == 0  # acked, not given back
    await channel.close()


async def _async(value: Any) -> Any:
    return value
