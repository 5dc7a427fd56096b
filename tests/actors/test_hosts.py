"""The `host` service (actors/hosts.py) writes what agents report, in a runtime's turns: the
inventory's columns of `compute_hosts` and nothing the scheduler or the operator owns; a row an
operator deleted comes back with the next heartbeat; domains and backends; an agent's dead
letter recorded and copied to the dead-letter queue."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from actors import hosts
from actors.client import ActorClient
from actors.runtime import Runtime
from protocol import Target
from protocol import hosts as h
from tests.conftest import FAST, wait_until


@pytest.fixture
async def runtime(pool: asyncpg.Pool, broker: Any, shards: int) -> AsyncIterator[Runtime]:
    runtime = Runtime(pool, broker, [hosts.KIND], shards=shards, settings=FAST)
    await runtime.start()
    yield runtime
    await runtime.stop()


def report(started: bool, **changes: Any) -> h.ComputeHostReport:
    values: dict[str, Any] = {
        "started": started,
        "availability_zone": "nova",
        "virt_type": "test",
        "hypervisor_hostname": "node",
        "host_ip": "192.0.2.10",
        "vcpus": 8,
        "memory_mb": 16384,
        "local_gb": 100,
        "cpu_allocation_ratio": 4.0,
        "ram_allocation_ratio": 1.0,
        "disk_allocation_ratio": 1.0,
        "reserved_memory_mb": 0,
        "tunnel_ip": "198.18.0.10",
    }
    return h.ComputeHostReport(**(values | changes))


async def _row(pool: asyncpg.Pool, name: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT *, host(tunnel_ip) AS tunnel FROM compute_hosts WHERE name = $1", name)


async def test_a_hosts_reports_write_its_inventory_and_nothing_else(
    runtime: Runtime, client: ActorClient, pool: asyncpg.Pool
) -> None:
    name = f"hoststest-{uuid.uuid4().hex[:6]}"
    try:
        await client.send(Target("host", name), report(True))
        await wait_until(lambda: _row(pool, name), 10, "the host's row")
        first = await _row(pool, name)
        assert first is not None and (first["vcpus"], first["tunnel"]) == (8, "198.18.0.10")
        # The operator disables it and the scheduler claims some of it: a report changes neither.
        await pool.execute(
            "UPDATE compute_hosts SET enabled = false, disabled_reason = 'maintenance', used_vcpus = 2, "
            "used_memory_mb = 512 WHERE name = $1",
            name,
        )
        await client.send(Target("host", name), report(False, vcpus=16))

        async def grown() -> bool:
            row = await _row(pool, name)
            return row is not None and row["vcpus"] == 16

        await wait_until(grown, 10, "the heartbeat's inventory")
        row = await _row(pool, name)
        assert row is not None
        assert (row["enabled"], row["disabled_reason"], row["used_vcpus"], row["used_memory_mb"]) == (
            False,
            "maintenance",
            2,
            512,
        )
        assert row["started_at"] == first["started_at"] and row["heartbeat_at"] > first["heartbeat_at"]
        # An operator deletes the row: the next heartbeat writes it again.
        await pool.execute("DELETE FROM compute_hosts WHERE name = $1", name)
        await client.send(Target("host", name), report(False))
        await wait_until(lambda: _row(pool, name), 10, "the row back")

        await client.send(Target("host", name), h.DomainsReport(domains={str(uuid.uuid4()): 1, "x": None}))

        async def domains() -> Any:
            return await pool.fetchval("SELECT domains FROM host_domains WHERE host = $1", name)

        found = await wait_until(domains, 10, "the domains")
        assert sorted(found.values(), key=str) == [1, None]
    finally:
        await pool.execute("DELETE FROM compute_hosts WHERE name = $1", name)
        await pool.execute("DELETE FROM host_domains WHERE host = $1", name)


async def test_a_backends_report_and_an_agents_dead_letter(
    runtime: Runtime, client: ActorClient, pool: asyncpg.Pool
) -> None:
    name = f"hoststest-{uuid.uuid4().hex[:6]}@file"
    queue = f"agent.{name}"
    try:
        await client.send(
            Target("host", name),
            h.BackendReport(started=True, driver="file", availability_zone="nova", total_gb=50),
        )

        async def backend() -> Any:
            return await pool.fetchrow("SELECT * FROM volume_backends WHERE name = $1", name)

        row = await wait_until(backend, 10, "the backend's row")
        assert (row["driver"], row["total_gb"], row["enabled"]) == ("file", 50, True)
        raw = b'{"not": "an envelope"}'
        await client.send(
            Target("host", name),
            h.AgentDeadLetter(queue=queue, reason="undecodable", message_id="not-a-uuid", raw=raw),
        )

        async def dead() -> Any:
            return await pool.fetchrow("SELECT * FROM dead_letters WHERE queue = $1", queue)

        letter = await wait_until(dead, 10, "the dead letter")
        assert (letter["reason"], bytes(letter["body"]), letter["message_id"]) == (
            "undecodable",
            raw,
            "not-a-uuid",
        )
    finally:
        await pool.execute("DELETE FROM volume_backends WHERE name = $1", name)
        await pool.execute("DELETE FROM dead_letters WHERE queue = $1", queue)
