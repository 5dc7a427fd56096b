"""The timer wheel sleeps when nothing is due (an idle cloud must not spin on PostgreSQL)."""

from __future__ import annotations

import asyncio

from actors import db
from actors.timers import TimerWheel
from tests.conftest import RUN_PREFIX, temporary_database


async def test_an_empty_wheel_sleeps_between_passes() -> None:
    async with temporary_database(RUN_PREFIX) as url:
        await db.ensure_database(url)
        pool = await db.create_pool(url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await db.init_schema(conn)
            wheel = TimerWheel(pool, lambda: None, max_sleep=0.5)
            passes = 0
            fire_due = wheel.fire_due

            async def counted(batch: int = 500) -> int:
                nonlocal passes
                passes += 1
                return await fire_due(batch)

            wheel.fire_due = counted  # type: ignore[method-assign]
            task = asyncio.create_task(wheel.run())
            await asyncio.sleep(1.6)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert 1 <= passes <= 5, f"{passes} passes in 1.6 s with nothing due"
        finally:
            await pool.close()
