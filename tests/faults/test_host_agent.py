"""A host agent killed (SIGKILL) and started again, as separate processes beside a cloud of their
own (`actorstack up --hosts 0`, its own database and vhost, hosts down after 5 s of silence).

While the agent is dead its host shows down (os-services, os-hypervisors) and its servers keep
their status, show Nova's host_status UNKNOWN (admin, microversion 2.16) and power state NOSTATE
(0, "unknown"); when it returns they show the host UP and their real power state again. With
real guests on qemu:///system a running domain survives the agent: the agent that returns keeps
it running (same libvirt id, same QEMU process), reaps the domain of a server deleted meanwhile
(domain and files), and reports a server whose domain vanished (SHUTOFF, NOSTATE), which
`actorstack doctor` lists. The qemu test fails rather than skips in CI (CI=true), as the
real-guest tests do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from actorstack.scratch import ScratchProcess, ScratchServices
from tests.api.conftest import Cloud, running_cloud
from tests.conftest import ROOT, RUN_PREFIX, qemu_scratch_dir, separate_services, wait_until
from tests.hostagent.test_libvirt_driver import qemu_system_unavailable

pytestmark = pytest.mark.faults

DOWN_AFTER = 8  # ACTORSTACK_HOST_DOWN_AFTER of these clouds (s)
NOSTATE, RUNNING, SHUTDOWN = 0, 1, 4
SHOW = {"OpenStack-API-Version": "compute 2.16"}
CREATE = {"OpenStack-API-Version": "compute 2.37"}  # "networks": "none"


@contextlib.asynccontextmanager
async def own_cloud(suffix: str, state_dir: Path) -> AsyncIterator[tuple[Cloud, ScratchServices]]:
    """`actorstack up --hosts 0` on a database and vhost of its own; hosts down after DOWN_AFTER."""
    async with (
        separate_services(suffix) as services,
        running_cloud(
            services,
            state_dir,
            "--hosts",
            "0",
            "--storage",
            "none",
            "--no-test-image",
            env={"ACTORSTACK_HOST_DOWN_AFTER": str(DOWN_AFTER)},
        ) as cloud,
    ):
        yield cloud, services


class AgentProcess:
    """`actorstack hostagent` as a process of its own beside the cloud's `up` (with its
    DOWN_AFTER), as on another machine: a state directory of its own, the internal API and a host
    token, no database. Started again after a kill, it logs on in the
    same file."""

    def __init__(self, cloud: Cloud, name: str, virt: str) -> None:
        self.cloud = cloud
        self.name = name
        self.virt = virt
        self.state_dir = cloud.state_dir / f"agent-{name}"
        self.state_dir.mkdir(mode=0o755, exist_ok=True)
        self.credentials = cloud.scratch.host_env(name)
        self.process: ScratchProcess | None = None

    def start(self) -> None:
        assert self.process is None or not self.process.alive
        self.process = self.cloud.scratch.start(
            self.name,
            "hostagent",
            "--virt",
            self.virt,
            "--name",
            self.name,
            "--host-heartbeat",
            "1",
            "--sync-interval",
            "1",
            "--network",
            "none",
            "--storage",
            "none",
            "--reserved-host-memory-mb",
            "0",
            "--shutdown-timeout",
            "5",
            "--log-format",
            "json",
            env={**self.credentials, "ACTORSTACK_STATE_DIR": str(self.state_dir)},
        )

    def kill(self) -> None:
        """SIGKILL: no goodbye, no cleanup, as a crash or an OOM kill."""
        if self.process is not None:
            self.process.kill()

    def log(self) -> str:
        return self.process.tail(4000) if self.process is not None else ""


async def poll(predicate: Any, what: str, timeout: float = 60.0, interval: float = 0.5) -> Any:
    """wait_until at a pace an API round trip can keep (each poll is a request or two)."""
    return await wait_until(predicate, timeout, what, interval)


async def show(cloud: Cloud, token: str, server_id: str) -> dict[str, Any]:
    status, body, _ = await cloud.request(
        "GET", f"/compute/v2.1/servers/{server_id}", token=token, headers=SHOW
    )
    assert status == 200, body
    return body["server"]


async def host_state(cloud: Cloud, token: str, name: str) -> tuple[str, str]:
    """(os-services state, os-hypervisors state) of the host."""
    _, services, _ = await cloud.request("GET", f"/compute/v2.1/os-services?host={name}", token=token)
    _, hypervisors, _ = await cloud.request("GET", "/compute/v2.1/os-hypervisors/detail", token=token)
    service = [s["state"] for s in services["services"] if s["host"] == name]
    hypervisor = [h["state"] for h in hypervisors["hypervisors"] if h["service"]["host"] == name]
    return (service[0] if service else "", hypervisor[0] if hypervisor else "")


async def create_server(cloud: Cloud, token: str, name: str, image_id: str) -> str:
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        token=token,
        headers=CREATE,
        json={"server": {"name": name, "imageRef": image_id, "flavorRef": "42", "networks": "none"}},
    )
    assert status == 202, body
    return body["server"]["id"]


async def active(cloud: Cloud, token: str, server_id: str, timeout: float = 120.0) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        server = await show(cloud, token, server_id)
        assert server["status"] != "ERROR", server.get("fault")
        return (
            server if server["status"] == "ACTIVE" and server["OS-EXT-STS:power_state"] == RUNNING else None
        )

    return await poll(ready, f"server {server_id} ACTIVE", timeout)


async def delete_all(cloud: Cloud, token: str, server_ids: list[str]) -> None:
    for server_id in server_ids:
        await cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=token)

    async def gone() -> bool:
        codes = [
            (await cloud.request("GET", f"/compute/v2.1/servers/{s}", token=token))[0] for s in server_ids
        ]
        return all(code == 404 for code in codes)

    await poll(gone, "the servers deleted", 90)


def upload_image(cloud: Cloud, path: Path, disk_format: str) -> str:
    image = cloud.openstack(
        "image",
        "create",
        "--disk-format",
        disk_format,
        "--container-format",
        "bare",
        "--public",
        "--file",
        str(path),
        f"{RUN_PREFIX}-img-{uuid.uuid4().hex[:6]}",
    )
    return image["id"]


# --- the host goes down and comes back (the test driver: cheap) -------------------------------------------


async def test_a_killed_agents_host_goes_down_and_its_servers_show_unknown_until_it_returns(
    tmp_path: Path,
) -> None:
    async with own_cloud("hadown", tmp_path) as (cloud, services):
        agent = AgentProcess(cloud, f"{RUN_PREFIX}-t1", "test")
        try:
            await _down_and_back(cloud, agent, tmp_path)
        finally:
            agent.kill()


async def _down_and_back(cloud: Cloud, agent: AgentProcess, tmp_path: Path) -> None:
    admin = await cloud.token()
    agent.start()
    await poll(lambda: _is(host_state(cloud, admin, agent.name), ("up", "up")), "the host up", 120)
    raw = tmp_path / "tiny.raw"
    raw.write_bytes(b"\0" * (1024 * 1024))
    image_id = upload_image(cloud, raw, "raw")
    member = await cloud.new_member("hadown")
    mine = await cloud.token(member)
    server_id = await create_server(cloud, mine, "survivor", image_id)
    try:
        server = await active(cloud, admin, server_id)
        assert server["host_status"] == "UP"
        assert "host_status" not in await show(cloud, mine, server_id)  # admin only, as Nova's policy

        agent.kill()
        await poll(
            lambda: _is(host_state(cloud, admin, agent.name), ("down", "down")),
            "the host down",
            DOWN_AFTER + 60,
        )
        seen = await poll(
            lambda: _when(show(cloud, admin, server_id), lambda s: s["host_status"] == "UNKNOWN"),
            "host_status UNKNOWN",
            60,
        )
        assert (seen["status"], seen["OS-EXT-STS:vm_state"], seen["OS-EXT-STS:power_state"]) == (
            "ACTIVE",
            "active",
            NOSTATE,
        )
        theirs = await show(cloud, mine, server_id)
        assert (theirs["status"], theirs["OS-EXT-STS:power_state"]) == ("ACTIVE", NOSTATE)
        status, listed, _ = await cloud.request(
            "GET", "/compute/v2.1/servers/detail?all_tenants=1", token=admin, headers=SHOW
        )
        assert status == 200
        [row] = [s for s in listed["servers"] if s["id"] == server_id]
        assert (row["host_status"], row["OS-EXT-STS:power_state"]) == ("UNKNOWN", NOSTATE)

        # Back: the test hypervisor forgot its domains with the process, so the agent defines
        # the server's again from the definition it kept and starts it, as the server was.
        agent.start()
        back = await poll(
            lambda: _when(
                show(cloud, admin, server_id),
                lambda s: s["host_status"] == "UP" and s["OS-EXT-STS:power_state"] == RUNNING,
            ),
            "the host back",
            120,
        )
        assert back["status"] == "ACTIVE"
        assert await host_state(cloud, admin, agent.name) == ("up", "up")
        for action, status_after in (("os-stop", "SHUTOFF"), ("os-start", "ACTIVE")):
            status, _, _ = await cloud.request(
                "POST", f"/compute/v2.1/servers/{server_id}/action", token=mine, json={action: None}
            )
            assert status == 202  # the agent that came back takes requests
            await poll(
                lambda after=status_after: _when(
                    show(cloud, admin, server_id), lambda s: s["status"] == after
                ),
                status_after,
                60,
            )

        # A live host an operator disabled is in MAINTENANCE, and its servers' states hold.
        latest = {"OpenStack-API-Version": "compute 2.53"}
        _, listed, _ = await cloud.request(
            "GET", f"/compute/v2.1/os-services?host={agent.name}", token=admin, headers=latest
        )
        service = listed["services"][0]["id"]
        for status in ("disabled", "enabled"):
            code, body, _ = await cloud.request(
                "PUT",
                f"/compute/v2.1/os-services/{service}",
                token=admin,
                headers=latest,
                json={"status": status},
            )
            assert code == 200, body
            if status == "disabled":
                held = await show(cloud, admin, server_id)
                assert (held["host_status"], held["OS-EXT-STS:power_state"]) == ("MAINTENANCE", RUNNING)
    finally:
        await delete_all(cloud, admin, [server_id])


async def _is(value: Any, expected: Any) -> bool:
    return await value == expected


async def _when(value: Any, check: Any) -> Any:
    got = await value
    return got if check(got) else None


# --- real guests survive the agent ---------------------------------------------------------------------


def _why_not_qemu() -> str | None:
    if os.geteuid() != 0:
        return "needs root for qemu:///system"
    return qemu_system_unavailable()


def virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, timeout=60
    )


def domain_identity(server_id: str) -> tuple[str, str] | None:
    """(libvirt id, QEMU pid) of the server's running domain, or None when it is not running."""
    domid = virsh("domid", f"instance-{server_id}")
    pid_file = Path(f"/run/libvirt/qemu/instance-{server_id}.pid")
    if (
        domid.returncode != 0
        or not domid.stdout.strip()
        or domid.stdout.strip() == "-"
        or not pid_file.exists()
    ):
        return None
    pid = pid_file.read_text().strip()
    if not Path(f"/proc/{pid}").exists():
        return None
    return domid.stdout.strip(), pid


