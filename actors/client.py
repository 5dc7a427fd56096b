"""Send messages to actors from outside the runtime, and wait for their replies.

For callers that are not in a database transaction (operator tools, the AMQP command edge,
tests). Code that changes state in PostgreSQL and sends a message as a consequence should use
`actors.outbox.send` in its transaction instead, so the two happen together or not at all.
"""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from protocol import Envelope, Message, ProtocolError, Target, decode, encode
from protocol.replies import Reply
from protocol.routing import ACTOR_EXCHANGE, exchange_of, route

PUBLISH_TIMEOUT = 30.0  # seconds for the broker to confirm one publish
_PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
_TRANSIENT = aio_pika.DeliveryMode.NOT_PERSISTENT


class ActorClient:
    def __init__(self, connection: AbstractRobustConnection, shards: int) -> None:
        self._connection = connection
        self.shards = shards
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._replies: AbstractQueue | None = None
        self._waiting: dict[str, asyncio.Future[Reply]] = {}

    async def __aenter__(self) -> ActorClient:
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._channel.get_exchange(ACTOR_EXCHANGE, ensure=False)
        self._replies = await self._channel.declare_queue("", exclusive=True, auto_delete=True)
        await self._replies.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for future in self._waiting.values():
            future.cancel()
        if self._channel is not None:
            await self._channel.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        try:
            envelope = decode(message.body)
        except ProtocolError:
            return
        if isinstance(envelope.body, Reply):
            future = self._waiting.pop(envelope.body.in_reply_to, None)
            if future is not None and not future.done():
                future.set_result(envelope.body)

    async def publish(self, envelope: Envelope, *, expiration: float | None = None) -> None:
        """Publish an envelope as it is (same id: a second publish is a redelivery). With an
        `expiration` (seconds) it is a question: not persisted, and dropped when not taken in time."""
        key = route(envelope.target.kind, envelope.target.id, self.shards)
        await self.publish_raw(
            key,
            encode(envelope),
            message_id=envelope.id,
            expiration=expiration,
            exchange=exchange_of(envelope.target.kind),
        )

    async def publish_raw(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        expiration: float | None = None,
        exchange: str = ACTOR_EXCHANGE,
    ) -> None:
        assert self._exchange is not None and self._channel is not None, (
            "use ActorClient as an async context manager"
        )
        target = self._exchange if exchange == ACTOR_EXCHANGE else self._channel.default_exchange
        await target.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                content_type="application/json",
                delivery_mode=_PERSISTENT if expiration is None else _TRANSIENT,
                expiration=expiration,
            ),
            routing_key,
            timeout=PUBLISH_TIMEOUT,  # a broker blocking publishers (resource alarm) is an error, not a hang
        )

    async def send(self, target: Target, body: Message, *, correlation_id: str | None = None) -> Envelope:
        envelope = Envelope.new(target, body, correlation_id=correlation_id)
        await self.publish(envelope)
        return envelope

    async def ask(
        self, target: Target, body: Message, *, timeout: float = 30.0, question: bool = False
    ) -> Reply:
        """Send and wait for the actor's reply (ok, or the reason it refused). A `question`
        (to a host agent: a console log) is not persisted and expires with the timeout."""
        assert self._replies is not None, "use ActorClient as an async context manager"
        envelope = Envelope.new(target, body, reply_to=self._replies.name)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[envelope.id] = future
        try:
            await self.publish(envelope, expiration=timeout if question else None)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(envelope.id, None)
