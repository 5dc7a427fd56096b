"""Which runtime processes are alive, and which of them should own which shard.

Each runtime process heartbeats a row in `runtime_members` naming the actor kinds it hosts.
The preferred owner of a shard is chosen among the live members hosting its kind by rendezvous
hashing, so a change of membership moves only the
shards it must. Ownership itself is a lease (actors/leases.py); the runtime's balancer gives
up leases that another live member prefers and takes free ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import uuid
from collections.abc import Sequence

import asyncpg
import structlog

from actors.db import DB_ERRORS

log = structlog.get_logger("actors.membership")


def new_member_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def preferred_owner(queue: str, members: Sequence[str]) -> str:
    """Rendezvous (highest random weight) hashing: stable, and minimal movement on change."""
    return max(members, key=lambda m: hashlib.sha1(f"{m}|{queue}".encode()).digest())


class Membership:
    def __init__(
        self,
        pool: asyncpg.Pool,
        member_id: str,
        kinds: Sequence[str],
        *,
        heartbeat: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self._pool = pool
        self.member_id = member_id
        self._heartbeat = heartbeat
        self._timeout = timeout
        self.kinds = sorted(kinds)
        # kind -> the live members hosting it (always including this one)
        self.members: dict[str, tuple[str, ...]] = {k: (member_id,) for k in self.kinds}

    async def leave(self) -> None:
        await self._pool.execute("DELETE FROM runtime_members WHERE member_id = $1", self.member_id)

    async def beat(self) -> dict[str, tuple[str, ...]]:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO runtime_members (member_id, hostname, pid, kinds) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (member_id) DO UPDATE SET heartbeat_at = now()",
                self.member_id,
                socket.gethostname(),
                os.getpid(),
                self.kinds,
            )
            rows = await conn.fetch(
                "SELECT member_id, kinds FROM runtime_members "
                "WHERE heartbeat_at > now() - make_interval(secs => $1) ORDER BY member_id",
                self._timeout,
            )
            # Members long gone are removed so the table stays small.
            await conn.execute(
                "DELETE FROM runtime_members WHERE heartbeat_at < now() - make_interval(secs => $1)",
                self._timeout * 10,
            )
        members = {k: [self.member_id] for k in self.kinds}
        for row in rows:
            for kind in row["kinds"]:
                if kind in members and row["member_id"] != self.member_id:
                    members[kind].append(row["member_id"])
        return {k: tuple(sorted(v)) for k, v in members.items()}

    async def run(self) -> None:
        while True:
            try:
                members = await self.beat()
                if members != self.members:
                    log.info("runtime membership changed", members={k: len(v) for k, v in members.items()})
                    self.members = members
            except asyncio.CancelledError:
                raise
            except DB_ERRORS as exc:
                log.warning("membership heartbeat failed", error=repr(exc))
            await asyncio.sleep(self._heartbeat)
