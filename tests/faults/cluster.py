"""A cloud of separate processes for fault tests: one per role, each with its own log.

`Cluster` runs `actorstack db init` and `bootstrap` on a given database, then starts the roles
as `python -m actorstack.cli api|runtime|hostagent` processes, each on the database and AMQP
URL it is given (a test puts a TCP proxy in front of one process's broker connection by giving
it another URL), and waits until each says it is ready in its JSON log. Leaving the `async
with` block stops every process it started (SIGTERM, then SIGKILL) whatever happened, and on a
failure prints the end of each log, so a fault test can kill or cut any one of them freely.

Host agents get a state directory of their own under the cluster's work directory, with the
API's image directory linked in (as a shared NFS export of the images would be on real hosts),
so the agents' image cache finds what the API stored.

`Api` is a small admin client over aiohttp, and `ServerLedger` reads the host agents' logs to
tell how many times each domain was really created and destroyed (the agent answers a Spawn
for an existing domain without creating it again, and logs `domain created` only when it did).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import ROOT, separate_services, wait_until

READY_EVENTS = {"api": "api listening", "runtime": "runtime started", "hostagent": "host agent started"}
START_TIMEOUT = 90.0  # seconds for a role to become ready on a loaded machine
STOP_TIMEOUT = 20.0  # seconds a role gets to stop gracefully before it is killed
COMPUTE_VERSION = {"OpenStack-API-Version": "compute 2.96"}


class RoleFailed(AssertionError):
    """A role process exited or did not become ready; carries the end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Await a predicate until true, at a pace an API round trip can keep.
poll = functools.partial(wait_until, interval=0.2)


