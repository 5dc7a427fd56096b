"""Scratch clouds: a database, a vhost and a state directory of their own on this machine's
PostgreSQL and RabbitMQ, and actorstack's roles started on them as child processes, for as long
as a test, a benchmark or a tool needs a cloud of its own.

`ScratchServices` creates the database and the vhost (and the state directory, when it is given
one) and drops them again. `ScratchCloud` starts `python -m actorstack.cli up …` (or `api`,
`runtime`, `hostagent`, one process each) on such services with a free loopback port, each
process with a log file of its own, waits until the API answers and the hosts are up, and stops
every process it started (SIGTERM, then SIGKILL, then reaped) whatever happened, printing the
end of the logs when something went wrong. Both are async context managers; a benchmark that
cleans up after its event loop has ended calls `drop()` and `stop()` under `asyncio.run`.

Names start with `astest_` (tests) or `bench_` (benchmarks): `tools/leftovers` finds, and
removes, whatever a killed run left behind by these prefixes alone.

The top layer: it runs this package's command line as child processes and imports nothing of
the layers below; `api`, `actors`, `hostagent` and `protocol` never import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = os.environ.get("ACTORSTACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
AMQP_SERVER = os.environ.get("ACTORSTACK_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")
PREFIXES = ("astest_", "bench_")  # what tools/leftovers looks for
STOP_TIMEOUT = 30.0  # seconds a process gets to stop after SIGTERM before it is killed
# Stopped first to last (a rank at a time), as `up` stops its own roles: the hosts, the API, the
# runtimes. `up` itself ranks with the runtimes: it stops its hosts and API before its runtime.
STOP_ORDER = {"hostagent": 0, "api": 1, "up": 2, "runtime": 2}

# A scratch process gets the caller's environment without another cloud's settings (ACTORSTACK_*,
# crash points included) and the openstack CLI's (OS_*): its creator says everything it needs.
# Where the test image's kernel comes from is the machine's business, not a cloud's: it stays.
_NOT_INHERITED = ("ACTORSTACK_", "OS_")
_INHERITED_ANYWAY = ("ACTORSTACK_TESTIMAGE_",)
_PR_SET_PDEATHSIG = 1
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


# What a host agent's environment says of the database: an address that cannot resolve.
NO_DATABASE = "postgresql://agents-have-no-database.invalid/none"


class ScratchError(Exception):
    """A scratch service or process did not start, stop or go away as asked; the message says
    which, and carries the end of the process's log where there is one."""


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_argv(*args: str) -> list[str]:
    """`python -m actorstack.cli ARGS`, with this interpreter."""
    return [sys.executable, "-m", "actorstack.cli", *args]


def scratch_env(database_url: str, amqp_url: str, **extra: str) -> dict[str, str]:
    """The environment of a process of a scratch cloud: the caller's, less the variables that
    would configure another cloud, plus the cloud's URLs, this checkout on PYTHONPATH, and
    `extra` (over all of it)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_NOT_INHERITED) or k.startswith(_INHERITED_ANYWAY)
    }
    env.update(ACTORSTACK_DATABASE_URL=database_url, ACTORSTACK_AMQP_URL=amqp_url, PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


# --- the shared servers --------------------------------------------------------------------------


async def _on_postgres(server: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(f"{server}/postgres", timeout=30)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def create_database(name: str, server: str = PG_SERVER) -> None:
    await _on_postgres(server, f'CREATE DATABASE "{name}"')


async def drop_database(name: str, server: str = PG_SERVER) -> None:
    """Gone, with whatever sessions were still connected to it."""
    await _on_postgres(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def database_exists(name: str, server: str = PG_SERVER) -> bool:
    return bool(await _on_postgres(server, "SELECT 1 FROM pg_database WHERE datname = $1", name))


def rabbitmqctl(*args: str, timeout: float = 120) -> str:
    """`rabbitmqctl ARGS` on the shared broker (as root); its output, or ScratchError."""
    argv = [shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip()
        raise ScratchError(f"{shlex.join(argv)} exited {done.returncode}: {why}")
    return done.stdout


def add_vhost(name: str) -> None:
    """The vhost, with every permission on it for guest (the user of AMQP_SERVER)."""
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def delete_vhost(name: str) -> None:
    rabbitmqctl("delete_vhost", name)


def host_users(vhost: str) -> list[str]:
    """The broker users `actorstack host credentials --broker-user` made for this vhost's hosts."""
    listed = rabbitmqctl("list_users", "--quiet", "--no-table-headers").split()
    return [user for user in listed if user.startswith(f"{vhost}.host.")]


