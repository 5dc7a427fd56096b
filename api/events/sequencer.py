"""Commit-ordered numbers for events: what makes the stream resumable without gaps.

A turn inserts its events with a `bigserial` id and the id of its transaction (`xid`). Ids are
drawn at insert, not at commit: a reader following ids can pass id 7 while the transaction that
holds it is still open, and never come back for it. So the stream follows `seq` instead, given
here, in (xid, id) order, and only to events whose transaction is older than every transaction
still running (xid below the current snapshot's xmin): those have all committed or rolled back,
and no transaction that starts later can get a smaller xid. Numbered events therefore only ever
join at the end, and "everything after seq N" is the same set whenever it is asked.

Any API process may run a sequencer; a transaction-level advisory lock lets one number at a time,
and the counter row (`event_sequence`) keeps the numbers dense and increasing across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from actors import db

log = structlog.get_logger("api.events")

LOCK = 0x65766E74  # "evnt"
BATCH = 5000

# One statement, so one round trip and one (implicit) transaction per pass, idle or not: the
# transaction-level advisory lock lets one sequencer number at a time and is held until the
# statement ends; the settled events are those whose transaction is older than every
# transaction running now (xid below the snapshot's xmin), in (xid, id) order; the counter row
# keeps the numbers dense across processes. NULL when there was nothing to do or the lock was
# taken. (All parts of the statement see one snapshot; the counter's UPDATE runs once, before
# the events' UPDATE reads its result.)
_SEQUENCE = """
WITH locked AS (SELECT pg_try_advisory_xact_lock($1) AS ok),
settled AS (
    SELECT id, row_number() OVER (ORDER BY xid, id) AS n
    FROM (SELECT id, xid FROM events
          WHERE seq IS NULL AND xid < pg_snapshot_xmin(pg_current_snapshot())
            AND (SELECT ok FROM locked)
          ORDER BY xid, id LIMIT $2) AS s
),
counter AS (
    UPDATE event_sequence SET last = last + (SELECT count(*) FROM settled)
    WHERE EXISTS (SELECT 1 FROM settled)
    RETURNING last
),
numbered AS (
    UPDATE events SET seq = counter.last - (SELECT count(*) FROM settled) + settled.n
    FROM settled, counter WHERE events.id = settled.id
    RETURNING events.seq
)
SELECT max(seq) FROM numbered
"""


async def sequence_once(pool: asyncpg.Pool, batch: int = BATCH) -> int | None:
    """Number the settled events not numbered yet (up to `batch`); the highest seq given, or
    None when there was nothing to do (or another process holds the lock)."""
    async with pool.acquire() as conn:
        return await conn.fetchval(_SEQUENCE, LOCK, batch)


class Sequencer:
    """Numbers events every `interval` seconds (at once again while there is a backlog) and
    tells `on_new` the highest seq given."""

    def __init__(self, pool: asyncpg.Pool, on_new: Callable[[int], None], interval: float = 0.05) -> None:
        self.pool = pool
        self.on_new = on_new
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event sequencer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                last = await sequence_once(self.pool)
            except asyncio.CancelledError:
                raise
            except db.DB_ERRORS as exc:
                log.warning("event sequencing failed; will retry", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            if last is not None:
                self.on_new(last)
                continue  # there may be more
            await asyncio.sleep(self.interval)
