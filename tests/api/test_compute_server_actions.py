"""Server actions as Nova answers them: lock and unlock (who may unlock, what a lock refuses),
the actions this cloud does not have yet (400 "not supported" after the 404 of a missing
server), restore and forceDelete, and Nova's deferred delete with a reclaim interval."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import Cloud, Credentials, running_cloud
from tests.conftest import separate_services

LATEST = {"OpenStack-API-Version": "compute 2.96"}


async def boot(cloud: Cloud, image: str, who: Credentials | None = None, **extra: Any) -> str:
    server = {"name": "act", "imageRef": image, "flavorRef": "42", "networks": "none", **extra}
    status, body, _ = await cloud.request(
        "POST", "/compute/v2.1/servers", who=who, json={"server": server}, headers=LATEST
    )
    assert status == 202, body
    return str(body["server"]["id"])


async def wait_for(
    cloud: Cloud, server_id: str, status: str, who: Credentials | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        code, body, _ = await cloud.request(
            "GET", f"/compute/v2.1/servers/{server_id}", who=who, headers=LATEST
        )
        if code == 200 and body["server"]["status"] == status:
            return dict(body["server"])
        assert code == 200 and body["server"]["status"] != "ERROR", body["server"].get("fault")
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.3)


async def act(cloud: Cloud, server_id: str, body: Any, who: Credentials | None = None, version: str = "2.96"):
    status, answer, _ = await cloud.request(
        "POST",
        f"/compute/v2.1/servers/{server_id}/action",
        who=who,
        json=body,
        headers={"OpenStack-API-Version": f"compute {version}"},
    )
    return status, answer


async def test_a_locked_server_refuses_its_owner_until_unlocked(cloud: Cloud, image: str) -> None:
    who = await cloud.new_member("lock")
    server = await boot(cloud, image, who)
    await wait_for(cloud, server, "ACTIVE", who)
    assert (await act(cloud, server, {"lock": {"locked_reason": "maintenance"}}, who))[0] == 202
    shown = await wait_for(cloud, server, "ACTIVE", who)
    assert (shown["locked"], shown["locked_reason"]) == (True, "maintenance")
    status, body = await act(cloud, server, {"os-stop": None}, who)
    assert status == 409 and body["conflictingRequest"]["message"] == f"Instance {server} is locked"
    status, _, _ = await cloud.request("DELETE", f"/compute/v2.1/servers/{server}", who=who)
    assert status == 409
    assert (await act(cloud, server, {"unlock": None}, who))[0] == 202
    shown = await wait_for(cloud, server, "ACTIVE", who)
    assert (shown["locked"], shown["locked_reason"]) == (False, None)
    assert (await act(cloud, server, {"os-stop": None}, who))[0] == 202
    await wait_for(cloud, server, "SHUTOFF", who)
    status, actions, _ = await cloud.request(
        "GET", f"/compute/v2.1/servers/{server}/os-instance-actions", who=who
    )
    assert [a["action"] for a in actions["instanceActions"]][:3] == ["stop", "unlock", "lock"]
    await cloud.request("DELETE", f"/compute/v2.1/servers/{server}", who=who)


async def test_an_admins_lock_is_the_admins_to_lift_and_locked_reason_needs_2_73(
    cloud: Cloud, image: str
) -> None:
    who = await cloud.new_member("adminlock")
    server = await boot(cloud, image, who)
    await wait_for(cloud, server, "ACTIVE", who)
    status, body = await act(cloud, server, {"lock": {"locked_reason": "x"}}, who, version="2.72")
    assert status == 202  # before 2.73 the lock body is not looked at
    assert (await act(cloud, server, {"unlock": None}, who))[0] == 202
    assert (await act(cloud, server, {"lock": {"bogus": 1}}, who))[0] == 400
    assert (await act(cloud, server, {"lock": None}))[0] == 202  # the cloud admin, another project
    status, body = await act(cloud, server, {"unlock": None}, who)
    assert status == 403 and "unlock:unlock_override" in body["forbidden"]["message"]
    assert (await act(cloud, server, {"os-stop": None}))[0] == 202  # an admin is not held by it
    assert (await act(cloud, server, {"unlock": None}))[0] == 202
    await cloud.request("DELETE", f"/compute/v2.1/servers/{server}", who=who)


async def test_actions_this_cloud_lacks_answer_not_supported_after_the_server_is_found(
    cloud: Cloud, image: str
) -> None:
    server = await boot(cloud, image)
    await wait_for(cloud, server, "ACTIVE")
    for body in (
        {"rebuild": {"imageRef": image}},
        {"resize": {"flavorRef": "84"}},
        {"createImage": {"name": "x"}},
    ):
        status, answer = await act(cloud, server, body)
        assert status == 400, body
        assert answer["badRequest"]["message"] == "The requested functionality is not supported."
    status, answer = await act(cloud, server, {"frobnicate": None})
    assert status == 400 and answer["badRequest"]["message"] == "There is no such action: frobnicate"
    missing = "00000000-0000-0000-0000-000000000000"
    for body in ({"rebuild": {"imageRef": image}}, {"restore": None}, {"forceDelete": None}):
        assert (await act(cloud, missing, body))[0] == 404, body
    status, answer = await act(cloud, server, {"restore": None})
    assert status == 409 and "while it is in vm_state active" in answer["conflictingRequest"]["message"]
    assert (await act(cloud, server, {"forceDelete": None}))[0] == 202  # in any state, as Nova
    deadline = time.monotonic() + 60
    while (await cloud.request("GET", f"/compute/v2.1/servers/{server}"))[0] != 404:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)


@pytest.fixture(scope="module")
async def reclaiming(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A cloud of its own (its own database and vhost) whose deletes are Nova's deferred
    deletes, reclaimed after 3 s."""
    state: Path = tmp_path_factory.mktemp("reclaim-state")
    async with (
        separate_services("reclaim") as services,
        running_cloud(
            services,
            state,
            "--hosts",
            "1",
            "--virt",
            "test",
            "--network",
            "none",
            env={"ACTORSTACK_RECLAIM_INSTANCE_INTERVAL": "3"},
        ) as cloud,
    ):
        yield cloud


