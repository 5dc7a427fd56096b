"""`python -m bench.boot_storm --servers N --hosts M --concurrency C`: how fast a cloud of M
simulated hosts boots N servers asked for by C concurrent clients, and deletes them again, set
against the floor of what this machine's RabbitMQ and PostgreSQL can do from one Python process.

The bench starts a cloud of its own (actorstack/scratch.py): a fresh PostgreSQL database and
RabbitMQ vhost named `bench_storm_<hex>`, `actorstack db init`, then `actorstack up --hosts M
--virt test --network none --storage none --log-format json --log-level warning` on a free
loopback port, plus `--runtimes R` `actorstack runtime` processes on the same database and vhost
(they share the shard queues with the `up` process, so that both cores can run actor turns),
with the state directory `/tmp/bench-storm-<hex>`. It waits for the API, for all M hypervisors
to be up and for the shard leases to be spread over the R + 1 processes. As admin it raises the
admin project's compute quotas to fit N, creates a flavor (64 MiB, 1 vCPU, no disk) and a
public 1 MiB raw image.

1. The floor, measured in the same run before the storm, from this one Python process:
   RabbitMQ, persistent messages published with publisher confirms into a temporary quorum queue
   of the bench vhost and consumed with manual acks on the same connection, many in flight
   (round trips per second); PostgreSQL, single-row INSERT commits (autocommit) into a scratch
   table of the bench database from a pool of 8 connections with 16 concurrent tasks (commits per
   second). Then a few idle seconds, to see what the broker and the database do without the bench.
2. The boot storm: C tasks on one aiohttp session take server numbers from a shared counter and
   POST /compute/v2.1/servers (microversion 2.96, `"networks": "none"`, or with `--ports` a port
   each on a network of the bench, in the project's default security group), noting time.time() just
   before each POST. The bench database is polled every 0.2 s until every server is ACTIVE. A
   server's create->ACTIVE latency is the `at` of its `events` row (kind 'server', new_state
   'active'; `at` is now() of the turn's transaction) minus its POST's start, both from this
   machine's clock. Servers/s = N / (last ACTIVE - first POST start).
3. The delete storm: the same with DELETE /compute/v2.1/servers/{id}, until every server is
   `deleted`; deletes/s = N / (last `deleted` event - first DELETE start).

Counted per boot (and per delete) over each storm: messages, as the broker's global
`messages_received_total` (`rabbitmqctl eval 'rabbit_global_counters:overview().'`, the amqp091
map): it counts the whole broker, whoever publishes, so the idle rate is shown beside it;
PostgreSQL transactions, as the bench database's `xact_commit` in pg_stat_database (read from
another database, 1.5 s after the storm so that the backends' statistics are flushed, less the
bench's own polls); CPU seconds of the cloud processes (utime + stime), of the bench process
itself (the clients), and of the whole machine (/proc/stat, which includes PostgreSQL and
RabbitMQ). Peak resident memory (VmHWM) of every cloud process is read after the storms.

The floor allows 1 / (messages per boot / RabbitMQ round trips per second + transactions per
boot / PostgreSQL commits per second) boots per second, both sharing the same cores; the fraction
of the floor is the servers/s achieved divided by that.

Everything is removed at the end, also on failure, Ctrl-C or SIGTERM: the cloud processes
(SIGTERM, then SIGKILL), the database (DROP DATABASE ... WITH (FORCE)), the vhost and the state
directory. The domains of libvirt's test driver live inside the cloud's processes, so nothing
else is left. `--keep-log` keeps the cloud's logs in /tmp/bench-storm-<hex>-logs.

`--py-spy DIR` samples every cloud process with py-spy (100 Hz, non-blocking, idle stacks left
out) during the boot storm, keeps the raw folded stacks in DIR and prints each process's hot
spots; py-spy's own CPU then counts in the machine's.

Must run as root (rabbitmqctl), with PostgreSQL on 127.0.0.1:5432 (trust) and RabbitMQ on
127.0.0.1:5672 (guest/guest), like the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import re
import resource
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from actorstack.scratch import PG_SERVER, ROOT, ScratchProcess, ScratchServices, cli_argv, rabbitmqctl
from bench.common import BenchError, exit_code, percentile
from bench.common import log as _log

MICROVERSION = {"OpenStack-API-Version": "compute 2.96"}
FLAVOR = {"ram": 64, "vcpus": 1, "disk": 0}
IMAGE_BYTES = 1024 * 1024
POLL = 0.2  # s between polls of the bench database during a storm
STATS_FLUSH = 1.5  # s: a backend flushes its statistics at most once a second
IDLE_SECONDS = 3.0
LEASE_NAMESPACE = 0x6C65  # actors.leases.NAMESPACE: the first key of the shard-lease advisory locks
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = {"servers_per_s": 100.0, "p99_s": 2.0, "floor_fraction": 0.30}

# The cloud's own banner (printed once `up` is ready), not a log event.
_BANNER = re.compile(r"^(actorstack is up|Point the openstack|export |unset |\s*$)")


# --- what the kernel and the broker count ----------------------------------------------------------


def proc_cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime + stime of one process, its threads included; cutime + cstime of the children it
    has waited for), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = [int(v) for v in fields[11:15]]  # fields 14 to 17 of proc(5)
    return (ticks[0] + ticks[1]) / CLOCK_TICKS, (ticks[2] + ticks[3]) / CLOCK_TICKS


def proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmHWM for pid {pid}")


SERVICES = {"postgres": "PostgreSQL", "beam.smp": "RabbitMQ"}  # process name (comm) -> service


def service_cpu_by_pid() -> dict[int, tuple[str, float]]:
    """CPU seconds of every PostgreSQL and RabbitMQ process on the machine (all their users)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            head, _, tail = (proc / "stat").read_text().rpartition(")")
        except OSError:
            continue  # gone meanwhile
        service = SERVICES.get(head.partition("(")[2])
        if service is not None:
            fields = tail.split()
            found[int(proc.name)] = (service, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return found


def service_costs(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per service between two readings; a process that ended meanwhile is missed."""
    costs = dict.fromkeys(SERVICES.values(), 0.0)
    for pid, (service, seconds) in after.items():
        start = before.get(pid)
        costs[service] += seconds - (start[1] if start is not None and start[0] == service else 0.0)
    return costs


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / CLOCK_TICKS  # user..steal (guest time is inside user)


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_AMQP091 = re.compile(r"\[\{protocol,amqp091\}\]\s*=>\s*#\{([^}]*)\}")


def parse_messages_received(overview: str) -> int:
    """messages_received_total of the protocol-wide amqp091 map of rabbit_global_counters:overview()."""
    match = _AMQP091.search(overview)
    counter = re.search(r"messages_received_total\s*=>\s*(\d+)", match.group(1)) if match else None
    if counter is None:
        raise BenchError(
            f"no messages_received_total for amqp091 in the broker's counters:\n{overview[:2000]}"
        )
    return int(counter.group(1))


async def broker_messages_received() -> int:
    overview = await asyncio.to_thread(rabbitmqctl, "eval", "rabbit_global_counters:overview().")
    return parse_messages_received(overview)


# --- py-spy, optional ----------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py's path from the repo or site-packages)`."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    where = match["file"]
    for anchor in ("site-packages/", f"{ROOT}/", "/lib/python3"):
        if anchor in where:
            where = where.split(anchor, 1)[1]
            break
    return f"{match['func']} ({where})"


_OURS = re.compile(r"\((actors|api|hostagent|protocol)/")


def hot_spots(raw: str, top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """From py-spy's raw (folded) stacks: samples, the functions with the most samples on top of
    the stack (self), and the cloud's own functions present in the most stacks (inclusive)."""
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames):
            if _OURS.search(name):
                inclusive[name] += int(count)
    return total, own.most_common(top), inclusive.most_common(top)


@dataclasses.dataclass
class Snapshot:
    """The counters at one moment; two of them make a phase's costs."""

    wall: float
    broker_messages: int
    pg_commits: int
    cloud_cpu: dict[str, float]
    children_cpu: float  # of the children the cloud's processes ran and waited for
    service_cpu: dict[int, tuple[str, float]]
    machine_cpu: float
    bench_cpu: float


@dataclasses.dataclass
class Costs:
    seconds: float
    messages: int
    pg_commits: int
    own_queries: int
    cloud_cpu: dict[str, float]
    children_cpu: float
    service_cpu: dict[str, float]  # PostgreSQL, RabbitMQ: all their processes, whoever they work for
    machine_cpu: float
    bench_cpu: float


@dataclasses.dataclass
class Storm:
    """One storm (boot or delete): when each request started, and when each server got there."""

    started: dict[str, float]  # server id -> time.time() just before its request
    reached: dict[str, float]  # server id -> epoch of its event
    request_seconds: list[float]
    costs: Costs | None = None

    @property
    def latencies(self) -> list[float]:
        return [self.reached[sid] - self.started[sid] for sid in self.started]

    @property
    def rate(self) -> float:
        return len(self.started) / (max(self.reached.values()) - min(self.started.values()))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = secrets.token_hex(4)
        self.name = f"bench_storm_{self.tag}"  # the database and the vhost
        self.state_dir = Path(f"/tmp/bench-storm-{self.tag}")
        self.services = ScratchServices(self.name, state_dir=self.state_dir)
        self.log_dir = self.state_dir / "logs"
        self.kept_logs = Path(f"/tmp/bench-storm-{self.tag}-logs")
        # A session of its own for each process: a Ctrl-C in the terminal reaches the bench only,
        # which then stops the cloud in order.
        self.cloud = self.services.cloud(log_dir=self.log_dir, stop_timeout=60, new_session=True)
        self.url = self.cloud.url
        self.database_url = self.services.database_url
        self.amqp_url = self.services.amqp_url
        self.token = ""
        self.project_id = ""
        self.flavor_id = ""
        self.image_id = ""
        self.network_id = ""  # with --ports: the network every server gets a port on
        self.lease_holders: list[int] = []
        self.floor: dict[str, float] = {}
        self.idle: dict[str, float] = {}
        self.boot: Storm | None = None
        self.delete: Storm | None = None
        self.peak_rss: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.profilers: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        self.profiles: dict[str, tuple[int, list[tuple[str, int]], list[tuple[str, int]]]] = {}
        self.up_args = [
            "up",
            "--hosts",
            str(args.hosts),
            "--virt",
            "test",
            "--network",
            "none",
            "--storage",
            "none",
            "--listen",
            self.cloud.listen,
            "--log-format",
            "json",
            "--log-level",
            "warning",
        ]
        self.runtime_args = ["runtime", "--log-format", "json", "--log-level", "warning"]
        self.up_argv, self.runtime_argv = cli_argv(*self.up_args), cli_argv(*self.runtime_args)

    @property
    def procs(self) -> list[ScratchProcess]:
        return self.cloud.processes

    # --- starting the cloud ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.services.create()
        await self.cloud.run("db", "init")
        _log(
            f"starting the cloud: {shlex.join(self.up_argv)} (state {self.state_dir}, database and vhost "
            f"{self.name})"
        )
        self.cloud.start("up", *self.up_args)
        await self.cloud.wait_ready(hosts=self.args.hosts, storage=False, timeout=self.args.start_timeout)
        self.token, self.project_id = await self.cloud.admin_token()
        for index in range(1, self.args.runtimes + 1):
            self.cloud.start(f"runtime-{index}", *self.runtime_args)
        await self._wait_for(
            f"the shard leases to be spread over {len(self.procs)} processes", self._leases_spread
        )
        pids = ", ".join(f"{p.label} {p.pid}" for p in self.procs)
        _log(
            f"cloud up at {self.url}: {self.args.hosts} hosts up; processes {pids}; "
            f"shard leases per process {'+'.join(map(str, self.lease_holders))}"
        )

    async def _wait_for(self, what: str, probe: Any) -> Any:
        deadline = time.monotonic() + self.args.start_timeout
        while True:
            self.cloud.check_alive()
            value = await probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {self.args.start_timeout:.0f}s waiting for {what}")
            await asyncio.sleep(0.5)

    async def _leases_spread(self) -> bool:
        """Every process holds shard leases, and the split has not changed for a second."""
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetch(
                "SELECT pid, count(*) AS n FROM pg_locks "
                "WHERE locktype = 'advisory' AND classid = $1 AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "GROUP BY pid ORDER BY n DESC",
                LEASE_NAMESPACE,
            )
        finally:
            await conn.close()
        holders = [r["n"] for r in rows]
        stable = holders == self.lease_holders and len(holders) == len(self.procs)
        self.lease_holders = holders
        if stable:
            await asyncio.sleep(0.5)
        return stable

    # --- talking to the API ------------------------------------------------------------------------

    async def request(
        self, method: str, path: str, session: aiohttp.ClientSession | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        """(status, parsed JSON or text), as admin at microversion 2.96."""
        if session is None:
            async with aiohttp.ClientSession() as own:
                return await self.request(method, path, own, **kwargs)
        headers = {"X-Auth-Token": self.token, **MICROVERSION, **kwargs.pop("headers", {})}
        async with session.request(method, self.url + path, headers=headers, **kwargs) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text) if text else None
            except ValueError:
                return r.status, text

    async def prepare(self) -> None:
        """Quotas that fit N servers, the bench's flavor and its public 1 MiB raw image."""
        n = self.args.servers
        quota = {"quota_set": {"instances": n, "cores": n * FLAVOR["vcpus"], "ram": n * FLAVOR["ram"]}}
        status, body = await self.request("PUT", f"/compute/v2.1/os-quota-sets/{self.project_id}", json=quota)
        if status != 200:
            raise BenchError(f"quota update: {status} {body}")
        flavor = {"flavor": {"name": f"bench-storm-{self.tag}", **FLAVOR}}
        status, body = await self.request("POST", "/compute/v2.1/flavors", json=flavor)
        if status != 200:
            raise BenchError(f"flavor create: {status} {body}")
        self.flavor_id = body["flavor"]["id"]
        image = {
            "name": f"bench-storm-{self.tag}",
            "disk_format": "raw",
            "container_format": "bare",
            "visibility": "public",
        }
        status, body = await self.request("POST", "/image/v2/images", json=image)
        if status != 201:
            raise BenchError(f"image create: {status} {body}")
        self.image_id = body["id"]
        status, body = await self.request(
            "PUT",
            f"/image/v2/images/{self.image_id}/file",
            data=b"\0" * IMAGE_BYTES,
            headers={"Content-Type": "application/octet-stream"},
        )
        if status != 204:
            raise BenchError(f"image upload: {status} {body}")
        status, body = await self.request("GET", f"/image/v2/images/{self.image_id}")
        if status != 200 or body["status"] != "active":
            raise BenchError(f"the image is not active after its upload: {status} {body}")
        if self.args.ports:
            await self._network()
        _log(
            f"admin quotas fit {n} servers; flavor {self.flavor_id} ({FLAVOR['ram']} MiB, "
            f"{FLAVOR['vcpus']} vCPU, {FLAVOR['disk']} GB), image {self.image_id} (1 MiB raw, public)"
        )

    # --- the floor ---------------------------------------------------------------------------------

    async def rabbit_floor(self) -> float:
        """Round trips per second: persistent publishes, confirmed, into a quorum queue, consumed
        and acked on the same connection, `--floor-in-flight` publishes outstanding."""
        seconds, in_flight = self.args.floor_seconds, self.args.floor_in_flight
        connection = await aio_pika.connect(self.amqp_url)
        try:
            publisher = await connection.channel(publisher_confirms=True)
            consumer = await connection.channel()
            await consumer.set_qos(prefetch_count=in_flight)
            queue = await publisher.declare_queue(
                f"bench.floor.{self.tag}", durable=True, arguments={"x-queue-type": "quorum"}
            )
            body = secrets.token_bytes(256).hex().encode()  # ~ an actor message's envelope (512 bytes)
            published = acked = 0
            last_ack = 0.0
            stop_publishing, done = asyncio.Event(), asyncio.Event()

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal acked, last_ack
                await message.ack()
                acked += 1
                last_ack = time.monotonic()
                if stop_publishing.is_set() and acked >= published:
                    done.set()

            consumer_tag = await queue.consume(on_message)
            t0 = time.monotonic()
            until = t0 + seconds

            async def publish() -> None:
                nonlocal published
                while time.monotonic() < until:
                    await publisher.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), queue.name
                    )
                    published += 1

            await asyncio.gather(*(publish() for _ in range(in_flight)))
            stop_publishing.set()
            if acked < published:
                await asyncio.wait_for(done.wait(), timeout=30)
            rate = acked / (last_ack - t0)
            await queue.cancel(consumer_tag)
            await queue.delete(if_unused=False, if_empty=False)
        finally:
            await connection.close()
        _log(
            f"RabbitMQ floor: {acked} persistent messages published with confirms and consumed with acks in "
            f"{last_ack - t0:.2f}s: {rate:,.0f} round trips/s"
        )
        return rate

    async def postgres_floor(self) -> float:
        """Commits per second: single-row autocommit INSERTs, 16 tasks on 8 connections. The pool's
        reset query on every release (asyncpg's default, one more round trip and one more
        transaction per use) is left out: each INSERT is one round trip and one commit."""
        seconds = self.args.floor_seconds

        async def no_reset(conn: asyncpg.Connection) -> None:
            return None

        pool = await asyncpg.create_pool(self.database_url, min_size=8, max_size=8, reset=no_reset)
        try:
            await pool.execute(
                "CREATE TABLE bench_floor (id bigserial PRIMARY KEY, payload text NOT NULL, "
                "at timestamptz NOT NULL DEFAULT now())"
            )
            commits = 0
            t0 = time.monotonic()
            until = t0 + seconds

            async def insert() -> None:
                nonlocal commits
                while time.monotonic() < until:
                    await pool.execute("INSERT INTO bench_floor (payload) VALUES ($1)", "floor")
                    commits += 1

            await asyncio.gather(*(insert() for _ in range(16)))
            elapsed = time.monotonic() - t0
            await pool.execute("DROP TABLE bench_floor")
        finally:
            await pool.close()
        rate = commits / elapsed
        _log(
            f"PostgreSQL floor: {commits} single-row INSERT commits in {elapsed:.2f}s: {rate:,.0f} commits/s"
        )
        return rate

    # --- counters --------------------------------------------------------------------------------

    async def snapshot(self, stats: asyncpg.Connection, *, broker_first: bool) -> Snapshot:
        """Before a phase the broker is read first (its rabbitmqctl costs CPU of its own), after a
        phase last; the database's counter is read by the caller's schedule (it lags ~1 s)."""
        broker = await broker_messages_received() if broker_first else 0
        commits = await self.pg_commits(stats)
        cpu = {p.label: proc_cpu_seconds(p.pid) for p in self.procs}
        snap = Snapshot(
            time.time(),
            broker,
            commits,
            {k: own for k, (own, _) in cpu.items()},
            sum(children for _, children in cpu.values()),
            service_cpu_by_pid(),
            machine_busy_seconds(),
            self_cpu_seconds(),
        )
        if not broker_first:
            snap.broker_messages = await broker_messages_received()
        return snap

    async def pg_commits(self, stats: asyncpg.Connection) -> int:
        await stats.execute("SELECT pg_stat_clear_snapshot()")
        return await stats.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", self.name)

    @staticmethod
    def costs(before: Snapshot, after: Snapshot, commits_after: int, own_queries: int) -> Costs:
        return Costs(
            seconds=after.wall - before.wall,
            messages=after.broker_messages - before.broker_messages,
            pg_commits=commits_after - before.pg_commits - own_queries,
            own_queries=own_queries,
            cloud_cpu={k: after.cloud_cpu[k] - before.cloud_cpu[k] for k in before.cloud_cpu},
            children_cpu=after.children_cpu - before.children_cpu,
            service_cpu=service_costs(before.service_cpu, after.service_cpu),
            machine_cpu=after.machine_cpu - before.machine_cpu,
            bench_cpu=after.bench_cpu - before.bench_cpu,
        )

    async def measure_idle(self, stats: asyncpg.Connection) -> None:
        """What the broker (all its users) and the idle cloud do per second without the bench."""
        await asyncio.sleep(STATS_FLUSH)
        before = await self.snapshot(stats, broker_first=True)
        await asyncio.sleep(IDLE_SECONDS)
        after = await self.snapshot(stats, broker_first=False)
        await asyncio.sleep(STATS_FLUSH)
        c = self.costs(before, after, await self.pg_commits(stats), 0)
        self.idle = {
            "messages_per_s": c.messages / c.seconds,
            "pg_commits_per_s": c.pg_commits / c.seconds,
            "machine_cpu_per_s": c.machine_cpu / c.seconds,
            "cloud_cpu_per_s": sum(c.cloud_cpu.values()) / c.seconds,
            **{f"{k}_cpu_per_s": v / c.seconds for k, v in c.service_cpu.items()},
        }
        _log(
            f"idle for {c.seconds:.1f}s: broker {self.idle['messages_per_s']:.0f} messages/s (all vhosts), "
            f"bench database {self.idle['pg_commits_per_s']:.1f} commits/s, "
            f"machine {self.idle['machine_cpu_per_s']:.2f} busy cores, "
            f"cloud {self.idle['cloud_cpu_per_s']:.2f} cores, "
            f"PostgreSQL {self.idle['PostgreSQL_cpu_per_s']:.2f}, "
            f"RabbitMQ {self.idle['RabbitMQ_cpu_per_s']:.2f}"
        )

    # --- the storms ----------------------------------------------------------------------------------

    async def storm(
        self, what: str, stats: asyncpg.Connection, poller: asyncpg.Connection, ids: list[str] | None
    ) -> Storm:
        """`what` is "boot" (ids None: POST N servers) or "delete" (DELETE the ids)."""
        n = self.args.servers
        target = "active" if what == "boot" else "deleted"
        started: dict[str, float] = {}
        request_seconds: list[float] = []
        counter = itertools.count()

        async def client(session: aiohttp.ClientSession) -> None:
            while (index := next(counter)) < n:
                if ids is None:
                    sid, t = await self._post_server(session, index)
                else:
                    sid, t = await self._delete_server(session, ids[index])
                started[sid] = t
                request_seconds.append(time.time() - t)

        await asyncio.sleep(STATS_FLUSH)  # let the database's statistics catch up with what came before
        if what == "boot":
            await asyncio.to_thread(self.start_profiling)
        before = await self.snapshot(stats, broker_first=True)
        _log(f"{what} storm: {n} servers, {self.args.concurrency} clients")
        connector = aiohttp.TCPConnector(limit=self.args.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.args.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with asyncio.TaskGroup() as group:
                waiter = group.create_task(self._wait_all(what, target, poller, started))
                for _ in range(self.args.concurrency):
                    group.create_task(client(session))
        after = await self.snapshot(stats, broker_first=False)
        if what == "boot":
            await asyncio.to_thread(self.stop_profiling)
        await asyncio.sleep(STATS_FLUSH)
        commits = await self.pg_commits(stats)
        reached = await self._reached(what, target, poller, started)
        result = Storm(started, reached, request_seconds, self.costs(before, after, commits, waiter.result()))
        lat = result.latencies
        _log(
            f"{what} storm: {result.rate:.1f} servers/s to {target.upper()}, p50 {percentile(lat, 50):.2f}s "
            f"p99 {percentile(lat, 99):.2f}s"
        )
        return result

    async def _network(self) -> None:
        """--ports: a network with a subnet large enough for N ports, the port quota lifted."""
        quota = {"quota": {"port": -1}}
        status, body = await self.request("PUT", f"/networking/v2.0/quotas/{self.project_id}", json=quota)
        if status != 200:
            raise BenchError(f"port quota update: {status} {body}")
        status, body = await self.request(
            "POST", "/networking/v2.0/networks", json={"network": {"name": f"bench-storm-{self.tag}"}}
        )
        if status != 201:
            raise BenchError(f"network create: {status} {body}")
        self.network_id = body["network"]["id"]
        subnet = {"network_id": self.network_id, "cidr": "10.64.0.0/16", "ip_version": 4}
        status, body = await self.request("POST", "/networking/v2.0/subnets", json={"subnet": subnet})
        if status != 201:
            raise BenchError(f"subnet create: {status} {body}")

    async def _post_server(self, session: aiohttp.ClientSession, index: int) -> tuple[str, float]:
        """POST server number `index`: (its id, time.time() just before the request)."""
        body = {
            "server": {
                "name": f"storm-{self.tag}-{index}",
                "imageRef": self.image_id,
                "flavorRef": self.flavor_id,
                "networks": [{"uuid": self.network_id}] if self.args.ports else "none",
            }
        }
        t = time.time()
        status, answer = await self.request("POST", "/compute/v2.1/servers", session, json=body)
        if status != 202:
            raise BenchError(f"POST /servers #{index} answered {status}: {answer}")
        return answer["server"]["id"], t

    async def _delete_server(self, session: aiohttp.ClientSession, sid: str) -> tuple[str, float]:
        """DELETE the server: (its id, time.time() just before the request)."""
        t = time.time()
        status, answer = await self.request("DELETE", f"/compute/v2.1/servers/{sid}", session)
        if status != 204:
            raise BenchError(f"DELETE /servers/{sid} answered {status}: {answer}")
        return sid, t

    async def _wait_all(
        self, what: str, target: str, poller: asyncpg.Connection, started: dict[str, float]
    ) -> int:
        """Poll the bench database until every server is `target`; how many polls it took."""
        n = self.args.servers
        polls = 0
        t0 = time.monotonic()
        last_change, last = t0, ()
        while True:
            await asyncio.sleep(POLL)
            rows = await poller.fetch(
                "SELECT vm_state, count(*) AS n FROM servers GROUP BY vm_state ORDER BY 1"
            )
            polls += 1
            states = {r["vm_state"]: r["n"] for r in rows}
            if states.get(target, 0) == n:
                return polls
            now = time.monotonic()
            key = tuple(sorted(states.items()))
            if key != last:
                last_change, last = now, key
            self.cloud.check_alive()
            errors = states.get("error", 0)
            if errors and errors + states.get(target, 0) == n:
                raise BenchError(f"{what}: servers ended in ERROR: {states}\n{await self.faults(poller)}")
            stalled = now - last_change > self.args.stall_timeout
            if now - t0 > self.args.timeout or stalled:
                why = (
                    f"nothing changed for {self.args.stall_timeout:.0f}s"
                    if stalled
                    else f"not done after {self.args.timeout:.0f}s"
                )
                raise BenchError(
                    f"{what}: {why}; servers by vm_state: {states} (want {n} {target}), "
                    f"{len(started)}/{n} requests answered\n{await self.faults(poller)}"
                )

    async def _reached(
        self, what: str, target: str, poller: asyncpg.Connection, started: dict[str, float]
    ) -> dict[str, float]:
        """server id -> the epoch of its event into `target` (every server must have one)."""
        rows = await poller.fetch(
            "SELECT actor_id, min(extract(epoch FROM at))::float8 AS at FROM events "
            "WHERE kind = 'server' AND new_state = $1 AND actor_id = ANY($2::text[]) GROUP BY actor_id",
            target,
            list(started),
        )
        reached = {r["actor_id"]: r["at"] for r in rows}
        missing = set(started) - set(reached)
        if missing:
            raise BenchError(
                f"{what}: {len(missing)} servers are {target} but have no such event, e.g. "
                f"{sorted(missing)[:3]}"
            )
        return reached

    def start_profiling(self) -> None:
        """`--py-spy DIR`: sample every cloud process during the boot storm (raw folded stacks)."""
        if not self.args.py_spy:
            return
        out = Path(self.args.py_spy)
        out.mkdir(parents=True, exist_ok=True)
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        for p in self.procs:
            path = out / f"{p.label}.txt"
            with (out / f"{p.label}.py-spy.log").open("wb") as log:
                spy = subprocess.Popen(
                    [
                        exe,
                        "record",
                        "--pid",
                        str(p.pid),
                        "--rate",
                        "100",
                        "--nonblocking",
                        "--nolineno",
                        "--format",
                        "raw",
                        "--output",
                        str(path),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.profilers.append((p.label, path, spy))
        time.sleep(1.0)  # py-spy attaches
        _log(f"py-spy is sampling {', '.join(p.label for p in self.procs)} into {out}")

    def stop_profiling(self) -> None:
        for label, path, spy in self.profilers:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
            if path.exists():
                self.profiles[label] = hot_spots(path.read_text(errors="replace"), self.args.py_spy_top)
        self.profilers.clear()

    async def faults(self, conn: asyncpg.Connection) -> str:
        """The faults of the servers in ERROR, and any dead-lettered message, for the failure report."""
        lines = []
        for r in await conn.fetch("SELECT id, fault FROM servers WHERE vm_state = 'error' LIMIT 10"):
            lines.append(f"  server {r['id']} ERROR: {json.dumps(r['fault'])[:500]}")
        for r in await conn.fetch(
            "SELECT kind, actor_id, message_type, reason, details FROM actor_faults ORDER BY id LIMIT 10"
        ):
            lines.append(
                f"  actor fault {r['kind']} {r['actor_id']} on {r['message_type']}: {r['reason']} "
                f"{r['details'][:300]}"
            )
        for r in await conn.fetch("SELECT queue, reason FROM dead_letters ORDER BY id LIMIT 10"):
            lines.append(f"  dead letter from {r['queue']}: {r['reason'][:300]}")
        return "\n".join(lines) or "  (no server faults, actor faults or dead letters recorded)"

    async def run(self) -> None:
        await self.start()
        await self.prepare()
        self.floor["rabbitmq"] = await self.rabbit_floor()
        self.floor["postgres"] = await self.postgres_floor()
        stats = await asyncpg.connect(f"{PG_SERVER}/postgres")  # reads pg_stat_database from elsewhere
        poller = await asyncpg.connect(self.database_url)
        try:
            await self.measure_idle(stats)
            self.boot = await self.storm("boot", stats, poller, None)
            self.delete = await self.storm("delete", stats, poller, list(self.boot.started))
            self.failures = {
                "servers in ERROR": await poller.fetchval(
                    "SELECT count(*) FROM servers WHERE vm_state = 'error'"
                ),
                "actor faults": await poller.fetchval("SELECT count(*) FROM actor_faults"),
                "dead letters": await poller.fetchval("SELECT count(*) FROM dead_letters"),
            }
        finally:
            await poller.close()
            await stats.close()
        self.cloud.check_alive()
        self.peak_rss = {p.label: proc_peak_rss_mib(p.pid) for p in self.procs}

    # --- the logs and the way out --------------------------------------------------------------

    def log_findings(self, excerpts: int = 3) -> list[str]:
        """Warnings, errors and anything not JSON (a traceback) in the cloud's logs, summarised."""
        out = []
        for p in self.procs:
            try:
                text = p.log_path.read_text(errors="replace")
            except OSError:
                continue
            events: Counter[tuple[str, str]] = Counter()
            examples: dict[tuple[str, str], str] = {}
            for line in text.splitlines():
                try:
                    doc = json.loads(line)
                    key = (str(doc.get("level", "?")), str(doc.get("event", "?")))
                except ValueError:
                    if _BANNER.match(line):
                        continue
                    key = ("plain", line.strip()[:80])
                events[key] += 1
                examples.setdefault(key, line)
            for (level, event), count in events.most_common():
                out.append(f"{p.label}: {count} x {level} {event!r}")
            for line in list(examples.values())[:excerpts]:
                out.append(f"  e.g. {line[:600]}")
        return out

    def cleanup(self) -> list[str]:
        """Remove everything; what could not be removed, as problems."""
        problems: list[str] = []

        def step(what: str, action: Any) -> None:
            try:
                action()
            except BaseException as exc:  # noqa: BLE001 - one failed step must not stop the others
                problems.append(f"{what}: {exc!r}")
                _log(f"cleanup: {what} failed: {exc!r}")

        if self.profilers:
            step("py-spy", self.stop_profiling)
        step("the cloud", self._stop_cloud)
        if self.args.keep_log and self.log_dir.exists():
            step("keeping the logs", lambda: shutil.copytree(self.log_dir, self.kept_logs))
        step("database, vhost and state dir", lambda: asyncio.run(self.services.drop()))
        step("leftovers", lambda: problems.extend(self.leftovers()))
        return problems

    def _stop_cloud(self) -> None:
        asyncio.run(self.cloud.stop())
        for p in self.procs:
            if p.returncode == -signal.SIGKILL:
                _log(f"{p.label} (pid {p.pid}) did not stop within 60s of SIGTERM: killed it")

    def leftovers(self) -> list[str]:
        left = [f"process {p.label} pid {p.pid}" for p in self.procs if p.alive]
        left += asyncio.run(self.services.leftovers())
        return [f"left behind: {thing}" for thing in left]


# --- the report -----------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def report(bench: Bench, command: str, machine: str) -> None:
    args, boot, delete = bench.args, bench.boot, bench.delete
    assert boot is not None and delete is not None and boot.costs is not None and delete.costs is not None
    n = args.servers
    lat, dlat = boot.latencies, delete.latencies
    b, d = boot.costs, delete.costs
    msgs_per_boot, tx_per_boot = b.messages / n, b.pg_commits / n
    rmq, pg = bench.floor["rabbitmq"], bench.floor["postgres"]
    floor_rate = 1 / (msgs_per_boot / rmq + tx_per_boot / pg)
    fraction = boot.rate / floor_rate
    bg_msgs, bg_tx = bench.idle["messages_per_s"], bench.idle["pg_commits_per_s"]

    def cpu(costs: Costs) -> str:
        parts = ", ".join(f"{k} {v / n * 1000:.1f}" for k, v in costs.cloud_cpu.items())
        total = sum(costs.cloud_cpu.values())
        return f"{total / n * 1000:.1f} ms ({parts}; {total / costs.seconds:.2f} cores busy)"

    def service(name: str) -> str:
        return (
            f"{b.service_cpu[name] / n * 1000:.1f} ms / {d.service_cpu[name] / n * 1000:.1f} ms  "
            f"({b.service_cpu[name] / b.seconds:.2f} / {d.service_cpu[name] / d.seconds:.2f} cores; "
            f"idle {bench.idle[name + '_cpu_per_s']:.2f})"
        )

    rows: list[tuple[str, str]] = [
        (
            "servers/s to ACTIVE",
            f"{boot.rate:.1f}  (N / (last ACTIVE - first POST start) = "
            f"{n} / {max(boot.reached.values()) - min(boot.started.values()):.2f}s)",
        ),
        (
            "create -> ACTIVE p50 / p95 / p99 / max",
            " / ".join(f"{percentile(lat, p):.2f}s" for p in (50, 95, 99, 100)),
        ),
        (
            "  POST /servers answered p50 / p99",
            f"{percentile(boot.request_seconds, 50):.3f}s / {percentile(boot.request_seconds, 99):.3f}s",
        ),
        (
            "deletes/s to DELETED",
            f"{delete.rate:.1f}  ({n} / {max(delete.reached.values()) - min(delete.started.values()):.2f}s)",
        ),
        (
            "  delete -> DELETED p50 / p99 / max",
            " / ".join(f"{percentile(dlat, p):.2f}s" for p in (50, 99, 100)),
        ),
        (
            "messages per boot (broker-wide)",
            f"{msgs_per_boot:.1f}  ({b.messages} over {b.seconds:.1f}s; idle broker {bg_msgs:.0f}/s "
            f"would be {bg_msgs * b.seconds / n:.2f} of them)",
        ),
        (
            "messages per delete (broker-wide)",
            f"{d.messages / n:.1f}  ({d.messages} over {d.seconds:.1f}s; idle {bg_msgs * d.seconds / n:.2f})",
        ),
        (
            "PG transactions per boot",
            f"{tx_per_boot:.1f}  ({b.pg_commits} commits of the bench db over {b.seconds:.1f}s, the bench's "
            f"{b.own_queries} polls taken out; the idle cloud's {bg_tx:.0f}/s would be "
            f"{bg_tx * b.seconds / n:.2f})",
        ),
        (
            "PG transactions per delete",
            f"{d.pg_commits / n:.1f}  ({d.pg_commits}, {d.own_queries} polls out; "
            f"idle {bg_tx * d.seconds / n:.2f})",
        ),
        ("peak RSS per process (VmHWM)", ", ".join(f"{k} {v:.0f} MiB" for k, v in bench.peak_rss.items())),
        ("cloud CPU per boot", cpu(b)),
        ("cloud CPU per delete", cpu(d)),
        (
            "cloud's child processes' CPU per boot / delete",
            f"{b.children_cpu / n * 1000:.1f} ms / {d.children_cpu / n * 1000:.1f} ms  (e.g. qemu-img; "
            f"counted once the cloud has waited for them)",
        ),
        ("PostgreSQL CPU per boot / delete", service("PostgreSQL") + " all databases"),
        ("RabbitMQ CPU per boot / delete", service("RabbitMQ") + " whole broker"),
        (
            "bench clients' CPU per boot / delete",
            f"{b.bench_cpu / n * 1000:.1f} ms / {d.bench_cpu / n * 1000:.1f} ms",
        ),
        (
            "machine busy CPU per boot / delete",
            f"{b.machine_cpu / n * 1000:.1f} ms / {d.machine_cpu / n * 1000:.1f} ms  (every process; "
            f"{b.machine_cpu / b.seconds:.2f} / {d.machine_cpu / d.seconds:.2f} "
            f"of {os.cpu_count()} cores busy; "
            f"idle before the storm {bench.idle['machine_cpu_per_s']:.2f}, of which the cloud "
            f"{bench.idle['cloud_cpu_per_s']:.2f})",
        ),
        (
            "floor: RabbitMQ round trips/s",
            f"{rmq:,.0f}  (confirmed persistent publish + manual-ack consume, quorum queue, one connection, "
            f"{args.floor_in_flight} in flight)",
        ),
        (
            "floor: PostgreSQL commits/s",
            f"{pg:,.0f}  (single-row INSERT, autocommit, 8 connections, 16 tasks, no reset on release)",
        ),
        (
            "floor: boots/s these costs allow",
            f"{floor_rate:.1f}  = 1 / ({msgs_per_boot:.1f} / {rmq:,.0f} + {tx_per_boot:.1f} / {pg:,.0f})",
        ),
        ("fraction of the floor", f"{fraction:.0%}"),
        ("failures", ", ".join(f"{k}: {v}" for k, v in bench.failures.items())),
    ]
    width = max(len(label) for label, _ in rows)
    print(
        f"\nboot storm: {n} servers on {args.hosts} hosts, {args.concurrency} clients, "
        f"{args.runtimes} extra runtime process(es)"
    )
    for label, value in rows:
        print(f"{label:{width}}  {value}")
    print("\ntargets:")
    print(
        f"  >= {TARGETS['servers_per_s']:.0f} servers/s to ACTIVE: {boot.rate:.1f}  "
        f"{_met(boot.rate >= TARGETS['servers_per_s'])}"
    )
    p99 = percentile(lat, 99)
    print(f"  create -> ACTIVE p99 <= {TARGETS['p99_s']:.0f} s: {p99:.2f}s  {_met(p99 <= TARGETS['p99_s'])}")
    print(
        f"  >= {TARGETS['floor_fraction']:.0%} of the floor: {fraction:.0%}  "
        f"{_met(fraction >= TARGETS['floor_fraction'])}"
    )
    for label, (total, own, inclusive) in bench.profiles.items():
        print(f"\npy-spy, {label}: {total} samples of non-idle stacks at 100 Hz during the boot storm")
        print("  most samples on top of the stack (self):")
        for name, count in own:
            print(f"    {count / total:6.1%}  {name}")
        print("  the cloud's own functions with the most samples anywhere in the stack (inclusive):")
        for name, count in inclusive:
            print(f"    {count / total:6.1%}  {name}")
    print(f"\ncommand: {command}")
    print(
        f"cloud:   {shlex.join(bench.up_argv[1:])}"
        + (f" + {args.runtimes} x {shlex.join(bench.runtime_argv[1:])}" if args.runtimes else "")
    )
    print(f"machine: {machine}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.boot_storm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000, help="servers to boot and delete (default 1000)")
    parser.add_argument("--hosts", type=int, default=50, help="simulated compute hosts (default 50)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent API clients (default 50)")
    parser.add_argument(
        "--ports",
        action="store_true",
        help="give every server a port on a network of the bench (in its project's default security group); "
        "the hosts' networking stays off (--network none), so ports are bound and nudged, not plugged",
    )
    parser.add_argument(
        "--runtimes", type=int, default=1, help="`actorstack runtime` processes beside `up` (default 1)"
    )
    parser.add_argument(
        "--keep-log", action="store_true", help="keep the cloud's logs in /tmp/bench-storm-<hex>-logs"
    )
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="sample every cloud process with py-spy during the boot storm; raw stacks in DIR",
    )
    parser.add_argument("--py-spy-top", type=int, default=15, help="hot spots to print per process")
    parser.add_argument(
        "--floor-seconds", type=float, default=3.0, help="length of each floor measurement (s)"
    )
    parser.add_argument(
        "--floor-in-flight",
        type=int,
        default=256,
        help="publishes outstanding in the RabbitMQ floor (default 256)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="for a storm to finish (s)")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=120,
        help="fail a storm when no server changed state for this long (s)",
    )
    parser.add_argument("--start-timeout", type=float, default=120, help="for the cloud to come up (s)")
    args = parser.parse_args(argv)
    for name in ("servers", "hosts", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.runtimes < 0:
        parser.error("--runtimes must be 0 or more")
    if os.geteuid() != 0:
        parser.error("must run as root (rabbitmqctl)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([sys.executable, "-m", "bench.boot_storm", *given])
    load = Path("/proc/loadavg").read_text().split()[:3]
    machine = f"nproc {os.cpu_count()}, load average before {' '.join(load)}"

    bench = Bench(args)
    failed: BaseException | None = None

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await bench.run()

    try:
        asyncio.run(run())
    except BaseException as exc:  # noqa: BLE001 - reported after the cleanup
        failed = exc
    finally:
        # Cleaning up must finish: a second Ctrl-C (or SIGTERM) would leave the cloud behind.
        signal.signal(signal.SIGINT, lambda *_: _log("cleaning up; please wait"))
        signal.signal(signal.SIGTERM, lambda *_: _log("cleaning up; please wait"))
        interrupted = isinstance(failed, (KeyboardInterrupt, asyncio.CancelledError))
        if failed is not None and not interrupted:
            _log(f"failed: {failed}")
        findings = bench.log_findings()
        _log("cleaning up")
        problems = bench.cleanup()
        for problem in problems:
            _log(f"CLEANUP PROBLEM: {problem}")
        if not problems:
            _log(f"cleaned up: no process, database, vhost or state directory of {bench.name} left")
        if args.keep_log and bench.kept_logs.exists():
            _log(f"the cloud's logs are in {bench.kept_logs}")
    print(
        "\ncloud logs (level warning and up):"
        if findings
        else "\ncloud logs: no warnings, errors or tracebacks"
    )
    for line in findings:
        print(f"  {line}")
    if bench.boot is not None and bench.delete is not None:
        report(bench, command, machine)
    return exit_code(interrupted=interrupted, failed=failed, problems=problems)


if __name__ == "__main__":
    sys.exit(main())
