"""Fixtures that start real services for the tests.

Each test run gets its own PostgreSQL database and RabbitMQ vhost named `astest_<hex>` (the
run prefix, easy to find if anything is ever left over), created at the start of the session
and removed at its end, whether the tests passed or not (actorstack/scratch.py makes and removes
them, and the clouds of tests that need one of their own). Runtime processes started by a test
are killed when the test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import hypothesis
import pytest

from actors import amqp, db
from actors.client import ActorClient
from actors.runtime import Runtime, RuntimeSettings
from actorstack import scratch
from actorstack.scratch import ScratchProcess, ScratchServices
from tests.watchdog import Watchdog

# In CI the property-based tests draw the same examples every run (a failure there is a bug to
# fix, never a roll of the dice), and print the blob that reproduces a failing one; elsewhere
# they explore afresh each run.
hypothesis.settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")

ROOT = scratch.ROOT
RUN_PREFIX = f"astest_{uuid.uuid4().hex[:8]}"
PG_SERVER = scratch.PG_SERVER

WATCHDOG: Watchdog | None = None


def pytest_configure(config: pytest.Config) -> None:
    global WATCHDOG
    WATCHDOG = Watchdog(config, RUN_PREFIX, PG_SERVER)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    assert WATCHDOG is not None
    WATCHDOG.arm(item.nodeid)
    try:
        yield
    finally:
        WATCHDOG.disarm()


def broker_alarms() -> str:
    """The broker's resource alarms, if any: while one is raised it blocks every publisher, and
    the suite would wait on its first publish (a disk or memory alarm left by something else)."""
    exe = shutil.which("rabbitmq-diagnostics") or "/usr/sbin/rabbitmq-diagnostics"
    done = subprocess.run([exe, "-q", "alarms"], capture_output=True, text=True, timeout=60)
    text = (done.stdout + done.stderr).strip()
    return "" if done.returncode == 0 and "no alarms" in text else text


def separate_services(suffix: str) -> ScratchServices:
    """A database and vhost of their own (<run prefix>_<suffix>), for a second cloud beside the
    session's: empty (its `actorstack up` creates the schema), dropped afterwards (`async with`)."""
    return ScratchServices(f"{RUN_PREFIX}_{suffix}")


@pytest.fixture(scope="session")
async def services() -> AsyncIterator[ScratchServices]:
    if WATCHDOG is not None:
        WATCHDOG.loop = asyncio.get_running_loop()
    alarms = broker_alarms()
    if alarms:
        pytest.exit(f"RabbitMQ has a resource alarm raised, every publish would block:\n{alarms}", 2)
    async with ScratchServices(RUN_PREFIX) as svc:
        conn = await db.connect(svc.database_url)
        try:
            await db.init_schema(conn)
            from tests.actors.probe import DDL

            await conn.execute(DDL)
        finally:
            await conn.close()
        yield svc


@pytest.fixture(scope="session")
async def pool(services: ScratchServices) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(services.database_url, min_size=1, max_size=8)
    yield p
    await p.close()


@pytest.fixture(scope="session")
async def shards(pool: asyncpg.Pool) -> int:
    return int(await db.cluster_setting(pool, "shards"))  # type: ignore[call-overload]


@pytest.fixture(scope="session")
async def broker(services: ScratchServices, shards: int) -> AsyncIterator[Any]:
    from actors.kinds import BUILTIN
    from tests.actors.probe import KINDS

    connection = await amqp.connect(services.amqp_url)
    channel = await connection.channel()
    # What a runtime declares at start: the probe kinds and the cloud's own (whose shard queues
    # host agents reply to; agents declare only their own queue).
    await amqp.declare_topology(channel, [k.name for k in (*KINDS, *BUILTIN)], shards)
    await channel.close()
    yield connection
    await connection.close()


@pytest.fixture
async def client(broker: Any, shards: int) -> AsyncIterator[ActorClient]:
    async with ActorClient(broker, shards) as c:
        yield c


FAST = RuntimeSettings(
    handler_attempts=3, backoff_initial=0.01, backoff_max=0.05, heartbeat=0.3, member_timeout=1.5
)


