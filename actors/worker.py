"""A queue worker: one queue's subscription and a strictly sequential loop over its deliveries.

The runtime subscribes a worker only while it owns the queue (actors/leases.py); deliveries are
handled one at a time, in the order the broker sent them, which is what gives each actor its
messages in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

log = structlog.get_logger("actors.worker")

# What a channel operation may raise once the broker connection is gone.
BROKER_GONE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    RuntimeError,
)


class QueueWorker:
    def __init__(
        self,
        queue: str,
        kind: str,
        handle: Callable[[AbstractIncomingMessage], Awaitable[None]],
        *,
        prefetch: int,
        on_release: Callable[[], None] = lambda: None,
    ) -> None:
        self.queue_name = queue
        self.kind = kind
        self._handle = handle
        self._prefetch = prefetch
        self._on_release = on_release
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def subscribed(self) -> bool:
        return self._tag is not None

    async def start(self, connection: AbstractRobustConnection) -> None:
        self._channel = await connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        # Declared (passively: the topology is declared elsewhere) rather than just named, so the
        # robust channel knows the queue and re-subscribes its consumer after a reconnect; a
        # queue only named would stay unconsumed while this process keeps the shard's lease.
        self._queue = await self._channel.declare_queue(self.queue_name, passive=True)
        self._task = asyncio.create_task(self._loop(), name=f"queue {self.queue_name}")

    async def subscribe(self) -> None:
        assert self._queue is not None, "start() first"
        if self._tag is None:
            self._tag = await self._queue.consume(self._deliver)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self._buffer.put_nowait(message)

    async def _loop(self) -> None:
        while True:
            message = await self._buffer.get()
            try:
                # A delivery on a channel that has since closed was already given back by the
                # broker (to us again after the reconnect, or to the next owner): skip it.
                if not delivered_on_closed_channel(message):
                    await self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug in the runtime itself, not in a handler (those are caught per turn).
                # The loop must survive it; the broker dead-letters the message to the intake,
                # which records it, rather than redeliver it here forever.
                log.exception("unexpected error handling a delivery", queue=self.queue_name)
                with contextlib.suppress(*BROKER_GONE):
                    await message.reject(requeue=False)
            finally:
                self._buffer.task_done()

    async def unsubscribe(self) -> None:
        """Stop deliveries, then finish every message already delivered. None is given back,
        so whoever owns the queue next cannot overtake them."""
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(*BROKER_GONE):
                await self._queue.cancel(self._tag)
            self._tag = None
        await self._buffer.join()
        self._on_release()

    async def stop(self) -> None:
        await self.unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            with contextlib.suppress(*BROKER_GONE):
                await self._channel.close()


def delivered_on_closed_channel(message: AbstractIncomingMessage) -> bool:
    try:
        message.channel  # noqa: B018 - the property raises once the channel is closed
    except aio_pika.exceptions.ChannelInvalidStateError:
        return True
    return False
