"""Fixtures for the host agent's tests: a working directory per test, small images, and
libvirt test drivers that are closed (their domains gone) when the test ends.

Every name a test creates starts with PREFIX (`hatest-<hex>`, unique per run): directories,
host names, and the display names of servers, which libvirt keeps as each domain's <title>
(`virsh list --title` finds a leftover by it; the domain names are `instance-<server uuid>`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hostagent.agent import AgentSettings, HostAgent
from hostagent.virt.libvirt import LibvirtDriver
from protocol.routing import agent_queue
from tests.hostagent.local_control import LocalControl

PREFIX = f"hatest-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory of the test's own, removed afterwards whatever happened. Under /tmp and
    world-traversable, so QEMU (running as another user) can open the disks in it."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def image_dir(workdir: Path) -> Path:
    path = workdir / "images"
    path.mkdir()
    return path


def make_image(image_dir: Path, size: str = "16M", fmt: str = "qcow2", *extra: str) -> str:
    """A small image in the image store, as the Image API leaves it; returns its id."""
    image_id = str(uuid.uuid4())
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", fmt, *extra, str(image_dir / image_id), size], check=True
    )
    return image_id


def qemu_img_info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


@pytest.fixture
async def open_test_driver(workdir: Path) -> AsyncIterator[Callable[..., Awaitable[LibvirtDriver]]]:
    """Open test-driver hypervisors (each its own); all are closed when the test ends."""
    opened: list[LibvirtDriver] = []

    async def open_driver(name: str = "host", **kwargs: object) -> LibvirtDriver:
        driver = LibvirtDriver.for_test(workdir / f"{PREFIX}-{name}", f"{PREFIX}-{name}", **kwargs)  # type: ignore[arg-type]
        await driver.open()
        opened.append(driver)
        return driver

    yield open_driver
    for driver in opened:
        await driver.close()


SYNC = 0.5  # the agents' power-state sync period in these tests (s)
StartAgent = Callable[..., Awaitable[HostAgent]]


@pytest.fixture
async def start_agent(
    pool: asyncpg.Pool, broker: Any, workdir: Path, image_dir: Path
) -> AsyncIterator[StartAgent]:
    """Start HostAgents (all stopped, their rows and queues removed, when the test ends)."""
    started: list[HostAgent] = []
    names: set[str] = set()

    async def start(
        name: str | None = None, *, driver: type[LibvirtDriver] = LibvirtDriver, **overrides: Any
    ) -> HostAgent:
        """`driver`: a LibvirtDriver subclass, to inject a hypervisor's failures."""
        name = name or f"{PREFIX}-{uuid.uuid4().hex[:6]}"
        values: dict[str, Any] = {
            "name": name,
            "state_dir": workdir / name,
            "heartbeat": 0.2,
            "sync_interval": SYNC,
        }
        values.update(overrides)
        settings = AgentSettings(**values)
        agent = HostAgent(
            settings, LocalControl(pool, image_dir), broker, driver.for_test(settings.state_dir, name)
        )
        await agent.start()
        started.append(agent)
        names.add(name)
        return agent

    yield start
    for agent in reversed(started):
        await agent.stop()
    await pool.execute("DELETE FROM compute_hosts WHERE name = ANY($1::text[])", list(names))
    channel = await broker.channel()
    for name in names:
        await channel.queue_delete(agent_queue(name))
    await channel.close()
