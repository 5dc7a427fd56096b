"""Issue 10: PostgreSQL crashes and comes back in the middle of 50 boots.

A whole cloud (`actorstack up`, two simulated hosts) runs on a private PostgreSQL and a private
RabbitMQ; the database is shut down the way a crash leaves it (`pg_ctl stop -m immediate`: no
checkpoint, crash recovery at the next start) while some servers are ACTIVE and others still
building (or stopped with `-m fast`), and started again on the same data directory and port.
The cloud's process is never restarted: turns interrupted by the outage are retried (each is
one transaction, so nothing is half-written), the API answers 503 meanwhile and serves again
afterwards, and every server reaches a final state with its allocation, its domain and its
host's usage in agreement.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.private import (
    BootStorm,
    FaultCloud,
    PrivatePostgres,
    check_consistent,
    delete_all,
    non_loopback_listeners,
    storm_until_mixed,
    unclean_answers,
)

pytestmark = pytest.mark.faults

SERVERS = 50
MIN_OUTAGE = 3.0  # seconds the database stays away (at least), so that requests meet the outage


async def probe_outage(cloud: FaultCloud, storm: BootStorm) -> list[int]:
    """Reads and boots against the API while the database is away: their statuses (each answer
    is also recorded, to be judged with the others)."""
    statuses: list[int] = []
    started = time.monotonic()
    while (time.monotonic() - started < MIN_OUTAGE or len(statuses) < 6) and time.monotonic() - started < 30:
        for answer in await asyncio.gather(
            cloud.request("GET", "/compute/v2.1/servers/detail?limit=5"),
            cloud.request("GET", f"/compute/v2.1/servers/{next(iter(storm.accepted.values()))}"),
            cloud.boot(f"db-fault-outage-{len(statuses)}", storm.flavor_id, storm.image_id),
        ):
            statuses.append(answer.status)
        await asyncio.sleep(0.3)
    return statuses


@pytest.mark.parametrize("mode", ["immediate", "fast"])
async def test_servers_reach_a_final_state_across_a_database_restart(
    fault_cloud: FaultCloud, postgres: PrivatePostgres, mode: str
) -> None:
    """immediate: a crash (no checkpoint, recovery from the WAL at the next start); fast: the
    server ends every session itself (AdminShutdown) and checkpoints."""
    cloud = fault_cloud
    pid = cloud.proc.pid if cloud.proc else 0
    flavor_id, image_id = await cloud.prepare(SERVERS + 20)
    storm = BootStorm(cloud, flavor_id, image_id)
    names = [f"db-fault-{i:02d}" for i in range(SERVERS)]

    second_wave, before = await storm_until_mixed(cloud, storm, names)
    await asyncio.to_thread(postgres.stop, mode)
    try:
        during = await probe_outage(cloud, storm)
    finally:
        postgres.launch()
        await asyncio.to_thread(postgres.wait_ready)
    await second_wave
    await storm.retry_refused()
    assert len(storm.accepted) == SERVERS

    await check_consistent(cloud, storm)
    assert cloud.alive and cloud.proc is not None and cloud.proc.pid == pid, (
        "the cloud's process was restarted"
    )
    assert postgres.starts == 2 and before["building"] > 0
    assert 503 in during, f"the API did not say it was unavailable during the outage: {during}"
    bad = unclean_answers(cloud)
    assert not bad, f"answers during the outage that no client can use: {bad[:3]}"
    assert not non_loopback_listeners(postgres.pid) and not non_loopback_listeners(pid)

    await delete_all(cloud)
    assert await cloud.stop() == 0, (
        f"actorstack up did not stop cleanly after the outage:\n{cloud.log_tail()}"
    )
