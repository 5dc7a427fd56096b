"""`actorstack doctor [--fix]` against a running cloud of its own (`up --hosts 2 --virt test`, its
own database and vhost): a clean cloud reports nothing and exits 0; each kind of problem, made
in the cloud, is reported with its resource and what --fix does; --fix repairs what is safe
through the actors (a stuck server, volume and port end in their error states with the timeout
their timer would have sent, orphaned claims are released, a domain without a server is
destroyed with its files by its host's agent) and leaves the rest listed (a server whose domain
vanished), exiting 1 while anything remains.

Problems are made the way they arise: a timer row lost (the row's transitional state with no
timer), a claim whose release never came, a server deleted in the database whose host never
heard, a domain destroyed behind its server's back (a stray `agent.destroy`).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from actors import db, outbox
from actorstack.scratch import ScratchServices
from protocol import Envelope, Target
from protocol import compute as m
from tests.api.conftest import CliError, Cloud, running_cloud
from tests.conftest import ROOT, RUN_PREFIX, separate_services
from tests.faults.test_host_agent import active, create_server, delete_all, poll, show, upload_image

OLDER_THAN = "30"
AN_HOUR_AGO = "extract(epoch FROM now()) - 3600"


@pytest.fixture(scope="module")
async def doctor_cloud(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Cloud, ScratchServices]]:
    state_dir = tmp_path_factory.mktemp(f"{RUN_PREFIX}-doctor")
    async with separate_services("doctor") as services:
        async with running_cloud(
            services,
            state_dir,
            "--hosts",
            "2",
            "--virt",
            "test",
            "--network",
            "none",
            "--host-heartbeat",
            "1",
            "--sync-interval",
            "1",
        ) as cloud:
            await poll(lambda: _hosts_up(cloud, 2), "both hosts up", 120)
            yield cloud, services


async def _hosts_up(cloud: Cloud, count: int) -> bool:
    status, body, _ = await cloud.request("GET", "/compute/v2.1/os-hypervisors")
    return status == 200 and sum(h["state"] == "up" for h in body["hypervisors"]) == count


@pytest.fixture(scope="module")
def image_id(doctor_cloud: tuple[Cloud, ScratchServices], tmp_path_factory: pytest.TempPathFactory) -> str:
    cloud, _ = doctor_cloud
    path = tmp_path_factory.mktemp("img") / "tiny.raw"
    path.write_bytes(b"\0" * (1024 * 1024))
    return upload_image(cloud, path, "raw")


async def doctor(services: ScratchServices, *args: str) -> tuple[int, str]:
    """Run `actorstack doctor ARGS` against the cloud's database: (exit code, stdout)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "actorstack.cli",
        "doctor",
        "--older-than",
        OLDER_THAN,
        *args,
        cwd=ROOT,
        env=services.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode in (0, 1), err.decode()
    return proc.returncode, out.decode()


async def report(services: ScratchServices, *args: str) -> dict[str, Any]:
    code, out = await doctor(services, "--format", "json", *args)
    document = json.loads(out)
    assert code == (1 if document["findings"] else 0), document
    return document


def keys(findings: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(f["kind"], f["resource_type"], f["resource_id"]) for f in findings}


async def reported_after(services: ScratchServices, server_ids: list[str], present: bool) -> None:
    """Until every host has reported (after now) with these servers' instances present or not."""
    since = time.time()
    conn = await db.connect(services.database_url)  # with the jsonb codec
    try:

        async def caught_up() -> bool:
            rows = await conn.fetch("SELECT domains, extract(epoch FROM reported_at) AS at FROM host_domains")
            seen = {s for r in rows for s in r["domains"]}
            return (
                bool(rows)
                and all(r["at"] > since for r in rows)
                and all((s in seen) == present for s in server_ids)
            )

        await poll(caught_up, "the hosts' reports", 60)
    finally:
        await conn.close()


async def test_a_clean_cloud_reports_nothing(
    doctor_cloud: tuple[Cloud, ScratchServices], image_id: str
) -> None:
    cloud, services = doctor_cloud
    admin = await cloud.token()
    server_id = await create_server(cloud, admin, "healthy", image_id)
    try:
        await active(cloud, admin, server_id)
        await reported_after(services, [server_id], present=True)
        code, out = await doctor(services)
        assert (code, out.strip()) == (0, "No problems found.")
        assert await report(services, "--fix") == {"findings": [], "fixed": []}
    finally:
        await delete_all(cloud, admin, [server_id])


async def test_each_problem_is_reported_and_fix_repairs_what_is_safe(
    doctor_cloud: tuple[Cloud, ScratchServices], image_id: str
) -> None:
    cloud, services = doctor_cloud
    admin = await cloud.token()
    servers = [await create_server(cloud, admin, name, image_id) for name in ("stuck", "deleted", "vanished")]
    volume = cloud.openstack("volume", "create", "--size", "1", f"{RUN_PREFIX}-doctor")["id"]
    network = cloud.openstack("network", "create", f"{RUN_PREFIX}-doctor")["id"]
    port = cloud.openstack("port", "create", "--network", network, f"{RUN_PREFIX}-doctor")["id"]
    pool = await db.create_pool(services.database_url, min_size=1, max_size=2)
    try:
        await _problems_found_and_fixed(cloud, services, pool, admin, servers, volume, port)
    finally:
        await pool.close()
        await delete_all(cloud, admin, servers)
        for kind, resource in (("port", port), ("network", network), ("volume", volume)):
            try:
                cloud.openstack(kind, "delete", resource, fmt=None)
            except CliError:
                pass  # the test deleted it
    code, out = await doctor(services)
    assert (code, out.strip()) == (0, "No problems found."), out


