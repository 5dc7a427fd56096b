"""A build end to end through the actors: server actor, scheduler and two real host agents,
one of which cannot spawn. Nova's reschedule: the build retries on the other host."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from actors import kinds
from actors.client import ActorClient
from actors.runtime import Runtime
from hostagent.virt.base import InstanceSpec, VirtError
from hostagent.virt.libvirt import LibvirtDriver
from protocol import Target
from protocol import compute as m
from protocol.states import PowerState
from tests.conftest import FAST, wait_until
from tests.hostagent.conftest import PREFIX, StartAgent, make_image


class CannotSpawn(LibvirtDriver):
    """A hypervisor that refuses every new domain (the fault being injected)."""

    async def spawn(self, spec: InstanceSpec) -> PowerState:
        raise VirtError("injected failure: this host cannot start domains")


async def test_a_failed_spawn_is_retried_on_another_host_and_frees_its_claim(
    pool: asyncpg.Pool, broker: Any, shards: int, start_agent: StartAgent, image_dir: Path
) -> None:
    zone = f"{PREFIX}-az-{uuid.uuid4().hex[:6]}"  # only this test's two hosts are candidates
    # Equal hosts tie on free RAM and are ranked by name: the failing one is tried first.
    bad = await start_agent(f"{PREFIX}-a-{uuid.uuid4().hex[:4]}", availability_zone=zone, driver=CannotSpawn)
    good = await start_agent(f"{PREFIX}-b-{uuid.uuid4().hex[:4]}", availability_zone=zone)
    runtime = Runtime(
        pool,
        broker,
        [kinds.SERVER, kinds.SCHEDULER],
        shards=shards,
        settings=dataclasses.replace(FAST, handler_attempts=5),
    )
    await runtime.start()
    try:
        server_id = str(uuid.uuid4())
        flavor = {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1}
        await pool.execute(  # as the API creates it
            "INSERT INTO servers (id, version, project_id, user_id, display_name, vm_state, task_state, "
            "flavor, image_id, requested_availability_zone, reservation_id) "
            "VALUES ($1, 1, 'p', 'u', $2, 'building', 'scheduling', $3, $4, $5, 'r-test')",
            server_id,
            f"{PREFIX}-vm",
            flavor,
            make_image(image_dir),
            zone,
        )
        async with ActorClient(broker, shards) as client:
            await client.send(Target("server", server_id), m.BuildServer())
            row = await wait_until(lambda: _settled(pool, server_id), timeout=30, what="the build to settle")
            assert (row["vm_state"], row["host"], list(row["attempted_hosts"])) == (
                "active",
                good.name,
                [bad.name],
            )
            assert row["power_state"] == int(PowerState.RUNNING)
            claims = await pool.fetch("SELECT host FROM allocations WHERE server_id = $1", server_id)
            assert [c["host"] for c in claims] == [good.name]
            assert await pool.fetchval("SELECT used_vcpus FROM compute_hosts WHERE name = $1", bad.name) == 0
            assert not (
                bad.settings.state_dir / "instances" / server_id
            ).exists()  # the failed spawn cleaned up

            await client.send(Target("server", server_id), m.DeleteServer())
            await wait_until(lambda: _vm_state_is(pool, server_id, "deleted"), timeout=30, what="the delete")
            await wait_until(lambda: _no_claim(pool, server_id), what="the claim to be released")
            assert await good.driver.power_state(server_id) is None
            assert not (good.settings.state_dir / "instances" / server_id).exists()
    finally:
        await runtime.stop()


async def _settled(pool: asyncpg.Pool, server_id: str) -> asyncpg.Record | None:
    row = await pool.fetchrow("SELECT * FROM servers WHERE id = $1", server_id)
    return row if row is not None and row["vm_state"] in ("active", "error") else None


async def _vm_state_is(pool: asyncpg.Pool, server_id: str, state: str) -> bool:
    return await pool.fetchval("SELECT vm_state FROM servers WHERE id = $1", server_id) == state


async def _no_claim(pool: asyncpg.Pool, server_id: str) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM allocations WHERE server_id = $1", server_id)
