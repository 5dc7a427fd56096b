"""The server list as Nova filters, sorts and pages it, the server views per microversion
(access IPs, the update view, server groups), and server tags."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import pytest

from tests.api.conftest import Cloud, Credentials
from tests.api.test_compute_server_actions import boot, wait_for

LATEST = {"OpenStack-API-Version": "compute 2.96"}


async def _list(
    cloud: Cloud, query: str, who: Credentials | None = None, version: str = "2.96"
) -> tuple[int, Any]:
    status, body, _ = await cloud.request(
        "GET",
        f"/compute/v2.1/servers{query}",
        who=who,
        headers={"OpenStack-API-Version": f"compute {version}"},
    )
    return status, body


def _ids(body: Any) -> list[str]:
    return [s["id"] for s in body["servers"]]


@pytest.fixture(scope="module")
async def three(cloud: Cloud, image: str) -> Any:
    """A project with three active servers on a network of its own (a, b tagged; c deleted later
    by a test that needs a deleted one); the servers and the network go at the end."""
    who = await cloud.new_member("list")
    status, net, _ = await cloud.request(
        "POST", "/networking/v2.0/networks", who=who, json={"network": {"name": f"list-net-{who.project}"}}
    )
    assert status == 201, net
    network = net["network"]["id"]
    status, _, _ = await cloud.request(
        "POST",
        "/networking/v2.0/subnets",
        who=who,
        json={"subnet": {"network_id": network, "cidr": "10.77.0.0/24", "ip_version": 4}},
    )
    assert status == 201
    ids = []
    for name, tags in (("alpha", ["red", "blue"]), ("beta", ["red"]), ("gamma", [])):
        ids.append(
            await boot(
                cloud, image, who, name=name, networks=[{"uuid": network}], tags=tags, accessIPv4="1.1.1.1"
            )
        )
    for server in ids:
        await wait_for(cloud, server, "ACTIVE", who)
    yield who, ids
    for server in ids:
        await cloud.request("DELETE", f"/compute/v2.1/servers/{server}", who=who)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # its ports go with the servers; then the network can
        status, _, _ = await cloud.request("DELETE", f"/networking/v2.0/networks/{network}", who=who)
        if status in (204, 404):
            break
        await asyncio.sleep(0.5)
    assert status in (204, 404), f"the test network {network} could not be deleted: {status}"


async def test_limit_zero_is_an_empty_page_and_a_full_page_links_the_next(three: Any, cloud: Cloud) -> None:
    who, ids = three
    status, body = await _list(cloud, "?limit=0", who)
    assert status == 200 and body["servers"] == [] and "servers_links" not in body
    status, first = await _list(cloud, "?limit=2", who)
    assert len(first["servers"]) == 2
    link = first["servers_links"][0]
    assert link["rel"] == "next" and f"marker={first['servers'][-1]['id']}" in link["href"]
    status, rest = await _list(cloud, link["href"].split("/servers", 1)[1], who)
    assert len(rest["servers"]) == 1 and "servers_links" not in rest
    assert sorted(_ids(first) + _ids(rest)) == sorted(ids)
    status, body = await _list(cloud, "?marker=00000000-0000-0000-0000-000000000000", who)
    assert status == 400


async def test_ip_filter_is_a_regular_expression_on_the_fixed_ips(three: Any, cloud: Cloud) -> None:
    who, ids = three
    status, detail = await _list(cloud, "/detail", who)
    address = {s["id"]: next(iter(s["addresses"].values()))[0]["addr"] for s in detail["servers"]}
    one = ids[0]
    status, body = await _list(cloud, f"?ip={address[one].replace('.', '[.]')}$", who)
    assert _ids(body) == [one]
    status, body = await _list(cloud, "?ip=10%5C.77%5C.", who)  # 10\.77\. : all three
    assert sorted(_ids(body)) == sorted(ids)
    status, body = await _list(cloud, "?ip6=10.77", who)
    assert _ids(body) == []  # no IPv6 address


async def test_tag_filters(three: Any, cloud: Cloud) -> None:
    who, (alpha, beta, gamma) = three
    for query, expected in (
        ("?tags=red,blue", [alpha]),
        ("?tags-any=blue,red", [alpha, beta]),
        ("?not-tags=red,blue", [beta, gamma]),
        ("?not-tags-any=red", [gamma]),
    ):
        status, body = await _list(cloud, query, who)
        assert sorted(_ids(body)) == sorted(expected), query


async def test_all_tenants_is_for_admins_and_status_and_name_filter(three: Any, cloud: Cloud) -> None:
    who, (alpha, beta, gamma) = three
    status, body = await _list(cloud, "?all_tenants", who)
    assert status == 403 and "get_all_tenants" in body["forbidden"]["message"]
    status, body = await _list(cloud, "/detail?all_tenants=1", who)
    assert status == 403 and "detail:get_all_tenants" in body["forbidden"]["message"]
    status, body = await _list(cloud, f"?all_tenants=1&project_id={who.project_id}")
    assert sorted(_ids(body)) == sorted([alpha, beta, gamma])
    status, body = await _list(cloud, "?name=^(alpha|gamma)$", who)
    assert sorted(_ids(body)) == sorted([alpha, gamma])
    status, body = await _list(cloud, "?status=active", who)
    assert len(body["servers"]) == 3
    status, body = await _list(cloud, "?status=bogus", who)
    assert status == 400
    status, body = await _list(cloud, "?status=bogus", who, version="2.37")
    assert status == 200 and body["servers"] == []
    status, body = await _list(cloud, "?status=DELETED", who)
    assert status == 403


async def test_changes_since_reports_deleted_servers_too(three: Any, cloud: Cloud, image: str) -> None:
    who, ids = three
    since = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    gone = await boot(cloud, image, who)
    await wait_for(cloud, gone, "ACTIVE", who)
    await cloud.request("DELETE", f"/compute/v2.1/servers/{gone}", who=who)
    deadline = time.monotonic() + 30
    while (await cloud.request("GET", f"/compute/v2.1/servers/{gone}", who=who))[0] != 404:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)
    status, body = await _list(cloud, "", who)
    assert gone not in _ids(body)
    status, body = await _list(cloud, f"/detail?changes-since={since}", who)
    statuses = {s["id"]: s["status"] for s in body["servers"]}
    assert statuses[gone] == "DELETED" and all(statuses[i] == "ACTIVE" for i in ids)
    status, body = await _list(cloud, "?changes-since=2051-01-01T00:00:00Z", who)
    assert body["servers"] == []
    status, body = await _list(cloud, f"?changes-since={since}&changes-before=2000-01-01T00:00:00Z", who)
    assert status == 400
    status, body = await _list(cloud, "?changes-since=2011/01/01", who)
    assert status == 400


async def test_access_ips_are_stored_validated_and_updated(three: Any, cloud: Cloud, image: str) -> None:
    who, (alpha, _, _) = three
    server = await wait_for(cloud, alpha, "ACTIVE", who)
    assert (server["accessIPv4"], server["accessIPv6"]) == ("1.1.1.1", "")
    status, body, _ = await cloud.request(
        "PUT",
        f"/compute/v2.1/servers/{alpha}",
        who=who,
        json={"server": {"accessIPv6": "::babe:202:202"}},
        headers=LATEST,
    )
    assert status == 200 and body["server"]["accessIPv6"] == "::babe:202:202"
    for bad in ({"accessIPv4": "1.1.1.1.1.1"}, {"accessIPv6": "notvalid"}):
        status, body, _ = await cloud.request(
            "POST",
            "/compute/v2.1/servers",
            who=who,
            json={"server": {"name": "x", "imageRef": image, "flavorRef": "42", "networks": "none", **bad}},
            headers=LATEST,
        )
        assert status == 400, bad
        status, _, _ = await cloud.request(
            "PUT", f"/compute/v2.1/servers/{alpha}", who=who, json={"server": bad}, headers=LATEST
        )
        assert status == 400, bad


async def test_update_view_follows_the_microversion(three: Any, cloud: Cloud) -> None:
    who, (alpha, _, _) = three
    for version, full in (("2.1", False), ("2.74", False), ("2.75", True)):
        status, body, _ = await cloud.request(
            "PUT",
            f"/compute/v2.1/servers/{alpha}",
            who=who,
            json={"server": {"name": "alpha"}},
            headers={"OpenStack-API-Version": f"compute {version}"},
        )
        assert status == 200
        server = body["server"]
        assert ("OS-EXT-AZ:availability_zone" in server) is full, version
        assert ("OS-EXT-STS:vm_state" in server) is full, version
        assert all("OS-EXT-IPS:type" not in ip or full for ips in server["addresses"].values() for ip in ips)
    status, shown, _ = await cloud.request("GET", f"/compute/v2.1/servers/{alpha}", who=who, headers=LATEST)
    assert shown["server"]["server_groups"] == []
    status, listed = await _list(cloud, "/detail", who)
    assert all("server_groups" not in s for s in listed["servers"])  # not in the list, as Nova


async def test_a_security_group_other_than_default_is_refused(cloud: Cloud, image: str) -> None:
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        json={
            "server": {
                "name": "sg",
                "imageRef": image,
                "flavorRef": "42",
                "networks": "none",
                "security_groups": [{"name": "no-such-group"}],
            }
        },
        headers=LATEST,
    )
    assert status == 400 and "Security group no-such-group not found" in body["badRequest"]["message"]


async def test_server_tags_through_their_api(three: Any, cloud: Cloud) -> None:
    who, (_, _, gamma) = three
    base = f"/compute/v2.1/servers/{gamma}/tags"

    async def call(method: str, path: str = "", **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        return await cloud.request(method, base + path, who=who, headers=LATEST, **kwargs)

    assert (await call("GET"))[1] == {"tags": []}
    status, _, headers = await call("PUT", "/green")
    assert status == 201 and headers["Location"].endswith(f"/servers/{gamma}/tags/green")
    assert (await call("PUT", "/green"))[0] == 204  # already there
    assert (await call("GET", "/green"))[0] == 204
    status, body, _ = await call("GET", "/purple")
    assert status == 404 and body["itemNotFound"]["message"] == f"Server {gamma} has no tag 'purple'"
    status, body, _ = await call("PUT", json={"tags": ["x", "y", "x"]})
    assert status == 200 and body == {"tags": ["x", "y"]}
    assert (await call("PUT", json={"tags": ["a/b"]}))[0] == 400
    assert (await call("PUT", json={"tags": [str(i) for i in range(51)]}))[0] == 400
    assert (await call("DELETE", "/x"))[0] == 204
    assert (await call("DELETE", "/x"))[0] == 404
    assert (await call("DELETE"))[0] == 204
    assert (await call("GET"))[1] == {"tags": []}
    status, _, _ = await cloud.request(
        "GET", base, who=who, headers={"OpenStack-API-Version": "compute 2.25"}
    )
    assert status == 404  # tags came with 2.26


async def test_another_projects_server_tags_and_lock_are_not_found(three: Any, cloud: Cloud) -> None:
    who, (alpha, _, _) = three
    other = await cloud.new_member("other")
    for method, path, body in (
        ("GET", f"/compute/v2.1/servers/{alpha}/tags", None),
        ("PUT", f"/compute/v2.1/servers/{alpha}/tags/mine", None),
        ("DELETE", f"/compute/v2.1/servers/{alpha}/tags", None),
        ("POST", f"/compute/v2.1/servers/{alpha}/action", {"lock": None}),
        ("POST", f"/compute/v2.1/servers/{alpha}/action", {"forceDelete": None}),
        ("GET", f"/compute/v2.1/servers/{alpha}/os-server-password", None),
    ):
        status, _, _ = await cloud.request(method, path, who=other, json=body, headers=LATEST)
        assert status == 404, (method, path, body)
    shown = await wait_for(cloud, alpha, "ACTIVE", who)
    assert shown["locked"] is False and shown["tags"] == ["red", "blue"]