async def _image(cloud: Cloud) -> str:
    status, body, _ = await cloud.request(
        "POST",
        "/image/v2/images",
        json={"name": "tiny", "disk_format": "raw", "container_format": "bare", "visibility": "public"},
    )
    assert status == 201, body
    status, _, _ = await cloud.request(
        "PUT",
        f"/image/v2/images/{body['id']}/file",
        data=b"\0" * 1024,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 204
    return str(body["id"])


async def test_a_deferred_delete_is_soft_until_reclaimed_and_restore_brings_it_back(
    reclaiming: Cloud,
) -> None:
    image = await _image(reclaiming)
    server = await boot(reclaiming, image)
    await wait_for(reclaiming, server, "ACTIVE")
    status, _, _ = await reclaiming.request("DELETE", f"/compute/v2.1/servers/{server}")
    assert status == 204
    soft = await wait_for(reclaiming, server, "SOFT_DELETED")
    assert soft["OS-EXT-STS:vm_state"] == "soft-delete" and soft["OS-EXT-STS:power_state"] == 4
    assert (await act(reclaiming, server, {"restore": None}))[0] == 202
    restored = await wait_for(reclaiming, server, "ACTIVE")
    assert restored["OS-EXT-STS:power_state"] == 1
    await asyncio.sleep(4)  # past the interval: a restored server is not reclaimed
    await wait_for(reclaiming, server, "ACTIVE")
    status, _, _ = await reclaiming.request("DELETE", f"/compute/v2.1/servers/{server}")
    await wait_for(reclaiming, server, "SOFT_DELETED")
    deadline = time.monotonic() + 30
    while (await reclaiming.request("GET", f"/compute/v2.1/servers/{server}"))[0] != 404:
        assert time.monotonic() < deadline, "the soft-deleted server was not reclaimed"
        await asyncio.sleep(0.3)
    status, listing, _ = await reclaiming.request(
        "GET", "/compute/v2.1/servers/detail?deleted=true&all_tenants=1"
    )
    assert [s["status"] for s in listing["servers"] if s["id"] == server] == ["DELETED"]


async def test_force_delete_deletes_a_soft_deleted_server_at_once(reclaiming: Cloud) -> None:
    image = await _image(reclaiming)
    server = await boot(reclaiming, image)
    await wait_for(reclaiming, server, "ACTIVE")
    await reclaiming.request("DELETE", f"/compute/v2.1/servers/{server}")
    await wait_for(reclaiming, server, "SOFT_DELETED")
    assert (await act(reclaiming, server, {"forceDelete": None}))[0] == 202
    status, actions, _ = await reclaiming.request(
        "GET", f"/compute/v2.1/servers/{server}/os-instance-actions"
    )
    assert [a["action"] for a in actions["instanceActions"]][:2] == ["delete", "delete"]
    deadline = time.monotonic() + 30
    while (await reclaiming.request("GET", f"/compute/v2.1/servers/{server}"))[0] != 404:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
