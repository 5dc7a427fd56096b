"""Shard leases: who may consume which shard queue.

A runtime process subscribes to a shard queue only while it holds that shard's lease, a
session-level PostgreSQL advisory lock on a connection it keeps for the purpose. Handing a
shard over is therefore: the old owner cancels its subscription, finishes every message it
was already given, and only then releases the lease; the new owner takes the lease and
subscribes. Nobody can overtake a message that was delivered to the previous owner, so the
messages of one actor are handled in queue order across handovers.

A process that dies loses its database session, and with it its leases, at once; the broker
returns its unacknowledged messages to the queue, in order, before the next owner's first
delivery. The queues are also single-active-consumer, so even a lease lost to a database
blip never lets two processes consume one queue at the same time.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable

import asyncpg
import structlog

from actors.db import DB_ERRORS

log = structlog.get_logger("actors.leases")

NAMESPACE = 0x6C65  # first key of the two-key advisory lock ("le"ase)
_DB_ERRORS = DB_ERRORS


def lease_key(queue: str) -> int:
    """The second advisory-lock key of a queue (pg_locks shows it as an unsigned objid)."""
    return zlib.crc32(queue.encode())


def _signed(key: int) -> int:
    return key - (1 << 32) if key >= 1 << 31 else key


class LeaseSessionLost(Exception):
    """The database session holding the leases ended: every lease is gone."""


class ShardLeases:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._lock = asyncio.Lock()  # one query at a time on the lease session
        self.held: set[str] = set()

    async def _session(self) -> asyncpg.pool.PoolConnectionProxy:
        if self._conn is not None and self._conn.is_closed():
            await self._lost()
        if self._conn is None:
            self._conn = await self._pool.acquire()
        return self._conn

    async def _lost(self) -> None:
        conn, self._conn = self._conn, None
        had = bool(self.held)
        self.held.clear()
        if conn is not None:
            # The session may still be alive holding leases; the pool would not unlock them
            # (actors/db.py), so end it.
            conn.terminate()
            try:
                await self._pool.release(conn)
            except _DB_ERRORS:
                pass
        if had:
            raise LeaseSessionLost()

    async def held_anywhere(self) -> set[int]:
        """Lease keys held by any process now."""
        async with self._lock:
            try:
                conn = await self._session()
                # pg_locks shows every database's locks; advisory locks are per database, and
                # another cloud on this PostgreSQL holds the same keys in its own.
                rows = await conn.fetch(
                    "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 "
                    "AND objsubid = 2 AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    NAMESPACE,
                )
            except _DB_ERRORS:
                await self._lost()
                raise
        return {int(r["objid"]) for r in rows}

    async def try_acquire(self, queues: Iterable[str]) -> set[str]:
        """Take whichever of these leases are free; returns the ones taken."""
        wanted = [q for q in queues if q not in self.held]
        if not wanted:
            return set()
        async with self._lock:
            try:
                conn = await self._session()
                rows = await conn.fetch(
                    "SELECT q FROM unnest($1::text[], $2::int[]) AS t(q, k) "
                    "WHERE pg_try_advisory_lock($3, k)",
                    wanted,
                    [_signed(lease_key(q)) for q in wanted],
                    NAMESPACE,
                )
            except _DB_ERRORS:
                await self._lost()
                raise
        got = {r["q"] for r in rows}
        self.held |= got
        return got

    async def release(self, queue: str) -> None:
        if queue not in self.held:
            return
        async with self._lock:
            self.held.discard(queue)
            try:
                conn = await self._session()
                await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", NAMESPACE, _signed(lease_key(queue)))
            except _DB_ERRORS:
                await self._lost()

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                try:
                    await self._conn.execute("SELECT pg_advisory_unlock_all()")
                except _DB_ERRORS:
                    pass
            self.held.clear()
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    await self._pool.release(conn)
                except _DB_ERRORS:
                    pass
