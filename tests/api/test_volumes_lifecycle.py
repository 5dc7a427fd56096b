"""A volume's life through the real `openstack` CLI, end to end: the API, the volume actor and a
storage agent (create, extend, reset, delete). These tests need a storage agent that registered a
backend in `volume_backends`; on a cloud without one they are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api.conftest import CliError, Cloud, Credentials

AGENT_WAIT = 20.0  # seconds for `actorstack up`'s storage agents to report in


def wait_volume(
    cloud: Cloud, volume: str, who: Credentials | None = None, *, timeout: float = 60, **expected: Any
) -> dict[str, Any]:
    """`volume show` until every expected field has its value; fails fast on an error status."""
    deadline = time.monotonic() + timeout
    while True:
        shown = cloud.openstack("volume", "show", volume, who=who)
        if all(shown.get(k) == value for k, value in expected.items()):
            return shown
        if shown["status"].startswith("error") and expected.get("status") != shown["status"]:
            raise AssertionError(f"volume {volume} went to {shown['status']} waiting for {expected}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"volume {volume} is {shown['status']} (size {shown['size']}), not {expected}, "
                f"after {timeout}s"
            )
        time.sleep(0.3)


def wait_gone(cloud: Cloud, volume: str, who: Credentials | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            shown = cloud.openstack("volume", "show", volume, who=who)
        except CliError as exc:
            assert "No Volume found for" in exc.stderr, exc.stderr
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"volume {volume} is still there ({shown['status']}) after {timeout}s")
        time.sleep(0.3)


@pytest.fixture
async def storage(pool: Any) -> None:
    deadline = time.monotonic() + AGENT_WAIT
    while not await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM volume_backends WHERE enabled "
        "AND heartbeat_at > now() - interval '30 seconds')"
    ):
        if time.monotonic() > deadline:
            pytest.skip("no storage agent registered a volume backend: the storage agent has not landed")
        await asyncio.sleep(0.5)


@pytest.fixture
async def project(cloud: Cloud, pool: Any) -> AsyncIterator[Credentials]:
    who = await cloud.new_member("life")
    yield who
    for volume_id in [
        r["id"] for r in await pool.fetch("SELECT id FROM volumes WHERE project_id = $1", who.project_id)
    ]:
        # whatever a failed test left behind: reset it and let the actor delete it
        try:
            cloud.openstack("volume", "set", "--state", "error", "--detached", volume_id, fmt=None)
            cloud.openstack("volume", "delete", volume_id, who=who, fmt=None)
        except CliError:
            pass


async def test_a_volume_is_created_extended_reset_and_deleted_through_the_cli(
    cloud: Cloud, project: Credentials, storage: None
) -> None:
    name = f"vol-{uuid.uuid4().hex[:8]}"
    created = cloud.openstack(
        "volume", "create", "--size", "1", "--property", "purpose=life", name, who=project
    )
    assert created["status"] == "creating"
    shown = wait_volume(cloud, name, project, status="available")
    assert shown["size"] == 1 and shown["properties"] == {"purpose": "life"}
    assert [v["Status"] for v in cloud.openstack("volume", "list", "--name", name, who=project)] == [
        "available"
    ]
    admin_view = cloud.openstack("volume", "show", created["id"])
    assert admin_view["os-vol-host-attr:host"]  # placed on a backend

    cloud.openstack("volume", "set", "--size", "2", name, who=project, fmt=None)
    wait_volume(cloud, name, project, status="available", size=2)
    limits = {
        row["Name"]: row["Value"] for row in cloud.openstack("limits", "show", "--absolute", who=project)
    }
    assert limits["total_volumes_used"] == 1 and limits["total_gigabytes_used"] == 2

    cloud.openstack("volume", "set", "--state", "error", created["id"], fmt=None)
    wait_volume(cloud, name, project, status="error")
    cloud.openstack("volume", "delete", name, who=project, fmt=None)
    wait_gone(cloud, created["id"], project)
    assert cloud.openstack("volume", "list", who=project) == []


async def test_a_volume_from_an_image_becomes_available_and_bootable(
    cloud: Cloud, project: Credentials, storage: None, tmp_path: Any
) -> None:
    path = tmp_path / "disk.raw"
    path.write_bytes(b"\1" * (1024 * 1024))
    image = cloud.openstack(
        "image",
        "create",
        "--file",
        str(path),
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--public",
        f"img-{uuid.uuid4().hex[:8]}",
    )
    try:
        created = cloud.openstack(
            "volume",
            "create",
            "--image",
            image["id"],
            "--size",
            "1",
            f"boot-{uuid.uuid4().hex[:8]}",
            who=project,
        )
        shown = wait_volume(cloud, created["id"], project, status="available")
        assert shown["bootable"] is True and shown["volume_image_metadata"]["image_id"] == image["id"]
        cloud.openstack("volume", "delete", created["id"], who=project, fmt=None)
        wait_gone(cloud, created["id"], project)
    finally:
        cloud.openstack("image", "delete", image["id"], fmt=None)
