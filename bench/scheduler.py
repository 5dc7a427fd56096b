"""`python -m bench.scheduler`: how long the scheduler takes to decide and claim a host, at 100,
1,000 and 10,000 hosts, and whether concurrent schedulers ever over-commit one.

The bench needs only PostgreSQL (127.0.0.1:5432, trust, like the tests; ACTORSTACK_TEST_PG to
change it). It creates a database of its own, `bench_sched_<hex>`, applies the schema with
`actors.db.init_schema`, and drops it on the way out, also on failure, Ctrl-C or SIGTERM. It calls
`actors.scheduler.claim` directly: no runtime, broker or inbox row, so what is measured is the
scheduler's own SQL (the candidate query, the guarded UPDATE, the allocation INSERT) and its commit.

1. Decision latency, for each `--hosts` count H: `compute_hosts` gets H hosts (four hardware
   classes from 16 vCPUs / 64 GiB to 64 vCPUs / 512 GiB, mixed allocation ratios and reserved RAM,
   three availability zones, all enabled with a fresh heartbeat), already running servers of the
   m1.small..m1.xlarge flavors that fill each host to a random 0-95 % of its RAM (with their
   `allocations` rows, about 13 per host), then VACUUM ANALYZE, as autovacuum would have done on a
   long-lived cloud. Then `--claims` requests, one after the other on one connection, each timed
   as BEGIN; claim(SelectHost); COMMIT. The flavor is m1.tiny (1 vCPU, 512 MiB, 1 GiB), so the
   cloud cannot fill up during the run; half the requests name an availability zone. The same
   number of candidate queries alone (`actors.scheduler._CANDIDATES`, the filter and the weigher,
   no claim) are timed after that. Heartbeats are refreshed in bulk every 10 s between samples,
   outside the timings; the agents' own heartbeat load (one UPDATE per host every 10 s) is not
   simulated.
2. Throughput under concurrency, on `--fill-hosts` empty hosts: `--concurrency` schedulers, each
   an asyncio task holding its own pool connection, claim in a loop (BEGIN; claim for a fresh
   server id; COMMIT) a flavor of 16 vCPUs, 32 GiB and 320 GiB disk, until the cloud's capacity
   for that flavor (computed beforehand from the same formulas the scheduler uses) plus 5 % more
   requests have been made; half of them name an availability zone. Reported: claims per second
   over the whole run, placed vs refused (NoValidHost), the latency of one claim under that load,
   the room left afterwards (how many more of the flavor would still fit anywhere), and the
   spurious refusals: claims only ever take room, so a refusal was spurious when its zone (or,
   for a request without one, the cloud) still has room at the end.
3. Verification after every phase: for every host, used vCPUs, RAM and disk equal the sums of
   its allocations and are within capacity times allocation ratio, and the allocations are
   exactly the claims the scheduler answered Scheduled (same server, same host). The bench
   exits 1 when any of it fails.

`--explain` also prints EXPLAIN (ANALYZE, BUFFERS) of the candidate query at the largest H, and
`--extra-sql` runs a statement after the schema (a candidate index, say) to compare with and without.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import secrets
import shlex
import signal
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from actors import db, scheduler
from actorstack.scratch import ScratchError, ScratchServices
from bench.common import log as _log
from bench.common import percentile
from protocol import compute as m

ZONES = ("az1", "az2", "az3")
ZONE_WEIGHTS = (0.45, 0.45, 0.10)
HEARTBEAT_EVERY = 10.0  # s: refresh between samples, well inside scheduler.HOST_DOWN_AFTER

# Hardware classes: (vCPUs, RAM MiB, disk GiB, share of the hosts).
HOST_CLASSES = (
    (16, 65536, 480, 0.25),
    (32, 131072, 960, 0.35),
    (48, 262144, 1920, 0.25),
    (64, 524288, 3840, 0.15),
)
RUNNING = (  # what the hosts already run in the latency phase
    m.FlavorSpec(id="2", name="m1.small", ram=2048, vcpus=1, disk=20),
    m.FlavorSpec(id="3", name="m1.medium", ram=4096, vcpus=2, disk=40),
    m.FlavorSpec(id="4", name="m1.large", ram=8192, vcpus=4, disk=80),
    m.FlavorSpec(id="5", name="m1.xlarge", ram=16384, vcpus=8, disk=160),
)
TINY = m.FlavorSpec(id="1", name="m1.tiny", ram=512, vcpus=1, disk=1)
FILL = m.FlavorSpec(id="bench.fill", name="bench.fill", ram=32768, vcpus=16, disk=320)

HOST_COLUMNS = (
    "name",
    "availability_zone",
    "enabled",
    "virt_type",
    "hypervisor_hostname",
    "host_ip",
    "vcpus",
    "memory_mb",
    "local_gb",
    "cpu_allocation_ratio",
    "ram_allocation_ratio",
    "disk_allocation_ratio",
    "reserved_memory_mb",
    "used_vcpus",
    "used_memory_mb",
    "used_local_gb",
)
ALLOCATION_COLUMNS = ("server_id", "host", "project_id", "vcpus", "memory_mb", "local_gb")

# The capacities, exactly as actors/scheduler.py's _FITS counts them.
_LIMIT_VCPUS = "floor(h.vcpus * h.cpu_allocation_ratio)"
_LIMIT_RAM = "floor((h.memory_mb - h.reserved_memory_mb) * h.ram_allocation_ratio)"
_LIMIT_DISK = "floor(h.local_gb * h.disk_allocation_ratio)"

# How many more servers of one flavor ($1 vCPUs, $2 MiB, $3 GiB) the hosts (of zone $4) have room for.
_ROOM = f"""
SELECT coalesce(sum(greatest(0, least(floor(({_LIMIT_VCPUS} - h.used_vcpus) / $1::float8),
                                      floor(({_LIMIT_RAM} - h.used_memory_mb) / $2::float8),
                                      floor(({_LIMIT_DISK} - h.used_local_gb) / $3::float8)))), 0)::bigint
