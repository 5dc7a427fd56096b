"""kill -9 of a runtime process in the middle of a storm of boots (issue 10).

Roles run as separate processes (tests/faults/cluster.py): the API, two runtimes and two host
agents. Once ten servers are ACTIVE one runtime is killed with SIGKILL while the other half of
the storm is booted: its database session ends (freeing its shard leases) and the broker gives
its unacknowledged deliveries back, so the survivor must take every shard over and finish
every boot, with the inbox turning redeliveries into no-ops and the agents answering a
redelivered Spawn without creating the domain again.
"""

from __future__ import annotations

import pytest

from tests.faults.cluster import (
    Api,
    Cluster,
    assert_storm_outcome,
    delete_and_assert_clean,
    owned_shards,
    poll,
    storm_with_fault,
    total_shards,
)

pytestmark = pytest.mark.faults


async def test_killed_runtime_loses_no_boot_and_no_domain_is_created_twice(fault_cluster: Cluster) -> None:
    cluster = fault_cluster
    await cluster.start_api()
    victim = await cluster.start_runtime()
    survivor = await cluster.start_runtime()
    await cluster.start_hostagent()
    await cluster.start_hostagent()
    shards = await total_shards(cluster)

    async def shared() -> bool:
        return owned_shards(victim) > 0 and owned_shards(victim) + owned_shards(survivor) == shards

    await poll(shared, timeout=60, what="both runtimes to own shards")

    async def kill() -> None:
        victim.kill()

    async with Api(cluster.api_url, cluster.password) as api:
        await api.unlimited_quota()
        image = await api.create_image(f"{cluster.name}-img")
        ids = await storm_with_fault(api, image, kill, prefix="kill")
        assert victim.proc.returncode == -9

        async def taken_over() -> bool:
            return owned_shards(survivor) == shards

        await poll(taken_over, timeout=60, what="the survivor to take every shard")
        await assert_storm_outcome(cluster, api, ids)
        await delete_and_assert_clean(cluster, api, ids)
    assert survivor.alive, survivor.tail(3000)
