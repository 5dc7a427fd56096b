"""The sequencer numbers an event only once every transaction older than its own has ended, so
an event committed late can never land behind a number a reader has already passed."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from api.events.sequencer import sequence_once

INSERT = "INSERT INTO events (kind, actor_id, type) VALUES ('sequencer-probe', $1, 'probe') RETURNING id"


async def _seq(pool: asyncpg.Pool, event_id: int) -> int | None:
    return await pool.fetchval("SELECT seq FROM events WHERE id = $1", event_id)


async def test_an_event_waits_for_the_older_transaction_still_open(pool: asyncpg.Pool) -> None:
    actor = uuid.uuid4().hex
    conn = await pool.acquire()
    try:
        tx = conn.transaction()
        await tx.start()
        early = await conn.fetchval(INSERT, actor)  # the older transaction, still open
        late = await pool.fetchval(INSERT, actor)  # younger, committed at once
        for _ in range(5):
            await sequence_once(pool)
            await asyncio.sleep(0.1)
        assert await _seq(pool, late) is None, "numbered while an older transaction could still commit"
        await tx.commit()
        for _ in range(50):
            await sequence_once(pool)
            if await _seq(pool, late) is not None and await _seq(pool, early) is not None:
                break
            await asyncio.sleep(0.1)
        first, second = await _seq(pool, early), await _seq(pool, late)
        assert first is not None and second is not None and first < second
        assert await pool.fetchval("SELECT last FROM event_sequence") >= second
    finally:
        await pool.release(conn)
        await pool.execute("DELETE FROM events WHERE actor_id = $1", actor)


async def test_an_aborted_transaction_holds_nothing_up(pool: asyncpg.Pool) -> None:
    actor = uuid.uuid4().hex
    conn = await pool.acquire()
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.fetchval(INSERT, actor)
        late = await pool.fetchval(INSERT, actor)
        await tx.rollback()
        for _ in range(50):
            await sequence_once(pool)
            if await _seq(pool, late) is not None:
                break
            await asyncio.sleep(0.1)
        assert await _seq(pool, late) is not None
        assert await pool.fetchval("SELECT count(*) FROM events WHERE actor_id = $1", actor) == 1
    finally:
        await pool.release(conn)
        await pool.execute("DELETE FROM events WHERE actor_id = $1", actor)
