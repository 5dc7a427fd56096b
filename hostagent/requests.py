"""What every agent shares: its request queue, the replies, dead letters, heartbeat and lifecycle.

An agent (a compute host's HostAgent, a storage backend's StorageAgent) consumes its own durable
quorum queue `agent.<name>` (single-active-consumer: a second agent started with the same name
waits as a standby). For each request it does the work and replies to the actor the request is
about, publishing with publisher confirms, and only then acknowledges the request. A crash in
between means a redelivery, so every handler must be idempotent. A reply's message id is
derived from the request's, so the actor's inbox recognises the reply to a redelivered request
as a duplicate.

Requests about different actors run concurrently (up to `prefetch`); those about one actor run
one at a time, in delivery order (a lock per actor id, taken before the handler's first await).
An undecodable or misdirected request is dead-lettered as the runtime does it; a handler that
raises is retried through the queue (whose delivery limit ends a request that never passes).

A request with `reply_to` set is a question (the API asking for a console log): its answer goes
to the asker's reply queue as a Reply, and it changes nothing on the host.

A subclass says which handler serves a request (`_handler_for`, raising ProtocolError for a
type it does not handle) and which actor a request is about (`_subject`: the lock's key and
the reply's target), and builds its `_start` from the steps here, in this order: open the
channels and declare the queue (`_open_queue`), register, start its background tasks
(`_run_tasks`), then consume (`_consume`). `stop()` undoes them in reverse.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, ClassVar, Self

import aio_pika
import msgspec
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from actors import amqp
from actors.worker import BROKER_GONE, delivered_on_closed_channel
from hostagent.control import Control, ControlUnavailable
from hostagent.locks import KeyedLocks
from protocol import Envelope, Message, ProtocolError, Target, decode, encode
from protocol.hosts import AgentDeadLetter
from protocol.replies import Reply
from protocol.routing import ACTOR_EXCHANGE, agent_queue, route

log = structlog.get_logger("hostagent")

# Replies get uuid5(this, request id): the same request always gets the same reply id.
REPLY_NAMESPACE = uuidlib.UUID("6d1f3c1e-9a57-4f0b-8f3e-5b0a8f1c2d7e")
RETRY_DELAY = 1.0  # before a request whose handling raised unexpectedly goes back to the queue

# A handler's reply to the actor the request is about; None for a request that wants none (a
# nudge: `agent.refresh_firewall`).
Handler = Callable[[Any], Awaitable[Message | None]]


class RequestAgent(abc.ABC):
    #: What the agent is, for logs: `host` (a compute host), `backend` (a storage backend).
    role: ClassVar[str]
    #: The actor kinds it replies to (their shard queues are the runtime's to declare).
    reply_kinds: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        name: str,
        control: Control,
        connection: AbstractRobustConnection,
        *,
        prefetch: int,
        heartbeat: float,
    ) -> None:
        """The control plane and the connection are the caller's: it starts and stops them."""
        self.name = name
        self.control = control
        self.connection = connection
        self.queue_name = agent_queue(name)
        self.prefetch = prefetch
        self.heartbeat_interval = heartbeat
        self._locks = KeyedLocks()
        self._handlers: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()
        self._stopping = False
        self._shards = 0
        self._exchange: AbstractExchange | None = None
        self._default_exchange: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None

    # --- what a subclass provides ---------------------------------------------------------

    @abc.abstractmethod
    async def _start(self) -> None:
        """Open everything, in order, pushing each undo onto `self._stack`."""

    @abc.abstractmethod
    def _handler_for(self, body: Message) -> Handler:
        """The handler for this request; ProtocolError if the agent does not handle it."""

    @abc.abstractmethod
    def _subject(self, body: Message) -> Target:
        """The actor the request is about: requests about it are serialised, replies go to it."""

    def _handled(self, key: str) -> None:  # noqa: B027 - an optional hook
        """Called (under the key's lock) once a request's reply is published."""

    async def _register(self) -> None:  # noqa: B027 - an optional hook
        """Report the agent's inventory to the `host` service, which writes its row."""

    async def _beat(self) -> None:  # noqa: B027 - an optional hook
        """Report the agent alive now (with its inventory: a deleted row comes back)."""

    #: What ends one heartbeat without ending the heartbeat loop.
    heartbeat_errors: ClassVar[tuple[type[BaseException], ...]] = (ControlUnavailable, *BROKER_GONE)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise

    async def stop(self) -> None:
        """Graceful: no new requests, the delivered ones finished and replied, then closed."""
        await self._stack.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _open_queue(self) -> None:
        """The publishing channel (with confirms) and the consuming one, and the agent's own
        queue, declared and bound (idempotent). The rest of the topology (the actor exchange,
        the reply kinds' shard queues) is the control plane's, which its runtime declares: an
        agent's broker user may touch no queue but its own. Reads the shard count first."""
        stack = self._stack
        self._shards = (await self.control.config()).shards
        publisher = await self.connection.channel(publisher_confirms=True)
        stack.push_async_callback(_close_channel, publisher)
        self._exchange = await publisher.get_exchange(ACTOR_EXCHANGE, ensure=False)
        self._default_exchange = publisher.default_exchange

        consumer = await self.connection.channel()
        stack.push_async_callback(_close_channel, consumer)
        await consumer.set_qos(prefetch_count=self.prefetch)
        # Requests arrive through the default exchange (protocol/routing.py): no binding.
        self._queue = await consumer.declare_queue(
            self.queue_name, durable=True, arguments=amqp.shard_queue_arguments()
        )

    def _run_tasks(self, tasks: Iterable[tuple[str, Coroutine[Any, Any, None]]]) -> None:
        """Start the agent's background tasks (name, coroutine); cancelled at stop."""
        self._stack.push_async_callback(self._cancel_tasks)
        self._tasks = [asyncio.create_task(coro, name=f"{what} {self.name}") for what, coro in tasks]

    async def _consume(self) -> None:
        """Start taking requests; at stop, first stop taking them and finish those delivered."""
        assert self._queue is not None
        self._stack.push_async_callback(self._drain)
        self._consumer_tag = await self._queue.consume(self._on_message)

    async def _drain(self) -> None:
        self._stopping = True
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(*BROKER_GONE):
                await self._queue.cancel(self._consumer_tag)
        while self._handlers:
            await asyncio.gather(*list(self._handlers), return_exceptions=True)

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._beat()
            except self.heartbeat_errors as exc:
                log.warning("heartbeat failed; will retry", error=repr(exc), **{self.role: self.name})

    # --- requests -------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            return  # not acked: the broker gives it back when the channel closes
        task = asyncio.create_task(self._dispatch(message), name=f"request on {self.queue_name}")
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _dispatch(self, message: AbstractIncomingMessage) -> None:
        envelope: Envelope | None = None
        try:
            envelope = decode(message.body)
            if envelope.target != Target("agent", self.name):
                raise ProtocolError(
                    f"message for {envelope.target.kind}/{envelope.target.id} arrived on {self.queue_name}"
                )
            handler = self._handler_for(envelope.body)
        except ProtocolError as exc:
            await self._settle(message, self._dead_letter(message, envelope, exc.reason))
            return
        subject = self._subject(envelope.body)
        with structlog.contextvars.bound_contextvars(
            correlation_id=envelope.correlation_id,
            message_id=envelope.id,
            **{subject.kind: subject.id},
            message_type=envelope.type,
            **{self.role: self.name},
        ):
            await self._settle(message, self._handle(message, envelope, subject, handler))

    async def _settle(self, message: AbstractIncomingMessage, work: Awaitable[None]) -> None:
        """Run the work that ends in the delivery's ack, with one failure policy for all."""
        try:
            await work
        except BROKER_GONE as exc:
            # Unacknowledged, and every handler is idempotent. If the request's own channel
            # died with the connection, the broker has already given it back. But a reconnect
            # restores the channels one after another, in no set order: a request delivered on
            # the restored consuming channel can fail to publish its reply on the publishing
            # one, not restored yet, while its own channel lives on. The broker would never
            # redeliver that one, so it is given back here.
            log.warning("broker went away while handling a request", error=repr(exc))
            await asyncio.sleep(RETRY_DELAY)
            if not delivered_on_closed_channel(message):
                with contextlib.suppress(*BROKER_GONE):
                    await message.nack(requeue=True)
        except Exception:
            # A bug, or a failure that is not the request's (libvirt cannot destroy a domain, the
            # database is away): back to the queue after a pause; the queue's delivery limit
            # dead-letters it to the runtime's intake if it never passes.
            log.exception("request failed; returning it to the queue")
            await asyncio.sleep(RETRY_DELAY)
            with contextlib.suppress(*BROKER_GONE):
                await message.nack(requeue=True)

    async def _handle(
        self, message: AbstractIncomingMessage, envelope: Envelope, subject: Target, handler: Handler
    ) -> None:
        async with self._locks.hold(subject.id):
            reply = await handler(envelope.body)
            if reply is None:
                log.info("request handled", reply=None)
            elif envelope.reply_to is not None:
                await self._answer(envelope, reply)  # a question (the API's): nothing changed
                log.info("request handled", reply=reply.TYPE)
            else:
                await self._publish(self._reply(envelope, subject, reply))
                self._handled(subject.id)
                log.info("request handled", reply=reply.TYPE)
        await message.ack()

    async def _answer(self, question: Envelope, body: Message) -> None:
        """Answer a question straight to the asker's reply queue (a Reply carrying the body),
        not persisted: an asker that is gone has no use for it."""
        assert self._default_exchange is not None and question.reply_to is not None
        reply = Reply(ok=True, in_reply_to=question.id, result=msgspec.to_builtins(body))
        envelope = Envelope.new(Target("reply", question.reply_to), reply, cause=question)
        await self._default_exchange.publish(
            aio_pika.Message(encode(envelope), message_id=envelope.id, content_type="application/json"),
            question.reply_to,
        )

    def _reply(self, request: Envelope, subject: Target, body: Message) -> Envelope:
        envelope = Envelope.new(subject, body, cause=request)
        return msgspec.structs.replace(envelope, id=str(uuidlib.uuid5(REPLY_NAMESPACE, request.id)))

    async def _publish(self, envelope: Envelope) -> None:
        assert self._exchange is not None
        await self._exchange.publish(
            aio_pika.Message(
                encode(envelope),
                message_id=envelope.id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            route(envelope.target.kind, envelope.target.id, self._shards),
        )

    async def _dead_letter(
        self, message: AbstractIncomingMessage, envelope: Envelope | None, reason: str
    ) -> None:
        """An undecodable or misdirected request ends as the runtime's dead letters do: the
        `host` service records it in `dead_letters` and copies it to the dead-letter queue;
        then it is acked (after the report was confirmed)."""
        log.warning("dead-lettering a request the agent cannot handle", queue=self.queue_name, reason=reason)
        report = AgentDeadLetter(
            queue=self.queue_name,
            reason=reason[:1000],
            message_id=envelope.id if envelope is not None else str(uuidlib.uuid4()),
            raw=message.body,
        )
        await self.control.report(self.name, report)
        await message.ack()


async def _close_channel(channel: AbstractChannel) -> None:
    with contextlib.suppress(*BROKER_GONE):
        await channel.close()
