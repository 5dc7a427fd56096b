"""The server lifecycle through the real `openstack` CLI, on `actorstack up --hosts 3 --virt test`:
server actors, the scheduler and host agents driving libvirt's test driver."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.api.conftest import Cloud, Credentials

_LATEST = {"OpenStack-API-Version": "compute 2.96"}


def wait_status(
    cloud: Cloud, server: str, status: str, who: Credentials | None = None, timeout: float = 60
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        shown = cloud.openstack("server", "show", server, who=who)
        if shown["status"] == status:
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{server} is {shown['status']} (task {shown.get('OS-EXT-STS:task_state')}), "
                f"not {status}, after {timeout}s: {shown.get('fault')}"
            )
        time.sleep(0.3)


def test_server_lifecycle_through_the_cli(cloud: Cloud, image: str) -> None:
    name = f"vm-{uuid.uuid4().hex[:8]}"
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
        name,
        timeout=180,
    )
    assert created["status"] == "ACTIVE"
    server = created["id"]
    shown = cloud.openstack("server", "show", server)
    for field in (
        "status",
        "OS-EXT-STS:vm_state",
        "OS-EXT-STS:task_state",
        "OS-EXT-STS:power_state",
        "OS-EXT-SRV-ATTR:host",
        "flavor",
        "image",
        "addresses",
        "created",
        "updated",
    ):
        assert field in shown, field
    assert shown["OS-EXT-STS:vm_state"] == "active" and shown["OS-EXT-STS:power_state"] in (1, "Running")
    assert shown["OS-EXT-SRV-ATTR:host"]
    assert name in {s["Name"] for s in cloud.openstack("server", "list")}

    for command, status in (
        (("server", "stop"), "SHUTOFF"),
        (("server", "start"), "ACTIVE"),
        (("server", "reboot"), "ACTIVE"),
        (("server", "reboot", "--hard"), "ACTIVE"),
        (("server", "pause"), "PAUSED"),
        (("server", "unpause"), "ACTIVE"),
        (("server", "suspend"), "SUSPENDED"),
        (("server", "resume"), "ACTIVE"),
    ):
        cloud.openstack(*command, server, fmt=None)
        wait_status(cloud, server, status)

    err = cloud.openstack_fails("server", "start", server)
    assert "Cannot 'start' instance" in err.stderr and "409" in err.stderr

    cloud.openstack(
        "server",
        "set",
        "--name",
        f"{name}-renamed",
        "--property",
        "role=web",
        "--property",
        "tier=<&>",
        server,
        fmt=None,
    )
    shown = cloud.openstack("server", "show", server)
    assert shown["name"] == f"{name}-renamed"
    assert shown["properties"] in ({"role": "web", "tier": "<&>"}, "role='web', tier='<&>'")
    cloud.openstack("server", "unset", "--property", "role", server, fmt=None)
    assert "role" not in str(cloud.openstack("server", "show", server)["properties"])

    listed = cloud.openstack("server", "event", "list", server)
    actions = [a["Action"] for a in listed]
    assert actions[-1] == "create" and "stop" in actions
    # Each action's event, as Nova names it, finished with the state the action settled in.
    expected = {
        "create": "compute__do_build_and_run_instance",
        "stop": "compute_stop_instance",
        "pause": "compute_pause_instance",
        "resume": "compute_resume_instance",
    }
    for row in listed:
        if row["Action"] not in expected:
            continue
        shown = cloud.openstack("server", "event", "show", server, row["Request ID"])
        [event] = shown["events"]
        assert event["event"] == expected[row["Action"]], shown
        assert event["result"] == "Success" and event["finish_time"] >= event["start_time"], shown

    cloud.openstack("server", "delete", "--wait", server, fmt=None, timeout=120)
    err = cloud.openstack_fails("server", "show", server)
    assert "No Server found" in err.stderr or "404" in err.stderr


def test_hypervisors_and_compute_services_are_listed(cloud: Cloud) -> None:
    hypervisors = cloud.openstack("hypervisor", "list")
    assert len([h for h in hypervisors if h["State"] == "up"]) >= 3  # the cloud's three, at least
    services = cloud.openstack("compute", "service", "list")
    assert {s["Binary"] for s in services} == {"nova-compute"}
    assert len([s for s in services if s["State"] == "up" and s["Status"] == "enabled"]) >= 3


def test_anti_affinity_group_places_servers_on_different_hosts(cloud: Cloud, image: str) -> None:
    group = cloud.openstack(
        "server", "group", "create", "--policy", "anti-affinity", f"g-{uuid.uuid4().hex[:6]}"
    )
    hosts = []
    for i in range(3):
        server = cloud.openstack(
            "server",
            "create",
            "--flavor",
            "m1.nano",
            "--image",
            image,
            "--nic",
            "none",
            "--hint",
            f"group={group['id']}",
            "--wait",
            f"aa-{i}-{uuid.uuid4().hex[:6]}",
            timeout=180,
        )
        hosts.append(server["OS-EXT-SRV-ATTR:host"])
    assert len(set(hosts)) == 3
    members = cloud.openstack("server", "group", "show", group["id"])["members"]
    assert len(members) == 3
    for server_id in members if isinstance(members, list) else members.split(", "):
        cloud.openstack("server", "delete", "--wait", server_id, fmt=None, timeout=120)


async def test_illegal_action_is_a_409_with_novas_message_and_changes_nothing(
    cloud: Cloud, image: str, member: Credentials
) -> None:
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        who=member,
        json={"server": {"name": "x", "imageRef": image, "flavorRef": "42", "networks": "none"}},
        headers={"OpenStack-API-Version": "compute 2.96"},
    )
    assert status == 202, body
    server_id = body["server"]["id"]
    status, body, _ = await cloud.request(
        "POST", f"/compute/v2.1/servers/{server_id}/action", who=member, json={"os-start": None}
    )
    assert status == 409 and "Cannot 'start' instance" in body["conflictingRequest"]["message"]
    status, body, _ = await cloud.request(
        "POST", f"/compute/v2.1/servers/{server_id}/action", who=member, json={"os-exterminate": None}
    )
    assert status == 400
    status, _, _ = await cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", who=member)
    assert status == 204


async def test_multi_create_makes_max_count_servers_within_quota(cloud: Cloud, image: str) -> None:
    who = await cloud.new_member("multi")
    token = await cloud.token(who)
    admin = await cloud.token()
    status, _, _ = await cloud.request(
        "PUT",
        f"/compute/v2.1/os-quota-sets/{who.project_id}",
        token=admin,
        json={"quota_set": {"instances": 3}},
    )
    assert status == 200
    request = {
        "name": "many",
        "imageRef": image,
        "flavorRef": "42",
        "networks": "none",
        "min_count": 2,
        "max_count": 5,
        "return_reservation_id": True,
    }
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        token=token,
        json={"server": request},
        headers={"OpenStack-API-Version": "compute 2.96"},
    )
    assert status == 202 and body["reservation_id"].startswith("r-")
    _, listing, _ = await cloud.request("GET", "/compute/v2.1/servers", token=token)
    assert sorted(s["name"] for s in listing["servers"]) == ["many-1", "many-2", "many-3"]  # as many as fit
    request.update(min_count=1, max_count=1, return_reservation_id=False)
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        token=token,
        json={"server": request},
        headers={"OpenStack-API-Version": "compute 2.96"},
    )
    assert status == 403 and "Quota exceeded for instances" in body["forbidden"]["message"]
    for server in listing["servers"]:
        await cloud.request("DELETE", f"/compute/v2.1/servers/{server['id']}", token=token)


async def test_min_count_alone_makes_that_many_servers_and_max_below_min_is_refused(
    cloud: Cloud, image: str
) -> None:
    who = await cloud.new_member("mincount")
    token = await cloud.token(who)
    request = {"name": "pair", "imageRef": image, "flavorRef": "42", "networks": "none", "min_count": 2}
    status, body, _ = await cloud.request(
        "POST", "/compute/v2.1/servers", token=token, json={"server": request}, headers=_LATEST
    )
    assert status == 202 and "reservation_id" not in body and body["server"]["id"]
    _, listing, _ = await cloud.request("GET", "/compute/v2.1/servers", token=token)
    assert sorted(s["name"] for s in listing["servers"]) == ["pair-1", "pair-2"]  # max_count = min_count
    some = str(uuid.uuid4())
    for bad in (
        {"min_count": 3, "max_count": 2},
        {"min_count": 0},
        {"max_count": 2.5},
        {"max_count": 2, "networks": [{"uuid": some, "fixed_ip": "10.0.0.5"}]},  # one address, two servers
        {"max_count": 2, "networks": [{"port": some}]},  # one port, two servers
    ):
        status, body, _ = await cloud.request(
            "POST", "/compute/v2.1/servers", token=token, json={"server": {**request, **bad}}, headers=_LATEST
        )
        assert status == 400, bad
    for server in listing["servers"]:
        await cloud.request("DELETE", f"/compute/v2.1/servers/{server['id']}", token=token)


async def test_another_projects_server_is_invisible(cloud: Cloud, image: str) -> None:
    a, b = await cloud.new_member("a"), await cloud.new_member("b")
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        who=a,
        json={"server": {"name": "mine", "imageRef": image, "flavorRef": "42", "networks": "none"}},
        headers={"OpenStack-API-Version": "compute 2.96"},
    )
    assert status == 202
    server_id = body["server"]["id"]
    for method, path, payload in (
        ("GET", f"/compute/v2.1/servers/{server_id}", None),
        ("DELETE", f"/compute/v2.1/servers/{server_id}", None),
        ("POST", f"/compute/v2.1/servers/{server_id}/action", {"os-stop": None}),
    ):
        status, _, _ = await cloud.request(method, path, who=b, json=payload)
        assert status == 404, (method, path)
    status, listing, _ = await cloud.request("GET", "/compute/v2.1/servers", who=b)
    assert server_id not in {s["id"] for s in listing["servers"]}
    await cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", who=a)


async def quiet(cloud: Cloud, token: str) -> None:
    """Wait until no server of any test is being built or deleted: no claim is in flight."""
    deadline = time.monotonic() + 120
    while True:
        _, listing, _ = await cloud.request("GET", "/compute/v2.1/servers/detail?all_tenants=1", token=token)
        busy = [s for s in listing["servers"] if s["status"] == "BUILD" or s["OS-EXT-STS:task_state"]]
        if not busy:
            return
        assert time.monotonic() < deadline, [
            (s["name"], s["status"], s["OS-EXT-STS:task_state"]) for s in busy
        ]
        await asyncio.sleep(0.3)


async def test_fifty_concurrent_boots_never_exceed_host_capacity(cloud: Cloud, image: str) -> None:
    token = await cloud.token()
    await quiet(cloud, token)
    _, hypervisors, _ = await cloud.request("GET", "/compute/v2.1/os-hypervisors/detail", token=token)
    hypervisors["hypervisors"] = [h for h in hypervisors["hypervisors"] if h["state"] == "up"]
    memory = min(h["memory_mb"] for h in hypervisors["hypervisors"])
    # A quarter of a host, less 1 GiB of slack: a few small servers that other tests are still
    # deleting cannot change how many fit, so the expected count is exact whatever the timing.
    flavor_ram = memory // 4 - 1024
    # What fits now, on each host, counting servers other tests may still have there.
    room = {h["service"]["host"]: h["free_ram_mb"] // flavor_ram for h in hypervisors["hypervisors"]}
    flavor_name = f"quarter-{uuid.uuid4().hex[:6]}"
    _, flavor, _ = await cloud.request(
        "POST",
        "/compute/v2.1/flavors",
        token=token,
        json={"flavor": {"name": flavor_name, "ram": flavor_ram, "vcpus": 1, "disk": 0}},
    )
    who = await cloud.new_member("storm")
    status, _, _ = await cloud.request(
        "PUT",
        f"/compute/v2.1/os-quota-sets/{who.project_id}",
        token=token,
        json={"quota_set": {"instances": 100, "cores": 100, "ram": 10**7}},
    )
    assert status == 200
    member_token = await cloud.token(who)

    async def boot(i: int) -> str:
        status, body, _ = await cloud.request(
            "POST",
            "/compute/v2.1/servers",
            token=member_token,
            json={
                "server": {
                    "name": f"storm-{i}",
                    "imageRef": image,
                    "flavorRef": flavor["flavor"]["id"],
                    "networks": "none",
                }
            },
            headers={"OpenStack-API-Version": "compute 2.96"},
        )
        assert status == 202, body
        return body["server"]["id"]

    ids = await asyncio.gather(*(boot(i) for i in range(50)))

    async def settled() -> list[dict[str, Any]]:
        deadline = time.monotonic() + 120
        while True:
            _, listing, _ = await cloud.request(
                "GET",
                "/compute/v2.1/servers/detail?all_tenants=1&limit=1000",
                token=token,
                headers={"OpenStack-API-Version": "compute 2.96"},
            )
            mine = [s for s in listing["servers"] if s["id"] in ids]
            if len(mine) == 50 and all(s["status"] in ("ACTIVE", "ERROR") for s in mine):
                return mine
            assert time.monotonic() < deadline, {s["status"] for s in mine}
            await asyncio.sleep(0.5)

    servers = await settled()
    active = [s for s in servers if s["status"] == "ACTIVE"]
    errored = [s for s in servers if s["status"] == "ERROR"]
    assert 0 < len(active) == sum(room.values()) < 50, (
        len(active),
        room,
        {s["fault"]["message"] for s in errored},
    )
    per_host: dict[str, int] = {}
    for s in active:
        per_host[s["OS-EXT-SRV-ATTR:host"]] = per_host.get(s["OS-EXT-SRV-ATTR:host"], 0) + 1
    assert all(count <= room[host] for host, count in per_host.items()), (per_host, room)
    faults = {s["fault"]["message"] for s in errored}
    assert all(f.startswith("No valid host was found") for f in faults), faults
    await asyncio.gather(
        *(cloud.request("DELETE", f"/compute/v2.1/servers/{sid}", token=member_token) for sid in ids)
    )


async def test_a_failed_boot_shows_an_error_event_with_its_fault(cloud: Cloud, image: str) -> None:
    """No host can take the flavor (a 100 TB root disk): the create action's event ends in Error,
    with the fault as its details (2.84), and the action's message says Error, as Nova shows them."""
    token = await cloud.token()
    flavor = f"huge-{uuid.uuid4().hex[:8]}"
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/flavors",
        token=token,
        json={"flavor": {"name": flavor, "ram": 64, "vcpus": 1, "disk": 100000}},
    )
    assert status == 200, body
    flavor_id = body["flavor"]["id"]
    try:
        status, body, _ = await cloud.request(
            "POST",
            "/compute/v2.1/servers",
            token=token,
            json={
                "server": {
                    "name": f"nohost-{uuid.uuid4().hex[:8]}",
                    "flavorRef": flavor_id,
                    "imageRef": image,
                    "networks": "none",
                }
            },
            headers={"OpenStack-API-Version": "compute 2.84"},
        )
        assert status == 202, body
        server = body["server"]["id"]
        request_id = None
        deadline = time.monotonic() + 60
        while True:
            _, shown, _ = await cloud.request("GET", f"/compute/v2.1/servers/{server}", token=token)
            if shown["server"]["status"] == "ERROR" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert shown["server"]["status"] == "ERROR", shown
        _, listed, _ = await cloud.request(
            "GET", f"/compute/v2.1/servers/{server}/os-instance-actions", token=token
        )
        [create] = listed["instanceActions"]
        request_id = create["request_id"]
        _, action, _ = await cloud.request(
            "GET",
            f"/compute/v2.1/servers/{server}/os-instance-actions/{request_id}",
            token=token,
            headers={"OpenStack-API-Version": "compute 2.84"},
        )
        action = action["instanceAction"]
        [event] = action["events"]
        assert action["message"] == "Error"
        assert event["event"] == "compute__do_build_and_run_instance" and event["result"] == "Error"
        assert event["details"] == shown["server"]["fault"]["message"]
        await cloud.request("DELETE", f"/compute/v2.1/servers/{server}", token=token)
    finally:
        await cloud.request("DELETE", f"/compute/v2.1/flavors/{flavor_id}", token=token)
