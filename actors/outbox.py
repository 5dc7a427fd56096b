"""The transactional outbox and its relay.

Whoever changes state (a turn, an API request) writes the messages it sends into `outbox` in
the same transaction. The relay publishes committed rows in `seq` order with publisher
confirms and deletes them only after the broker confirmed: a crash anywhere in between leaves
the rows for the next relay pass (in this or another process), so no message is lost; one may
be published twice, which the receiver's inbox dedupes. One relay pass at a time holds a
transaction-scoped advisory lock, so rows leave in the order they were numbered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Sequence

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from actors import db
from actors.crashpoints import crashpoint
from protocol import Envelope, encode, notifications
from protocol.routing import exchange_of, route

log = structlog.get_logger("actors.outbox")

_RELAY_LOCK = 0x6F757462  # advisory lock key of the relay pass
# Writers outside a runtime (the API) NOTIFY this channel in their transaction; PostgreSQL
# delivers it at commit, and every relay LISTENing wakes at once instead of at its next poll.
CHANNEL = "actorstack_outbox"

_INSERT = """
INSERT INTO outbox (message_id, exchange, routing_key, headers, body)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::bytea[])
"""


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxRow:
    message_id: str
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, object] | None = None


def to_actor(envelope: Envelope, shards: int) -> OutboxRow:
    key = route(envelope.target.kind, envelope.target.id, shards)
    return OutboxRow(envelope.id, exchange_of(envelope.target.kind), key, encode(envelope))


def to_queue(envelope: Envelope, queue: str) -> OutboxRow:
    """Straight to a named queue through the default exchange (replies)."""
    return OutboxRow(envelope.id, "", queue, encode(envelope))


def to_notifications(notification: notifications.Notification, at: float) -> OutboxRow:
    """A notification for integrations, to the topic exchange under its priority's key."""
    return OutboxRow(
        notification.message_id, notifications.EXCHANGE, notification.routing_key, notification.encode(at)
    )


async def write(conn: db.Connection, rows: Sequence[OutboxRow], *, wake: bool = False) -> None:
    """Add rows to the outbox inside the caller's transaction; `wake`: tell the relays (at
    commit) to publish them now, for writers whose process has no relay of its own."""
    if not rows:
        return
    if wake:
        await conn.execute(f"NOTIFY {CHANNEL}")
    await conn.execute(
        _INSERT,
        [r.message_id for r in rows],
        [r.exchange for r in rows],
        [r.routing_key for r in rows],
        [r.headers for r in rows],
        [r.body for r in rows],
    )


async def send(conn: db.Connection, envelopes: Iterable[Envelope], shards: int) -> None:
    """For callers outside the runtime (API, commands): send to actors in your transaction."""
    await write(conn, [to_actor(e, shards) for e in envelopes], wake=True)


class Relay:
    """Publishes committed outbox rows. `wake()` after a commit makes it run at once."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        connection: AbstractRobustConnection,
        *,
        batch: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._batch = batch
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self.published = 0
        # Also woken by another process's NOTIFY (the runtime's timer wheel: a timer the API armed).
        self.on_notify: list[Callable[[], None]] = []

    def wake(self) -> None:
        self._wake.set()

    async def _exchange(self, name: str) -> AbstractExchange:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._exchanges.clear()
        if name not in self._exchanges:
            if name == "":
                self._exchanges[name] = self._channel.default_exchange
            else:
                self._exchanges[name] = await self._channel.get_exchange(name, ensure=False)
        return self._exchanges[name]

    def _notified(self, *_args: object) -> None:
        self.wake()
        for callback in self.on_notify:
            callback()

    async def listen(self) -> None:
        """Wake on other processes' commits (NOTIFY CHANNEL) for as long as the relay runs; the
        poll remains the fallback while the listening connection is being replaced."""
        while True:
            try:
                async with self._pool.acquire() as conn:
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                    await conn.add_listener(CHANNEL, self._notified)
                    try:
                        self.wake()  # whatever committed before we listened
                        await lost.wait()
                    finally:
                        if not conn.is_closed():
                            await conn.remove_listener(CHANNEL, self._notified)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: poll meanwhile, listen again later
                log.warning("outbox listener lost its connection; will retry", error=repr(exc))
                await asyncio.sleep(1.0)

    async def run(self) -> None:
        listener = asyncio.create_task(self.listen(), name="outbox listener")
        try:
            await self._run()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.drain()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database away: the rows stay, try again
                log.warning("outbox relay pass failed; will retry", error=repr(exc), retry_in=backoff)
                self._channel = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._wake.set()

    async def drain(self) -> int:
        """Publish until the outbox is empty (or another relay holds the lock). Returns count."""
        total = 0
        while True:
            count = await self.pass_once()
            if count < 0:  # another relay is mid-pass: it will get our rows or we retry soon
                await asyncio.sleep(0.01)
                continue
            total += count
            if count < self._batch:
                return total

    async def pass_once(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _RELAY_LOCK):
                return -1
            rows = await conn.fetch(
                "SELECT seq, message_id, exchange, routing_key, headers, body "
                "FROM outbox ORDER BY seq LIMIT $1",
                self._batch,
            )
            if not rows:
                return 0
            crashpoint("relay.before_publish")
            await self._publish(rows)
            crashpoint("relay.after_publish")
            await conn.execute("DELETE FROM outbox WHERE seq = ANY($1::bigint[])", [r["seq"] for r in rows])
        self.published += len(rows)
        return len(rows)

    async def _publish(self, rows: Sequence[asyncpg.Record]) -> None:
        # Publishes are issued in seq order on one channel (aiormq serialises the frames in the
        # order the tasks start) and their confirms are awaited together.
        pending = []
        for row in rows:
            exchange = await self._exchange(row["exchange"])
            message = aio_pika.Message(
                row["body"],
                message_id=str(row["message_id"]),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=row["headers"] or None,
            )
            pending.append(
                asyncio.ensure_future(
                    exchange.publish(message, row["routing_key"], mandatory=False, timeout=30)
                )
            )
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