FROM compute_hosts h WHERE h.enabled AND ($4::text IS NULL OR h.availability_zone = $4)
"""

# Hosts whose usage is not the sum of their allocations, or beyond their capacity.
_INCONSISTENT = f"""
WITH sums AS (
    SELECT host, sum(vcpus) AS vcpus, sum(memory_mb) AS memory_mb, sum(local_gb) AS local_gb
    FROM allocations GROUP BY host
)
SELECT h.name, h.used_vcpus, h.used_memory_mb, h.used_local_gb,
       coalesce(s.vcpus, 0) AS alloc_vcpus, coalesce(s.memory_mb, 0) AS alloc_memory_mb,
       coalesce(s.local_gb, 0) AS alloc_local_gb,
       {_LIMIT_VCPUS} AS limit_vcpus, {_LIMIT_RAM} AS limit_memory_mb, {_LIMIT_DISK} AS limit_local_gb
FROM compute_hosts h LEFT JOIN sums s ON s.host = h.name
WHERE h.used_vcpus <> coalesce(s.vcpus, 0) OR h.used_memory_mb <> coalesce(s.memory_mb, 0)
   OR h.used_local_gb <> coalesce(s.local_gb, 0)
   OR h.used_vcpus > {_LIMIT_VCPUS} OR h.used_memory_mb > {_LIMIT_RAM} OR h.used_local_gb > {_LIMIT_DISK}
