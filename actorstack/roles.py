"""The roles a process can run, composed with their resources' lifecycles in one place.

Every long-lived resource (the asyncpg pool, the AMQP connection, the runtime) is entered on
an AsyncExitStack and released in reverse order at shutdown, whatever happened in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import signal
from collections.abc import Callable, Iterable, Sequence

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


@dataclasses.dataclass(frozen=True)
class ApiOptions:
    listen: str  # host:port
    public_url: str | None = None  # what clients use; default http://<listen>
    token_ttl: float = 3600.0

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = self.host_port
        return f"http://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}"


async def _open_pool(stack: contextlib.AsyncExitStack, settings: Settings) -> asyncpg.Pool:
    pool = await db.create_pool(settings.database_url)
    stack.push_async_callback(pool.close)
    try:
        await db.cluster_setting(pool, "shards")
    except (LookupError, asyncpg.UndefinedTableError):
        raise NotInitialised(settings.database_url) from None
    return pool


async def _start_runtime(
    stack: contextlib.AsyncExitStack, settings: Settings, pool: asyncpg.Pool,
    kinds: Iterable[ActorKind], runtime_settings: RuntimeSettings,
) -> Runtime:
    shards = int(await db.cluster_setting(pool, "shards"))  # type: ignore[call-overload]
    connection = await amqp.connect(settings.amqp_url)
    stack.push_async_callback(connection.close)
    runtime = Runtime(pool, connection, kinds, shards=shards, settings=runtime_settings)
    await runtime.start()
    stack.push_async_callback(runtime.stop)
    return runtime


async def _start_api(
    stack: contextlib.AsyncExitStack, settings: Settings, pool: asyncpg.Pool, options: ApiOptions
) -> None:
    from aiohttp import web

    from api.app import create_app

    app = await create_app(pool, base_url=options.base_url, state_dir=settings.state_dir,
                           token_ttl=options.token_ttl)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    host, port = options.host_port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        raise CannotListen(options.listen, exc.strerror or str(exc)) from None
    log.info("api listening", url=options.base_url)


async def run_roles(
    settings: Settings,
    stop: asyncio.Event,
    *,
    kinds: Iterable[ActorKind] | None = None,
    runtime_settings: RuntimeSettings | None = None,
    api: ApiOptions | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Run the given roles in this process until `stop` is set; release all in reverse order."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await _open_pool(stack, settings)
        if kinds is not None:
            await _start_runtime(stack, settings, pool, kinds, runtime_settings or RuntimeSettings())
        if api is not None:
            await _start_api(stack, settings, pool, api)
        on_ready()
        await stop.wait()
        log.info("stopping")


class CannotListen(Exception):
    def __init__(self, listen: str, reason: str) -> None:
        super().__init__(f"cannot listen on {listen}: {reason}")


async def bootstrap(settings: Settings, admin_password: str) -> dict[str, str]:
    from api.bootstrap import bootstrap as run_bootstrap

    conn = await db.connect(settings.database_url)
    try:
        return await run_bootstrap(conn, admin_password)
    finally:
        await conn.close()