async def _problems_found_and_fixed(
    cloud: Cloud,
    services: ScratchServices,
    pool: asyncpg.Pool,
    admin: str,
    servers: list[str],
    volume: str,
    port: str,
) -> None:
    stuck, deleted, vanished = servers
    for server_id in servers:
        await active(cloud, admin, server_id)
    await poll(lambda: _volume_status(cloud, volume, "available"), "the volume available", 60)
    host = (await show(cloud, admin, deleted))["OS-EXT-SRV-ATTR:host"]
    usage_before = await _usage(pool, host)
    claim = await pool.fetchrow(
        "SELECT vcpus, memory_mb, local_gb FROM allocations WHERE server_id = $1", deleted
    )
    ghost = str(uuid.uuid4())

    # A lost timer: transitional states no timer will end.
    await pool.execute(
        f"UPDATE servers SET task_state = 'powering-off', updated_at = {AN_HOUR_AGO}, "
        "version = version + 1 WHERE id = $1",
        stuck,
    )
    await pool.execute(
        "UPDATE volumes SET status = 'extending', target_size = 2, updated_at = now() - interval "
        "'1 hour', version = version + 1 WHERE id = $1",
        volume,
    )
    await pool.execute(
        "UPDATE ports SET status = 'BUILD', device_id = $2, binding_host_id = 'nowhere', "
        "updated_at = now() - interval '1 hour', version = version + 1 WHERE id = $1",
        port,
        ghost,
    )
    # A claim whose release never came (taken as the scheduler takes one).
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO allocations (server_id, host, project_id, vcpus, memory_mb, local_gb, "
            "created_at) VALUES ($1, $2, 'gone', 1, 64, 0, now() - interval '1 hour')",
            ghost,
            host,
        )
        await conn.execute(
            "UPDATE compute_hosts SET used_vcpus = used_vcpus + 1, used_memory_mb = used_memory_mb "
            "+ 64, generation = generation + 1 WHERE name = $1",
            host,
        )
    # A server deleted in the database an hour ago whose host never heard (nor its scheduler).
    await pool.execute(
        f"UPDATE servers SET vm_state = 'deleted', task_state = NULL, terminated_at = {AN_HOUR_AGO}, "
        f"updated_at = {AN_HOUR_AGO}, version = version + 1 WHERE id = $1",
        deleted,
    )
    # A domain destroyed behind its server's back.
    vanished_host = (await show(cloud, admin, vanished))["OS-EXT-SRV-ATTR:host"]
    shards = int(await db.cluster_setting(pool, "shards"))  # type: ignore[call-overload]
    async with pool.acquire() as conn, conn.transaction():
        await outbox.send(
            conn, [Envelope.new(Target("agent", vanished_host), m.Destroy(server_id=vanished))], shards
        )
    await poll(lambda: _server_status(cloud, admin, vanished, "SHUTOFF"), "the vanished server SHUTOFF", 60)

    expected = {
        ("stuck", "server", stuck),
        ("stuck", "volume", volume),
        ("stuck", "port", port),
        ("orphaned_allocation", "allocation", ghost),
        ("orphaned_allocation", "allocation", deleted),
        ("domain_without_server", "instance", deleted),
        ("server_without_domain", "server", vanished),
    }
    found = await poll(lambda: _report_with(services, expected), "the doctor's findings", 60, 1)
    assert keys(found["findings"]) == expected, found
    by_key = {(f["kind"], f["resource_id"]): f for f in found["findings"]}
    assert all(f["problem"] and f["fix"] for f in found["findings"])
    assert not by_key[("server_without_domain", vanished)]["fixable"]
    assert by_key[("domain_without_server", deleted)]["host"] == host

    fixed = await report(services, "--fix", "--wait", "90")
    assert keys(fixed["findings"]) == {("server_without_domain", "server", vanished)}, fixed
    assert keys(fixed["fixed"]) == expected - {("server_without_domain", "server", vanished)}, fixed

    # The repairs, as the actors made them.
    repaired = await show(cloud, admin, stuck)
    assert repaired["status"] == "ERROR" and "Timed out during powering-off" in repaired["fault"]["message"]
    assert await _volume_status(cloud, volume, "error_extending")
    assert cloud.openstack("port", "show", port)["status"] == "ERROR"
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM allocations WHERE server_id = ANY($1::text[])", [ghost, deleted]
        )
        == 0
    )
    # the ghost's claim and the deleted server's, both given back
    assert await _usage(pool, host) == tuple(u - c for u, c in zip(usage_before, claim.values(), strict=True))
    instance = cloud.state_dir / "hosts" / host / "instances" / deleted
    assert not instance.exists()
    await pool.execute(
        "UPDATE ports SET device_id = '', binding_host_id = '', version = version + 1 WHERE id = $1", port
    )  # the ghost's: deletable again


async def _report_with(
    services: ScratchServices, expected: set[tuple[str, str, str]]
) -> dict[str, Any] | None:
    found = await report(services)
    return found if keys(found["findings"]) >= expected else None


async def _volume_status(cloud: Cloud, volume: str, status: str) -> bool:
    return cloud.openstack("volume", "show", volume)["status"] == status


async def _server_status(cloud: Cloud, token: str, server_id: str, status: str) -> bool:
    return (await show(cloud, token, server_id))["status"] == status


async def _usage(pool: asyncpg.Pool, host: str) -> tuple[int, int, int]:
    row = await pool.fetchrow(
        "SELECT used_vcpus, used_memory_mb, used_local_gb FROM compute_hosts WHERE name = $1", host
    )
    return row["used_vcpus"], row["used_memory_mb"], row["used_local_gb"]
