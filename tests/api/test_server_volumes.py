"""Volumes on servers through the real `openstack` CLI: attach and detach (Nova's
os-volume_attachments driving the server and volume actors and the host's hot-plug), a delete of
an in-use volume refused, two servers racing for one volume, and boot from volume."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.api.conftest import Cloud


def wait_for(cloud: Cloud, what: str, predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)


def volume_status(cloud: Cloud, volume: str, status: str) -> Any:
    def check() -> Any:
        shown = cloud.openstack("volume", "show", volume)
        return shown if shown["status"] == status else None

    return wait_for(cloud, f"volume {volume} to be {status}", check)


def boot(cloud: Cloud, image: str) -> str:
    created = cloud.openstack(
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        image,
        "--nic",
        "none",
        "--wait",
        f"vm-{uuid.uuid4().hex[:8]}",
        timeout=180,
    )
    assert created["status"] == "ACTIVE"
    return created["id"]


def _attachments(shown: dict[str, Any]) -> list[dict[str, Any]]:
    value = shown["attachments"]
    return value if isinstance(value, list) else []


def test_attach_detach_extend_and_delete_through_the_cli(cloud: Cloud, image: str) -> None:
    server = boot(cloud, image)
    volume = cloud.openstack("volume", "create", "--size", "1", f"vol-{uuid.uuid4().hex[:8]}")["id"]
    volume_status(cloud, volume, "available")

    cloud.openstack("server", "add", "volume", server, volume, fmt=None)
    shown = volume_status(cloud, volume, "in-use")
    [attachment] = _attachments(shown)
    assert attachment["server_id"] == server and attachment["device"] == "/dev/vdb"
    server_shown = cloud.openstack("server", "show", server)
    assert volume in str(server_shown["volumes_attached"])
    err = cloud.openstack_fails("volume", "delete", volume)
    assert err.returncode != 0
    assert cloud.openstack("volume", "show", volume)["status"] == "in-use"

    cloud.openstack("server", "remove", "volume", server, volume, fmt=None)
    shown = volume_status(cloud, volume, "available")
    assert _attachments(shown) == []

    cloud.openstack("volume", "set", "--size", "2", volume, fmt=None)
    wait_for(cloud, "the extend", lambda: cloud.openstack("volume", "show", volume)["size"] == 2)
    volume_status(cloud, volume, "available")

    cloud.openstack("volume", "delete", volume, fmt=None)
    wait_for(
        cloud, "the volume to go", lambda: volume not in {v["ID"] for v in cloud.openstack("volume", "list")}
    )
    cloud.openstack("server", "delete", "--wait", server, fmt=None, timeout=120)


async def test_two_servers_racing_for_one_volume_one_wins(cloud: Cloud, image: str) -> None:
    servers = [boot(cloud, image), boot(cloud, image)]
    volume = cloud.openstack("volume", "create", "--size", "1", f"race-{uuid.uuid4().hex[:8]}")["id"]
    volume_status(cloud, volume, "available")
    token = await cloud.token()

    async def attach(server: str) -> tuple[int, Any]:
        status, body, _ = await cloud.request(
            "POST",
            f"/compute/v2.1/servers/{server}/os-volume_attachments",
            token=token,
            json={"volumeAttachment": {"volumeId": volume}},
        )
        return status, body

    results = await asyncio.gather(*(attach(s) for s in servers))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 400], results
    loser_body = next(body for status, body in results if status == 400)
    assert "badRequest" in loser_body and "Invalid volume" in loser_body["badRequest"]["message"]
    winner = next(s for s, (status, _) in zip(servers, results, strict=True) if status == 200)
    shown = volume_status(cloud, volume, "in-use")
    assert [a["server_id"] for a in _attachments(shown)] == [winner]
    for server in servers:
        status, body, _ = await cloud.request(
            "GET", f"/compute/v2.1/servers/{server}/os-volume_attachments", token=token
        )
        assert [a["volumeId"] for a in body["volumeAttachments"]] == ([volume] if server == winner else [])
    for server in servers:
        cloud.openstack("server", "delete", "--wait", server, fmt=None, timeout=120)
    volume_status(cloud, volume, "available")  # a deleted server's volume is detached, not deleted
    cloud.openstack("volume", "delete", volume, fmt=None)


def test_boot_from_a_volume_created_from_an_image(cloud: Cloud, image: str) -> None:
    created = cloud.openstack(
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--nic",
        "none",
        "--block-device",
        f"source_type=image,uuid={image},destination_type=volume,volume_size=1,boot_index=0",
        "--wait",
        f"bfv-{uuid.uuid4().hex[:8]}",
        timeout=180,
    )
    assert created["status"] == "ACTIVE"
    server = created["id"]
    attached = [
        v for v in cloud.openstack("volume", "list", "--long") if server in str(v.get("Attached to", ""))
    ]
    assert len(attached) == 1
    volume = cloud.openstack("volume", "show", attached[0]["ID"])
    assert volume["status"] == "in-use" and str(volume["bootable"]).lower() == "true"
    assert _attachments(volume)[0]["device"] == "/dev/vda"
    err = cloud.openstack_fails("server", "remove", "volume", server, volume["id"])
    assert "root" in (err.stderr + err.stdout)
    cloud.openstack("server", "delete", "--wait", server, fmt=None, timeout=120)
    volume_status(cloud, volume["id"], "available")
    cloud.openstack("volume", "delete", volume["id"], fmt=None)
    wait_for(
        cloud,
        "no volume file left",
        lambda: not [p for p in (cloud.state_dir / "volumes").glob("*") if volume["id"] in p.name],
    )