ORDER BY h.name
"""


# The allocations of the bench's own claims (the hosts' running servers have project "bench").
_CLAIMED = "SELECT server_id, host FROM allocations WHERE project_id = 'bench-claims'"


# --- the cloud the scheduler sees -----------------------------------------------------------------


def make_hosts(count: int, rng: random.Random) -> list[tuple[Any, ...]]:
    """`count` compute_hosts rows (HOST_COLUMNS, no usage yet) of mixed classes, ratios and zones."""
    rows = []
    weights = [share for *_, share in HOST_CLASSES]
    for i in range(count):
        vcpus, memory_mb, local_gb, _ = rng.choices(HOST_CLASSES, weights)[0]
        zone = rng.choices(ZONES, ZONE_WEIGHTS)[0]
        name = f"cmp-{zone}-{i:05d}"
        rows.append(
            (
                name,
                zone,
                True,
                "kvm",
                f"{name}.bench.example",
                f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                vcpus,
                memory_mb,
                local_gb,
                rng.choice((4.0, 4.0, 16.0)),
                rng.choice((1.0, 1.0, 1.5)),
                1.0,
                rng.choice((512, 2048, 4096)) if memory_mb > 65536 else 512,
                0,
                0,
                0,
            )
        )
    return rows


def running_servers(hosts: list[tuple[Any, ...]], rng: random.Random) -> list[tuple[Any, ...]]:
    """Allocations (ALLOCATION_COLUMNS) of servers already running: each host is filled to a
    random 0-95 % of its RAM with m1.small..m1.xlarge, never beyond any of its capacities."""
    rows = []
    for name, _z, _e, _v, _hh, _ip, vcpus, memory_mb, local_gb, cpu_r, ram_r, disk_r, reserved, *_ in hosts:
        limit_v, limit_r, limit_d = (
            math.floor(vcpus * cpu_r),
            math.floor((memory_mb - reserved) * ram_r),
            math.floor(local_gb * disk_r),
        )
        target = rng.uniform(0.0, 0.95) * limit_r
        used_v = used_r = used_d = 0
        while True:
            v, r, d = scheduler.demand(rng.choice(RUNNING))
            if used_r + r > target or used_v + v > limit_v or used_d + d > limit_d:
                break
            used_v, used_r, used_d = used_v + v, used_r + r, used_d + d
            rows.append((str(uuid.UUID(int=rng.getrandbits(128), version=4)), name, "bench", v, r, d))
    return rows


async def load_cloud(
    conn: asyncpg.Connection, hosts: list[tuple[Any, ...]], allocations: list[tuple[Any, ...]]
) -> None:
    """Replace the hosts and allocations with these; usage is the sum of the allocations."""
    async with conn.transaction():
        await conn.execute("TRUNCATE allocations, compute_hosts")
        await conn.copy_records_to_table("compute_hosts", records=hosts, columns=HOST_COLUMNS)
        if allocations:
            await conn.copy_records_to_table("allocations", records=allocations, columns=ALLOCATION_COLUMNS)
            await conn.execute(
                "UPDATE compute_hosts h SET used_vcpus = s.vcpus, used_memory_mb = s.memory_mb, "
                "used_local_gb = s.local_gb FROM (SELECT host, sum(vcpus) AS vcpus, "
                "sum(memory_mb) AS memory_mb, sum(local_gb) AS local_gb FROM allocations GROUP BY host) s "
                "WHERE s.host = h.name"
            )
    await conn.execute("VACUUM ANALYZE compute_hosts")
    await conn.execute("VACUUM ANALYZE allocations")
    await heartbeat(conn)


async def heartbeat(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE compute_hosts SET heartbeat_at = now()")


async def room_for(conn: asyncpg.Connection, flavor: m.FlavorSpec, zone: str | None = None) -> int:
    return await conn.fetchval(_ROOM, *scheduler.demand(flavor), zone)


async def verify(conn: asyncpg.Connection, placed: dict[str, str]) -> list[str]:
    """What is wrong with the hosts' usage and allocations; `placed` maps every server the bench
    got Scheduled for to its host (the allocations must be exactly those)."""
    problems = []
    for row in await conn.fetch(_INCONSISTENT):
        problems.append(
            f"host {row['name']}: used vcpus/ram/disk {row['used_vcpus']}/{row['used_memory_mb']}/"
            f"{row['used_local_gb']}, allocations {row['alloc_vcpus']}/{row['alloc_memory_mb']}/"
            f"{row['alloc_local_gb']}, limits {row['limit_vcpus']:.0f}/{row['limit_memory_mb']:.0f}/"
            f"{row['limit_local_gb']:.0f}"
        )
    rows = await conn.fetch(_CLAIMED)
    allocated = {r["server_id"]: r["host"] for r in rows}
    if allocated != placed:
        missing = placed.keys() - allocated.keys()
        extra = allocated.keys() - placed.keys()
        moved = [s for s in placed.keys() & allocated.keys() if placed[s] != allocated[s]]
        problems.append(
            f"allocations differ from the Scheduled answers: {len(missing)} missing, "
            f"{len(extra)} unanswered, {len(moved)} on another host"
        )
    return problems


def select(flavor: m.FlavorSpec, zone: str | None) -> m.SelectHost:
    return m.SelectHost(
        server_id=str(uuid.uuid4()), project_id="bench-claims", flavor=flavor, availability_zone=zone
    )


# --- phase 1: decision latency ----------------------------------------------------------------------


@dataclass
class LatencyResult:
    hosts: int
    servers: int
    claim_ms: list[float]
    query_ms: list[float]
    refused: int
    problems: list[str]
    explain: list[str] = field(default_factory=list)


async def measure_latency(
    conn: asyncpg.Connection, hosts: int, claims: int, rng: random.Random, explain: bool
) -> LatencyResult:
    host_rows = make_hosts(hosts, rng)
    running = running_servers(host_rows, rng)
    await load_cloud(conn, host_rows, running)
    _log(f"{hosts} hosts, {len(running)} running servers: timing {claims} claims")
    zones = [rng.choice(ZONES) if rng.random() < 0.5 else None for _ in range(claims)]
    for zone in zones[:20]:  # warm-up: statements prepared, pages cached; not counted
        async with conn.transaction():
            await scheduler.claim(conn, select(TINY, zone))
    placed = {r["server_id"]: r["host"] for r in await conn.fetch(_CLAIMED)}
    claim_ms, refused = [], 0
    beat = time.monotonic()
    for zone in zones:
        if time.monotonic() - beat > HEARTBEAT_EVERY:
            await heartbeat(conn)
            beat = time.monotonic()
        msg = select(TINY, zone)
        t0 = time.perf_counter()
        async with conn.transaction():
            answer = await scheduler.claim(conn, msg)
        claim_ms.append((time.perf_counter() - t0) * 1000)
        if isinstance(answer, m.Scheduled):
            placed[msg.server_id] = answer.host
        else:
            refused += 1
    await heartbeat(conn)
    vcpus, ram, disk = scheduler.demand(TINY)
    query_ms = []
    for zone in zones:
        t0 = time.perf_counter()
        await conn.fetch(
            scheduler._CANDIDATES,
            vcpus,
            ram,
            disk,
            scheduler.HOST_DOWN_AFTER,
            zone,
            [],
            None,
            scheduler.CANDIDATES,
        )
        query_ms.append((time.perf_counter() - t0) * 1000)
    result = LatencyResult(hosts, len(running), claim_ms, query_ms, refused, await verify(conn, placed))
    if explain:
        for zone in (None, ZONES[0]):
            plan = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS) " + scheduler._CANDIDATES,
                vcpus,
                ram,
                disk,
                scheduler.HOST_DOWN_AFTER,
                zone,
                [],
                None,
                scheduler.CANDIDATES,
            )
            result.explain += [f"-- availability_zone = {zone!r}"] + [r[0] for r in plan]
    return result


# --- phase 2: concurrent schedulers -------------------------------------------------------------------


@dataclass
class ThroughputResult:
    hosts: int
    schedulers: int
    capacity: int
    requests: int
    seconds: float
    placed: int
    refused: int
    deadlocks: int
    room_left: int
    spurious: int
    claim_ms: list[float]
    problems: list[str]


async def measure_throughput(
    pool: asyncpg.Pool, hosts: int, schedulers: int, rng: random.Random
) -> ThroughputResult:
    async with pool.acquire() as conn:
        await load_cloud(conn, make_hosts(hosts, rng), [])
        capacity = await room_for(conn, FILL)
    requests = capacity + max(2 * schedulers, capacity // 20)
    _log(
        f"{hosts} empty hosts, room for {capacity} x {FILL.name}: "
        f"{schedulers} schedulers make {requests} claims"
    )
    zones = [rng.choice(ZONES) if rng.random() < 0.5 else None for _ in range(requests)]
    next_request = iter(zones)
    placed: dict[str, str] = {}
    refused_zones: list[str | None] = []
    deadlocks = 0
    claim_ms: list[float] = []

    async def one_scheduler() -> None:
        nonlocal deadlocks
        async with pool.acquire() as conn:
            for zone in next_request:
                msg = select(FILL, zone)
                while True:
                    t0 = time.perf_counter()
                    try:
                        async with conn.transaction():
                            answer = await scheduler.claim(conn, msg)
                    except asyncpg.DeadlockDetectedError:
                        deadlocks += 1  # rolled back: the same request again
                        continue
                    claim_ms.append((time.perf_counter() - t0) * 1000)
                    break
                if isinstance(answer, m.Scheduled):
                    placed[msg.server_id] = answer.host
                else:
                    refused_zones.append(zone)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(schedulers):
            group.create_task(one_scheduler())
    seconds = time.perf_counter() - t0
    async with pool.acquire() as conn:
        room = {zone: await room_for(conn, FILL, zone) for zone in (None, *ZONES)}
        problems = await verify(conn, placed)
    # Claims only take room, so room left at the end was there at every refusal too: a refusal
    # is spurious when its zone (or, without one, the cloud) still has room for the flavor.
    spurious = sum(1 for zone in refused_zones if room[zone] > 0)
    return ThroughputResult(
        hosts,
        schedulers,
        capacity,
        requests,
        seconds,
        len(placed),
        len(refused_zones),
        deadlocks,
        room[None],
        spurious,
        claim_ms,
        problems,
    )


# --- the report ---------------------------------------------------------------------------------------


async def machine(conn: asyncpg.Connection) -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    settings = {
        r["name"]: r["value"]
        for r in await conn.fetch(
            "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1::text[])",
            ["synchronous_commit", "fsync", "shared_buffers", "work_mem", "jit"],
        )
    }
    version = await conn.fetchval("SHOW server_version")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    shown = ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
    return f"machine: {os.cpu_count()} CPUs ({cpu}), load average {load}\nPostgreSQL {version} ({shown})"


def report(
    about: str,
    latency: list[LatencyResult],
    throughput: ThroughputResult | None,
    command: str,
    extra_sql: str | None,
) -> None:
    print(f"\n{about}")
    if latency:
        print(
            f"\ndecision latency: one claim = BEGIN; scheduler.claim(SelectHost {TINY.name}); COMMIT, "
            f"sequential on one connection;\nquery = the candidate query alone (filters + weigher, "
            f"LIMIT {scheduler.CANDIDATES}); half the requests name an availability zone"
        )
        print("| hosts  | servers | claims | p50 ms | p95 ms | p99 ms | max ms | query p50 | query p99 |")
        print("|-------:|--------:|-------:|-------:|-------:|-------:|-------:|----------:|----------:|")
        for r in latency:
            c, q = r.claim_ms, r.query_ms
            print(
                f"| {r.hosts:6} | {r.servers:7} | {len(c):6} | {percentile(c, 50):6.2f} "
                f"| {percentile(c, 95):6.2f} | {percentile(c, 99):6.2f} | {max(c):6.2f} "
                f"| {percentile(q, 50):9.2f} | {percentile(q, 99):9.2f} |"
            )
        for r in latency:
            if r.refused:
                print(f"  {r.hosts} hosts: {r.refused} claims refused (NoValidHost)")
    if throughput is not None:
        t = throughput
        verdict = "none" if not t.problems else f"FAILED ({len(t.problems)} problems)"
        print(
            f"\nconcurrent schedulers: {t.hosts} empty hosts, flavor {FILL.name} "
            f"({FILL.vcpus} vCPUs, {FILL.ram} MiB, {FILL.disk} GiB), room for {t.capacity}, "
            f"{t.requests} requests"
        )
        print(
            "| schedulers | claims/s | seconds | placed | refused | spurious | room left | p50 ms | p99 ms "
            "| over-commit |"
        )
        print(
            "|-----------:|---------:|--------:|-------:|--------:|---------:|----------:|-------:|-------:"
            "|:------------|"
        )
        print(
            f"| {t.schedulers:10} | {t.requests / t.seconds:8.0f} | {t.seconds:7.2f} | {t.placed:6} "
            f"| {t.refused:7} | {t.spurious:8} | {t.room_left:9} | {percentile(t.claim_ms, 50):6.2f} "
            f"| {percentile(t.claim_ms, 99):6.2f} | {verdict:11} |"
        )
        if t.spurious:
            print(
                f"  {t.spurious} of the refusals were spurious: room was left for them, but every one of "
                f"the {scheduler.CANDIDATES} candidates was taken by a concurrent claim first"
            )
        if t.deadlocks:
            print(f"  {t.deadlocks} claims hit a deadlock and were retried")
    for r in latency:
        if r.explain:
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the candidate query at {r.hosts} hosts ({TINY.name}):")
            print("\n".join(f"  {line}" for line in r.explain))
    if extra_sql:
        print(f"\nextra SQL after the schema: {extra_sql}")
    print(f"\ncommand: {command}")


# --- running it -----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, services: ScratchServices, command: str) -> int:
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    await services.create()
    _log(f"database {services.name} created")
    pool = await db.create_pool(services.database_url, min_size=1, max_size=args.concurrency)
    try:
        async with pool.acquire() as conn:
            await db.init_schema(conn)
            if args.extra_sql:
                await conn.execute(args.extra_sql)
                _log(f"applied: {args.extra_sql}")
            about = await machine(conn)
        rng = random.Random(args.seed)
        latency = []
        async with pool.acquire() as conn:
            for index, hosts in enumerate(args.hosts):
                explain = args.explain and index == len(args.hosts) - 1
                latency.append(await measure_latency(conn, hosts, args.claims, rng, explain))
        throughput = None
        if args.fill_hosts:
            throughput = await measure_throughput(pool, args.fill_hosts, args.concurrency, rng)
    finally:
        try:
            await asyncio.wait_for(pool.close(), 10)
        except TimeoutError:
            pool.terminate()
    report(about, latency, throughput, command, args.extra_sql)
    problems = [f"{r.hosts} hosts: {p}" for r in latency for p in r.problems]
    if throughput is not None:
        problems += [f"concurrent, {throughput.hosts} hosts: {p}" for p in throughput.problems]
    if problems:
        print("\nVERIFICATION FAILED:")
        for problem in problems[:50]:
            print(f"  {problem}")
        if len(problems) > 50:
            print(f"  ... and {len(problems) - 50} more")
        return 1
    print(
        "verification: every host's usage equals the sum of its allocations and is within its capacity; "
        "the allocations are exactly the Scheduled answers"
    )
    return 0


def _counts(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("host counts must be positive")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--hosts",
        type=_counts,
        default=[100, 1000, 10000],
        help="host counts for the latency phase, comma-separated (default 100,1000,10000)",
    )
    parser.add_argument("--claims", type=int, default=2000, help="timed claims per host count (default 2000)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="concurrent schedulers in the throughput phase (default 32)",
    )
    parser.add_argument(
        "--fill-hosts",
        type=int,
        default=1000,
        help="hosts the concurrent schedulers fill (default 1000; 0 skips the phase)",
    )
    parser.add_argument("--seed", type=int, default=1, help="for the hosts, their servers and the requests")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print EXPLAIN (ANALYZE, BUFFERS) of the candidate query at the largest host count",
    )
    parser.add_argument(
        "--extra-sql",
        metavar="SQL",
        help="run after the schema, e.g. a candidate index to compare (in the bench's database only)",
    )
    args = parser.parse_args(argv)
    if args.claims < 1 or args.concurrency < 1 or args.fill_hosts < 0:
        parser.error("--claims and --concurrency must be at least 1, --fill-hosts at least 0")
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([os.path.relpath(sys.executable), "-m", "bench.scheduler", *given])
    services = ScratchServices(f"bench_sched_{secrets.token_hex(4)}", vhost=False)
    failed: BaseException | None = None
    status = 1
    try:
        status = asyncio.run(run(args, services, command))
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        failed = exc
    except Exception as exc:  # noqa: BLE001 - reported after the cleanup
        failed = exc
    finally:
        # Dropping the database must finish: a second Ctrl-C or SIGTERM would leave it behind.
        signal.signal(signal.SIGINT, lambda *_: _log("dropping the database; please wait"))
        signal.signal(signal.SIGTERM, lambda *_: _log("dropping the database; please wait"))
        try:
            asyncio.run(services.drop())
            _log(f"database {services.name} dropped")
        except ScratchError as exc:
            _log(f"CLEANUP PROBLEM: {exc}")
            status = 1
    if isinstance(failed, (KeyboardInterrupt, asyncio.CancelledError)):
        _log("interrupted")
        return 130
    if failed is not None:
        traceback.print_exception(failed)
        _log(f"failed: {failed!r}")
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
