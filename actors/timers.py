"""Durable timers: an actor asks for a message later; the request is a row, so it survives
restarts. A due timer is moved to the outbox in one transaction (deleted from `timers`,
inserted into `outbox`), so it fires exactly once into the broker's at-least-once delivery.
Times are the database's clock, so processes on machines with skewed clocks agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import asyncpg
import structlog

from actors import db
from actors.db import DB_ERRORS
from actors.outbox import OutboxRow
from protocol.routing import ACTOR_EXCHANGE

log = structlog.get_logger("actors.timers")

_SET = """
INSERT INTO timers (kind, actor_id, name, fire_at, message_id, routing_key, body)
SELECT k, a, n, now() + make_interval(secs => s), m, r, b
FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::uuid[], $6::text[], $7::bytea[])
     AS t(k, a, n, s, m, r, b)
ON CONFLICT (kind, actor_id, name) DO UPDATE
SET fire_at = EXCLUDED.fire_at, message_id = EXCLUDED.message_id,
    routing_key = EXCLUDED.routing_key, body = EXCLUDED.body
"""

_FIRE = f"""
WITH due AS (
    DELETE FROM timers WHERE (kind, actor_id, name) IN (
        SELECT kind, actor_id, name FROM timers WHERE fire_at <= now()
        ORDER BY fire_at LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING fire_at, message_id, routing_key, body)
INSERT INTO outbox (message_id, exchange, routing_key, body)
SELECT message_id, '{ACTOR_EXCHANGE}', routing_key, body FROM due ORDER BY fire_at
"""


async def set_timers(
    conn: db.Connection, kind: str, actor_id: str, timers: Sequence[tuple[str, float, OutboxRow]]
) -> None:
    if not timers:
        return
    await conn.execute(
        _SET,
        [kind] * len(timers),
        [actor_id] * len(timers),
        [name for name, _, _ in timers],
        [after for _, after, _ in timers],
        [row.message_id for _, _, row in timers],
        [row.routing_key for _, _, row in timers],
        [row.body for _, _, row in timers],
    )


async def cancel_timers(conn: db.Connection, kind: str, actor_id: str, names: Sequence[str]) -> None:
    if names:
        await conn.execute(
            "DELETE FROM timers WHERE kind = $1 AND actor_id = $2 AND name = ANY($3::text[])",
            kind,
            actor_id,
            list(names),
        )


class TimerWheel:
    """Moves due timers to the outbox; sleeps until the next one (or `max_sleep`)."""

    def __init__(self, pool: asyncpg.Pool, on_fired: Callable[[], None], *, max_sleep: float = 1.0) -> None:
        self._pool = pool
        self._on_fired = on_fired
        self._max_sleep = max_sleep
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def fire_due(self, batch: int = 500) -> int:
        async with self._pool.acquire() as conn:
            status = await conn.execute(_FIRE, batch)
        fired = int(status.split()[-1])
        if fired:
            self._on_fired()
        return fired

    async def run(self) -> None:
        while True:
            delay = self._max_sleep
            try:
                while await self.fire_due() >= 500:
                    pass
                async with self._pool.acquire() as conn:
                    # NULL when there is no timer (greatest() would turn that NULL into 0: a busy loop)
                    delay = await conn.fetchval("SELECT extract(epoch FROM min(fire_at) - now()) FROM timers")
                delay = self._max_sleep if delay is None else min(max(float(delay), 0.0), self._max_sleep)
            except asyncio.CancelledError:
                raise
            except DB_ERRORS as exc:
                log.warning("timer pass failed; will retry", error=repr(exc))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass
            self._wake.clear()
