"""A cloud of separate processes for fault tests: one per role, each with its own log.

`Cluster`, a scratch cloud (actorstack/scratch.py), runs `actorstack db init` and `bootstrap` on
its database, then starts the roles as `python -m actorstack.cli api|runtime|hostagent`
processes, each on the database and AMQP URL it is given (a test puts a TCP proxy in front of
one process's broker connection by giving it another URL), and waits until each says it is
ready in its JSON log. Leaving the `async with` block stops every process it started (SIGTERM,
then SIGKILL) whatever happened, and on a failure prints the end of each log, so a fault test
can kill or cut any one of them freely.

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
import dataclasses
import functools
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from actorstack.scratch import ScratchCloud, ScratchError, ScratchProcess, ScratchServices
from tests.conftest import separate_services, wait_until

READY_EVENTS = {"api": "api listening", "runtime": "runtime started", "hostagent": "host agent started"}
START_TIMEOUT = 90.0  # seconds for a role to become ready on a loaded machine
STOP_TIMEOUT = 20.0  # seconds a role gets to stop gracefully before it is killed
COMPUTE_VERSION = {"OpenStack-API-Version": "compute 2.96"}


# Await a predicate until true, at a pace an API round trip can keep.
poll = functools.partial(wait_until, interval=0.2)


class Cluster(ScratchCloud):
    """Role processes on one database and vhost (a scratch cloud whose roles run apart), in a
    work directory: `state/` (the API's and runtimes'), `hosts/<name>/` (each host agent's),
    `logs/<label>.log`. An async context manager that stops them all."""

    def __init__(
        self,
        services: ScratchServices,
        workdir: Path,
        *,
        name: str,
        runtime_args: Iterable[str] = ("--heartbeat", "0.5", "--member-timeout", "3"),
        host_args: Iterable[str] = ("--host-heartbeat", "1", "--sync-interval", "2"),
    ) -> None:
        super().__init__(
            services.database_url,
            services.amqp_url,
            workdir / "state",
            log_dir=workdir / "logs",
            stop_timeout=STOP_TIMEOUT,
            new_session=True,
        )
        self.workdir = workdir
        self.name = name  # prefixes host names: <name>-h1 …
        self.runtime_args = tuple(runtime_args)
        self.host_args = tuple(host_args)

    @property
    def api_url(self) -> str:
        return self.url

    async def prepare(self) -> None:
        """What `actorstack up` does first: the schema, then the admin, roles and flavors."""
        await self.run("db", "init")
        await self.run("bootstrap")

    async def _start(
        self, label: str, args: list[str], env: dict[str, str], attempts: int = 3
    ) -> ScratchProcess:
        """Start the role (args[0]) and wait until it is ready. A start that gave up because the
        shared broker or database did not answer in time (exit 2, "cannot reach": a loaded
        machine, not the fault under test) is tried again, with the same log file."""
        for attempt in range(1, attempts + 1):
            process = self.start(label, *args, "--log-format", "json", env=env)
            try:
                await process.wait_for_event(READY_EVENTS[process.role], START_TIMEOUT)
                return process
            except ScratchError:
                if attempt == attempts or process.alive or "cannot reach" not in process.log():
                    raise
                self.processes.remove(process)
        raise AssertionError("unreachable")

    @staticmethod
    def _broker(amqp_url: str | None) -> dict[str, str]:
        """The environment that puts one process on another broker URL (a proxy's, say)."""
        return {"ACTORSTACK_AMQP_URL": amqp_url} if amqp_url else {}

    async def start_api(self, *, amqp_url: str | None = None) -> ScratchProcess:
        return await self._start("api", ["api", "--listen", self.listen], self._broker(amqp_url))

    async def start_runtime(
        self, label: str | None = None, *, amqp_url: str | None = None, args: Iterable[str] = ()
    ) -> ScratchProcess:
        label = label or f"runtime-{len(self.role('runtime')) + 1}"
        return await self._start(label, ["runtime", *self.runtime_args, *args], self._broker(amqp_url))

    def host_state_dir(self, host: str) -> Path:
        return self.workdir / "hosts" / host

    async def start_hostagent(
        self, host: str | None = None, *, amqp_url: str | None = None, args: Iterable[str] = ()
    ) -> ScratchProcess:
        """A compute host on libvirt's test driver, without networking or a storage agent, as on
        another machine: a state directory of its own, the internal API and a host token, no
        database."""
        host = host or f"{self.name}-h{len(self.role('hostagent')) + 1}"
        state_dir = self.host_state_dir(host)
        state_dir.mkdir(parents=True, exist_ok=True)
        credentials = await asyncio.to_thread(self.host_env, host)
        if amqp_url:  # the host's own broker user, through that address (a proxy's, say)
            user = urlsplit(credentials["ACTORSTACK_AMQP_URL"])
            via = urlsplit(amqp_url)
            netloc = f"{user.netloc.rpartition('@')[0]}@{via.netloc.rpartition('@')[2]}"
            credentials["ACTORSTACK_AMQP_URL"] = urlunsplit(user._replace(netloc=netloc))
        return await self._start(
            host,
            [
                "hostagent",
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
            {**credentials, "ACTORSTACK_STATE_DIR": str(state_dir)},
        )

    def errors(self) -> list[str]:
        """Log lines at error level or above, and tracebacks, from every process."""
        found = []
        for process in self.processes:
            for line in process.log().splitlines():
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
    def read(cls, agents: Iterable[ScratchProcess]) -> ServerLedger:
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
            "coalesce(sum(a.vcpus), 0) AS alloc_vcpus "
            "FROM compute_hosts h LEFT JOIN allocations a ON a.host = h.name "
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
    async with (
        separate_services(f"f{uuid.uuid4().hex[:6]}") as services,
        Cluster(services, tmp_path, name=services.name.replace("_", "-")) as cluster,
    ):
        await cluster.prepare()
        try:
            yield cluster
        finally:
            # Shown by pytest only when the test failed (teardown output is captured).
            await cluster.stop()
            print(f"role logs in {cluster.log_dir}; their ends:\n{cluster.log_tails()}", file=sys.stderr)


def owned_shards(runtime: ScratchProcess) -> int:
    """How many shard leases the runtime said it holds last (its `shards balanced` log lines)."""
    lines = [r for r in runtime.records() if r.get("event") in ("runtime started", "shards balanced")]
    return int(lines[-1]["owned"]) if lines else 0


async def total_shards(cluster: Cluster) -> int:
    """Shard queues over all actor kinds: every one is owned by exactly one live runtime."""
    from actorstack.roles import builtin_kinds

    rows = await cluster.fetch("SELECT value FROM cluster_settings WHERE key = 'shards'")
    value = rows[0]["value"]  # jsonb, as text unless a codec says otherwise
    return len(builtin_kinds()) * int(json.loads(value) if isinstance(value, str) else value)
