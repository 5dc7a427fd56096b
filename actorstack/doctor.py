"""`actorstack doctor [--fix]`: what the cloud's own loops did not settle, for an operator.

The actors end every transitional state with a timer and the host agents report what their
hosts keep, so a healthy cloud converges on its own. The doctor looks for what did not:

- `stuck`: a server, volume or port in a transitional state (BUILD, deleting, attaching, …) for
  longer than `--older-than` with no timer of its actor left to end it (a timer row lost, a
  message dead-lettered). Fix: send the actor the very timeout message its timer would have
  sent (`server.task_timeout`, `volume.timeout`, `port.build_timeout`), so the actor itself moves
  it to its error state with a fault (a stuck delete ends deleted, as the timer's would).
- `orphaned_allocation`: a claim (`allocations`) whose server is gone, deleted, or placed on
  another host. Fix: `scheduler.release_claim`, the scheduler's own release.
- `domain_without_server`: an instance a host agent reported (`host_domains`, written at every
  power-state sync) whose server is deleted, unknown, or placed elsewhere. Fix: `agent.destroy`
  to that host's agent, which destroys the domain and removes its files.
- `server_without_domain`: a settled server whose host's latest report has no domain for it.
  Reported only: its disk may be all that is left, the operator decides (the agent has already
  told the server actor NOSTATE, which shows it SHUTOFF as Nova does).
- `host_down`: a compute host whose agent's heartbeat is older than the down window; its
  servers show host_status UNKNOWN. Reported only.

Every repair is a message through the outbox (relayed by the runtime), never a write behind an
actor's back; with `--fix` the doctor then re-checks until the repairs show (or `--wait` ends)
and exits 0 when nothing is left, 1 when findings remain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from actors import db, outbox
from actors import server as server_actor
from actors import volume as volume_actor
from actors.scheduler import HOST_DOWN_AFTER
from protocol import Envelope, Message, Target
from protocol import compute as m
from protocol.actor import StateTimeout
from protocol.states import PortStatus, TaskState, VmState

# Kinds of findings, in the order a report lists them.
STUCK, ORPHANED_ALLOCATION = "stuck", "orphaned_allocation"
DOMAIN_WITHOUT_SERVER, SERVER_WITHOUT_DOMAIN = "domain_without_server", "server_without_domain"
HOST_DOWN = "host_down"
KINDS = (STUCK, ORPHANED_ALLOCATION, DOMAIN_WITHOUT_SERVER, SERVER_WITHOUT_DOMAIN, HOST_DOWN)
SETTLED_VM_STATES = server_actor.STABLE
RECHECK_INTERVAL = 1.0


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem: the resource it is about, what is wrong, and what `--fix` does about it
    (`repair` is the message that does it; None when nothing is safe to do automatically)."""

    kind: str
    resource_type: str
    resource_id: str
    problem: str
    fix: str
    host: str | None = None
    repair: Envelope | None = dataclasses.field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str, str, str | None]:
        return self.kind, self.resource_type, self.resource_id, self.host

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "host": self.host,
            "problem": self.problem,
            "fix": self.fix,
            "fixable": self.repair is not None,
        }


def _to(kind: str, actor_id: str, body: Message) -> Envelope:
    return Envelope.new(Target(kind, actor_id), body)


def _age(since: datetime.datetime) -> str:
    seconds = max(0, int((datetime.datetime.now(datetime.UTC) - since).total_seconds()))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


# --- stuck transitional states ---------------------------------------------------------------------

_STUCK_SERVERS = """
SELECT id, vm_state, task_state, host,
       to_timestamp(coalesce(updated_at, extract(epoch FROM created_at))) AS since
FROM servers s
WHERE vm_state <> 'deleted' AND task_state IS NOT NULL
  AND to_timestamp(coalesce(updated_at, extract(epoch FROM created_at))) < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM timers t WHERE t.kind = 'server' AND t.actor_id = s.id)
ORDER BY id
"""
_STUCK_VOLUMES = """
SELECT id, status, coalesce(updated_at, created_at) AS since FROM volumes o
WHERE status = ANY($2::text[]) AND coalesce(updated_at, created_at) < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM timers t WHERE t.kind = 'volume' AND t.actor_id = o.id)
ORDER BY id
"""
_STUCK_PORTS = """
SELECT id, device_id, binding_host_id, updated_at AS since FROM ports p
WHERE status = 'BUILD' AND updated_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM timers t WHERE t.kind = 'port' AND t.actor_id = p.id)
ORDER BY id
"""


