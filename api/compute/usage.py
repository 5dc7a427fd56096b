"""What a project, and one of its users, uses of each compute quota.

Usage is counted from the rows that hold the resources, never tracked separately (Nova counts the
same way since Pike), so a count can never drift from what exists. Key pairs are counted per
user, as Nova counts them; server groups per project. Instances, cores and RAM are counted from
the servers table, whose counter belongs in `_PROJECT_COUNTERS` beside the others: until it is
there they show 0, and once it is, every caller (quota detail, limits, quota updates) sees it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from api.quotas import COMPUTE

Counter = Callable[[Any, str], Awaitable[dict[str, int]]]


async def _keypairs(conn: Any, user_id: str) -> dict[str, int]:
    return {"key_pairs": await conn.fetchval("SELECT count(*) FROM keypairs WHERE user_id = $1", user_id)}


async def _server_groups(conn: Any, project_id: str) -> dict[str, int]:
    return {
        "server_groups": await conn.fetchval(
            "SELECT count(*) FROM server_groups WHERE project_id = $1", project_id
        )
    }


# Counters of resources a project owns, called with the project id.
async def _servers(conn: Any, project_id: str) -> dict[str, int]:
    """Every server not deleted counts, whatever its state (as Nova counts instances)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS instances, coalesce(sum((flavor->>'vcpus')::int), 0) AS cores, "
        "coalesce(sum((flavor->>'ram')::int), 0) AS ram FROM servers "
        "WHERE project_id = $1 AND vm_state <> 'deleted'",
        project_id,
    )
    return {"instances": row["instances"], "cores": row["cores"], "ram": row["ram"]}


_PROJECT_COUNTERS: tuple[Counter, ...] = (_server_groups, _servers)
# Counters of resources a user owns, called with the user id.
_USER_COUNTERS: tuple[Counter, ...] = (_keypairs,)


async def compute_usage(conn: Any, project_id: str, user_id: str | None) -> dict[str, int]:
    """In-use count of every compute quota resource: the project's, and the user's for the
    per-user ones (0 when no user is given)."""
    used = dict.fromkeys(COMPUTE, 0)
    for project_counter in _PROJECT_COUNTERS:
        used.update(await project_counter(conn, project_id))
    if user_id is not None:
        for user_counter in _USER_COUNTERS:
            used.update(await user_counter(conn, user_id))
    return used


async def keypair_usage(conn: Any, user_id: str) -> dict[str, int]:
    """The key_pairs count alone, for enforcement at keypair creation."""
    return await _keypairs(conn, user_id)


async def server_usage(conn: Any, project_id: str) -> dict[str, int]:
    """Instances, cores and RAM in use, for enforcement at server creation."""
    return await _servers(conn, project_id)


async def user_server_usage(conn: Any, project_id: str, user_id: str) -> dict[str, int]:
    """Instances, cores and RAM of one user's servers in the project (Nova counts these per user
    too, for the per-user quotas)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS instances, coalesce(sum((flavor->>'vcpus')::int), 0) AS cores, "
        "coalesce(sum((flavor->>'ram')::int), 0) AS ram FROM servers "
        "WHERE project_id = $1 AND user_id = $2 AND vm_state <> 'deleted'",
        project_id,
        user_id,
    )
    return {"instances": row["instances"], "cores": row["cores"], "ram": row["ram"]}


async def user_usage(conn: Any, project_id: str, user_id: str) -> dict[str, int]:
    """In-use count of every compute quota resource as one user of the project uses it: their
    servers and key pairs; the project-wide resources (server groups) as the project's."""
    used = await compute_usage(conn, project_id, user_id)
    used.update(await user_server_usage(conn, project_id, user_id))
    return used
