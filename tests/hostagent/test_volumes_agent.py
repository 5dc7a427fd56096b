"""A real StorageAgent with the file backend, in this process, against the real PostgreSQL and
RabbitMQ: its `volume_backends` row, requests through `agent.<name>` and the replies the volume
actors get, idempotency under redelivery, failures that leave no file behind."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from actors.client import ActorClient
from hostagent.storage import GIB
from hostagent.volumes.agent import StorageAgent, StorageAgentSettings, backend_name
from hostagent.volumes.file import FileBackend
from protocol import Envelope, Message, Target, decode, encode
from protocol import compute as m
from protocol import volume as v
from protocol.routing import ACTOR_EXCHANGE, agent_queue, route
from tests.conftest import wait_until
from tests.hostagent.conftest import PREFIX, make_image, qemu_img_info
from tests.hostagent.local_control import LocalControl

StartStorageAgent = Callable[..., Awaitable[StorageAgent]]


class ActorInbox:
    """What an actor would receive: a temporary queue bound like its shard queue."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.received: asyncio.Queue[Envelope] = asyncio.Queue()

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        envelope = decode(message.body)
        if envelope.target == self.target:
            self.received.put_nowait(envelope)

    async def next(self, timeout: float = 10.0) -> Envelope:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def next_of(self, kind: type[Message], timeout: float = 10.0) -> Envelope:
        envelope = await self.next(timeout)
        assert isinstance(envelope.body, kind), envelope.body
        return envelope


@pytest.fixture
async def inbox(broker: Any, shards: int) -> AsyncIterator[Callable[[Target], Awaitable[ActorInbox]]]:
    channel = await broker.channel()

    async def open_inbox(target: Target) -> ActorInbox:
        box = ActorInbox(target)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(ACTOR_EXCHANGE, routing_key=route(target.kind, target.id, shards))
        await queue.consume(box._on_message, no_ack=True)
        return box

    yield open_inbox
    await channel.close()


@pytest.fixture
async def start_storage_agent(
    pool: asyncpg.Pool, broker: Any, workdir: Path, image_dir: Path
) -> AsyncIterator[StartStorageAgent]:
    """Start StorageAgents on file backends (stopped, their rows and queues removed, at the end)."""
    started: list[StorageAgent] = []
    names: set[str] = set()

    async def start(name: str | None = None, **overrides: Any) -> StorageAgent:
        name = name or backend_name("file", f"{PREFIX}-{uuid.uuid4().hex[:6]}")
        values: dict[str, Any] = {"name": name, "scratch_dir": workdir / name / "scratch", "heartbeat": 0.2}
        values.update(overrides)
        agent = StorageAgent(
            StorageAgentSettings(**values),
            LocalControl(pool, image_dir),
            broker,
            FileBackend.in_state_dir(workdir / name),
        )
        await agent.start()
        started.append(agent)
        names.add(name)
        return agent

    yield start
    for agent in reversed(started):
        await agent.stop()
    await pool.execute("DELETE FROM volume_backends WHERE name = ANY($1::text[])", list(names))
    channel = await broker.channel()
    for name in names:
        await channel.queue_delete(agent_queue(name))
    await channel.close()


@pytest.fixture
async def add_image(pool: asyncpg.Pool, image_dir: Path) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """An image as the Image API leaves it: its bytes in the store and its row (removed after)."""
    ids: list[str] = []

    async def add(size: str = "8M", fmt: str = "raw", status: str = "active") -> str:
        image_id = make_image(image_dir, size, fmt)
        await pool.execute(
            "INSERT INTO images (id, name, owner, status, disk_format, container_format, size) "
            "VALUES ($1, $2, 'p', $3, $4, 'bare', $5)",
            image_id,
            f"{PREFIX}-image",
            status,
            fmt,
            (image_dir / image_id).stat().st_size,
        )
        ids.append(image_id)
        return image_id

    yield add
    await pool.execute("DELETE FROM images WHERE id = ANY($1::text[])", ids)


