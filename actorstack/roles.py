"""The roles a process can run, composed with their resources' lifecycles in one place.

Every long-lived resource (the asyncpg pool, the AMQP connection, the runtime) is entered on
an AsyncExitStack and released in reverse order at shutdown, whatever happened in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Iterable, Sequence

import asyncpg
import structlog

from actors import amqp, db
from actors.kind import ActorKind
from actors.runtime import Runtime, RuntimeSettings
from actorstack.config import Settings

log = structlog.get_logger("actorstack")


class NotInitialised(Exception):
    def __init__(self, url: str) -> None:
        from actors.errors import redact

        super().__init__(f"the database at {redact(url)} has no actorstack schema: run `actorstack db init`")


def builtin_kinds() -> list[ActorKind]:
    """The actor kinds of the cloud itself (servers, volumes, … arrive with their issues)."""
    return []


def load_kinds(modules: Sequence[str]) -> list[ActorKind]:
    """Extra kinds from modules that define KINDS (plugins, and the test suite's probe kind)."""
    kinds: list[ActorKind] = []
    for name in modules:
        kinds.extend(importlib.import_module(name).KINDS)
    return kinds


async def init_database(settings: Settings) -> tuple[int | None, int]:
    await db.ensure_database(settings.database_url)
    conn = await db.connect(settings.database_url)
    try:
        return await db.init_schema(conn)
    finally:
        await conn.close()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (a second signal is the same request, not a kill)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_runtime(
    settings: Settings,
    kinds: Iterable[ActorKind],
    runtime_settings: RuntimeSettings,
    stop: asyncio.Event,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        pool = await db.create_pool(settings.database_url)
        stack.push_async_callback(pool.close)
        try:
            shards = int(await db.cluster_setting(pool, "shards"))  # type: ignore[call-overload]
        except (LookupError, asyncpg.UndefinedTableError):
            raise NotInitialised(settings.database_url) from None
        connection = await amqp.connect(settings.amqp_url)
        stack.push_async_callback(connection.close)
        runtime = Runtime(pool, connection, kinds, shards=shards, settings=runtime_settings)
        await runtime.start()
        stack.push_async_callback(runtime.stop)
        await stop.wait()
        log.info("stopping")
