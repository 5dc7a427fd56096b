"""Private PostgreSQL and RabbitMQ servers for fault tests that must stop or crash the services.

The machine's shared PostgreSQL (5432) and RabbitMQ (5672) serve every other test and helper, so
a test that restarts "the database" or "the broker" gets servers of its own: started on free
loopback ports from a temporary directory named after the run, restartable with their data kept
(so durable quorum queues and committed rows survive, as they would in production), and torn
down at the end whatever happened: by the fixture's finaliser, by `atexit` on an interrupted
run, and, should the test process be killed outright (the watchdog), by the kernel: each server
is a direct child of the test process with a parent-death signal, so it never outlives it.

Each runs as a direct child in a session of its own: `postgres` itself (what `pg_ctl` would start
and detach; its stop modes are the signals `pg_ctl stop -m` sends), and RabbitMQ's start script
told to exec the Erlang VM (not /usr/sbin's wrapper, which su's to rabbitmq and keeps a shell in
between). A crash is SIGKILL to the broker's VM, or PostgreSQL's immediate shutdown.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import dataclasses
import functools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from actorstack import scratch
from actorstack.scratch import ScratchCloud, ScratchProcess
from tests.conftest import RUN_PREFIX, wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
_PR_SET_PDEATHSIG = 1
_LIVE: set[PrivateServer] = set()


class PrivateServerError(AssertionError):
    """A private server did not start or stop as asked (the message carries its log's tail)."""


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process goes, however it goes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port(avoid: range | None = None) -> int:
    """A loopback port nobody listens on now (outside `avoid`)."""
    for _ in range(50):
        port = scratch.free_port()
        if avoid is None or port not in avoid:
            return port
    raise PrivateServerError("no free loopback port found")


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def non_loopback_listeners(pid: int) -> list[str]:
    """Listening TCP sockets of process `pid` bound to anything but 127.0.0.1 (should be none)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes and local.split(":")[0] != "0100007F":
                found.append(f"{table.rsplit('/', 1)[1]} {local}")
    return found


class PrivateServer:
    """One server process in a directory of its own; `start` and `stop` may alternate."""

    name = "server"

    def __init__(self, label: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-{label}-"))
        self.log_path = self.root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        _LIVE.add(self)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None, user: str | None = None) -> None:
        """Start the server as a direct child in a session of its own (killed as a group)."""
        assert not self.running, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL the server and everything it started (a crash)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):  # also what outlived an exited leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def _wait_exit(self, timeout: float) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib.suppress(ProcessLookupError):  # anything left in its session
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """Gone for good: the process and its directory. Safe to call twice."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            _LIVE.discard(self)


@atexit.register
def _close_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()


class PrivatePostgres(PrivateServer):
    """PostgreSQL 15 with trust auth on a loopback port, its socket in its own directory.

    fsync is off: it only matters when the machine crashes, never when the server process does,
    and a crash of the process is what these tests make. Commits stay synchronous, so a commit
    the client saw survives an immediate shutdown."""

    name = "PostgreSQL"

    def __init__(self) -> None:
        super().__init__("pg")
        self.port = free_port()
        self.data = self.root / "data"
        postgres = pwd.getpwnam("postgres")
        os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
        self.root.chmod(0o700)
        done = subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale",
                "C",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            user="postgres",
            group="postgres",
            extra_groups=[],
            cwd=self.root,
        )
        if done.returncode != 0:
            self.close()
            raise PrivateServerError(f"initdb failed:\n{done.stdout}{done.stderr}")
        self.log_path.touch()
        os.chown(self.log_path, postgres.pw_uid, postgres.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the server process (from the event loop's thread: the parent-death signal is
        tied to the thread that forks); `wait_ready` may then run in a worker thread."""
        self._spawn(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=32MB",
                "-c",
                "log_min_messages=warning",
            ],
            user="postgres",
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                [
                    str(PG_BIN / "pg_isready"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-t",
                    "2",
                ],
                capture_output=True,
                timeout=30,
            )
            if done.returncode == 0:
                return
            if not self.running or time.monotonic() > deadline:
                raise PrivateServerError(f"PostgreSQL did not start:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """Shut down as `pg_ctl stop -m MODE` does: fast (SIGINT: roll back the sessions, then a
        checkpoint) or immediate (SIGQUIT: no checkpoint; crash recovery at the next start)."""
        assert self.proc is not None and self.running, "PostgreSQL is not running"
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        self.proc.send_signal(sig)
        self._wait_exit(timeout)

    def restart(self, mode: str = "immediate") -> None:
        self.stop(mode)
        self.start()


class PrivateRabbit(PrivateServer):
    """A RabbitMQ node `<prefix>@localhost` on loopback ports: AMQP, Erlang distribution (its
    CLI tools use the ten ports from distribution port + 10000, kept clear of both), no plugins
    (the management plugin would want 15672), its own Erlang cookie (HOME is its directory)."""

    name = "RabbitMQ"

    def __init__(self) -> None:
        super().__init__("rabbit")
        # The shared broker's CLI tools use 35672-35682; ours use dist + 10000 ... dist + 10010.
        shared_cli = range(35672, 35683)
        for _ in range(50):
            self.dist_port = free_port(avoid=range(55525, 65536))
            cli = range(self.dist_port + 10000, self.dist_port + 10011)
            self.port = free_port(avoid=shared_cli)
            if self.port not in cli and self.dist_port not in shared_cli and self.port != self.dist_port:
                break
        else:
            self.close()
            raise PrivateServerError("no suitable pair of free ports for RabbitMQ")
        self.node = f"{RUN_PREFIX}_{self.root.name[-6:]}@localhost"
        (self.root / "rabbitmq.conf").write_text(
            "loopback_users = none\n"
            "disk_free_limit.absolute = 10MB\n"
            "log.console = false\n"
            "log.file.level = info\n"
            "collect_statistics_interval = 1000\n"  # list_queues' consumer counts lag by this much
        )
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's (the shared node's name)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.root),  # the Erlang cookie lives here, not in /root
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.root / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.root / "log"),
            RABBITMQ_CONFIG_FILE=str(self.root / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.root / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.root / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.root / "rabbit.pid"),
            # The wrapper then execs the VM (no shell in between); the VM still takes no input.
            RABBITMQ_ALLOW_INPUT="1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-noshell -noinput",
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )

    def start(self, timeout: float = 90) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the node (from the event loop's thread: the parent-death signal is tied to the
        thread that forks); `wait_ready` may then run in a worker thread."""
        self._spawn([str(RABBIT_BIN / "rabbitmq-server")], env=self.env())

    def wait_ready(self, timeout: float = 90) -> None:
        # await_startup fails at once while the node has not registered with epmd yet.
        deadline = time.monotonic() + timeout
        while True:
            done = self.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 30)
            if done.returncode == 0 and self.running:
                break
            if not self.running or time.monotonic() > deadline:
                raise PrivateServerError(
                    f"RabbitMQ did not start ({done.stdout}{done.stderr}):\n"
                    f"{self.log_tail()}\n{self._node_log()}"
                )
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while not listening(self.port):
            if time.monotonic() > deadline:
                raise PrivateServerError(f"RabbitMQ started but does not listen on {self.port}")
            time.sleep(0.1)

    def consumers(self) -> dict[str, int]:
        """queue name -> how many consumers it has now."""
        done = self.ctl("list_queues", "-q", "name", "consumers", timeout=60)
        assert done.returncode == 0, done.stderr
        found = {}
        for line in done.stdout.splitlines():
            name, _, count = line.rpartition("\t")
            if name and count.isdigit():
                found[name] = int(count)
        return found

    def _node_log(self) -> str:
        path = self.root / "log" / f"{self.node}.log"
        try:
            return path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60) -> None:
        """A clean stop (`rabbitmqctl stop`); quorum queues keep their messages."""
        assert self.running, "RabbitMQ is not running"
        self.ctl("stop", timeout=timeout)
        self._wait_exit(timeout)

    def restart(self, *, crash: bool = True) -> None:
        """Crash (SIGKILL the VM) or stop cleanly, then start on the same data directory."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def private_rabbit() -> Iterator[PrivateRabbit]:
    server = PrivateRabbit()
    try:
        server.start()
        yield server
    finally:
        server.close()


# --- a whole cloud on private servers ------------------------------------------------------------

MICROVERSION = {"OpenStack-API-Version": "compute 2.37"}  # "networks": "none" needs 2.37


@dataclasses.dataclass
class Answer:
    """One API answer as the tests judge it."""

    method: str
    path: str
    status: int
    body: Any
    text: str

    def clean_failure(self) -> bool:
        """What an outage may answer: 503 (or a 4xx) in the OpenStack shape; never a 500 nor a
        traceback."""
        if 0 < self.status < 400:
            return True
        if self.status in (0, 500) or "Traceback" in self.text or not isinstance(self.body, dict):
            return False
        if self.status == 503 and self.path.startswith("/compute/"):
            return self.body.get("serviceUnavailable", {}).get("code") == 503  # Nova's fault shape
        return True


class FaultCloud:
    """`actorstack up --hosts 2 --virt test --network none --storage none` on the given servers,
    as one long-lived process the tests never restart (a scratch cloud that dies with the test
    process), and an admin client for its API."""

    def __init__(self, database_url: str, amqp_url: str, state_dir: Path) -> None:
        self.database_url = database_url
        self.state_dir = state_dir
        self.scratch = ScratchCloud(database_url, amqp_url, state_dir, die_with_parent=True)
        self.url = self.scratch.url
        self.token = ""
        self.project_id = ""
        self.answers: list[Answer] = []
        self.rabbit: PrivateRabbit | None = None  # for diagnostics

    async def start(self, timeout: float = 90) -> None:
        """Listening, signed in as admin, both hosts up (from the event loop's thread: the
        parent-death signal is tied to the thread that forks)."""
        await self.scratch.up(
            "--hosts",
            "2",
            "--virt",
            "test",
            "--network",
            "none",
            "--storage",
            "none",
            "--host-heartbeat",
            "1",
            timeout=timeout,
        )
        self.token, self.project_id = await self.scratch.admin_token()

    @property
    def up(self) -> ScratchProcess | None:
        """The `actorstack up` process (None before `start`)."""
        return next(iter(self.scratch.role("up")), None)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.up.proc if self.up is not None else None

    @property
    def alive(self) -> bool:
        return self.up is not None and self.up.alive

    def diagnose(self) -> str:
        """What the broker holds (queues with messages or without consumers), for failures."""
        if self.rabbit is None or not self.rabbit.running:
            return ""
        done = self.rabbit.ctl(
            "list_queues", "-q", "name", "messages_ready", "messages_unacknowledged", "consumers", timeout=60
        )
        rows = [line for line in done.stdout.splitlines() if not line.endswith("\t0\t0\t1")]
        return (
            "broker queues (name, ready, unacked, consumers) that are not idle with one consumer:\n"
            + "\n".join(rows)
        )

    def log_tail(self, chars: int = 6000) -> str:
        return self.up.tail(chars) if self.up is not None else ""

    def log_records(self) -> list[dict[str, Any]]:
        return self.up.records() if self.up is not None else []

    async def stop(self) -> int | None:
        """SIGTERM (a clean stop), a kill after 30 s; the exit status (None if never started)."""
        await self.scratch.stop()
        return self.up.returncode if self.up is not None else None

    async def request(
        self, method: str, path: str, *, record: bool = True, timeout: float = 60, **kwargs: Any
    ) -> Answer:
        """One request as admin; transport failures (the API itself away) are status 0."""
        headers = {"X-Auth-Token": self.token, **MICROVERSION, **kwargs.pop("headers", {})}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
                s.request(method, self.url + path, headers=headers, **kwargs) as r,
            ):
                text = await r.text()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, text = 0, repr(exc)
        try:
            body: Any = json.loads(text) if text and status else None
        except ValueError:
            body = None
        answer = Answer(method, path, status, body, text)
        if record:
            self.answers.append(answer)
        return answer

    async def prepare(self, servers: int) -> tuple[str, str]:
        """Quotas for `servers` servers, a 64 MiB flavor without disk, a public 1 MiB raw image."""
        tag = uuid.uuid4().hex[:8]
        quota = {"quota_set": {"instances": servers + 10, "cores": servers + 10, "ram": 64 * (servers + 10)}}
        answer = await self.request("PUT", f"/compute/v2.1/os-quota-sets/{self.project_id}", json=quota)
        assert answer.status == 200, answer
        flavor = {"flavor": {"name": f"fault-{tag}", "ram": 64, "vcpus": 1, "disk": 0}}
        answer = await self.request("POST", "/compute/v2.1/flavors", json=flavor)
        assert answer.status == 200, answer
        flavor_id = answer.body["flavor"]["id"]
        image = {
            "name": f"fault-{tag}",
            "disk_format": "raw",
            "container_format": "bare",
            "visibility": "public",
        }
        answer = await self.request("POST", "/image/v2/images", json=image)
        assert answer.status == 201, answer
        image_id = answer.body["id"]
        answer = await self.request(
            "PUT",
            f"/image/v2/images/{image_id}/file",
            data=b"\0" * (1024 * 1024),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert answer.status == 204, answer
        return flavor_id, image_id

    async def boot(self, name: str, flavor_id: str, image_id: str) -> Answer:
        body = {"server": {"name": name, "imageRef": image_id, "flavorRef": flavor_id, "networks": "none"}}
        return await self.request("POST", "/compute/v2.1/servers", json=body)

    def instance_dirs(self) -> dict[str, list[str]]:
        """server id -> the simulated hosts holding an instance directory for it."""
        found: dict[str, list[str]] = {}
        for path in sorted((self.state_dir / "hosts").glob("*/instances/*")):
            if path.name != "_base" and path.is_dir():
                found.setdefault(path.name, []).append(path.parent.parent.name)
        return found

    def spawned_on(self) -> dict[str, set[str]]:
        """server id -> the hosts whose agent answered one of its spawn requests `spawned` (the
        agents' log). A redelivered spawn finds its domain and answers from the same host; a
        domain made twice would show as a second host."""
        hosts: dict[str, set[str]] = {}
        for record in self.log_records():
            if (
                record.get("event") == "request handled"
                and record.get("message_type") == "agent.spawn"
                and record.get("reply") == "server.spawned"
            ):
                hosts.setdefault(str(record.get("server")), set()).add(str(record.get("host")))
        return hosts

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """A query on the cloud's database over a connection of its own (the pool is the cloud's)."""
        conn = await asyncpg.connect(self.database_url, timeout=10)
        try:
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def servers(self) -> list[Any]:
        return await self.fetch(
            "SELECT id, vm_state, task_state, host, fault FROM servers WHERE vm_state <> 'deleted'"
        )

    async def state_counts(self) -> dict[str, int]:
        """vm_state -> how many (building counts every server not yet settled)."""
        counts: dict[str, int] = {}
        for row in await self.servers():
            state = "building" if row["task_state"] is not None else row["vm_state"]
            counts[state] = counts.get(state, 0) + 1
        return counts


class BootStorm:
    """Servers booted through the API by a few concurrent clients; what each request answered."""

    def __init__(self, cloud: FaultCloud, flavor_id: str, image_id: str, *, clients: int = 5) -> None:
        self.cloud = cloud
        self.flavor_id = flavor_id
        self.image_id = image_id
        self.clients = clients
        self.accepted: dict[str, str] = {}  # name -> server id
        self.refused: dict[str, Answer] = {}  # name -> the last failed answer

    async def post(self, names: list[str]) -> None:
        """Boot each name once (concurrently); a refused one stays in `refused`."""
        queue = list(reversed(names))

        async def client() -> None:
            while queue:
                name = queue.pop()
                answer = await self.cloud.boot(name, self.flavor_id, self.image_id)
                if answer.status == 202:
                    self.accepted[name] = answer.body["server"]["id"]
                    self.refused.pop(name, None)
                else:
                    self.refused[name] = answer

        await asyncio.gather(*(client() for _ in range(self.clients)))

    async def retry_refused(self, attempts: int = 10) -> None:
        """Boot again what the outage refused (bounded): a client's retry after a 503."""
        for _ in range(attempts):
            if not self.refused:
                return
            await self.post(sorted(self.refused))
            if self.refused:
                await asyncio.sleep(1)
        assert not self.refused, f"boots still refused after the outage: {list(self.refused.values())[:3]}"