def volume_files(agent: StorageAgent) -> list[str]:
    assert isinstance(agent.backend, FileBackend)
    return sorted(os.listdir(agent.backend.directory))


# --- registration -------------------------------------------------------------------------------


async def test_the_agent_registers_its_backend_and_heartbeats(
    start_storage_agent: StartStorageAgent, pool: asyncpg.Pool
) -> None:
    agent = await start_storage_agent(availability_zone=f"{PREFIX}-az")
    assert agent.name.endswith("@file")
    row = await pool.fetchrow("SELECT * FROM volume_backends WHERE name = $1", agent.name)
    assert row is not None
    assert (row["driver"], row["availability_zone"], row["allocated_gb"], row["enabled"]) == (
        "file",
        f"{PREFIX}-az",
        0,
        True,
    )
    assert isinstance(agent.backend, FileBackend)
    statvfs = os.statvfs(agent.backend.directory)
    assert row["total_gb"] == statvfs.f_blocks * statvfs.f_frsize // GIB > 0
    first = row["heartbeat_at"]
    await wait_until(lambda: _heartbeat_after(pool, agent.name, first), timeout=30, what="a newer heartbeat")

    # The API's allocation and the operator's switch survive a restart; a deleted row comes back.
    await pool.execute(
        "UPDATE volume_backends SET allocated_gb = 7, enabled = false WHERE name = $1", agent.name
    )
    await agent.stop()
    again = await start_storage_agent(agent.name)
    row = await pool.fetchrow("SELECT * FROM volume_backends WHERE name = $1", again.name)
    assert (row["allocated_gb"], row["enabled"], row["availability_zone"]) == (7, False, "nova")
    await pool.execute("DELETE FROM volume_backends WHERE name = $1", again.name)
    await wait_until(lambda: _row_exists(pool, again.name), timeout=30, what="the row registered again")


async def _heartbeat_after(pool: asyncpg.Pool, name: str, when: Any) -> bool:
    return bool(
        await pool.fetchval("SELECT heartbeat_at > $2 FROM volume_backends WHERE name = $1", name, when)
    )


async def _row_exists(pool: asyncpg.Pool, name: str) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM volume_backends WHERE name = $1", name))


# --- requests and replies -----------------------------------------------------------------------


async def test_create_extend_and_delete_are_answered_and_redeliveries_are_idempotent(
    start_storage_agent: StartStorageAgent, client: ActorClient, inbox: Any
) -> None:
    agent = await start_storage_agent()
    volume_id = str(uuid.uuid4())
    box = await inbox(Target("volume", volume_id))
    target = Target("agent", agent.name)

    create = Envelope.new(target, v.CreateVolumeOnBackend(volume_id=volume_id, size=1))
    await client.publish(create)
    reply = await box.next_of(v.VolumeCreated)
    assert isinstance(reply.body, v.VolumeCreated)
    location = reply.body.provider_location
    assert (reply.body.backend, reply.body.bootable) == (agent.name, False)
    assert location == str(agent.backend.directory / f"volume-{volume_id}")  # type: ignore[attr-defined]
    assert (reply.correlation_id, reply.causation_id) == (create.correlation_id, create.id)
    info = qemu_img_info(Path(location))
    assert (info["format"], info["virtual-size"]) == ("qcow2", GIB)
    inode = Path(location).stat().st_ino

    await client.publish(create)  # the same message again, as after a crash before the ack
    again = await box.next_of(v.VolumeCreated)
    assert again.id == reply.id and again.body == reply.body  # the volume actor takes it for a duplicate
    assert Path(location).stat().st_ino == inode  # not made again

    extend = Envelope.new(
        target, v.ExtendVolumeOnBackend(volume_id=volume_id, new_size=2, provider_location=location)
    )
    for _ in range(2):
        await client.publish(extend)
        assert (await box.next_of(v.VolumeExtended)).body.size == 2  # type: ignore[attr-defined]
        assert qemu_img_info(Path(location))["virtual-size"] == 2 * GIB

    for _ in range(2):  # the second finds nothing, and says so the same way
        await client.send(target, v.DeleteVolumeOnBackend(volume_id=volume_id, provider_location=location))
        await box.next_of(v.VolumeDeleted)
        assert volume_files(agent) == []


