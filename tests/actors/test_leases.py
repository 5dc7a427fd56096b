"""Shard leases are per database: another cloud on the same PostgreSQL holding the same lease
keys in its own database neither blocks nor shows in this one (a cloud started beside a
running one once owned no shard at all)."""

from __future__ import annotations

import asyncpg

from actors import db
from actors.leases import ShardLeases, lease_key
from tests.conftest import RUN_PREFIX, temporary_database


async def test_leases_held_in_another_database_do_not_count(pool: asyncpg.Pool) -> None:
    queue = f"{RUN_PREFIX}.lease-probe"
    async with temporary_database(f"{RUN_PREFIX}_other") as other_url:
        await db.ensure_database(other_url)
        other_pool = await db.create_pool(other_url, min_size=1, max_size=2)
        other, here = ShardLeases(other_pool), ShardLeases(pool)
        try:
            assert await other.try_acquire([queue]) == {queue}
            assert lease_key(queue) in await other.held_anywhere()

            assert lease_key(queue) not in await here.held_anywhere()
            assert await here.try_acquire([queue]) == {queue}
        finally:
            await here.close()
            await other.close()
            await other_pool.close()
