"""The `security_group` service (actors/firewall.py): which hosts a group's change reaches — a
rule change the hosts of its members, a membership change the hosts of the ports whose groups
use it as a remote group, nothing else — and the coalescing of membership changes: a burst of
them within the fan-out delay reaches each host once, by a message on its agent queue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import pytest

from actors import amqp, firewall, outbox
from actors.runtime import Runtime
from protocol import decode
from protocol import firewall as f
from protocol.routing import agent_queue
from tests.conftest import FAST


@pytest.fixture
async def runtime(pool: asyncpg.Pool, broker: Any, shards: int) -> AsyncIterator[Runtime]:
    runtime = Runtime(pool, broker, [firewall.KIND], shards=shards, settings=FAST)
    await runtime.start()
    yield runtime
    await runtime.stop()


class Layout:
    """Three hosts: h1 has a port in `web`, h2 one in `db` (whose rule admits `web` as its
    remote group), h3 one in `other`; a fourth port of `web` is not bound anywhere."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.hosts = {name: f"fw-{name}-{tag}" for name in ("h1", "h2", "h3")}
        self.groups = {name: str(uuid.uuid4()) for name in ("web", "db", "other")}
        self.network = str(uuid.uuid4())

    async def create(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO networks (id, project_id, name, mtu) VALUES ($1, 'proj', 'fw', 1450)",
                self.network,
            )
            for name, group_id in self.groups.items():
                await conn.execute(
                    "INSERT INTO security_groups (id, project_id, name) VALUES ($1, 'proj', $2)",
                    group_id,
                    name,
                )
            await conn.execute(
                "INSERT INTO security_group_rules (id, security_group_id, project_id, direction, ethertype, "
                "remote_group_id) VALUES ($1, $2, 'proj', 'ingress', 'IPv4', $3)",
                str(uuid.uuid4()),
                self.groups["db"],
                self.groups["web"],
            )
            placed = [("web", "h1"), ("db", "h2"), ("other", "h3"), ("web", None)]
            for index, (group, host) in enumerate(placed):
                await conn.execute(
                    "INSERT INTO ports (id, network_id, project_id, mac_address, binding_host_id, "
                    "security_group_ids) VALUES ($1, $2, 'proj', $3::macaddr, $4, $5)",
                    str(uuid.uuid4()),
                    self.network,
                    f"fa:16:3e:00:00:{index:02x}",
                    self.hosts[host] if host else "",
                    [self.groups[group]],
                )

    async def remove(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM ports WHERE network_id = $1", self.network)
            await conn.execute("DELETE FROM networks WHERE id = $1", self.network)
            await conn.execute(
                "DELETE FROM security_groups WHERE id = ANY($1::text[])", list(self.groups.values())
            )


@pytest.fixture
async def layout(pool: asyncpg.Pool) -> AsyncIterator[Layout]:
    made = Layout()
    await made.create(pool)
    yield made
    await made.remove(pool)


async def test_a_change_reaches_the_hosts_it_affects_and_no_other(pool: asyncpg.Pool, layout: Layout) -> None:
    h, g = layout.hosts, layout.groups
    async with pool.acquire() as conn:
        # web's rules filter h1's port; web's members are in db's rule, which filters h2's port.
        assert await firewall.hosts_to_nudge(conn, g["web"], rules=True, members=False) == [h["h1"]]
        assert await firewall.hosts_to_nudge(conn, g["web"], rules=False, members=True) == [h["h2"]]
        both = await firewall.hosts_to_nudge(conn, g["web"], rules=True, members=True)
        assert both == sorted([h["h1"], h["h2"]])
        # db is no one's remote group; other's change reaches only h3.
        assert await firewall.hosts_to_nudge(conn, g["db"], rules=False, members=True) == []
        assert await firewall.hosts_to_nudge(conn, g["other"], rules=True, members=True) == [h["h3"]]


class AgentQueue:
    """A host agent's queue, consumed by the test: the nudges that reached the host."""

    def __init__(self) -> None:
        self.nudges: list[f.RefreshFirewall] = []
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.queue: aio_pika.abc.AbstractQueue | None = None

    async def open(self, broker: Any, host: str) -> None:
        self.channel = await broker.channel()
        self.queue = await self.channel.declare_queue(
            agent_queue(host), durable=True, arguments=amqp.shard_queue_arguments()
        )
        await self.queue.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        body = decode(message.body).body
        assert isinstance(body, f.RefreshFirewall)
        self.nudges.append(body)
        await message.ack()

    async def taken(self, wait: float) -> list[str]:
        """The groups of the nudges that arrived within `wait` seconds (and forget them)."""
        await asyncio.sleep(wait)
        got, self.nudges = [n.security_group_id for n in self.nudges], []
        return got

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.delete(if_unused=False, if_empty=False)
        if self.channel is not None:
            await self.channel.close()


async def test_a_burst_of_membership_changes_reaches_each_host_once(
    runtime: Runtime, pool: asyncpg.Pool, broker: Any, shards: int, layout: Layout
) -> None:
    h, g = layout.hosts, layout.groups
    agents = {name: AgentQueue() for name in ("h1", "h2", "h3")}
    try:
        for name, agent in agents.items():
            await agent.open(broker, h[name])
        for _ in range(20):  # twenty ports of `web` come and go within the delay
            async with pool.acquire() as conn, conn.transaction():
                await firewall.arm(conn, [g["web"]], shards)
        assert await agents["h2"].taken(firewall.FAN_OUT_DELAY + 2.0) == [g["web"]]
        assert await agents["h1"].taken(0) == [] and await agents["h3"].taken(0) == []
        # The timer was used up: the next change arms a new one and reaches h2 again.
        async with pool.acquire() as conn, conn.transaction():
            await firewall.arm(conn, [g["web"]], shards)
        assert await agents["h2"].taken(firewall.FAN_OUT_DELAY + 2.0) == [g["web"]]
        # A rule change is sent at once, to the hosts of the group's members.
        async with pool.acquire() as conn, conn.transaction():
            await outbox.send(conn, [firewall.rules_changed(g["web"])], shards)
        assert await agents["h1"].taken(2.0) == [g["web"]]
        assert await agents["h2"].taken(0) == [] and await agents["h3"].taken(0) == []
    finally:
        for agent in agents.values():
            await agent.close()
