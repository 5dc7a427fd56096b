"""The roles a process can run, composed with their resources' lifecycles in one place.

Every long-lived resource (the asyncpg pool, the AMQP connection, the runtime, the host
agents) is entered on an AsyncExitStack and released in reverse order at shutdown, whatever
happened in between: host agents stop first (finishing the requests they were delivered, while
the runtime still takes their replies), then the API, then the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import importlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import structlog

from actors import amqp, db
from actors.errors import ServiceUnreachable, VhostRefused
from actors.kind import ActorKind
from actors.runtime import Runtime, RuntimeSettings
from actors.service import ServiceKind
from actorstack.config import Settings

log = structlog.get_logger("actorstack")


class NotInitialised(Exception):
    def __init__(self, url: str) -> None:
        from actors.errors import redact

        super().__init__(f"the database at {redact(url)} has no actorstack schema: run `actorstack db init`")


def builtin_kinds() -> list[ActorKind | ServiceKind]:
    """The actor kinds of the cloud itself."""
    from actors import kinds

    return list(kinds.BUILTIN)


def load_kinds(modules: Sequence[str]) -> list[ActorKind | ServiceKind]:
    """Extra kinds from modules that define KINDS (plugins, and the test suite's probe kind)."""
    kinds: list[ActorKind | ServiceKind] = []
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


async def ensure_vhost(url: str) -> bool:
    """Create the URL's RabbitMQ virtual host (and let its user use it) when the broker refuses
    it and runs on this machine, where `rabbitmqctl` can: what `up` does for a fresh machine, as
    it creates its database. True if it created one; VhostRefused (which says how) otherwise."""
    try:
        connection = await amqp.connect(url)
    except VhostRefused as refused:
        host = urlsplit(url).hostname or ""
        local = host in ("localhost", "127.0.0.1", "::1") or host == socket.gethostname()
        rabbitmqctl = shutil.which("rabbitmqctl")
        if not local or rabbitmqctl is None:
            raise
        for args in (
            ["add_vhost", refused.vhost],
            ["set_permissions", "-p", refused.vhost, refused.user, ".*", ".*", ".*"],
        ):
            done = await asyncio.to_thread(
                subprocess.run, [rabbitmqctl, *args], capture_output=True, text=True, timeout=120
            )
            if done.returncode != 0:
                raise refused from None
        log.info("created the RabbitMQ virtual host", vhost=refused.vhost, user=refused.user)
        return True
    await connection.close()
    return False


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
    commands: bool = True  # consume the AMQP command queue (api/commands.py)

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
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    pool: asyncpg.Pool,
    kinds: Iterable[ActorKind],
    runtime_settings: RuntimeSettings,
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
) -> str:
    """Start the API; returns the loopback URL of its listener (for this process's agents)."""
    from aiohttp import web

    from api.app import create_app

    app = await create_app(
        pool, base_url=options.base_url, state_dir=settings.state_dir, token_ttl=options.token_ttl
    )
    # The API asks host agents questions (a console log) over the broker, as Nova's API asks
    # its compute hosts by RPC: it never reads a host's files.
    from actors.client import ActorClient
    from api.context import CTX

    connection = await amqp.connect(settings.amqp_url)
    stack.push_async_callback(connection.close)
    agents = ActorClient(connection, app[CTX].shards)
    await agents.__aenter__()
    stack.push_async_callback(agents.__aexit__, None, None, None)
    app[CTX].agents = agents
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    host, port = options.host_port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        raise CannotListen(options.listen, exc.strerror or str(exc)) from None
    log.info("api listening", url=options.base_url)
    bound_host, bound_port = runner.addresses[0][:2]
    loopback = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bound_host, bound_host)
    url_host = f"[{loopback}]" if ":" in loopback else loopback
    local_url = f"http://{url_host}:{bound_port}"
    if options.commands:
        from api.commands import CommandService

        # Commands are REST calls to this process's own listener, over loopback.
        commands = CommandService(settings.amqp_url, local_url)
        await commands.start()
        stack.push_async_callback(commands.stop)
    return local_url