# Await a predicate until true (bounded in time), at a pace an API round trip can keep.
wait_for = functools.partial(wait_until, interval=0.25)


async def storm_until_mixed(
    cloud: FaultCloud, storm: BootStorm, names: list[str], first: int = 20
) -> tuple[asyncio.Task[None], dict[str, int]]:
    """Boot `first` of `names` until some are ACTIVE, then the rest in the background, and
    return (that task, the state counts) once servers are both ACTIVE and building: the moment
    to inject a fault."""
    await storm.post(names[:first])

    async def some_active() -> bool:
        return (await cloud.state_counts()).get("active", 0) >= 5

    await wait_for(some_active, 90, "the first servers to become ACTIVE")
    second_wave = asyncio.create_task(storm.post(names[first:]))

    async def mixed() -> dict[str, int] | None:
        counts = await cloud.state_counts()
        return counts if counts.get("building", 0) and counts.get("active", 0) else None

    return second_wave, await wait_for(mixed, 60, "servers both ACTIVE and building")


async def wait_settled(cloud: FaultCloud, timeout: float = 100) -> list[Any]:
    """Every server in a final state (no task in progress); the servers."""
    last: dict[str, int] = {}

    async def settled() -> list[Any] | None:
        nonlocal last
        assert cloud.alive, f"actorstack up died:\n{cloud.log_tail()}"
        rows = await cloud.servers()
        last = await cloud.state_counts()
        return rows if rows and all(r["task_state"] is None for r in rows) else None

    try:
        return await wait_for(settled, timeout, "every server to reach a final state", interval=0.5)
    except AssertionError as exc:
        outbox = (await cloud.fetch("SELECT count(*) AS n FROM outbox"))[0]["n"]
        stuck = await cloud.fetch(
            "SELECT id, vm_state, task_state, host FROM servers WHERE task_state IS NOT NULL LIMIT 5"
        )
        raise AssertionError(
            f"{exc}; servers by state: {last}; outbox rows: {outbox}; stuck: "
            f"{[dict(r) for r in stuck]}\n{cloud.diagnose()}"
        ) from None