def vhost_exists(name: str) -> bool:
    return name in rabbitmqctl("list_vhosts", "--quiet", "--no-table-headers").split()


@dataclasses.dataclass
class ScratchServices:
    """A PostgreSQL database and a RabbitMQ vhost named `name` (no vhost with `vhost=False`), and
    the state directory `state_dir` when one is given (mode 0755: QEMU, another user, must
    traverse it). `create()` makes them (and on failure removes what it made); `drop()` removes
    what `create()` made, trying every step and raising their errors together. The database is
    empty: `actorstack up` or `actorstack db init` makes the schema."""

    name: str
    state_dir: Path | None = None
    vhost: bool = True
    pg_server: str = PG_SERVER
    amqp_server: str = AMQP_SERVER
    _made: list[str] = dataclasses.field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name.startswith(PREFIXES):
            raise ValueError(f"{self.name!r}: scratch names start with one of {PREFIXES} (tools/leftovers)")

    @property
    def database_url(self) -> str:
        return f"{self.pg_server}/{self.name}"

    @property
    def amqp_url(self) -> str:
        return f"{self.amqp_server}/{self.name}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for an `actorstack` process on these services (see `scratch_env`)."""
        if self.state_dir is not None:
            extra = {"ACTORSTACK_STATE_DIR": str(self.state_dir), **extra}
        return scratch_env(self.database_url, self.amqp_url, **extra)

    def cloud(self, state_dir: Path | None = None, **options: Any) -> ScratchCloud:
        """A cloud on these services, in `state_dir` (by default the services' own); `options`
        are ScratchCloud's."""
        where = state_dir or self.state_dir
        if where is None:
            raise ValueError(f"a cloud on {self.name} needs a state directory")
        return ScratchCloud(self.database_url, self.amqp_url, where, **options)

    async def create(self) -> None:
        try:
            await create_database(self.name, self.pg_server)
            self._made.append("database")
            if self.vhost:
                await asyncio.to_thread(add_vhost, self.name)
                self._made.append("vhost")
            if self.state_dir is not None:
                self.state_dir.mkdir()
                self._made.append("state dir")
                self.state_dir.chmod(0o755)
        except BaseException:
            with contextlib.suppress(ScratchError):
                await self.drop()
            raise

    async def drop(self) -> None:
        problems = []
        if "database" in self._made:
            try:
                await drop_database(self.name, self.pg_server)
                self._made.remove("database")
            except _DB_ERRORS as exc:
                problems.append(f"database {self.name}: {exc!r}")
        if "vhost" in self._made:
            try:
                for user in await asyncio.to_thread(host_users, self.name):
                    await asyncio.to_thread(rabbitmqctl, "delete_user", user)
                await asyncio.to_thread(delete_vhost, self.name)
                self._made.remove("vhost")
            except (ScratchError, OSError, subprocess.SubprocessError) as exc:
                problems.append(f"vhost {self.name}: {exc!r}")
        if "state dir" in self._made and self.state_dir is not None:
            try:
                shutil.rmtree(self.state_dir)
                self._made.remove("state dir")
            except OSError as exc:
                problems.append(f"state directory {self.state_dir}: {exc!r}")
        if problems:
            raise ScratchError("could not remove " + "; ".join(problems))

    async def leftovers(self) -> list[str]:
        """What of these services exists now: after `drop()`, nothing (else it is a leak)."""
        left = []
        if await database_exists(self.name, self.pg_server):
            left.append(f"database {self.name}")
        if self.vhost and await asyncio.to_thread(vhost_exists, self.name):
            left.append(f"vhost {self.name}")
        if self.vhost:
            left.extend(f"broker user {user}" for user in await asyncio.to_thread(host_users, self.name))
        if self.state_dir is not None and self.state_dir.exists():
            left.append(f"directory {self.state_dir}")
        return left

    async def __aenter__(self) -> ScratchServices:
        await self.create()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drop()


