"""Neutron's bulk create (`{"networks": [...]}`, `{"subnets": [...]}`, `{"ports": [...]}`: all
created in one transaction or none) and the list parameters Neutron checks (`limit`,
`sort_key`/`sort_dir`, `marker`, `page_reverse`, `fields`), through raw HTTP as tempest and the
SDKs send them."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Cloud, Credentials
from tests.api.test_network import assert_neutron_error, call, networks_removed, unique


async def names_in(cloud: Cloud, token: str, collection: str, query: str) -> list[str]:
    status, body = await call(cloud, "GET", f"/{collection}?{query}", token)
    assert status == 200, body
    return [item["name"] for item in body[collection]]


async def test_bulk_create_makes_every_resource_in_order(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    tag = unique("bulk")
    async with networks_removed(cloud) as created:
        # Items bare or wrapped, as Neutron takes them; the answer keeps the request's order.
        status, body = await call(
            cloud,
            "POST",
            "/networks",
            token,
            {
                "networks": [
                    {"name": f"{tag}-a", "tags": [tag]},
                    {"network": {"name": f"{tag}-b", "tags": [tag]}},
                ]
            },
        )
        assert status == 201, body
        assert set(body) == {"networks"} and [n["name"] for n in body["networks"]] == [f"{tag}-a", f"{tag}-b"]
        nets = body["networks"]
        created.extend(n["id"] for n in nets)
        assert all(n["status"] == "ACTIVE" and n["project_id"] == member.project_id for n in nets)
        assert sorted(await names_in(cloud, token, "networks", f"tags={tag}")) == [f"{tag}-a", f"{tag}-b"]

        # Two subnets on one network and one on the other, in one request.
        status, body = await call(
            cloud,
            "POST",
            "/subnets",
            token,
            {
                "subnets": [
                    {"network_id": nets[0]["id"], "ip_version": 4, "cidr": "10.61.0.0/24", "name": "s0"},
                    {"network_id": nets[0]["id"], "ip_version": 4, "cidr": "10.61.1.0/24", "name": "s1"},
                    {"network_id": nets[1]["id"], "ip_version": 6, "cidr": "fd00:61::/64", "name": "s2"},
                ]
            },
        )
        assert status == 201, body
        subnets = body["subnets"]
        assert [(s["name"], s["cidr"], s["gateway_ip"]) for s in subnets] == [
            ("s0", "10.61.0.0/24", "10.61.0.1"),
            ("s1", "10.61.1.0/24", "10.61.1.1"),
            ("s2", "fd00:61::/64", "fd00:61::1"),
        ]
        status, body = await call(cloud, "GET", f"/networks/{nets[0]['id']}", token)
        assert sorted(body["network"]["subnets"]) == sorted([subnets[0]["id"], subnets[1]["id"]])

        # Ports on both networks, each addressed from its network's subnets.
        status, body = await call(
            cloud,
            "POST",
            "/ports",
            token,
            {
                "ports": [
                    {"network_id": nets[0]["id"], "name": "p0"},
                    {"network_id": nets[1]["id"], "name": "p1", "admin_state_up": False},
                ]
            },
        )
        assert status == 201, body
        ports = body["ports"]
        assert [(p["name"], p["network_id"], p["admin_state_up"]) for p in ports] == [
            ("p0", nets[0]["id"], True),
            ("p1", nets[1]["id"], False),
        ]
        assert {ip["subnet_id"] for ip in ports[0]["fixed_ips"]} <= {subnets[0]["id"], subnets[1]["id"]}
        assert [ip["subnet_id"] for ip in ports[1]["fixed_ips"]] == [subnets[2]["id"]]
        assert sorted(await names_in(cloud, token, "ports", f"network_id={nets[0]['id']}&name=p0")) == ["p0"]


async def test_a_bulk_create_with_one_bad_item_creates_nothing(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    tag = unique("none")
    async with networks_removed(cloud) as created:
        # An item that fails validation: 400, and the good one before it is not made.
        status, body = await call(
            cloud,
            "POST",
            "/networks",
            token,
            {"networks": [{"name": f"{tag}-ok", "tags": [tag]}, {"name": f"{tag}-bad", "colour": "blue"}]},
        )
        assert status == 400
        assert_neutron_error(body, "HTTPBadRequest", "Unrecognized attribute(s) 'colour'")
        assert await names_in(cloud, token, "networks", f"tags={tag}") == []

        status, body = await call(cloud, "POST", "/networks", token, {"network": {"name": tag}})
        net = body["network"]
        created.append(net["id"])
        # An item that fails in the database (it overlaps the first): the first is rolled back.
        status, body = await call(
            cloud,
            "POST",
            "/subnets",
            token,
            {
                "subnets": [
                    {"network_id": net["id"], "ip_version": 4, "cidr": "10.62.0.0/24"},
                    {"network_id": net["id"], "ip_version": 4, "cidr": "10.62.0.128/25"},
                ]
            },
        )
        assert status == 400
        assert_neutron_error(body, "InvalidInput", "overlaps with another subnet")
        status, body = await call(cloud, "GET", f"/subnets?network_id={net['id']}", token)
        assert body["subnets"] == []
        status, body = await call(cloud, "GET", f"/ports?network_id={net['id']}", token)
        assert body["ports"] == []  # no DHCP port was left behind either

        status, body = await call(
            cloud,
            "POST",
            "/subnets",
            token,
            {
                "subnet": {
                    "network_id": net["id"],
                    "ip_version": 4,
                    "cidr": "10.62.0.0/24",
                    "enable_dhcp": False,
                }
            },
        )
        assert status == 201
        # Two ports asking for one address: the second fails, the first goes with it.
        both = {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.62.0.50"}]}
        status, body = await call(cloud, "POST", "/ports", token, {"ports": [both, both]})
        assert status == 409
        assert_neutron_error(body, "IpAddressAlreadyAllocated", "10.62.0.50")
        status, body = await call(cloud, "GET", f"/ports?network_id={net['id']}", token)
        assert body["ports"] == []
        # ... and a port on a network the caller cannot see is NetworkNotFound for the whole request.
        missing = "00000000-0000-4000-8000-000000000000"
        status, body = await call(
            cloud, "POST", "/ports", token, {"ports": [{"network_id": net["id"]}, {"network_id": missing}]}
        )
        assert status == 404
        assert_neutron_error(body, "NetworkNotFound", missing)
        status, body = await call(cloud, "GET", f"/ports?network_id={net['id']}", token)
        assert body["ports"] == []


async def test_a_bulk_create_counts_against_the_quota_as_a_whole(cloud: Cloud, member: Credentials) -> None:
    admin, mine = await cloud.token(), await cloud.token(member)
    quota_path = f"/quotas/{member.project_id}"
    status, _ = await call(cloud, "PUT", quota_path, admin, {"quota": {"network": 2}})
    assert status == 200
    tag = unique("quota")
    try:
        async with networks_removed(cloud) as created:
            three = {"networks": [{"name": f"{tag}-{i}", "tags": [tag]} for i in range(3)]}
            status, body = await call(cloud, "POST", "/networks", mine, three)
            assert status == 409
            assert_neutron_error(body, "OverQuota", "['network']")
            assert await names_in(cloud, mine, "networks", f"tags={tag}") == []
            two = {"networks": three["networks"][:2]}
            status, body = await call(cloud, "POST", "/networks", mine, two)
            assert status == 201, body
            created.extend(n["id"] for n in body["networks"])
    finally:
        await call(cloud, "DELETE", quota_path, admin)


async def test_malformed_bulk_bodies_get_neutrons_400(cloud: Cloud) -> None:
    token = await cloud.token()
    cases: list[tuple[str, Any, str]] = [
        ("/networks", {"networks": []}, "Resources required"),
        ("/networks", {"networks": {"name": "x"}}, "Body contains invalid data"),
        ("/networks", {"networks": ["x"]}, "Body contains invalid data"),
        ("/subnets", {"subnets": [{"subnet": "x"}]}, "Object 'subnet' contains invalid data"),
        ("/ports", [{"network_id": "x"}], "Body contains invalid data"),
        ("/ports", {"ports": [{"name": "no network"}]}, "Required attribute 'network_id' not specified"),
    ]
    for path, document, message in cases:
        status, body = await call(cloud, "POST", path, token, document)
        assert status == 400, (path, document, body)
        assert_neutron_error(body, "HTTPBadRequest", message)


async def test_list_parameters_are_checked_as_neutron_checks_them(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    tag = unique("params")
    async with networks_removed(cloud) as created:
        status, body = await call(
            cloud,
            "POST",
            "/networks",
            token,
            {"networks": [{"name": f"{tag}-{i}", "tags": [tag]} for i in range(3)]},
        )
        created.extend(n["id"] for n in body["networks"])
        ids = [n["id"] for n in body["networks"]]
        bad: list[tuple[str, str, str]] = [
            (
                "limit=-1",
                "BadRequest",
                "Bad limit request: Limit must be an integer 0 or greater and not '-1'.",
            ),
            ("limit=ten", "BadRequest", "Limit must be an integer 0 or greater and not 'ten'"),
            ("limit=1.5", "BadRequest", "not '1.5'"),
            ("limit=" + "9" * 30, "BadRequest", "Bad limit request"),
            ("sort_key=name", "HTTPBadRequest", "The number of sort_keys and sort_dirs must be same"),
            (
                "sort_key=colour&sort_dir=asc",
                "HTTPBadRequest",
                "['colour'] is invalid attribute for sort_keys",
            ),
            ("sort_key=name&sort_dir=up", "HTTPBadRequest", "['up'] is invalid value for sort_dirs"),
            (
                "sort_key=availability_zones&sort_dir=asc",
                "HTTPBadRequest",
                "is invalid attribute for sort_keys",
            ),
            ("mtu=high", "HTTPBadRequest", "'high' is not an integer"),
        ]
        for query, kind, message in bad:
            status, body = await call(cloud, "GET", f"/networks?tags={tag}&{query}", token)
            assert status == 400, (query, body)
            assert_neutron_error(body, kind, message)
        # A marker nobody can see is the resource's 404; a marker without a limit is ignored.
        status, body = await call(cloud, "GET", f"/networks?tags={tag}&limit=1&marker={tag}", token)
        assert status == 404
        assert_neutron_error(body, "NetworkNotFound", tag)
        assert len(await names_in(cloud, token, "networks", f"tags={tag}&marker={tag}")) == 3
        # Numbers past any column's range match nothing; page_reverse takes any value, as Neutron.
        assert await names_in(cloud, token, "networks", f"tags={tag}&mtu={10**30}") == []
        assert await names_in(cloud, token, "networks", f"tags={tag}&revision_number=-{10**30}") == []
        names = await names_in(
            cloud, token, "networks", f"tags={tag}&sort_key=name&sort_dir=asc&page_reverse=perhaps"
        )
        assert names == [f"{tag}-0", f"{tag}-1", f"{tag}-2"]
        status, body = await call(
            cloud,
            "GET",
            f"/networks?tags={tag}&sort_key=name&sort_dir=asc&limit=2&marker={ids[2]}&page_reverse=True",
            token,
        )
        assert [n["name"] for n in body["networks"]] == [f"{tag}-0", f"{tag}-1"]
        # `fields`: only those attributes; empty values and names Neutron does not know are dropped.
        status, body = await call(
            cloud, "GET", f"/networks?tags={tag}&fields=name&fields=&fields=colour", token
        )
        assert [set(n) for n in body["networks"]] == [{"name"}] * 3


async def test_the_network_lists_describe_their_parameters(cloud: Cloud) -> None:
    status, document, _ = await cloud.request("GET", "/openapi.json", who=False)
    assert status == 200
    ports = {p["name"]: p for p in document["paths"]["/networking/v2.0/ports"]["get"]["parameters"]}
    assert {"network_id", "device_id", "mac_address", "fixed_ips", "tags", "not-tags-any", "fields"} <= set(
        ports
    )
    assert ports["limit"]["schema"] == {"type": "integer", "minimum": 0}
    assert ports["sort_key"]["schema"]["items"]["enum"] == sorted(
        ports["sort_key"]["schema"]["items"]["enum"]
    )
    assert "binding:host_id" not in ports["sort_key"]["schema"]["items"]["enum"]  # not sortable, as Neutron
    assert ports["admin_state_up"]["schema"] == {"type": "array", "items": {"type": "boolean"}}
    show = document["paths"]["/networking/v2.0/networks/{network_id}"]["get"]["parameters"]
    assert [p["name"] for p in show if p["in"] == "query"] == ["fields"]
    bulk = document["paths"]["/networking/v2.0/subnets"]["post"]["requestBody"]["content"]["application/json"]
    assert [sorted(option["required"]) for option in bulk["schema"]["oneOf"]] == [["subnet"], ["subnets"]]