async def stuck(conn: asyncpg.Connection, older_than: float) -> list[Finding]:
    found = []
    for row in await conn.fetch(_STUCK_SERVERS, older_than):
        state = f"{row['vm_state']}/{row['task_state']}"
        outcome = "deleted" if row["task_state"] == TaskState.DELETING else "ERROR with a fault"
        found.append(
            Finding(
                STUCK,
                "server",
                row["id"],
                f"in {state} for {_age(row['since'])} with no timer to end it",
                f"send its state timeout: the server actor moves it to {outcome}",
                host=row["host"],
                repair=_to("server", row["id"], StateTimeout(state=f"{row['vm_state']}:{row['task_state']}")),
            )
        )
    for row in await conn.fetch(_STUCK_VOLUMES, older_than, sorted(volume_actor.table.timeouts())):
        found.append(
            Finding(
                STUCK,
                "volume",
                row["id"],
                f"{row['status']} for {_age(row['since'])} with no timer to end it",
                f"send its timeout: the volume actor moves it to {volume_actor.TIMED_OUT[row['status']]}",
                repair=_to("volume", row["id"], StateTimeout(state=row["status"])),
            )
        )
    for row in await conn.fetch(_STUCK_PORTS, older_than):
        bound = bool(row["device_id"] and row["binding_host_id"])
        found.append(
            Finding(
                STUCK,
                "port",
                row["id"],
                f"BUILD for {_age(row['since'])} with no timer to end it",
                "send its state timeout: the port actor moves it to ERROR (a failed binding)"
                if bound
                else "nothing automatic: the port is not bound to a server's host; delete or re-bind it",
                host=row["binding_host_id"] or None,
                repair=_to("port", row["id"], StateTimeout(state=PortStatus.BUILD)) if bound else None,
            )
        )
    return found


# --- claims ----------------------------------------------------------------------------------------

_ORPHANED_ALLOCATIONS = """
SELECT a.server_id, a.host, s.vm_state, s.host AS server_host FROM allocations a
LEFT JOIN servers s ON s.id = a.server_id
WHERE (s.id IS NULL AND a.created_at < now() - make_interval(secs => $1))
   OR (s.vm_state = 'deleted'
       AND to_timestamp(coalesce(s.terminated_at, s.updated_at, 0)) < now() - make_interval(secs => $1))
   OR (s.vm_state NOT IN ('deleted', 'building') AND s.host IS DISTINCT FROM a.host
       AND to_timestamp(coalesce(s.updated_at, 0)) < now() - make_interval(secs => $1))
ORDER BY a.server_id
"""


async def orphaned_allocations(conn: asyncpg.Connection, older_than: float) -> list[Finding]:
    found = []
    for row in await conn.fetch(_ORPHANED_ALLOCATIONS, older_than):
        if row["vm_state"] is None:
            why = "its server does not exist"
        elif row["vm_state"] == VmState.DELETED:
            why = "its server is deleted"
        else:
            why = f"its server is on {row['server_host'] or 'no host'}"
        found.append(
            Finding(
                ORPHANED_ALLOCATION,
                "allocation",
                row["server_id"],
                f"a claim on {row['host']}, but {why}",
                f"send scheduler.release_claim: the claim is freed on {row['host']}",
                host=row["host"],
                repair=_to(
                    "scheduler",
                    row["server_id"],
                    m.ReleaseClaim(server_id=row["server_id"], host=row["host"]),
                ),
            )
        )
    return found


# --- hosts and their domains -------------------------------------------------------------------------

_HOSTS = """
SELECT h.name, h.heartbeat_at, h.heartbeat_at > now() - make_interval(secs => $1) AS up,
       d.domains, d.reported_at,
       (SELECT count(*) FROM servers s WHERE s.host = h.name AND s.vm_state <> 'deleted') AS servers
FROM compute_hosts h LEFT JOIN host_domains d ON d.host = h.name
ORDER BY h.name
"""
_SERVERS = """
SELECT id, vm_state, task_state, host,
       to_timestamp(coalesce(updated_at, extract(epoch FROM created_at))) AS changed
FROM servers WHERE (host = ANY($1::text[]) AND vm_state <> 'deleted') OR id = ANY($2::text[])
"""


async def hosts_and_domains(conn: asyncpg.Connection) -> list[Finding]:
    """Compare each live host's latest report with the servers the database places there.
    Only what the report saw after the server last changed counts, so a server being built,
    deleted or moved right now is not taken for a problem."""
    hosts = await conn.fetch(_HOSTS, HOST_DOWN_AFTER)
    found = [
        Finding(
            HOST_DOWN,
            "host",
            h["name"],
            f"no heartbeat for {_age(h['heartbeat_at'])}; its "
            f"{h['servers']} server(s) show host_status UNKNOWN",
            "nothing automatic: start its host agent (it adopts its domains)",
            host=h["name"],
        )
        for h in hosts
        if not h["up"]
    ]
    reports = [h for h in hosts if h["up"] and h["reported_at"] is not None]
    ids = sorted({server_id for h in reports for server_id in h["domains"]})
    servers = {r["id"]: r for r in await conn.fetch(_SERVERS, [h["name"] for h in reports], ids)}
    for h in reports:
        found += _domains_without_servers(h, servers)
        found += _servers_without_domains(h, servers)
    return found


