"""Host aggregates, the availability zones they give their hosts (scheduler, os-services,
os-availability-zone), forced-down services, through the API and the `openstack` CLI."""

from __future__ import annotations

import uuid
from typing import Any

from tests.api.conftest import Cloud
from tests.api.test_compute_server_actions import boot, wait_for


async def _call(cloud: Cloud, method: str, path: str, version: str = "2.1", **kwargs: Any) -> tuple[int, Any]:
    status, body, _ = await cloud.request(
        method, f"/compute/v2.1{path}", headers={"OpenStack-API-Version": f"compute {version}"}, **kwargs
    )
    return status, body


async def _hosts(cloud: Cloud) -> list[str]:
    _, body = await _call(cloud, "GET", "/os-services")
    return sorted(s["host"] for s in body["services"] if s["state"] == "up" and s["status"] == "enabled")


async def test_an_aggregates_zone_places_servers_and_shows_in_services_and_zones(
    cloud: Cloud, image: str
) -> None:
    zone = f"az-{uuid.uuid4().hex[:6]}"
    host = (await _hosts(cloud))[0]
    status, created = await _call(
        cloud, "POST", "/os-aggregates", json={"aggregate": {"name": zone, "availability_zone": zone}}
    )
    assert status == 200 and created["aggregate"]["availability_zone"] == zone
    assert "hosts" not in created["aggregate"] and "uuid" not in created["aggregate"]
    aggregate = created["aggregate"]["id"]
    try:
        status, body = await _call(
            cloud,
            "POST",
            "/servers",
            "2.96",
            json={
                "server": {
                    "name": "z",
                    "imageRef": image,
                    "flavorRef": "42",
                    "networks": "none",
                    "availability_zone": zone,
                }
            },
        )
        assert status == 400 and "availability zone is not available" in body["badRequest"]["message"]
        status, added = await _call(
            cloud, "POST", f"/os-aggregates/{aggregate}/action", json={"add_host": {"host": host}}
        )
        assert status == 200 and added["aggregate"]["hosts"] == [host]
        _, services = await _call(cloud, "GET", f"/os-services?host={host}")
        assert services["services"][0]["zone"] == zone
        _, zones = await _call(cloud, "GET", "/os-availability-zone")
        assert zone in [z["zoneName"] for z in zones["availabilityZoneInfo"]]
        server = await boot(cloud, image, availability_zone=zone)
        shown = await wait_for(cloud, server, "ACTIVE")
        assert (shown["OS-EXT-AZ:availability_zone"], shown["OS-EXT-SRV-ATTR:host"]) == (zone, host)
        assert shown["pinned_availability_zone"] == zone
        # a zone with servers does not change
        status, body = await _call(
            cloud, "PUT", f"/os-aggregates/{aggregate}", json={"aggregate": {"availability_zone": "other"}}
        )
        assert status == 400 and "contain instances" in body["badRequest"]["message"]
        await cloud.request("DELETE", f"/compute/v2.1/servers/{server}")
        # a host is in one zone only
        status, other = await _call(
            cloud,
            "POST",
            "/os-aggregates",
            json={"aggregate": {"name": f"{zone}-b", "availability_zone": f"{zone}-b"}},
        )
        status, body = await _call(
            cloud,
            "POST",
            f"/os-aggregates/{other['aggregate']['id']}/action",
            json={"add_host": {"host": host}},
        )
        assert status == 409 and "already in availability zone(s)" in body["conflictingRequest"]["message"]
        await _call(cloud, "DELETE", f"/os-aggregates/{other['aggregate']['id']}")
        status, body = await _call(cloud, "DELETE", f"/os-aggregates/{aggregate}")
        assert status == 400 and "not empty" in body["badRequest"]["message"]
    finally:
        await _call(cloud, "POST", f"/os-aggregates/{aggregate}/action", json={"remove_host": {"host": host}})
        await _call(cloud, "DELETE", f"/os-aggregates/{aggregate}")
    _, services = await _call(cloud, "GET", f"/os-services?host={host}")
    assert services["services"][0]["zone"] != zone