@dataclasses.dataclass
class RoleProcess:
    """One role's process and its JSON log file."""

    label: str
    role: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """The structured log lines (other output, such as tracebacks, is skipped)."""
        found = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == event]

    async def wait_for_event(self, event: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(event)
            if found:
                return found[0]
            if not self.alive:
                raise RoleFailed(
                    f"{self.label} exited with {self.proc.returncode} before {event!r}:\n"
                    f"{self.text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise RoleFailed(
                    f"{self.label} did not log {event!r} within {timeout:.0f}s:\n{self.text()[-4000:]}"
                )
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL (kill -9): no cleanup at all, as a crash or the OOM killer leaves it."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, and SIGKILL if it has not stopped within `timeout`; the exit status."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        if self.alive:
            self.kill()
        return self.proc.returncode


class Cluster:
    """Role processes on one database and vhost; an async context manager that stops them all."""

    def __init__(
        self,
        database_url: str,
        amqp_url: str,
        workdir: Path,
        *,
        name: str,
        runtime_args: Iterable[str] = ("--heartbeat", "0.5", "--member-timeout", "3"),
        host_args: Iterable[str] = ("--host-heartbeat", "1", "--sync-interval", "2"),
    ) -> None:
        self.database_url = database_url
        self.amqp_url = amqp_url
        self.workdir = workdir
        self.name = name  # prefixes host names: <name>-h1 …
        self.runtime_args = tuple(runtime_args)
        self.host_args = tuple(host_args)
        self.password = secrets.token_urlsafe(12)
        self.state_dir = workdir / "state"
        self.log_dir = workdir / "logs"
        self.processes: list[RoleProcess] = []
        self.api_url = ""

    async def __aenter__(self) -> Cluster:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.stop_all()
        if exc is not None:
            print(self.log_tails(), file=sys.stderr)

    # --- processes ------------------------------------------------------------------------

    def env(self, *, amqp_url: str | None = None, state_dir: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ACTORSTACK_", "OS_"))}
        env.update(
            ACTORSTACK_DATABASE_URL=self.database_url,
            ACTORSTACK_AMQP_URL=amqp_url or self.amqp_url,
            ACTORSTACK_STATE_DIR=str(state_dir or self.state_dir),
            ACTORSTACK_ADMIN_PASSWORD=self.password,
            PYTHONPATH=str(ROOT),
        )
        return env

    async def prepare(self) -> None:
        """What `actorstack up` does first: the schema, then the admin, roles and flavors."""
        for command in (["db", "init"], ["bootstrap"]):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "actorstack.cli",
                *command,
                cwd=ROOT,
                env=self.env(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise RoleFailed(f"actorstack {' '.join(command)} did not finish in 120 s") from None
            if proc.returncode != 0:
                raise RoleFailed(f"actorstack {' '.join(command)} exited {proc.returncode}:\n{out.decode()}")

    def _spawn(self, label: str, role: str, args: list[str], env: dict[str, str]) -> RoleProcess:
        log_path = self.log_dir / f"{label}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "actorstack.cli", role, "--log-format", "json", *args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = RoleProcess(label, role, proc, log_path)
        self.processes.append(process)
        return process

    async def _start(
        self, label: str, role: str, args: list[str], env: dict[str, str], attempts: int = 3
    ) -> RoleProcess:
        """Spawn the role and wait until it is ready. A start that gave up because the shared
        broker or database did not answer in time (exit 2, "cannot reach": a loaded machine,
        not the fault under test) is tried again, with the same log file."""
        for attempt in range(1, attempts + 1):
            process = self._spawn(label, role, args, env)
            try:
                await process.wait_for_event(READY_EVENTS[role])
                return process
            except RoleFailed:
                if attempt == attempts or process.alive or "cannot reach" not in process.text():
                    raise
                self.processes.remove(process)
        raise AssertionError("unreachable")

    async def start_api(self, *, amqp_url: str | None = None) -> RoleProcess:
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        return await self._start("api", "api", ["--listen", f"127.0.0.1:{port}"], self.env(amqp_url=amqp_url))

    async def start_runtime(
        self, label: str | None = None, *, amqp_url: str | None = None, args: Iterable[str] = ()
    ) -> RoleProcess:
        label = label or f"runtime-{sum(p.role == 'runtime' for p in self.processes) + 1}"
        return await self._start(label, "runtime", [*self.runtime_args, *args], self.env(amqp_url=amqp_url))

    def host_state_dir(self, host: str) -> Path:
        return self.workdir / "hosts" / host

    async def start_hostagent(
        self, host: str | None = None, *, amqp_url: str | None = None, args: Iterable[str] = ()
    ) -> RoleProcess:
        """A compute host on libvirt's test driver, without networking or a storage agent."""
        host = host or f"{self.name}-h{sum(p.role == 'hostagent' for p in self.processes) + 1}"
        state_dir = self.host_state_dir(host)
        state_dir.mkdir(parents=True, exist_ok=True)
        images = state_dir / "images"
        if not images.exists():
            (self.state_dir / "images").mkdir(parents=True, exist_ok=True)
            images.symlink_to(self.state_dir / "images", target_is_directory=True)
        return await self._start(
            host,
            "hostagent",
            [
                "--name",
                host,
                "--virt",
                "test",
                "--network",
                "none",
                "--storage",
                "none",
                *self.host_args,
                *args,
            ],
            self.env(amqp_url=amqp_url, state_dir=state_dir),
        )

    def role(self, role: str) -> list[RoleProcess]:
        return [p for p in self.processes if p.role == role]

    async def stop_all(self) -> None:
        """Host agents first, then the API, then the runtimes (as `actorstack up` stops)."""
        order = {"hostagent": 0, "api": 1, "runtime": 2}
        for rank in sorted(set(order.values())):
            group = [p for p in self.processes if order.get(p.role, 3) == rank]
            await asyncio.gather(*(p.stop() for p in group), return_exceptions=True)
        for process in self.processes:  # whatever is left, even an unknown role
            process.kill()

    def log_tails(self, chars: int = 3000) -> str:
        parts = [
            f"--- {p.label} ({p.role}, exit {p.proc.returncode}) ---\n{p.text()[-chars:]}"
            for p in self.processes
        ]
        return "\n".join(parts)

    def errors(self) -> list[str]:
        """Log lines at error level or above, and tracebacks, from every process."""
        found = []
        for process in self.processes:
            for line in process.text().splitlines():
                if (
                    '"level": "error"' in line
                    or '"level": "critical"' in line
                    or line.startswith("Traceback")
                ):
                    found.append(f"{process.label}: {line[:500]}")
        return found

    # --- the database ---------------------------------------------------------------------

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()


class Api:
    """An admin client of the cluster's API (aiohttp, one session, one token)."""

    def __init__(self, url: str, password: str) -> None:
        self.url = url
        self.password = password
        self.token = ""
        self.project_id = ""
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": "admin", "domain": {"id": "default"}, "password": self.password}
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        }
        async with self._session.post(f"{self.url}/identity/v3/auth/tokens", json=body) as r:
            assert r.status == 201, await r.text()
            self.token = r.headers["X-Subject-Token"]
            self.project_id = (await r.json())["token"]["project"]["id"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self, method: str, path: str, *, expect: int | tuple[int, ...] | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        assert self._session is not None, "use Api as an async context manager"
        headers = {"X-Auth-Token": self.token, **COMPUTE_VERSION, **kwargs.pop("headers", {})}
        async with self._session.request(method, self.url + path, headers=headers, **kwargs) as r:
            text = await r.text()
            status = r.status
        try:
            data: Any = json.loads(text) if text else None
        except ValueError:
            data = text
        if expect is not None:
            assert status in ((expect,) if isinstance(expect, int) else expect), (method, path, status, data)
        return status, data

    async def unlimited_quota(self) -> None:
        """No quota in the way of a storm of boots by the admin project."""
        await self.request(
            "PUT",
            f"/compute/v2.1/os-quota-sets/{self.project_id}",
            expect=200,
            json={"quota_set": {"instances": -1, "cores": -1, "ram": -1}},
        )

    async def create_image(self, name: str, data: bytes = b"\0" * (1024 * 1024)) -> str:
        """A public raw image (the test driver never reads it; the agents cache it)."""
        _, image = await self.request(
            "POST",
            "/image/v2/images",
            expect=201,
            json={"name": name, "disk_format": "raw", "container_format": "bare", "visibility": "public"},
        )
        await self.request(
            "PUT",
            f"/image/v2/images/{image['id']}/file",
            expect=204,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return str(image["id"])

    async def boot(self, name: str, image_id: str, flavor_id: str = "42") -> str:
        _, body = await self.request(
            "POST",
            "/compute/v2.1/servers",
            expect=202,
            json={"server": {"name": name, "imageRef": image_id, "flavorRef": flavor_id, "networks": "none"}},
        )
        return str(body["server"]["id"])

    async def servers(self) -> dict[str, dict[str, Any]]:
        """Every server the admin sees (all projects), by id."""
        _, body = await self.request(
            "GET", "/compute/v2.1/servers/detail?all_tenants=1&limit=10000", expect=200
        )
        return {s["id"]: s for s in body["servers"]}

    async def delete(self, server_id: str) -> None:
        await self.request("DELETE", f"/compute/v2.1/servers/{server_id}", expect=(204, 404))


@dataclasses.dataclass
class ServerLedger:
    """Per (host, server): domains the host agents really created and really destroyed."""

    created: collections.Counter[tuple[str, str]]
    destroyed: collections.Counter[tuple[str, str]]

    @classmethod
    def read(cls, agents: Iterable[RoleProcess]) -> ServerLedger:
        created: collections.Counter[tuple[str, str]] = collections.Counter()
        destroyed: collections.Counter[tuple[str, str]] = collections.Counter()
        for agent in agents:
            for record in agent.records():
                server = record.get("server")
                if not server:
                    continue
                if record.get("event") == "domain created":
                    created[(agent.label, server)] += 1
                elif record.get("event") == "instance destroyed" and record.get("domain_existed"):
                    destroyed[(agent.label, server)] += 1
        return cls(created, destroyed)

    def created_more_than_once(self) -> dict[tuple[str, str], int]:
        return {key: n for key, n in self.created.items() if n > 1}

    def hosts_of(self, server_id: str) -> list[str]:
        return sorted(host for host, server in self.created if server == server_id)

    def left(self) -> dict[tuple[str, str], int]:
        """Domains created and not destroyed since (what a host would still have)."""
        return {key: n - self.destroyed[key] for key, n in self.created.items() if n != self.destroyed[key]}


# --- a storm of boots with a fault in the middle, and what must hold afterwards ----------------

FINAL = ("ACTIVE", "ERROR")


async def boot_many(api: Api, image_id: str, names: Iterable[str], *, concurrency: int = 5) -> list[str]:
    """Boot one server per name through the API, a few requests at a time; their ids in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> str:
        async with gate:
            return await api.boot(name, image_id)

    return list(await asyncio.gather(*(one(n) for n in names)))


async def storm_with_fault(
    api: Api,
    image_id: str,
    fault: Callable[[], Awaitable[Any]],
    *,
    prefix: str,
    count: int = 50,
    fault_after_active: int = 10,
) -> list[str]:
    """Boot `count` servers: half first; once `fault_after_active` of them are ACTIVE, inject the
    fault while the other half is booted (so boots are in flight before, during and after it)."""
    first = count // 2
    ids = await boot_many(api, image_id, (f"{prefix}-{i}" for i in range(first)))

    async def enough_active() -> bool:
        servers = await api.servers()
        return sum(servers[i]["status"] == "ACTIVE" for i in ids if i in servers) >= fault_after_active

    await poll(enough_active, timeout=120, what=f"{fault_after_active} ACTIVE servers before the fault")
    _, second = await asyncio.gather(
        fault(), boot_many(api, image_id, (f"{prefix}-{i}" for i in range(first, count)))
    )
    return ids + second


async def wait_final(api: Api, ids: list[str], timeout: float = 180) -> dict[str, dict[str, Any]]:
    """Every server ACTIVE or ERROR; the AssertionError names the ones still in flight."""
    deadline = time.monotonic() + timeout
    while True:
        servers = await api.servers()
        mine = {i: servers[i] for i in ids if i in servers}
        pending = {
            i: (s["status"], s["OS-EXT-STS:task_state"]) for i, s in mine.items() if s["status"] not in FINAL
        }
        missing = [i for i in ids if i not in servers]
        if not pending and not missing:
            return mine
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not final after {timeout:.0f}s: {len(pending)} pending {pending}, {len(missing)} missing"
            )
        await asyncio.sleep(0.5)


async def _allocations(cluster: Cluster) -> dict[str, str]:
    return {r["server_id"]: r["host"] for r in await cluster.fetch("SELECT server_id, host FROM allocations")}


async def _usage_drift(cluster: Cluster) -> list[Any]:
    """Hosts whose recorded usage differs from the sum of their allocations."""
    return list(
        await cluster.fetch(
            "SELECT h.name, h.used_memory_mb, h.used_vcpus, coalesce(sum(a.memory_mb), 0) AS alloc_memory, "
            "coalesce(sum(a.vcpus), 0) AS alloc_vcpus FROM compute_hosts h LEFT JOIN allocations a ON a.host = h.name "
            "GROUP BY h.name HAVING h.used_memory_mb <> coalesce(sum(a.memory_mb), 0) "
            "OR h.used_vcpus <> coalesce(sum(a.vcpus), 0)"
        )
    )


async def assert_storm_outcome(cluster: Cluster, api: Api, ids: list[str]) -> dict[str, dict[str, Any]]:
    """After a storm: every server final (ERROR only with a fault), each ACTIVE server's domain
    created exactly once and on its host, no domain created twice anywhere, the allocations
    exactly the ACTIVE servers' and the hosts' usage their sum, and no message dead-lettered."""
    servers = await wait_final(api, ids)
    faultless = [
        i for i, s in servers.items() if s["status"] == "ERROR" and not (s.get("fault") or {}).get("message")
    ]
    assert not faultless, f"ERROR without a fault: {faultless}"
    ledger = ServerLedger.read(cluster.role("hostagent"))
    assert not ledger.created_more_than_once(), f"domains created twice: {ledger.created_more_than_once()}"
    active = {i: s["OS-EXT-SRV-ATTR:host"] for i, s in servers.items() if s["status"] == "ACTIVE"}
    wrong = {i: (host, ledger.hosts_of(i)) for i, host in active.items() if ledger.hosts_of(i) != [host]}
    assert not wrong, f"ACTIVE servers whose domain was not created once on their host: {wrong}"

    async def allocations_match() -> bool:
        return await _allocations(cluster) == active

    try:
        await poll(allocations_match, timeout=60, what="allocations to match the ACTIVE servers")
    except AssertionError:
        allocations = await _allocations(cluster)
        extra = {i: h for i, h in allocations.items() if active.get(i) != h}
        lacking = {i: h for i, h in active.items() if allocations.get(i) != h}
        raise AssertionError(
            f"allocations leak: not ACTIVE there {extra}; ACTIVE without one {lacking}"
        ) from None
    assert not await _usage_drift(cluster), await _usage_drift(cluster)
    dead = await cluster.fetch("SELECT * FROM dead_letters")
    assert not dead, f"messages dead-lettered: {[dict(r) for r in dead]}"
    return servers


async def delete_and_assert_clean(cluster: Cluster, api: Api, ids: list[str]) -> None:
    """Delete every server; then no server, no allocation, no usage and no domain is left."""
    gate = asyncio.Semaphore(5)

    async def delete(server_id: str) -> None:
        async with gate:
            await api.delete(server_id)

    await asyncio.gather(*(delete(i) for i in ids))

    async def gone() -> bool:
        servers = await api.servers()
        return not any(i in servers for i in ids)

    await poll(gone, timeout=120, what="every server deleted")

    async def released() -> bool:
        return not await _allocations(cluster) and not await _usage_drift(cluster)

    await poll(released, timeout=60, what="every allocation released")
    used = await cluster.fetch(
        "SELECT name FROM compute_hosts WHERE used_memory_mb <> 0 OR used_vcpus <> 0 OR used_local_gb <> 0"
    )
    assert not used, f"hosts with usage left: {[r['name'] for r in used]}"
    ledger = ServerLedger.read(cluster.role("hostagent"))
    assert not ledger.left(), f"domains left on the hosts: {ledger.left()}"
    left = sorted(
        p.name
        for agent in cluster.role("hostagent")
        for p in (cluster.host_state_dir(agent.label) / "instances").glob("*")
        if p.name != "_base"
    )
    assert not left, f"instance directories left: {left}"


# --- fixtures (import them into a test module: tests/faults has no conftest of ours) -----------


@pytest.fixture
async def fault_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """A cluster on a database and vhost of its own (dropped afterwards), initialised and
    bootstrapped, with no process started yet."""
    async with separate_services(f"f{uuid.uuid4().hex[:6]}") as services:
        async with Cluster(
            services.database_url, services.amqp_url, tmp_path, name=services.prefix.replace("_", "-")
        ) as cluster:
            await cluster.prepare()
            try:
                yield cluster
            finally:
                # Shown by pytest only when the test failed (teardown output is captured).
                await cluster.stop_all()
                print(f"role logs in {cluster.log_dir}; their ends:\n{cluster.log_tails()}", file=sys.stderr)


def owned_shards(runtime: RoleProcess) -> int:
    """How many shard leases the runtime said it holds last (its `shards balanced` log lines)."""
    lines = [r for r in runtime.records() if r.get("event") in ("runtime started", "shards balanced")]
    return int(lines[-1]["owned"]) if lines else 0


async def total_shards(cluster: Cluster) -> int:
    """Shard queues over all actor kinds: every one is owned by exactly one live runtime."""
    from actorstack.roles import builtin_kinds

    rows = await cluster.fetch("SELECT value FROM cluster_settings WHERE key = 'shards'")
    value = rows[0]["value"]  # jsonb, as text unless a codec says otherwise
    return len(builtin_kinds()) * int(json.loads(value) if isinstance(value, str) else value)