def _domains_without_servers(report: asyncpg.Record, servers: dict[str, asyncpg.Record]) -> list[Finding]:
    host, found = report["name"], []
    for server_id, power_state in sorted(report["domains"].items()):
        server = servers.get(server_id)
        if server is not None and server["changed"] >= report["reported_at"]:
            continue  # changed since the report: the next one tells
        if server is None:
            why = "its server is unknown to the database"
        elif server["vm_state"] == VmState.DELETED:
            why = "its server is deleted"
        elif server["host"] != host:
            why = f"its server is placed on {server['host'] or 'no host'}"
        else:
            continue
        what = "files (no domain)" if power_state is None else f"domain instance-{server_id}"
        deleting = server is not None and server["task_state"] == TaskState.DELETING
        found.append(
            Finding(
                DOMAIN_WITHOUT_SERVER,
                "instance",
                server_id,
                f"{what} on {host}, but {why}",
                "nothing now: its server is being deleted"
                if deleting
                else f"send agent.destroy to {host}: its agent destroys the domain and removes its files",
                host=host,
                repair=None if deleting else _to("agent", host, m.Destroy(server_id=server_id)),
            )
        )
    return found


def _servers_without_domains(report: asyncpg.Record, servers: dict[str, asyncpg.Record]) -> list[Finding]:
    host, domains, found = report["name"], report["domains"], []
    for server in sorted(servers.values(), key=lambda s: s["id"]):
        settled = server["vm_state"] in SETTLED_VM_STATES and server["task_state"] is None
        if (
            server["host"] != host
            or not settled
            or server["changed"] >= report["reported_at"]
            or domains.get(server["id"]) is not None
        ):
            continue
        left = "its files are still there" if server["id"] in domains else "its files are gone too"
        found.append(
            Finding(
                SERVER_WITHOUT_DOMAIN,
                "server",
                server["id"],
                f"{server['vm_state']} on {host}, which has no domain for it ({left})",
                "nothing automatic: delete the server, or restore its domain on the host",
                host=host,
            )
        )
    return found


# --- the run ------------------------------------------------------------------------------------------


async def examine(pool: asyncpg.Pool, older_than: float) -> list[Finding]:
    async with pool.acquire() as conn:
        found = await stuck(conn, older_than)
        found += await orphaned_allocations(conn, older_than)
        found += await hosts_and_domains(conn)
    return sorted(found, key=lambda f: (KINDS.index(f.kind), f.resource_type, f.resource_id, f.host or ""))


async def repair(pool: asyncpg.Pool, findings: Sequence[Finding]) -> int:
    """Send every repair, in one transaction; how many."""
    envelopes = [f.repair for f in findings if f.repair is not None]
    if envelopes:
        shards = int(await db.cluster_setting(pool, "shards"))  # type: ignore[call-overload]
        async with pool.acquire() as conn, conn.transaction():
            await outbox.send(conn, envelopes, shards)
    return len(envelopes)


async def _settle(
    pool: asyncpg.Pool, older_than: float, repaired: Sequence[Finding], wait: float
) -> list[Finding]:
    """Re-examine until none of the repaired findings is left, or `wait` seconds passed; the
    findings then."""
    keys = {f.key for f in repaired}
    deadline = time.monotonic() + wait
    while True:
        now = await examine(pool, older_than)
        if not keys & {f.key for f in now} or time.monotonic() >= deadline:
            return now
        await asyncio.sleep(RECHECK_INTERVAL)


def render_table(findings: Sequence[Finding], fixed: Sequence[Finding], *, fixing: bool) -> str:
    if not findings and not fixed:
        return "No problems found."
    lines = []
    if findings:
        head = ("KIND", "RESOURCE", "HOST", "PROBLEM", "FIX")
        rows = [
            (f.kind, f"{f.resource_type} {f.resource_id}", f.host or "-", f.problem, f.fix) for f in findings
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
        for r in [head, *rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    if fixing:
        lines.append(f"Fixed: {len(fixed)}." if fixed else "Nothing was fixed.")
        lines += [f"  fixed {f.kind}: {f.resource_type} {f.resource_id} ({f.fix})" for f in fixed]
    if findings:
        lines.append(
            f"{len(findings)} finding(s) remain."
            if fixing
            else f"{len(findings)} finding(s); `actorstack doctor --fix` does what the FIX column says."
        )
    return "\n".join(lines)


async def run(database_url: str, *, fix: bool, fmt: str, older_than: float, wait: float) -> int:
    """The doctor: report (and with `fix`, repair); 0 when nothing is left, 1 otherwise."""
    pool = await db.create_pool(database_url, min_size=1, max_size=2)
    try:
        findings = await examine(pool, older_than)
        fixed: list[Finding] = []
        if fix and await repair(pool, findings):
            repaired = [f for f in findings if f.repair is not None]
            findings = await _settle(pool, older_than, repaired, wait)
            left = {f.key for f in findings}
            fixed = [f for f in repaired if f.key not in left]
    finally:
        await pool.close()
    if fmt == "json":
        document: dict[str, Any] = {"findings": [f.as_json() for f in findings]}
        if fix:
            document["fixed"] = [f.as_json() for f in fixed]
        print(json.dumps(document, indent=2))
    else:
        print(render_table(findings, fixed, fixing=fix))
    sys.stdout.flush()
    return 1 if findings else 0