# --- processes -----------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent goes, however it goes (the thread that
    forked, strictly: spawn from the event loop's thread, never from a worker thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclasses.dataclass
class ScratchProcess:
    """One `python -m actorstack.cli ROLE …` child and its log file (stdout and stderr)."""

    label: str
    role: str  # the command: up, api, runtime, hostagent, …
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    asked_to_stop: bool = False  # by stop() or kill(): an exit then is no surprise

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def died(self) -> bool:
        """Exited without being asked to."""
        return not self.asked_to_stop and not self.alive

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def records(self) -> list[dict[str, Any]]:
        """The structured log lines (`--log-format json`); anything else, a traceback say, is skipped."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == event]

    async def wait_for_event(self, event: str, timeout: float = 90.0) -> dict[str, Any]:
        """The first log record of `event` (`api listening`, `runtime started`, …), once there."""
        deadline = time.monotonic() + timeout
        while not (found := self.events(event)):
            if not self.alive:
                why = f"exited with {self.returncode} before {event!r}"
                raise ScratchError(f"{self.label} {why}; its log ends:\n{self.tail()}")
            if time.monotonic() > deadline:
                why = f"did not log {event!r} within {timeout:.0f}s"
                raise ScratchError(f"{self.label} {why}; its log ends:\n{self.tail()}")
            await asyncio.sleep(0.1)
        return found[0]

    async def exited(self, timeout: float = 30.0) -> int:
        """The exit status, once it has exited on its own (ScratchError after `timeout`)."""
        if not await self._reaped_within(timeout):
            why = f"still running after {timeout:.0f}s"
            raise ScratchError(f"{self.label} {why}; its log ends:\n{self.tail()}")
        return self.proc.returncode

    async def _reaped_within(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer leaves it (no cleanup of its own), and reap it."""
        self.asked_to_stop = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (a clean stop), SIGKILL if it has not exited within `timeout`; the exit status."""
        self.asked_to_stop = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            await self._reaped_within(timeout)
        self.kill()
        return self.proc.returncode


def spawn(
    label: str,
    args: Iterable[str],
    env: Mapping[str, str],
    log_path: Path,
    *,
    new_session: bool = False,
    die_with_parent: bool = False,
    wrapper: Sequence[str] = (),
) -> ScratchProcess:
    """Start `python -m actorstack.cli ARGS` from this checkout, its output appended to `log_path`.
    `new_session`: a Ctrl-C in the terminal reaches the caller only, which then stops it in order.
    `die_with_parent`: it never outlives the caller (see _die_with_parent). `wrapper`: a command
    that execs the rest (`nsenter --net=…`: the process in another network namespace)."""
    args = list(args)
    argv = [*wrapper, *cli_argv(*args)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    return ScratchProcess(label, args[0], argv, proc, log_path)


def _flag(args: tuple[str, ...], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args[:-1] else default


class ScratchCloud:
    """The processes of one cloud on one database and vhost, in one state directory; an async
    context manager that stops them all (printing the end of the logs of any that died, or of
    all of them when the block failed).

    `url` (a free loopback port, chosen now) is where `up` or `api` listens when started with
    `--listen {listen}`; the admin's password is `password`. Logs go to <log_dir>/<label>.log
    (log_dir defaults to the state directory); `env` adds to every process's environment."""

    def __init__(
        self,
        database_url: str,
        amqp_url: str,
        state_dir: Path,
        *,
        log_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        stop_timeout: float = STOP_TIMEOUT,
        new_session: bool = False,
        die_with_parent: bool = False,
    ) -> None:
        self.database_url = database_url
        self.amqp_url = amqp_url
        self.state_dir = state_dir
        self.log_dir = log_dir or state_dir
        self.extra_env = dict(env or {})
        self.stop_timeout = stop_timeout
        self.new_session = new_session
        self.die_with_parent = die_with_parent
        self.port = free_port()
        self.listen = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.listen}"
        self.password = secrets.token_urlsafe(12)
        self.processes: list[ScratchProcess] = []

    def env(self, **extra: str) -> dict[str, str]:
        values = {
            "ACTORSTACK_STATE_DIR": str(self.state_dir),
            "ACTORSTACK_ADMIN_PASSWORD": self.password,
            **self.extra_env,
            **extra,
        }
        return scratch_env(self.database_url, self.amqp_url, **values)

    def start(
        self, label: str, *args: str, env: Mapping[str, str] | None = None, wrapper: Sequence[str] = ()
    ) -> ScratchProcess:
        """`python -m actorstack.cli ARGS` (ARGS[0] is the role), logging to <log_dir>/<label>.log
        (appended to when the label starts again); `env` adds to the cloud's variables; `wrapper`
        as `spawn`'s."""
        process = spawn(
            label,
            args,
            self.env(**(env or {})),
            self.log_dir / f"{label}.log",
            new_session=self.new_session,
            die_with_parent=self.die_with_parent,
            wrapper=wrapper,
        )
        self.processes.append(process)
        return process

    async def run(self, *args: str, timeout: float = 120) -> str:
        """`python -m actorstack.cli ARGS` to its end (`db init`, `bootstrap`): its output, or
        ScratchError with it."""
        proc = await asyncio.create_subprocess_exec(
            *cli_argv(*args),
            cwd=ROOT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            raise ScratchError(f"actorstack {shlex.join(args)} did not finish in {timeout:.0f}s") from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise ScratchError(f"actorstack {shlex.join(args)} exited {proc.returncode}:\n{out.decode()}")
        return out.decode()

    def host_env(self, *names: str) -> dict[str, str]:
        """The environment of a host agent as on another machine: the internal API's URL, a host
        token for `names` and a broker user that may read only their queues (made by `actorstack
        host credentials --broker-user`; removed with the vhost), and a database URL nothing
        answers at, since an agent has no database credentials."""
        done = subprocess.run(
            cli_argv("host", "credentials", "--broker-user", *names),
            cwd=ROOT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        printed = dict(
            line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("ACTORSTACK_")
        )
        if done.returncode != 0 or "ACTORSTACK_HOST_TOKEN" not in printed:
            raise ScratchError(f"actorstack host credentials exited {done.returncode}:\n{done.stderr}")
        return {
            "ACTORSTACK_CONTROL_URL": self.url,
            **printed,
            "ACTORSTACK_DATABASE_URL": NO_DATABASE,
        }

    async def up(self, *args: str, timeout: float = 60) -> ScratchProcess:
        """`actorstack up --listen <listen> --log-format json ARGS` (label `up`), once ready (see
        `wait_ready`; the hosts it waits for are `--hosts` of ARGS, 1 by default, and a volume
        service unless `--storage none`)."""
        process = self.start("up", "up", "--listen", self.listen, "--log-format", "json", *args)
        hosts = int(_flag(args, "--hosts", "1"))
        storage = _flag(args, "--storage", "file") != "none"
        await self.wait_ready(hosts=hosts, storage=storage, timeout=timeout)
        return process

    async def wait_ready(self, *, hosts: int = 1, storage: bool = True, timeout: float = 60) -> None:
        """Until the API listens (within `timeout`), then until the admin signs in and `hosts`
        hypervisors are up and enabled, and with `storage` a volume service is up (within
        `timeout` again): the API listens before the host agents have registered, and a server
        created in between would find no valid host. ScratchError, with the logs' ends, if a
        process exits meanwhile or time runs out."""
        await self._until(f"the API to listen on {self.listen}", self._listening, timeout, 0.1)
        what = f"{hosts} host(s) up" + (" and a volume service" if storage else "")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await self._until(what, lambda: self._hosts_up(session, hosts, storage), timeout, 0.2)

    async def _until(
        self, what: str, probe: Callable[[], Awaitable[bool]], timeout: float, interval: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if await probe():
                return
            if time.monotonic() > deadline:
                raise ScratchError(f"timed out after {timeout:.0f}s waiting for {what}:\n{self.log_tails()}")
            await asyncio.sleep(interval)

    async def _listening(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        return True

    async def _hosts_up(self, session: aiohttp.ClientSession, hosts: int, storage: bool) -> bool:
        try:
            token, project_id = await self.admin_token(session)
            headers = {"X-Auth-Token": token}
            async with session.get(f"{self.url}/compute/v2.1/os-hypervisors/detail", headers=headers) as r:
                found = (await r.json())["hypervisors"]
            if sum(h["state"] == "up" and h["status"] == "enabled" for h in found) < hosts:
                return False
            if not storage:
                return True
            path = f"/volume/v3/{project_id}/os-services?binary=cinder-volume"
            async with session.get(self.url + path, headers=headers) as r:
                return any(s["state"] == "up" for s in (await r.json())["services"])
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, ScratchError):
            return False  # still starting

    async def admin_token(self, session: aiohttp.ClientSession | None = None) -> tuple[str, str]:
        """(token, project id) of the admin in the admin project."""
        if session is None:
            async with aiohttp.ClientSession() as own:
                return await self.admin_token(own)
        user = {"name": "admin", "domain": {"id": "default"}, "password": self.password}
        body = {
            "auth": {
                "identity": {"methods": ["password"], "password": {"user": user}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        }
        async with session.post(f"{self.url}/identity/v3/auth/tokens", json=body) as r:
            if r.status != 201:
                raise ScratchError(f"the admin could not sign in: {r.status} {await r.text()}")
            return r.headers["X-Subject-Token"], (await r.json())["token"]["project"]["id"]

    def role(self, role: str) -> list[ScratchProcess]:
        return [p for p in self.processes if p.role == role]

    def check_alive(self) -> None:
        """ScratchError if a process exited without being asked to, with the end of its log."""
        for p in self.processes:
            if p.died:
                raise ScratchError(
                    f"{p.label} (pid {p.pid}) exited with {p.returncode}; its log ends:\n{p.tail()}"
                )

    def log_tails(self, processes: Iterable[ScratchProcess] | None = None, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {p.label} ({p.role}, exit {p.returncode}, {p.log_path}) ---\n{p.tail(chars)}"
            for p in (self.processes if processes is None else processes)
        )

    async def stop(self) -> None:
        """Every process, a rank of STOP_ORDER at a time: SIGTERM, SIGKILL after `stop_timeout`."""
        ranks: dict[int, list[ScratchProcess]] = {}
        for p in self.processes:
            ranks.setdefault(STOP_ORDER.get(p.role, len(STOP_ORDER)), []).append(p)
        for rank in sorted(ranks):
            await asyncio.gather(*(p.stop(self.stop_timeout) for p in ranks[rank]))

    async def __aenter__(self) -> ScratchCloud:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        died = [p for p in self.processes if p.died]
        try:
            await self.stop()
        finally:
            shown = self.processes if exc is not None else died
            if shown:
                print(f"the scratch cloud's logs end:\n{self.log_tails(shown)}", file=sys.stderr)
