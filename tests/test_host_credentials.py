"""A host agent's credentials (`actorstack host credentials --broker-user`) reach its own queue
and nothing else: not another host's queue, not an actor's, not the database. The fault tests'
standalone agents run with exactly these credentials (tests/faults/cluster.py), so an agent
doing its work with them is tested there."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import aio_pika
import aiormq
import asyncpg
import pytest

from actors import amqp
from actorstack.scratch import ScratchServices, cli_argv, host_users
from api.internal import credentials
from protocol.routing import ACTOR_EXCHANGE, agent_queue, queue_name
from tests.conftest import PG_SERVER, ROOT


def _issue(services: ScratchServices, *names: str) -> dict[str, str]:
    done = subprocess.run(
        cli_argv("host", "credentials", "--broker-user", *names),
        cwd=ROOT,
        env=services.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


async def _refused(connection: Any, what: str, action: Any) -> None:
    channel = await connection.channel()
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await action(channel)
    assert channel.is_closed, what


async def test_a_host_reads_its_own_queue_and_nothing_else(
    services: ScratchServices, broker: Any, pool: asyncpg.Pool
) -> None:
    mine, other = f"cred-{uuid.uuid4().hex[:6]}", f"cred-{uuid.uuid4().hex[:6]}"
    # Another host's queue, as its agent would have declared it.
    admin = await broker.channel()
    theirs = await admin.declare_queue(
        agent_queue(other), durable=True, arguments=amqp.shard_queue_arguments()
    )
    env = _issue(services, mine, f"{mine}@file")
    try:
        # What an agent's machine gets: a token and a broker URL, and no database at all.
        assert set(env) == {"ACTORSTACK_HOST_TOKEN", "ACTORSTACK_AMQP_URL"}
        key = str(await pool.fetchval("SELECT value #>> '{}' FROM cluster_settings WHERE key = 'host_key'"))
        assert credentials.verify(key, env["ACTORSTACK_HOST_TOKEN"]) == {mine, f"{mine}@file"}

        connection = await aio_pika.connect(env["ACTORSTACK_AMQP_URL"])
        try:
            # Its own work: declare and consume its queue, publish to the actors and answer.
            channel = await connection.channel(publisher_confirms=True)
            own = await channel.declare_queue(
                agent_queue(mine), durable=True, arguments=amqp.shard_queue_arguments()
            )
            # (no binding: requests reach it through the default exchange)
            await own.consume(_ack)
            exchange = await channel.get_exchange(ACTOR_EXCHANGE, ensure=False)
            await exchange.publish(aio_pika.Message(b"{}"), queue_name("host", 0))
            await channel.default_exchange.publish(aio_pika.Message(b"{}"), "amq.gen-nobody")
            # Anything else is refused by the broker.
            await _refused(connection, "another host's queue", lambda ch: _consume(ch, agent_queue(other)))
            await _refused(connection, "an actor's queue", lambda ch: _consume(ch, queue_name("server", 0)))
            await _refused(connection, "the commands queue", lambda ch: _consume(ch, "actorstack.commands"))
            await _refused(
                connection,
                "declaring another host's queue",
                lambda ch: ch.declare_queue(
                    agent_queue(other), durable=True, arguments=amqp.shard_queue_arguments()
                ),
            )
            await _refused(
                connection, "deleting another host's queue", lambda ch: ch.queue_delete(agent_queue(other))
            )
            await _refused(
                connection,
                "binding its own queue to another host's messages",
                lambda ch: _bind(ch, agent_queue(mine), agent_queue(other)),
            )
        finally:
            await connection.close()

        # The broker user's name and password open no database.
        user = aio_pika_user(env["ACTORSTACK_AMQP_URL"])
        with pytest.raises((asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError)):
            await asyncpg.connect(f"{PG_SERVER}/{services.name}", user=user[0], password=user[1])
    finally:
        done = subprocess.run(
            cli_argv("host", "revoke", mine, f"{mine}@file"),
            cwd=ROOT,
            env=services.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        await theirs.delete(if_unused=False, if_empty=False)
        await admin.queue_delete(agent_queue(mine))
        await admin.close()
    assert not [u for u in host_users(services.name) if mine in u]


async def _ack(message: Any) -> None:
    await message.ack()


async def _consume(channel: Any, name: str) -> None:
    queue = await channel.get_queue(name, ensure=False)
    await queue.consume(_ack)


async def _bind(channel: Any, queue_name_: str, key: str) -> None:
    queue = await channel.get_queue(queue_name_, ensure=False)
    await queue.bind(ACTOR_EXCHANGE, routing_key=key)


def aio_pika_user(url: str) -> tuple[str, str]:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    return unquote(parts.username or ""), unquote(parts.password or "")