@dataclasses.dataclass(frozen=True)
class HostOptions:
    """Host agents to run in this process, and how their hosts are configured."""

    names: tuple[str, ...]
    virt: str = "test"  # test or qemu
    domain_type: str = "auto"  # qemu:///system only: auto, kvm or qemu (TCG)
    # Several agents in one process simulate several hosts: each gets a directory of its own,
    # <state dir>/hosts/<name>; a lone `hostagent` uses the state directory itself.
    own_directories: bool = False
    availability_zone: str = "nova"
    host_ip: str = "127.0.0.1"
    tunnel_ip: str | None = None  # the VXLAN underlay address of this machine (None: no tunnels)
    dhcp_namespace_prefix: str = "qdhcp-"
    heartbeat: float = 10.0
    sync_interval: float = 10.0
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    reserved_memory_mb: int | None = None
    shutdown_timeout: float = 60.0  # a clean shutdown's wait before a stop destroys the guest
    # Bridges, taps, DHCP and metadata in this kernel: "linux" (root only), "none", or "auto"
    # (linux when running as root, else none).
    network: str = "auto"
    # A storage agent for volumes in this process: "file" (qcow2 files under <state dir>/volumes)
    # or "none"; its name (Cinder's `<host>@<backend>`; default: this machine's hostname@file).
    storage: str = "file"
    storage_name: str | None = None
    # The internal API the agents read from (default: this process's own API) and the host
    # token they show it (default: minted here, when this process has the database).
    control_url: str | None = None
    host_token: str | None = None

    def agent_names(self) -> tuple[str, ...]:
        """Every agent of the process: the hosts, and the storage backend if there is one."""
        return self.names + ((self.backend_name(),) if self.storage == "file" else ())

    def backend_name(self) -> str:
        from hostagent.volumes.agent import backend_name

        return self.storage_name or backend_name("file")


def networking_mode(requested: str) -> str:
    if requested == "auto":
        return "linux" if os.geteuid() == 0 else "none"
    return requested


async def _start_networking(
    stack: contextlib.AsyncExitStack, settings: Settings, control: Any, options: HostOptions
) -> Any:
    """One networking per process (per kernel): the agents of the process share its bridges."""
    from hostagent.network import HostNetworking, NetworkSettings, NullNetworking

    mode = networking_mode(options.network)
    if mode == "none":
        log.info("host networking is off: servers get ports and addresses but no taps, DHCP or metadata")
        return NullNetworking()
    # The tag on every link this cloud creates (the control plane's: the database's name makes a
    # test run's links easy to find, the cloud id makes the tag unique).
    config = await control.config()
    network = HostNetworking(
        control,
        NetworkSettings(
            owner=config.owner,
            state_dir=settings.state_dir / "network",
            hosts=frozenset(options.names),
            interval=options.sync_interval,
            tunnel_ip=options.tunnel_ip,
            namespace_prefix=options.dhcp_namespace_prefix,
            # A volatile hypervisor forgets its guests when the process ends: so do their networks.
            remove_on_stop=options.virt == "test",
        ),
    )
    await network.start()
    stack.push_async_callback(network.stop)
    return network


def simulated_host_names(count: int) -> tuple[str, ...]:
    """The agents `up --hosts N` runs: <hostname>-1 … <hostname>-N."""
    base = socket.gethostname().split(".")[0] or "host"
    return tuple(f"{base}-{i}" for i in range(1, count + 1))


async def _host_token(pool: asyncpg.Pool | None, options: HostOptions) -> str:
    """The agents' host token: the one configured, or one minted for all of them."""
    if options.host_token:
        return options.host_token
    if pool is None:
        raise NoHostToken()
    from api.internal import credentials

    return credentials.mint(str(await db.cluster_setting(pool, "host_key")), options.agent_names())


CONTROL_WAIT = 120.0  # seconds an agent waits for the control plane at start


async def _reach_control(control: Any, url: str) -> None:
    """Wait until the internal API answers (an agent may start before its cloud's API does);
    ServiceUnreachable after CONTROL_WAIT seconds, or at once when it refuses the token."""
    from hostagent.control import ControlUnavailable

    deadline = asyncio.get_running_loop().time() + CONTROL_WAIT
    while True:
        try:
            await control.config()
            return
        except ControlUnavailable as exc:
            if " 401 " in exc.reason or asyncio.get_running_loop().time() > deadline:
                raise ServiceUnreachable("the control plane", url, exc.reason) from None
            log.warning("waiting for the control plane", url=url, reason=exc.reason)
            await asyncio.sleep(1.0)