async def test_a_volume_from_an_image_is_bootable_and_holds_the_image(
    start_storage_agent: StartStorageAgent, client: ActorClient, inbox: Any, add_image: Any, image_dir: Path
) -> None:
    agent = await start_storage_agent()
    image_id = await add_image("8M", "raw")
    volume_id = str(uuid.uuid4())
    box = await inbox(Target("volume", volume_id))
    await client.send(
        Target("agent", agent.name), v.CreateVolumeOnBackend(volume_id=volume_id, size=1, image_id=image_id)
    )
    created = (await box.next_of(v.VolumeCreated)).body
    assert isinstance(created, v.VolumeCreated) and created.bootable is True
    info = qemu_img_info(Path(created.provider_location))
    assert (info["format"], info["virtual-size"]) == ("qcow2", GIB)


async def test_failed_requests_report_the_reason_and_leave_no_file(
    start_storage_agent: StartStorageAgent, client: ActorClient, inbox: Any, add_image: Any
) -> None:
    agent = await start_storage_agent()
    target = Target("agent", agent.name)
    cases = [
        (str(uuid.uuid4()), "could not be found"),  # no such image
        (await add_image("2G", "qcow2"), "larger than the volume"),
        (await add_image("8M", "raw", status="queued"), "is not active"),
    ]
    for image_id, expected in cases:
        volume_id = str(uuid.uuid4())
        box = await inbox(Target("volume", volume_id))
        await client.send(target, v.CreateVolumeOnBackend(volume_id=volume_id, size=1, image_id=image_id))
        failed = (await box.next_of(v.VolumeCreateFailed)).body
        assert expected in failed.reason, failed  # type: ignore[attr-defined]
        assert volume_files(agent) == []

    volume_id = str(uuid.uuid4())
    box = await inbox(Target("volume", volume_id))
    await client.send(target, v.CreateVolumeOnBackend(volume_id=volume_id, size=2))
    location = (await box.next_of(v.VolumeCreated)).body.provider_location  # type: ignore[attr-defined]
    await client.send(
        target, v.ExtendVolumeOnBackend(volume_id=volume_id, new_size=1, provider_location=location)
    )
    assert "cannot shrink" in (await box.next_of(v.VolumeExtendFailed)).body.reason  # type: ignore[attr-defined]
    await client.send(target, v.DeleteVolumeOnBackend(volume_id=volume_id, provider_location="/etc/passwd"))
    assert "not in this backend" in (await box.next_of(v.VolumeDeleteFailed)).body.reason  # type: ignore[attr-defined]
    assert Path(location).exists() and Path("/etc/passwd").exists()


async def test_a_request_for_another_kind_of_agent_is_dead_lettered_and_the_agent_goes_on(
    start_storage_agent: StartStorageAgent, client: ActorClient, inbox: Any, pool: asyncpg.Pool
) -> None:
    agent = await start_storage_agent()
    stray = Envelope.new(Target("agent", agent.name), m.Destroy(server_id=str(uuid.uuid4())))
    await client.publish_raw(agent_queue(agent.name), encode(stray), message_id=stray.id, exchange="")
    await wait_until(lambda: _dead_letters(pool, agent.name), timeout=30, what="the dead letter")
    reason = await pool.fetchval("SELECT reason FROM dead_letters WHERE queue = $1", agent_queue(agent.name))
    assert "does not handle 'agent.destroy'" in reason
    volume_id = str(uuid.uuid4())
    box = await inbox(Target("volume", volume_id))
    await client.send(Target("agent", agent.name), v.CreateVolumeOnBackend(volume_id=volume_id, size=1))
    await box.next_of(v.VolumeCreated)


async def _dead_letters(pool: asyncpg.Pool, name: str) -> bool:
    return await pool.fetchval("SELECT count(*) FROM dead_letters WHERE queue = $1", agent_queue(name)) >= 1
