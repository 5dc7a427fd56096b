"""Keystone's catalog administration: services, endpoints and regions beside the built-in ones
(which stay), what a token's catalog then holds, endpoint groups and policy blobs."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.api.conftest import Cloud
from tests.api.test_identity_grants import _admin, _name


async def test_services_endpoints_and_regions_through_the_cli(cloud: Cloud) -> None:
    type_ = _name("type")
    service = cloud.openstack("service", "create", "--name", _name("svc"), "--description", "d", type_)
    region = _name("region")
    cloud.openstack("region", "create", "--description", "r", region)
    endpoint = cloud.openstack(
        "endpoint",
        "create",
        "--region",
        region,
        service["id"],
        "internal",
        "http://example.test:9999/v1/$(project_id)s",
    )
    assert endpoint["region"] == region and endpoint["interface"] == "internal"
    # An endpoint in a region not made yet makes it, as Keystone does.
    admin = await _admin(cloud)
    new_region = _name("region")
    url = "http://example.test:9998/"
    body = {"endpoint": {"service_id": service["id"], "interface": "admin", "url": url, "region": new_region}}
    second = (await admin("POST", "/endpoints", 201, json=body))["endpoint"]
    assert cloud.openstack("region", "show", new_region)["region"] == new_region
    await admin("DELETE", f"/endpoints/{second['id']}", 204)
    await admin("DELETE", f"/regions/{new_region}", 204)
    listed = cloud.openstack("endpoint", "list", "--service", service["id"])
    assert [e["ID"] for e in listed] == [endpoint["id"]]
    # The token's catalog has it, with the project's id in its URL.
    status, body, _ = await cloud.request(
        "GET", "/identity/v3/auth/tokens", token=admin.token, headers={"X-Subject-Token": admin.token}
    )
    entry = next(e for e in body["token"]["catalog"] if e["type"] == type_)
    assert entry["endpoints"][0]["url"] == f"http://example.test:9999/v1/{body['token']['project']['id']}"
    cloud.openstack("endpoint", "set", "--disable", endpoint["id"], fmt=None)
    status, body, _ = await cloud.request("GET", "/identity/v3/auth/catalog", token=admin.token)
    assert type_ not in {e["type"] for e in body["catalog"]}
    # Deleting the service deletes its endpoints; the region goes once no endpoint is in it.
    assert "associated endpoints" in cloud.openstack_fails("region", "delete", region).stderr
    cloud.openstack("service", "delete", service["id"], fmt=None)
    await admin("GET", f"/endpoints/{endpoint['id']}", 404)
    cloud.openstack("region", "delete", region, fmt=None)
    await admin("GET", f"/regions/{region}", 404)


async def test_the_built_in_catalog_stays(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    compute = (await admin("GET", "/services?type=compute", 200))["services"]
    assert len(compute) == 1
    await admin("DELETE", f"/services/{compute[0]['id']}", 403)
    await admin("PATCH", f"/services/{compute[0]['id']}", 403, json={"service": {"enabled": False}})
    endpoint = (await admin("GET", f"/endpoints?service_id={compute[0]['id']}&interface=public", 200))[
        "endpoints"
    ][0]
    await admin("GET", f"/endpoints/{endpoint['id']}", 200)
    await admin("DELETE", f"/endpoints/{endpoint['id']}", 403)
    await admin("PATCH", f"/endpoints/{endpoint['id']}", 403, json={"endpoint": {"url": "http://elsewhere/"}})
    await admin("DELETE", "/regions/RegionOne", 403)
    assert cloud.openstack("server", "list") == []  # the CLI still finds compute


async def test_catalog_requests_are_checked(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    service = await admin.create("service", type=_name("t"))
    assert "name" not in service and service["enabled"] is True
    base = {"service_id": service["id"], "interface": "public", "url": "http://x.test/"}
    await admin("POST", "/endpoints", 400, json={"endpoint": {**base, "enabled": "True"}})
    await admin("POST", "/endpoints", 400, json={"endpoint": {**base, "interface": "private"}})
    await admin("POST", "/endpoints", 400, json={"endpoint": {**base, "url": "not a url"}})
    await admin("POST", "/endpoints", 400, json={"endpoint": {**base, "service_id": uuid.uuid4().hex}})
    endpoint = await admin.create("endpoint", **base)
    await admin("PATCH", f"/endpoints/{endpoint['id']}", 400, json={"endpoint": {"enabled": "False"}})
    await admin("POST", "/services", 400, json={"service": {"name": "no type"}})
    parent = await admin.create("region", description="p")
    child = await admin.create("region", parent_region_id=parent["id"])
    await admin("PATCH", f"/regions/{parent['id']}", 400, json={"region": {"parent_region_id": child["id"]}})
    await admin("PUT", f"/regions/{child['id']}", 409, json={"region": {}})
    listed = await admin("GET", f"/regions?parent_region_id={parent['id']}", 200)
    assert [r["id"] for r in listed["regions"]] == [child["id"]]
    await admin("DELETE", f"/regions/{parent['id']}", 204)  # with the region below it
    await admin("GET", f"/regions/{child['id']}", 404)
    member = await cloud.new_member()
    status, _, _ = await cloud.request(
        "POST", "/identity/v3/services", who=member, json={"service": {"type": "x"}}
    )
    assert status == 403
    await admin("DELETE", f"/services/{service['id']}", 204)


async def test_endpoint_groups_select_endpoints(cloud: Cloud) -> None:
    admin = await _admin(cloud)
    service = await admin.create("service", type=_name("t"))
    endpoint = await admin.create(
        "endpoint", service_id=service["id"], interface="admin", url="http://eg.test/"
    )
    path = "/OS-EP-FILTER/endpoint_groups"
    body = {"endpoint_group": {"name": _name("eg"), "filters": {"service_id": service["id"]}}}
    group = (await admin("POST", path, 201, json=body))["endpoint_group"]
    await admin("HEAD", f"{path}/{group['id']}", 200)
    selected = await admin("GET", f"{path}/{group['id']}/endpoints", 200)
    assert [e["id"] for e in selected["endpoints"]] == [endpoint["id"]]
    await admin("POST", path, 400, json={"endpoint_group": {"name": "x", "filters": {"colour": "red"}}})
    changed = await admin(
        "PATCH", f"{path}/{group['id']}", 200, json={"endpoint_group": {"filters": {"interface": "public"}}}
    )
    assert changed["endpoint_group"]["filters"] == {"interface": "public"}
    await admin("DELETE", f"{path}/{group['id']}", 204)
    await admin("GET", f"{path}/{group['id']}", 404)
    await admin("DELETE", f"/services/{service['id']}", 204)


async def test_policy_blobs(cloud: Cloud, tmp_path: Path) -> None:
    admin = await _admin(cloud)
    rules = tmp_path / "policy.json"
    rules.write_text('{"compute:get": ""}')
    created = cloud.openstack("policy", "create", "--type", "application/json", str(rules))
    assert created["type"] == "application/json" and created["rules"] == '{"compute:get": ""}'
    policy = (
        await admin("POST", "/policies", 201, json={"policy": {"type": "text/plain", "blob": '{"a": "b"}'}})
    )["policy"]
    changed = await admin("PATCH", f"/policies/{policy['id']}", 200, json={"policy": {"type": "t2"}})
    assert changed["policy"]["blob"] == '{"a": "b"}' and changed["policy"]["type"] == "t2"
    assert policy["id"] in {p["id"] for p in (await admin("GET", "/policies", 200))["policies"]}
    await admin("POST", "/policies", 400, json={"policy": {"type": "t"}})
    await admin("DELETE", f"/policies/{policy['id']}", 204)
    await admin("DELETE", f"/policies/{created['id']}", 204)
    await admin("GET", f"/policies/{policy['id']}", 404)