@pytest.fixture
async def start_runtime(
    pool: asyncpg.Pool, broker: Any, shards: int
) -> AsyncIterator[Callable[..., Awaitable[Runtime]]]:
    """Start in-process runtimes hosting the probe kind; all are stopped when the test ends."""
    from tests.actors.probe import KINDS

    started: list[Runtime] = []

    async def start(settings: RuntimeSettings = FAST) -> Runtime:
        runtime = Runtime(pool, broker, KINDS, shards=shards, settings=settings)
        await runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in reversed(started):
        await runtime.stop()


@pytest.fixture
def spawn_runtime(services: ScratchServices, tmp_path: Path) -> Iterator[Callable[..., ScratchProcess]]:
    """Start `actorstack runtime --load tests.actors.probe` processes; killed when the test ends."""
    procs: list[ScratchProcess] = []

    def spawn(crashpoints: str = "", *extra: str) -> ScratchProcess:
        label = f"runtime-{len(procs)}"
        env = services.env(ACTORSTACK_CRASHPOINTS=crashpoints) if crashpoints else services.env()
        args = ["runtime", "--load", "tests.actors.probe", "--log-format", "json"]
        args += ["--heartbeat", "0.3", "--member-timeout", "1.5", "--backoff", "0.01", *extra]
        procs.append(scratch.spawn(label, args, env, tmp_path / f"{label}.log"))
        return procs[-1]

    yield spawn
    for process in procs:
        process.kill()


async def wait_until(
    predicate: Callable[[], Awaitable[Any]],
    timeout: float = 20,
    what: str = "condition",
    interval: float = 0.05,
) -> Any:
    """Await `predicate` every `interval` seconds until it returns something true (returned);
    AssertionError after `timeout`. Poll an API less often than a database query."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


@contextlib.contextmanager
def qemu_scratch_dir(label: str, unavailable: str | None, what: str) -> Iterator[Path]:
    """A directory for real guests, under /tmp and world-traversable (QEMU runs as another user
    and opens the disks there), removed afterwards. When `unavailable` gives a reason, the test
    is skipped, except in CI, where tools/setup provides everything and a skip would hide a
    broken cloud: there `what` fails."""
    if unavailable:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} cannot run in CI: {unavailable}")
        pytest.skip(unavailable)
    path = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-{label}-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def temporary_database(prefix: str) -> AsyncIterator[str]:
    """The URL of a database `<prefix>_<hex>` that does not exist yet (the code under test
    creates it), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        await scratch.drop_database(name)


# --- leftovers on the host, checked at the end of the suite --------------------------------------


def _nft_tables(tag: str) -> list[str]:
    """nftables tables of the root namespace (ours are named actorstack_<hash>) whose comment,
    the owner tag of the cloud or test that made them, names the run."""
    nft = shutil.which("nft", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if nft is None:
        return []
    listed = subprocess.run([nft, "list", "tables"], capture_output=True, text=True, timeout=30)
    found = []
    for line in listed.stdout.splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("actorstack_"):
            continue
        shown = subprocess.run(
            [nft, "-t", "list", "table", parts[1], parts[2]], capture_output=True, text=True, timeout=30
        )
        comment = next((t.strip() for t in shown.stdout.splitlines() if t.strip().startswith("comment ")), "")
        if tag in comment:
            found.append(f"nftables table {parts[1]} {parts[2]}")
    return found


def host_leftovers(tag: str = RUN_PREFIX) -> list[str]:
    """What this run left in the kernel: links whose alias (the owner tag networking writes on
    everything it creates) names the run, namespaces holding such links, and dnsmasq processes
    whose command line names the run."""
    if os.geteuid() != 0:
        return []
    from pyroute2 import IPRoute, NetNS, netns

    found = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            if tag in (link.get_attr("IFLA_IFALIAS") or ""):
                found.append(f"link {link.get_attr('IFLA_IFNAME')}")
    for name in netns.listnetns():
        if not name.startswith("qdhcp-") and tag not in name:
            continue
        if tag in name:
            found.append(f"namespace {name}")
            continue
        with NetNS(name) as ns:
            if any(tag in (link.get_attr("IFLA_IFALIAS") or "") for link in ns.get_links()):
                found.append(f"namespace {name}")
    found.extend(_nft_tables(tag))
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"dnsmasq") and any(tag.encode() in arg for arg in argv):
                found.append(f"dnsmasq pid {proc.name}")
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if getattr(session.config, "workerinput", None) is not None:
        return
    left = host_leftovers()
    if left:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"LEFT ON THE HOST by this run ({RUN_PREFIX}): " + ", ".join(left), red=True
        )
        session.exitstatus = 1