async def test_aggregate_metadata_names_and_errors(cloud: Cloud) -> None:
    name = f"agg-{uuid.uuid4().hex[:6]}"
    status, created = await _call(cloud, "POST", "/os-aggregates", "2.41", json={"aggregate": {"name": name}})
    assert status == 200 and uuid.UUID(created["aggregate"]["uuid"])
    aggregate = created["aggregate"]["id"]
    status, _ = await _call(cloud, "POST", "/os-aggregates", json={"aggregate": {"name": name}})
    assert status == 409
    status, body = await _call(
        cloud,
        "POST",
        f"/os-aggregates/{aggregate}/action",
        json={"set_metadata": {"metadata": {"ssd": "true", "x": "1"}}},
    )
    assert status == 200 and body["aggregate"]["metadata"] == {"ssd": "true", "x": "1"}
    status, body = await _call(
        cloud, "POST", f"/os-aggregates/{aggregate}/action", json={"set_metadata": {"metadata": {"x": None}}}
    )
    assert body["aggregate"]["metadata"] == {"ssd": "true"}
    status, body = await _call(
        cloud, "PUT", f"/os-aggregates/{aggregate}", json={"aggregate": {"name": name + "-r"}}
    )
    assert status == 200 and body["aggregate"]["name"] == name + "-r" and body["aggregate"]["updated_at"]
    assert (
        await _call(
            cloud, "POST", f"/os-aggregates/{aggregate}/action", json={"add_host": {"host": "no-such-host"}}
        )
    )[0] == 404
    assert (
        await _call(
            cloud,
            "POST",
            f"/os-aggregates/{aggregate}/action",
            json={"remove_host": {"host": "no-such-host"}},
        )
    )[0] == 404
    assert (await _call(cloud, "GET", "/os-aggregates/999999"))[0] == 404
    assert (await _call(cloud, "GET", "/os-aggregates/abc"))[0] == 400
    assert (await _call(cloud, "POST", "/os-aggregates", json={"aggregate": {"name": ""}}))[0] == 400
    assert (
        await _call(
            cloud, "POST", "/os-aggregates", json={"aggregate": {"name": "z", "availability_zone": "a:b"}}
        )
    )[0] == 400
    member = await cloud.new_member("agg")
    status, _, _ = await cloud.request("GET", "/compute/v2.1/os-aggregates", who=member)
    assert status == 403
    assert (await _call(cloud, "DELETE", f"/os-aggregates/{aggregate}"))[0] == 200
    assert (await _call(cloud, "GET", f"/os-aggregates/{aggregate}"))[0] == 404


def test_aggregates_and_hypervisor_show_through_the_cli(cloud: Cloud) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    host = cloud.openstack("compute", "service", "list")[0]["Host"]
    created = cloud.openstack("aggregate", "create", "--zone", name, name)
    try:
        cloud.openstack("aggregate", "add", "host", name, host)
        cloud.openstack("aggregate", "set", "--property", "ssd=true", name, fmt=None)
        shown = cloud.openstack("aggregate", "show", name)
        assert shown["hosts"] == [host] and shown["availability_zone"] == name
        assert shown["properties"] == {"ssd": "true"}
        assert name in [a["Name"] for a in cloud.openstack("aggregate", "list")]
        shown_hypervisors = [
            cloud.openstack("hypervisor", "show", str(h["ID"])) for h in cloud.openstack("hypervisor", "list")
        ]
        ours = next(h for h in shown_hypervisors if h["service_host"] == host)
        assert name in ours["aggregates"]
        assert all(name not in h["aggregates"] for h in shown_hypervisors if h["service_host"] != host)
    finally:
        cloud.openstack("aggregate", "remove", "host", name, host)
        cloud.openstack("aggregate", "delete", str(created["id"]), fmt=None)


async def test_a_forced_down_service_is_down_and_not_scheduled(cloud: Cloud) -> None:
    _, listed = await _call(cloud, "GET", "/os-services", "2.53")
    service = listed["services"][0]
    try:
        status, body = await _call(
            cloud, "PUT", f"/os-services/{service['id']}", "2.53", json={"forced_down": True}
        )
        assert status == 200 and (body["service"]["forced_down"], body["service"]["state"]) == (True, "down")
        _, hypervisors = await _call(cloud, "GET", "/os-hypervisors/detail", "2.53")
        states = {h["service"]["host"]: h["state"] for h in hypervisors["hypervisors"]}
        assert states[service["host"]] == "down"
        status, body = await _call(cloud, "PUT", f"/os-services/{service['id']}", "2.53", json={})
        assert status == 400 and "No updates were requested" in body["badRequest"]["message"]
        status, body = await _call(
            cloud,
            "PUT",
            "/os-services/disable",
            "2.52",
            json={"host": service["host"], "binary": "nova-compute"},
        )
        assert status == 200 and body == {
            "service": {"host": service["host"], "binary": "nova-compute", "status": "disabled"}
        }
        status, _ = await _call(
            cloud,
            "PUT",
            "/os-services/force-down",
            "2.10",
            json={"host": service["host"], "binary": "nova-compute"},
        )
        assert status == 404  # force-down came with 2.11
        status, body = await _call(
            cloud,
            "PUT",
            "/os-services/enable",
            "2.52",
            json={"host": service["host"], "binary": "nova-scheduler"},
        )
        assert status == 400
    finally:
        await _call(
            cloud,
            "PUT",
            f"/os-services/{service['id']}",
            "2.53",
            json={"forced_down": False, "status": "enabled"},
        )
    _, listed = await _call(cloud, "GET", f"/os-services?host={service['host']}", "2.53")
    assert listed["services"][0]["state"] == "up"