async def _start_agents(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    pool: asyncpg.Pool | None,
    options: HostOptions,
    control_url: str,
) -> None:
    """The host agents (and the storage agent) of this process. They share nothing with the
    control plane but the broker and the internal API at `control_url`: no database, no
    directory (the pool, when this process has one, only mints their token)."""
    from hostagent.agent import AgentSettings, HostAgent
    from hostagent.control import HttpControl
    from hostagent.virt import make_driver

    token = await _host_token(pool, options)
    connection = await amqp.connect(settings.amqp_url)
    stack.push_async_callback(connection.close)
    control = HttpControl(control_url, token, connection)
    await control.start()
    stack.push_async_callback(control.close)
    await _reach_control(control, control_url)
    network = await _start_networking(stack, settings, control, options)
    for name in options.names:
        state_dir: Path = (
            settings.state_dir / "hosts" / name if options.own_directories else settings.state_dir
        )
        agent_settings = AgentSettings(
            name=name,
            state_dir=state_dir,
            availability_zone=options.availability_zone,
            host_ip=options.host_ip,
            tunnel_ip=options.tunnel_ip if networking_mode(options.network) == "linux" else None,
            heartbeat=options.heartbeat,
            sync_interval=options.sync_interval,
            cpu_allocation_ratio=options.cpu_allocation_ratio,
            ram_allocation_ratio=options.ram_allocation_ratio,
            disk_allocation_ratio=options.disk_allocation_ratio,
            reserved_memory_mb=options.reserved_memory_mb,
        )
        driver = make_driver(
            options.virt,
            state_dir=state_dir,
            hostname=name,
            domain_type=options.domain_type,
            shutdown_timeout=options.shutdown_timeout,
        )
        agent = HostAgent(agent_settings, control, connection, driver, network)
        await agent.start()
        stack.push_async_callback(agent.stop)
    if options.storage == "file":
        await _start_storage(stack, settings, control, connection, options)


async def _start_storage(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    control: Any,
    connection: Any,
    options: HostOptions,
) -> None:
    """One storage agent per process: volumes live in the state directory every simulated host
    of the process shares (as a shared NFS export would be for hosts on several machines)."""
    from hostagent.volumes.agent import StorageAgent, StorageAgentSettings
    from hostagent.volumes.file import FileBackend

    agent = StorageAgent(
        StorageAgentSettings(
            name=options.backend_name(),
            scratch_dir=settings.state_dir / "volume-images",
            availability_zone=options.availability_zone,
            heartbeat=options.heartbeat,
        ),
        control,
        connection,
        FileBackend(settings.state_dir / "volumes"),
    )
    await agent.start()
    stack.push_async_callback(agent.stop)


async def run_roles(
    settings: Settings,
    stop: asyncio.Event,
    *,
    kinds: Iterable[ActorKind] | None = None,
    runtime_settings: RuntimeSettings | None = None,
    api: ApiOptions | None = None,
    hosts: HostOptions | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Run the given roles in this process until `stop` is set; release all in reverse order."""
    agents = hosts is not None and bool(hosts.names)
    async with contextlib.AsyncExitStack() as stack:
        # Host agents alone (another machine) open no pool: they have no database credentials.
        pool = None
        if kinds is not None or api is not None or (agents and hosts is not None and not hosts.host_token):
            pool = await _open_pool(stack, settings)
        if kinds is not None:
            assert pool is not None
            await _start_runtime(stack, settings, pool, kinds, runtime_settings or RuntimeSettings())
        control_url = None
        if api is not None:
            assert pool is not None
            control_url = await _start_api(stack, settings, pool, api)
        if agents and hosts is not None:
            control_url = hosts.control_url or control_url
            if control_url is None:
                raise NoControlUrl()
            await _start_agents(stack, settings, pool, hosts, control_url)
        tune_gc()
        on_ready()
        await stop.wait()
        log.info("stopping")


# A young collection waits for this many new container objects (CPython's default: 700).
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """The cyclic garbage collector, for a long-running service whose passes and requests each
    make and drop thousands of containers (a host's firewall rows, a link dump): with CPython's
    defaults most of them outlive a young collection or two, are promoted, and trigger a full
    collection every few seconds, which stops every thread of the process for 0.1-0.7 s (the
    agent's firewall passes, the API, the runtime's timers alike). So a young collection waits
    for 50,000 new objects, by when most are freed by reference counting, and what the roles made
    while starting moves out of the collector's sight (`gc.freeze`). On bench/security_groups.py
    (one process, 1,000 ports): full collections from 11% of the wall time to 2%."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


class NoHostToken(Exception):
    def __init__(self) -> None:
        super().__init__(
            "a host agent needs a host token (--host-token or ACTORSTACK_HOST_TOKEN): "
            "`actorstack host credentials NAME` prints one on a machine with the database"
        )


class NoControlUrl(Exception):
    def __init__(self) -> None:
        super().__init__(
            "a host agent needs the internal API's URL (--control-url or ACTORSTACK_CONTROL_URL): "
            "the URL of an `actorstack api` (or `up`) of the cloud"
        )


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