async def check_consistent(cloud: FaultCloud, storm: BootStorm) -> list[Any]:
    """After the fault: every accepted boot ended ACTIVE or ERROR (with its fault), each active
    server has one allocation on its host and one domain there, the hosts' usage is the sum of
    their allocations, no message was dead-lettered, the outbox drains, the API answers."""
    rows = await wait_settled(cloud)
    by_id = {r["id"]: r for r in rows}
    missing = set(storm.accepted.values()) - set(by_id)
    assert not missing, f"accepted boots without a server: {missing}"
    for row in rows:
        assert row["vm_state"] in ("active", "error"), dict(row)
        if row["vm_state"] == "error":
            assert row["fault"] and row["fault"].get("message"), (
                f"an ERROR server without a fault: {dict(row)}"
            )

    allocations = {r["server_id"]: r for r in await cloud.fetch("SELECT * FROM allocations")}
    assert set(allocations) <= set(by_id), "allocations of servers that do not exist"
    dirs, spawned = cloud.instance_dirs(), cloud.spawned_on()
    for row in rows:
        spawned_hosts = spawned.get(row["id"], set())
        assert len(spawned_hosts) <= 1, f"{row['id']} was spawned on several hosts: {spawned_hosts}"
        assert len(dirs.get(row["id"], [])) <= 1, f"{row['id']} has instances on {dirs[row['id']]}"
        if row["vm_state"] == "active":
            assert row["id"] in allocations and allocations[row["id"]]["host"] == row["host"], dict(row)
            assert spawned_hosts == {row["host"]}, (row["id"], row["host"], spawned_hosts)
            assert dirs.get(row["id"]) == [row["host"]], (row["id"], row["host"], dirs.get(row["id"]))
    await check_usage(cloud)

    async def outbox_empty() -> bool:
        return (await cloud.fetch("SELECT count(*) AS n FROM outbox"))[0]["n"] == 0

    await wait_for(outbox_empty, 60, "the outbox to drain")
    dead = await cloud.fetch("SELECT queue, reason FROM dead_letters")
    assert not dead, f"messages were dead-lettered: {[dict(d) for d in dead][:5]}"
    answer = await cloud.request("GET", "/compute/v2.1/servers/detail?limit=1000", record=False)
    assert answer.status == 200, answer
    assert {s["id"] for s in answer.body["servers"]} == set(by_id)
    return rows


