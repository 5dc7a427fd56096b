"""RabbitMQ: the robust connection and the topology every actor message travels through.

Per actor kind, `shards` quorum queues `actor.<kind>.<n>`, each single-active-consumer (one
runtime process handles a shard at a time, in order; another takes over when it goes away),
bound to the direct exchange `actorstack.actors`. A queue's `x-delivery-limit` catches a
message that keeps killing its consumer: the broker dead-letters it to the intake queue, where
the runtime records the fault. Messages the runtime dead-letters itself go straight to
`actorstack.dead-letters`, where they stay for inspection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from pamqp.common import Arguments

from actors.errors import ServiceUnreachable, VhostRefused
from protocol import notifications
from protocol.routing import (
    ACTOR_EXCHANGE,
    COMMANDS_EXCHANGE,
    COMMANDS_QUEUE,
    COMMANDS_QUEUE_ARGUMENTS,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    queue_name,
)

DEAD_INTAKE_EXCHANGE = "actorstack.dead-intake"
DEAD_INTAKE_QUEUE = "actorstack.dead-intake"
DELIVERY_LIMIT = 20
# How long opening a connection may take: a broker busy creating the quorum queues of other
# clients (a cloud's start declares one per shard per kind) can take well over 10 s to answer a
# handshake on a loaded machine; a broker that is down fails at once (connection refused).
CONNECT_TIMEOUT = 30.0


async def connect(url: str) -> AbstractRobustConnection:
    """A connection that reconnects by itself and restores channels, queues and consumers."""
    # The first attempt's failure is reported once, by ServiceUnreachable; aiormq would also
    # log it as an error of its own.
    quiet = logging.getLogger("aiormq.connection")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return await aio_pika.connect_robust(url, timeout=CONNECT_TIMEOUT, fail_fast=True)
    except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
        text = str(exc).strip() or type(exc).__name__
        if "Connection.OpenOk" in text and "Connection.Close" in text:  # the vhost was refused
            parts = urlsplit(url)
            raise VhostRefused(
                url, unquote(parts.path[1:]) or "/", unquote(parts.username or "guest")
            ) from None
        raise ServiceUnreachable("RabbitMQ", url, text.splitlines()[0]) from None
    finally:
        quiet.setLevel(level)


def shard_queue_arguments() -> Arguments:
    return {
        "x-queue-type": "quorum",
        "x-single-active-consumer": True,
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD_INTAKE_EXCHANGE,
    }


async def declare_commands(channel: AbstractChannel) -> aio_pika.abc.AbstractQueue:
    """The command exchange and its queue (api/commands.py): declared by every process, so that
    an integration can send commands as soon as any part of the cloud is up."""
    exchange = await channel.declare_exchange(COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(COMMANDS_QUEUE, durable=True, arguments={**COMMANDS_QUEUE_ARGUMENTS})
    await queue.bind(exchange, routing_key="#")
    return queue


async def declare_topology(channel: AbstractChannel, kinds: Iterable[str], shards: int) -> None:
    """Idempotent: every process declares what it uses at start."""
    actors = await channel.declare_exchange(ACTOR_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
    # Integrations bind their own queues to it (protocol/notifications.py); the relay publishes.
    await channel.declare_exchange(notifications.EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    await declare_commands(channel)

    dead = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
    dead_queue = await channel.declare_queue(
        DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_queue.bind(dead)

    intake = await channel.declare_exchange(DEAD_INTAKE_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
    intake_queue = await channel.declare_queue(
        DEAD_INTAKE_QUEUE,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-single-active-consumer": True},
    )
    await intake_queue.bind(intake)

    for kind in kinds:
        for shard in range(shards):
            name = queue_name(kind, shard)
            queue = await channel.declare_queue(name, durable=True, arguments=shard_queue_arguments())
            await queue.bind(actors, routing_key=name)
