"""Quotas of every service: limits per project (defaults overridden by rows) and atomic
enforcement. A check and the insert it guards happen in one transaction that holds a
transaction-scoped advisory lock on (project, resource), so concurrent requests are counted
one after the other and can never together exceed a limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import asyncpg

from api.errors import OverQuota

# In the order Nova lists them; the last four are nova-network's, shown before microversion 2.36.
COMPUTE = (
    "instances",
    "cores",
    "ram",
    "metadata_items",
    "injected_files",
    "injected_file_content_bytes",
    "injected_file_path_bytes",
    "key_pairs",
    "server_groups",
    "server_group_members",
    "fixed_ips",
    "floating_ips",
    "security_groups",
    "security_group_rules",
)
VOLUME = (
    "volumes",
    "gigabytes",
    "snapshots",
    "backups",
    "backup_gigabytes",
    "per_volume_gigabytes",
    "groups",
)
NETWORK = (
    "network",
    "subnet",
    "port",
    "router",
    "floatingip",
    "security_group",
    "security_group_rule",
    "rbac_policy",
    "subnetpool",
)
UNLIMITED = -1


async def limits(conn: Any, project_id: str, resources: Iterable[str]) -> dict[str, int]:
    """The hard limit of each resource for the project (-1 is unlimited)."""
    rows = await conn.fetch(
        "SELECT d.resource, coalesce(l.hard_limit, d.hard_limit) AS hard_limit FROM quota_defaults d "
        "LEFT JOIN quota_limits l ON l.resource = d.resource AND l.project_id = $1 "
        "WHERE d.resource = ANY($2::text[])",
        project_id,
        list(resources),
    )
    return {r["resource"]: int(r["hard_limit"]) for r in rows}


async def defaults(conn: Any, resources: Iterable[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT resource, hard_limit FROM quota_defaults WHERE resource = ANY($1::text[])", list(resources)
    )
    return {r["resource"]: int(r["hard_limit"]) for r in rows}


async def set_limits(conn: Any, project_id: str, values: Mapping[str, int]) -> None:
    await conn.executemany(
        "INSERT INTO quota_limits (project_id, resource, hard_limit) VALUES ($1, $2, $3) "
        "ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = EXCLUDED.hard_limit",
        [(project_id, resource, int(limit)) for resource, limit in values.items()],
    )


async def reset(conn: Any, project_id: str, resources: Iterable[str]) -> None:
    """Drop the project's overrides of these resources: their defaults apply again."""
    await conn.execute(
        "DELETE FROM quota_limits WHERE project_id = $1 AND resource = ANY($2::text[])",
        project_id,
        list(resources),
    )


async def lock(conn: asyncpg.Connection, holder: str, resources: Iterable[str]) -> None:
    """Serialise quota checks of these resources for the holder until the transaction ends."""
    for resource in sorted(resources):  # a fixed order: no deadlock between two requests
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"quota:{holder}:{resource}")


async def enforce(
    conn: asyncpg.Connection,
    project_id: str,
    requested: Mapping[str, int],
    usage: Callable[[asyncpg.Connection], Awaitable[Mapping[str, int]]],
    *,
    message: Callable[[str, int, int, int], str] | None = None,
    holder: str | None = None,
) -> None:
    """Inside the caller's transaction: lock, count current usage, and refuse with OverQuota
    if adding `requested` would pass any limit. The caller then inserts what it counted.

    The limits are the project's. `holder` names whose usage `usage` counts when that is not the
    project (Nova counts key pairs per user, e.g. "user:<id>"): the lock is taken on it, so two
    requests counting the same rows are always serialised."""
    await lock(conn, holder or project_id, requested)
    hard = await limits(conn, project_id, requested)
    used = await usage(conn)
    for resource, amount in requested.items():
        limit = hard.get(resource, UNLIMITED)
        in_use = int(used.get(resource, 0))
        if limit != UNLIMITED and in_use + amount > limit:
            text = (
                message(resource, amount, in_use, limit)
                if message
                else f"Quota exceeded for {resource}: Requested {amount}, "
                f"but already used {in_use} of {limit} {resource}"
            )
            raise OverQuota(text)