def domain_exists(server_id: str) -> bool:
    return virsh("dominfo", f"instance-{server_id}").returncode == 0


def remove_domain(server_id: str) -> None:
    virsh("destroy", f"instance-{server_id}")
    virsh("undefine", f"instance-{server_id}")


@pytest.fixture
def qemu_dir() -> Iterator[Path]:
    with qemu_scratch_dir("agent", _why_not_qemu(), "the host agent's real-guest fault test") as path:
        yield path


async def test_a_returning_agent_keeps_running_guests_reaps_deleted_ones_and_reports_vanished_ones(
    qemu_dir: Path,
) -> None:
    created: list[str] = []
    async with own_cloud("hareal", qemu_dir) as (cloud, services):
        agent = AgentProcess(cloud, f"{RUN_PREFIX}-q1", "qemu")
        try:
            await _real_guests_survive(cloud, services, agent, qemu_dir, created)
        finally:
            agent.kill()
            for server_id in created:
                remove_domain(server_id)
    left = [s for s in created if domain_exists(s)]
    assert not left, f"domains left on qemu:///system: {left}"


async def _real_guests_survive(
    cloud: Cloud, services: ScratchServices, agent: AgentProcess, work: Path, created: list[str]
) -> None:
    admin = await cloud.token()
    agent.start()
    await poll(lambda: _is(host_state(cloud, admin, agent.name), ("up", "up")), "the host up", 120)
    disk = work / "blank.qcow2"  # no OS: the guest sits in its firmware, which is all a domain needs
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "16M"], check=True, capture_output=True)
    image_id = upload_image(cloud, disk, "qcow2")
    keep, deleted, vanished = [
        await create_server(cloud, admin, name, image_id) for name in ("keep", "deleted", "vanished")
    ]
    created += [keep, deleted, vanished]
    for server_id in created:
        await active(cloud, admin, server_id, timeout=180)
    before = {s: domain_identity(s) for s in created}
    assert all(before.values()), before
    instances = agent.state_dir / "instances"

    agent.kill()
    await poll(
        lambda: _when(show(cloud, admin, keep), lambda s: s["host_status"] == "UNKNOWN"),
        "host_status UNKNOWN",
        DOWN_AFTER + 60,
    )
    assert domain_identity(keep) == before[keep]  # the guests outlive their agent
    # Meanwhile: one server is deleted for good (its host never heard: the deleting timer's
    # outcome), and one server's domain is removed behind the cloud's back.
    conn = await asyncpg.connect(services.database_url)
    try:
        await conn.execute(
            "UPDATE servers SET vm_state = 'deleted', task_state = NULL, version = version + 1, "
            "terminated_at = extract(epoch FROM now()) WHERE id = $1",
            deleted,
        )
    finally:
        await conn.close()
    remove_domain(vanished)

    agent.start()
    back = await poll(
        lambda: _when(show(cloud, admin, keep), lambda s: s["host_status"] == "UP"), "the host back", 120
    )
    assert (back["status"], back["OS-EXT-STS:power_state"]) == ("ACTIVE", RUNNING)
    gone = await poll(
        lambda: _when(show(cloud, admin, vanished), lambda s: s["status"] == "SHUTOFF"),
        "the vanished server SHUTOFF",
        60,
    )
    assert gone["OS-EXT-STS:power_state"] == NOSTATE
    await poll(
        lambda: _async(not domain_exists(deleted) and not (instances / deleted).exists()),
        "the deleted server's domain and files reaped",
        60,
    )
    assert domain_identity(keep) == before[keep], "the returning agent restarted a running guest"
    assert (instances / keep).is_dir() and (instances / vanished).is_dir()

    # The doctor counts what the host reported after the server last changed: the next sync's.
    doctor = await poll(
        lambda: _when(_doctor(services), lambda d: any(f["resource_id"] == vanished for f in d["findings"])),
        "the doctor to list the vanished server",
        60,
        1,
    )
    kinds = {(f["kind"], f["resource_id"]) for f in doctor["findings"]}
    assert ("server_without_domain", vanished) in kinds, doctor
    assert not {k for k in kinds if k[1] in (keep, deleted)}, doctor
    await delete_all(cloud, admin, [keep, vanished])
    assert not domain_exists(keep) and not (instances / keep).exists()


async def _async(value: Any) -> Any:
    return value


async def _doctor(services: ScratchServices) -> dict[str, Any]:
    """`actorstack doctor --format json` against the cloud's database (its findings)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "actorstack.cli",
        "doctor",
        "--format",
        "json",
        cwd=ROOT,
        env=services.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode in (0, 1), err.decode()
    report = json.loads(out)
    assert proc.returncode == (1 if report["findings"] else 0)
    return report
