"""The host service: the rows agents used to write themselves, written from their reports.

Agents never hold database credentials (Nova's conductor rule): what a compute host or a storage
backend knows about itself arrives as a message (protocol/hosts.py) for `Target("host", <agent
name>)`, and this service kind writes it in the turn's transaction, with every guarantee of the
runtime (inbox dedupe, per-agent order through the shards, retries, dead letters).

Ownership of `compute_hosts` is split by column: the agent's report sets its inventory (vCPUs,
RAM, disk, hypervisor, address, allocation ratios, reserved memory) and `heartbeat_at`; the
scheduler owns the usage and the generation, the operator `enabled`, `disabled_reason` and
`forced_down`; a report writes none of those, so a restart neither forgets claims nor enables
a host the operator disabled. `volume_backends` likewise: the report sets driver, zone and
`total_gb`, the API `allocated_gb`, the operator `enabled`.

A heartbeat carries the inventory too: a row an operator deleted comes back at the next beat.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from actors import db, outbox
from actors.outbox import OutboxRow
from actors.service import ServiceKind
from actors.table import Context
from protocol import hosts as h
from protocol.routing import DEAD_LETTER_EXCHANGE, ORIGIN_QUEUE_HEADER, REASON_HEADER

_COMPUTE_UPSERT = """
INSERT INTO compute_hosts (name, availability_zone, virt_type, hypervisor_hostname, host_ip, vcpus, memory_mb,
                           local_gb, cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio,
                           reserved_memory_mb, tunnel_ip, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $14::inet, now(), now())
ON CONFLICT (name) DO UPDATE SET
    availability_zone = EXCLUDED.availability_zone, virt_type = EXCLUDED.virt_type,
    hypervisor_hostname = EXCLUDED.hypervisor_hostname, host_ip = EXCLUDED.host_ip,
    vcpus = EXCLUDED.vcpus, memory_mb = EXCLUDED.memory_mb, local_gb = EXCLUDED.local_gb,
    cpu_allocation_ratio = EXCLUDED.cpu_allocation_ratio,
    ram_allocation_ratio = EXCLUDED.ram_allocation_ratio,
    disk_allocation_ratio = EXCLUDED.disk_allocation_ratio, reserved_memory_mb = EXCLUDED.reserved_memory_mb,
    tunnel_ip = EXCLUDED.tunnel_ip,
    started_at = CASE WHEN $13 THEN now() ELSE compute_hosts.started_at END, heartbeat_at = now()
"""

_DOMAINS_UPSERT = """
INSERT INTO host_domains (host, domains, reported_at) VALUES ($1, $2, now())
ON CONFLICT (host) DO UPDATE SET domains = EXCLUDED.domains, reported_at = now()
"""

_BACKEND_UPSERT = """
INSERT INTO volume_backends (name, driver, availability_zone, total_gb, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4, now(), now())
ON CONFLICT (name) DO UPDATE SET
    driver = EXCLUDED.driver, availability_zone = EXCLUDED.availability_zone, total_gb = EXCLUDED.total_gb,
    started_at = CASE WHEN $5 THEN now() ELSE volume_backends.started_at END, heartbeat_at = now()
"""


async def _compute_report(conn: db.Connection, msg: h.ComputeHostReport, ctx: Context) -> list[Any]:
    await conn.execute(
        _COMPUTE_UPSERT,
        ctx.envelope.target.id,
        msg.availability_zone,
        msg.virt_type,
        msg.hypervisor_hostname,
        msg.host_ip,
        msg.vcpus,
        msg.memory_mb,
        msg.local_gb,
        msg.cpu_allocation_ratio,
        msg.ram_allocation_ratio,
        msg.disk_allocation_ratio,
        msg.reserved_memory_mb,
        msg.started,
        msg.tunnel_ip,
    )
    return []


async def _domains(conn: db.Connection, msg: h.DomainsReport, ctx: Context) -> list[Any]:
    await conn.execute(_DOMAINS_UPSERT, ctx.envelope.target.id, msg.domains)
    return []


async def _backend_report(conn: db.Connection, msg: h.BackendReport, ctx: Context) -> list[Any]:
    await conn.execute(
        _BACKEND_UPSERT, ctx.envelope.target.id, msg.driver, msg.availability_zone, msg.total_gb, msg.started
    )
    return []


async def _dead_letter(conn: db.Connection, msg: h.AgentDeadLetter, ctx: Context) -> list[Any]:
    """A request an agent could not handle ends as the runtime's own dead letters do: recorded
    in `dead_letters` and copied (through the outbox) to the dead-letter queue."""
    await conn.execute(
        "INSERT INTO dead_letters (message_id, queue, reason, body) VALUES ($1, $2, $3, $4)",
        msg.message_id,
        msg.queue,
        msg.reason,
        msg.raw,
    )
    copy = OutboxRow(
        msg.message_id if _is_uuid(msg.message_id) else ctx.envelope.id,
        DEAD_LETTER_EXCHANGE,
        "",
        msg.raw,
        headers={REASON_HEADER: msg.reason[:1000], ORIGIN_QUEUE_HEADER: msg.queue},
    )
    await outbox.write(conn, [copy])
    return []


def _is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


KIND = ServiceKind(
    "host",
    {
        h.ComputeHostReport: _compute_report,
        h.DomainsReport: _domains,
        h.BackendReport: _backend_report,
        h.AgentDeadLetter: _dead_letter,
    },
)
