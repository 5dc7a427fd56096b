"""A control plane for testing agents without an API in front of them.

`LocalControl` answers the agent's reads with the internal API's own queries (api/internal/
queries.py) straight from the test database, applies its reports with the `host` service's own
handlers (actors/hosts.py) in a transaction, and serves images from a directory the test fills
(`make_image`), checked against the image's row when the test wrote one. The real path (HTTP,
host tokens, reports over the broker) is tested through `up` (tests/e2e, tests/api/test_internal.py).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import asyncpg

from actors import hosts
from actors.table import Context
from api.internal import queries
from hostagent.control import Checksums, Control, ControlConfig, ImageUnavailable, Row
from protocol import Envelope, Message, Target


class LocalControl(Control):
    def __init__(
        self, pool: asyncpg.Pool, image_dir: Path | None = None, *, hosts: frozenset[str] = frozenset()
    ) -> None:
        self.pool = pool
        self.image_dir = image_dir
        self.hosts = hosts
        self.reports: list[tuple[str, Message]] = []

    async def config(self) -> ControlConfig:
        shards = int(await self.pool.fetchval("SELECT value FROM cluster_settings WHERE key = 'shards'"))
        cloud_id = str(
            await self.pool.fetchval("SELECT value #>> '{}' FROM cluster_settings WHERE key = 'cloud_id'")
        )
        return ControlConfig(shards, cloud_id, f"actorstack:test:{cloud_id}", self.hosts)

    async def report(self, agent: str, message: Message) -> None:
        self.reports.append((agent, message))
        handler = hosts.KIND.handler_for(message)
        assert handler is not None, message
        envelope = Envelope.new(Target("host", agent), message)
        async with self.pool.acquire() as conn, conn.transaction():
            await handler(conn, message, Context(envelope, time.time()))

    async def placed_servers(self, host: str) -> dict[str, str]:
        async with self.pool.acquire() as conn:
            return await queries.placed(conn, host)

    async def desired_network(self, hosts: list[str]) -> dict[str, list[Row]]:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await queries.desired_network(conn, hosts)

    async def desired_firewall(self, hosts: list[str]) -> dict[str, list[Row]]:
        async with self.pool.acquire() as conn:
            return dict(json.loads(await queries.desired_firewall(conn, hosts)))

    async def server_ports(self, server_id: str, hosts: list[str]) -> list[Row]:
        return queries.rows(await self.pool.fetch(queries.PORTS_OF_SERVER_SQL, server_id, hosts))

    async def bound_ports(self, server_id: str, hosts: list[str]) -> list[Row]:
        return queries.rows(await self.pool.fetch(queries.DEVICE_PORTS_SQL, server_id, hosts))

    async def _scope(self) -> list[str]:
        """The hosts the metadata service answers for: those given, or every host with servers."""
        if self.hosts:
            return sorted(self.hosts)
        return list(await self.pool.fetchval("SELECT coalesce(array_agg(DISTINCT host), '{}') FROM servers"))

    async def metadata_instance(self, network_id: str, ip: str) -> Row | None:
        record = await self.pool.fetchrow(queries.INSTANCE_SQL, network_id, ip, await self._scope())
        return None if record is None else queries.rows([record])[0]

    async def metadata_interfaces(self, server_id: str) -> list[Row]:
        records = await self.pool.fetch(queries.INTERFACES_SQL, server_id, await self._scope())
        return queries.rows(records)

    async def image(self, image_id: str) -> Row | None:
        record = await self.pool.fetchrow(
            "SELECT id, status, disk_format, size, checksum, os_hash_algo, os_hash_value "
            "FROM images WHERE id = $1",
            image_id,
        )
        return None if record is None else queries.rows([record])[0]

    async def download_image(self, image_id: str, dest: Path) -> Row:
        found = await self.image(image_id)
        if found is not None and found["status"] != "active":
            raise ImageUnavailable(f"Image {image_id} is not active (its status is {found['status']}).")
        source = self.image_dir / image_id if self.image_dir is not None else None
        if source is None or not await asyncio.to_thread(source.is_file):
            raise ImageUnavailable(f"Image {image_id} could not be found.")
        await asyncio.to_thread(shutil.copyfile, source, dest)
        check = Checksums(found or {})
        check.update(await asyncio.to_thread(dest.read_bytes))
        check.verify(image_id)
        return found or {"id": image_id, "status": "active", "disk_format": None}


class DirectoryImages:
    """Images from a directory the test fills (`make_image`), for InstanceStorage alone."""

    def __init__(self, image_dir: Path) -> None:
        self.image_dir = image_dir

    async def download_image(self, image_id: str, dest: Path) -> Row:
        source = self.image_dir / image_id
        if not await asyncio.to_thread(source.is_file):
            raise ImageUnavailable(f"Image {image_id} could not be found.")
        await asyncio.to_thread(shutil.copyfile, source, dest)
        return {"id": image_id, "status": "active", "disk_format": None}