async def check_usage(cloud: FaultCloud) -> None:
    """Each host's usage is exactly the sum of its allocations (schema.sql: the scheduler's claim)."""
    rows = await cloud.fetch(
        "SELECT h.name, h.used_vcpus, h.used_memory_mb, h.used_local_gb, "
        "coalesce(sum(a.vcpus), 0) AS vcpus, coalesce(sum(a.memory_mb), 0) AS memory_mb, "
        "coalesce(sum(a.local_gb), 0) AS local_gb "
        "FROM compute_hosts h LEFT JOIN allocations a ON a.host = h.name GROUP BY h.name"
    )
    for r in rows:
        assert (r["used_vcpus"], r["used_memory_mb"], r["used_local_gb"]) == (
            r["vcpus"],
            r["memory_mb"],
            r["local_gb"],
        ), f"usage does not match allocations: {dict(r)}"


async def delete_all(cloud: FaultCloud) -> None:
    """Delete every server through the API; nothing may be left: servers, allocations, usage,
    instance directories, outbox rows."""
    for row in await cloud.servers():
        answer = await cloud.request("DELETE", f"/compute/v2.1/servers/{row['id']}")
        assert answer.status == 204, answer

    async def gone() -> bool:
        assert cloud.alive, f"actorstack up died:\n{cloud.log_tail()}"
        return not await cloud.servers()

    await wait_for(gone, 120, "every server to be deleted", interval=0.5)
    assert not await cloud.fetch("SELECT server_id FROM allocations")
    await check_usage(cloud)
    used = await cloud.fetch(
        "SELECT name FROM compute_hosts WHERE used_vcpus + used_memory_mb + used_local_gb > 0"
    )
    assert not used, f"hosts still in use: {used}"

    async def outbox_empty() -> bool:
        return (await cloud.fetch("SELECT count(*) AS n FROM outbox"))[0]["n"] == 0

    await wait_for(outbox_empty, 60, "the outbox to drain")
    assert not cloud.instance_dirs(), f"instance directories left: {cloud.instance_dirs()}"


def unclean_answers(cloud: FaultCloud) -> list[Answer]:
    """Answers no outage may give: a 500, a traceback, a body that is not an OpenStack error,
    no answer at all."""
    return [a for a in cloud.answers if not a.clean_failure()]


# --- fixtures (imported by the test modules that use them) ---------------------------------------


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def rabbit() -> Iterator[PrivateRabbit]:
    with private_rabbit() as server:
        yield server


@pytest.fixture
async def fault_cloud(
    postgres: PrivatePostgres, rabbit: PrivateRabbit, tmp_path: Path
) -> AsyncIterator[FaultCloud]:
    """A cloud on the private servers (its database named after the run)."""
    cloud = FaultCloud(postgres.url(f"{RUN_PREFIX}_faults"), rabbit.url, tmp_path)
    cloud.rabbit = rabbit
    try:
        await cloud.start()
        yield cloud
    finally:
        status = await cloud.stop()
        if status not in (0, None):
            print(f"actorstack up exited {status}; its log ends:\n{cloud.log_tail()}", file=sys.stderr)
