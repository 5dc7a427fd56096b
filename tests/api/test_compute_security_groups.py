"""Nova's security group APIs over Neutron's groups: the `addSecurityGroup` and
`removeSecurityGroup` actions (and `openstack server add/remove security group`), a server's
`os-security-groups`, and Nova's deprecated proxy `/os-security-groups` and
`/os-security-group-rules` (up to 2.35) in Nova's shapes and words, each refusal changing
nothing in Neutron's tables."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api.conftest import Cloud, Credentials

N = "/networking/v2.0"
C = "/compute/v2.1"
GROUPS = f"{C}/os-security-groups"
RULES = f"{C}/os-security-group-rules"
MISSING = "00000000-0000-0000-0000-000000000000"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def nova(
    cloud: Cloud, method: str, path: str, token: str, body: Any = None, version: str = "2.35"
) -> tuple[int, Any]:
    status, data, _ = await cloud.request(
        method, path, token=token, json=body, headers={"OpenStack-API-Version": f"compute {version}"}
    )
    return status, data


async def neutron(cloud: Cloud, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    status, data, _ = await cloud.request(method, N + path, token=token, json=body)
    return status, data


def message(body: Any) -> str:
    ((_, fault),) = body.items()
    return str(fault["message"])


async def neutron_groups(cloud: Cloud, token: str) -> list[dict[str, Any]]:
    """The project's groups and their rules as Neutron shows them (what a refusal must leave)."""
    status, body = await neutron(cloud, "GET", "/security-groups", token)
    assert status == 200, body
    for group in body["security_groups"]:
        group["security_group_rules"].sort(key=lambda r: r["id"])
    return sorted(body["security_groups"], key=lambda g: g["id"])


async def port_groups(cloud: Cloud, token: str, server_id: str) -> list[list[str]]:
    """Each of the server's ports' security groups (ports by id)."""
    status, body = await neutron(
        cloud, "GET", f"/ports?device_id={server_id}&sort_key=id&sort_dir=asc", token
    )
    assert status == 200, body
    return [sorted(p["security_groups"]) for p in body["ports"]]


@pytest.fixture
async def project(cloud: Cloud) -> AsyncIterator[tuple[Credentials, str]]:
    """A project of its own (its own default group) and its member's token."""
    who = await cloud.new_member("sg")
    yield who, await cloud.token(who)


@contextlib.asynccontextmanager
async def network(
    cloud: Cloud, token: str, *, port_security: bool = True, cidr: str = "10.31.0.0/24"
) -> AsyncIterator[str]:
    """A network of the caller's project with a subnet; removed (as admin) when the block ends."""
    status, net = await neutron(
        cloud,
        "POST",
        "/networks",
        token,
        {"network": {"name": unique("sgnet"), "port_security_enabled": port_security}},
    )
    assert status == 201, net
    network_id = net["network"]["id"]
    try:
        status, subnet = await neutron(
            cloud,
            "POST",
            "/subnets",
            token,
            {"subnet": {"network_id": network_id, "cidr": cidr, "ip_version": 4}},
        )
        assert status == 201, subnet
        yield network_id
    finally:
        admin = await cloud.token()
        status, ports = await neutron(cloud, "GET", f"/ports?network_id={network_id}", admin)
        for port in ports.get("ports", []):
            if port["device_owner"] != "network:dhcp":
                await neutron(cloud, "DELETE", f"/ports/{port['id']}", admin)
        await neutron(cloud, "DELETE", f"/networks/{network_id}", admin)


@contextlib.asynccontextmanager
async def server(cloud: Cloud, token: str, image: str, networks: Any) -> AsyncIterator[str]:
    """An ACTIVE server on `networks` (a list of network ids, or "none"); deleted when the block
    ends, and waited for until its ports are gone (a group its ports used can then go too)."""
    nets = networks if isinstance(networks, str) else [{"uuid": n} for n in networks]
    body = {"server": {"name": unique("sgvm"), "imageRef": image, "flavorRef": "42", "networks": nets}}
    status, created = await nova(cloud, "POST", f"{C}/servers", token, body, version="2.37")
    assert status == 202, created
    server_id = created["server"]["id"]
    try:
        deadline = time.monotonic() + 90
        while True:
            status, shown = await nova(cloud, "GET", f"{C}/servers/{server_id}", token)
            assert status == 200 and shown["server"]["status"] != "ERROR", shown
            if shown["server"]["status"] == "ACTIVE":
                break
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(0.3)
        yield server_id
    finally:
        await nova(cloud, "DELETE", f"{C}/servers/{server_id}", token)
        deadline = time.monotonic() + 90
        while (await nova(cloud, "GET", f"{C}/servers/{server_id}", token))[0] != 404 or (
            await port_groups(cloud, token, server_id)
        ):
            assert time.monotonic() < deadline, "the server and its ports are not gone"
            await asyncio.sleep(0.3)


async def create_group(cloud: Cloud, token: str, name: str, description: str = "d") -> dict[str, Any]:
    body = {"security_group": {"name": name, "description": description}}
    status, created = await nova(cloud, "POST", GROUPS, token, body)
    assert status == 200, created
    return dict(created["security_group"])


async def action(cloud: Cloud, token: str, server_id: str, body: Any) -> tuple[int, Any]:
    return await nova(cloud, "POST", f"{C}/servers/{server_id}/action", token, body, version="2.96")


# --- the proxy: groups ------------------------------------------------------------------------------


async def test_proxy_groups_are_neutrons_in_novas_shape(cloud: Cloud, project: Any) -> None:
    who, token = project
    listed = (await nova(cloud, "GET", GROUPS, token))[1]["security_groups"]
    [default] = listed  # Neutron's list made the project's default group
    assert default["name"] == "default" and default["tenant_id"] == who.project_id
    # Nova shows the ingress rules only: Neutron's two from the group's own members
    assert sorted(r["ip_protocol"] or "" for r in default["rules"]) == ["", ""]
    for rule in default["rules"]:
        assert rule["group"] == {"name": "default", "tenant_id": who.project_id} and rule["ip_range"] == {}
        assert (rule["parent_group_id"], rule["from_port"], rule["to_port"]) == (default["id"], None, None)

    created = await create_group(cloud, token, " web servers ", "the web tier")
    assert created == {
        "id": created["id"],
        "name": " web servers ",
        "description": "the web tier",
        "tenant_id": who.project_id,
        "rules": [],  # Neutron's two egress rules are not Nova's
    }
    status, shown = await nova(cloud, "GET", f"{GROUPS}/{created['id']}", token)
    assert status == 200 and shown["security_group"] == created
    status, in_neutron = await neutron(cloud, "GET", f"/security-groups/{created['id']}", token)
    assert status == 200 and in_neutron["security_group"]["name"] == " web servers "
    assert {r["direction"] for r in in_neutron["security_group"]["security_group_rules"]} == {"egress"}
    status, listed = await nova(cloud, "GET", GROUPS, token)
    assert [g["name"] for g in listed["security_groups"]] == [" web servers ", "default"]  # by name
    assert (await nova(cloud, "GET", f"{GROUPS}?limit=1&offset=1", token))[1]["security_groups"] == [created]

    body = {"security_group": {"name": "renamed", "description": ""}}
    status, updated = await nova(cloud, "PUT", f"{GROUPS}/{created['id']}", token, body)
    assert status == 200 and updated["security_group"] == {**created, "name": "renamed", "description": ""}
    status, answer = await nova(cloud, "DELETE", f"{GROUPS}/{created['id']}", token)
    assert status == 202 and answer is None
    assert (await nova(cloud, "GET", f"{GROUPS}/{created['id']}", token))[0] == 404
    assert (await neutron(cloud, "GET", f"/security-groups/{created['id']}", token))[0] == 404


async def test_the_proxy_ends_at_2_35(cloud: Cloud, project: Any) -> None:
    _, token = project
    [default] = await neutron_groups(cloud, token)
    for method, path, body in (
        ("GET", GROUPS, None),
        ("POST", GROUPS, {"security_group": {"name": "late", "description": ""}}),
        ("GET", f"{GROUPS}/{default['id']}", None),
        ("DELETE", f"{GROUPS}/{default['id']}", None),
        ("POST", RULES, {"security_group_rule": {"parent_group_id": default["id"], "ip_protocol": "tcp"}}),
    ):
        status, answer = await nova(cloud, method, path, token, body, version="2.36")
        assert status == 404 and message(answer) == "The resource could not be found.", (method, path)
    assert await neutron_groups(cloud, token) == [default]


async def test_admins_list_every_projects_groups_with_all_tenants(cloud: Cloud, project: Any) -> None:
    who, token = project
    mine = await create_group(cloud, token, unique("mine"))
    admin = await cloud.token()
    everyone = (await nova(cloud, "GET", f"{GROUPS}?all_tenants=1", admin))[1]["security_groups"]
    assert mine in everyone
    own = (await nova(cloud, "GET", GROUPS, admin))[1]["security_groups"]
    assert mine not in own and {g["tenant_id"] for g in own} == {(await cloud_admin_project(cloud))}
    # a member's all_tenants is its own project's list
    assert (await nova(cloud, "GET", f"{GROUPS}?all_tenants=1", token))[1]["security_groups"] == (
        await nova(cloud, "GET", GROUPS, token)
    )[1]["security_groups"]
    other = await cloud.new_member("sgother")
    other_token = await cloud.token(other)
    assert (await nova(cloud, "GET", f"{GROUPS}/{mine['id']}", other_token))[0] == 404
    assert (await nova(cloud, "DELETE", f"{GROUPS}/{mine['id']}", other_token))[0] == 404
    assert (await nova(cloud, "DELETE", f"{GROUPS}/{mine['id']}", token))[0] == 202


async def cloud_admin_project(cloud: Cloud) -> str:
    status, body, _ = await cloud.request("GET", "/identity/v3/auth/projects")
    assert status == 200, body
    return str(next(p["id"] for p in body["projects"] if p["name"] == "admin"))


async def test_group_refusals_in_novas_words_change_nothing(cloud: Cloud, project: Any, image: str) -> None:
    who, token = project
    group = await create_group(cloud, token, "kept")
    [default] = [g for g in await neutron_groups(cloud, token) if g["name"] == "default"]
    before = await neutron_groups(cloud, token)
    bad_creates = [
        ({"security_group": {"name": 5, "description": ""}}, 400, "name is not a string or unicode"),
        ({"security_group": {"name": "x"}}, 400, "description is not a string or unicode"),
        (
            {"security_group": {"name": "x" * 256, "description": ""}},
            400,
            "name has 256 characters, more than 255.",
        ),
        ({"security_group": {"name": "x", "description": "d" * 300}}, 400, "description has 300 characters"),
        ({"security_groups": {}}, 400, "Missing parameter security_group"),
        ({}, 400, "The request body can't be empty"),
        (
            {"security_group": {"name": "default", "description": ""}},
            403,
            "Default security group already exists.",
        ),
    ]
    for body, code, text in bad_creates:
        status, answer = await nova(cloud, "POST", GROUPS, token, body)
        assert status == code and text in message(answer), (body, answer)
    for method in ("GET", "PUT", "DELETE"):
        body = {"security_group": {"name": "y", "description": ""}} if method == "PUT" else None
        status, answer = await nova(cloud, method, f"{GROUPS}/not-a-uuid", token, body)
        assert status == 400 and message(answer) == "Security group id should be uuid", answer
        status, answer = await nova(cloud, method, f"{GROUPS}/{MISSING}", token, body)
        assert status == 404 and message(answer) == f"Security group {MISSING} does not exist", answer
    status, answer = await nova(
        cloud, "PUT", f"{GROUPS}/{group['id']}", token, {"security_group": {"name": "z"}}
    )
    assert status == 400 and message(answer) == "description is not a string or unicode"
    body = {"security_group": {"name": "not-default", "description": ""}}
    status, answer = await nova(cloud, "PUT", f"{GROUPS}/{default['id']}", token, body)
    assert status == 400 and message(answer) == "Updating default security group not allowed."
    status, answer = await nova(cloud, "DELETE", f"{GROUPS}/{default['id']}", token)
    assert status == 400 and message(answer) == "Insufficient rights for removing default security group."
    async with network(cloud, token) as net:
        status, port = await neutron(
            cloud, "POST", "/ports", token, {"port": {"network_id": net, "security_groups": [group["id"]]}}
        )
        assert status == 201, port
        status, answer = await nova(cloud, "DELETE", f"{GROUPS}/{group['id']}", token)
        assert status == 400 and message(answer) == f"Security Group {group['id']} in use.", answer
        before = await neutron_groups(cloud, token)
    reader = await cloud.new_member("sgreader", role="reader")
    status, answer = await nova(cloud, "POST", GROUPS, await cloud.token(reader), bad_creates[0][0])
    assert status == 403
    assert await neutron_groups(cloud, token) == before


# --- the proxy: rules -------------------------------------------------------------------------------


async def test_rules_are_neutron_ingress_rules_in_novas_shape(cloud: Cloud, project: Any) -> None:
    who, token = project
    group = await create_group(cloud, token, "rules")
    peer = await create_group(cloud, token, "peer")

    async def rule(**fields: Any) -> dict[str, Any]:
        body = {"security_group_rule": {"parent_group_id": group["id"], **fields}}
        status, created = await nova(cloud, "POST", RULES, token, body)
        assert status == 200, created
        return dict(created["security_group_rule"])

    ssh = await rule(ip_protocol="tcp", from_port=22, to_port=22)
    assert ssh == {
        "id": ssh["id"],
        "parent_group_id": group["id"],
        "ip_protocol": "tcp",
        "from_port": 22,
        "to_port": 22,
        "ip_range": {"cidr": "0.0.0.0/0"},
        "group": {},
    }
    v6 = await rule(ip_protocol="udp", from_port=53, to_port=54, cidr="2001:db8::/64")
    assert v6["ip_range"] == {"cidr": "2001:db8::/64"}
    ping = await rule(ip_protocol="icmp", from_port=-1, to_port=-1, cidr="10.0.0.0/8")
    assert (ping["from_port"], ping["to_port"]) == (-1, -1)
    echo = await rule(ip_protocol="ICMP", from_port=8, to_port=-1)
    assert (echo["ip_protocol"], echo["from_port"], echo["to_port"]) == ("icmp", 8, None)  # Neutron's
    from_peer = await rule(ip_protocol="tcp", group_id=peer["id"])  # no ports: every port
    assert from_peer["group"] == {"name": "peer", "tenant_id": who.project_id} and from_peer["ip_range"] == {}
    assert (from_peer["from_port"], from_peer["to_port"]) == (1, 65535)
    anything = await rule(group_id=peer["id"])
    assert (anything["ip_protocol"], anything["from_port"], anything["to_port"]) == (None, None, None)

    status, body = await neutron(
        cloud, "GET", f"/security-group-rules?security_group_id={group['id']}", token
    )
    by_id = {r["id"]: r for r in body["security_group_rules"]}
    seen = {
        key: (r["direction"], r["ethertype"], r["protocol"], r["port_range_min"], r["port_range_max"])
        for key, r in (("ssh", by_id[ssh["id"]]), ("v6", by_id[v6["id"]]), ("ping", by_id[ping["id"]]))
    }
    assert seen == {
        "ssh": ("ingress", "IPv4", "tcp", 22, 22),
        "v6": ("ingress", "IPv6", "udp", 53, 54),
        "ping": ("ingress", "IPv4", "icmp", None, None),
    }
    assert (by_id[echo["id"]]["port_range_min"], by_id[echo["id"]]["port_range_max"]) == (8, None)
    assert by_id[from_peer["id"]]["remote_group_id"] == peer["id"]
    assert (by_id[from_peer["id"]]["port_range_min"], by_id[from_peer["id"]]["port_range_max"]) == (1, 65535)

    # a Neutron rule Nova did not make shows as Nova shows it; egress rules not at all
    body = {
        "security_group_rule": {"security_group_id": group["id"], "direction": "ingress", "protocol": "gre"}
    }
    status, gre = await neutron(cloud, "POST", "/security-group-rules", token, body)
    assert status == 201, gre
    shown = (await nova(cloud, "GET", f"{GROUPS}/{group['id']}", token))[1]["security_group"]
    rules = {r["id"]: r for r in shown["rules"]}
    assert set(rules) == {
        ssh["id"],
        v6["id"],
        ping["id"],
        echo["id"],
        from_peer["id"],
        anything["id"],
        gre["security_group_rule"]["id"],
    }
    assert rules[ssh["id"]] == ssh and rules[from_peer["id"]] == from_peer
    gre_rule = rules[gre["security_group_rule"]["id"]]
    assert (gre_rule["ip_protocol"], gre_rule["from_port"], gre_rule["to_port"], gre_rule["ip_range"]) == (
        "gre",
        -1,
        -1,
        {"cidr": "0.0.0.0/0"},
    )

    status, answer = await nova(cloud, "DELETE", f"{RULES}/{ssh['id']}", token)
    assert status == 202 and answer is None
    assert (await neutron(cloud, "GET", f"/security-group-rules/{ssh['id']}", token))[0] == 404
    # deleting the peer takes the rules that name it
    assert (await nova(cloud, "DELETE", f"{GROUPS}/{peer['id']}", token))[0] == 202
    shown = (await nova(cloud, "GET", f"{GROUPS}/{group['id']}", token))[1]["security_group"]
    assert {from_peer["id"], anything["id"], ssh["id"]} & {r["id"] for r in shown["rules"]} == set()


async def test_rule_refusals_in_novas_words_change_nothing(cloud: Cloud, project: Any) -> None:
    who, token = project
    group = await create_group(cloud, token, "strict")
    parent = group["id"]
    body = {
        "security_group_rule": {
            "parent_group_id": parent,
            "ip_protocol": "tcp",
            "from_port": 80,
            "to_port": 80,
        }
    }
    status, kept = await nova(cloud, "POST", RULES, token, body)
    assert status == 200, kept
    other = await cloud.new_member("sgrules")
    foreign = await create_group(cloud, await cloud.token(other), "foreign")
    before = await neutron_groups(cloud, token)
    tcp = {"ip_protocol": "tcp", "from_port": 22, "to_port": 22}
    on = {"parent_group_id": parent}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"parent_group_id": "nope", **tcp}, 400, "Security group id should be uuid"),
        ({**tcp}, 400, "Security group id should be uuid"),
        ({"parent_group_id": MISSING, **tcp}, 404, f"Security group {MISSING} does not exist"),
        ({"parent_group_id": foreign["id"], **tcp}, 404, f"Security group {foreign['id']} does not exist"),
        ({**on, "group_id": "nope", **tcp}, 400, "Security group id should be uuid"),
        ({**on, "group_id": MISSING, **tcp}, 404, f"Security group {MISSING} does not exist"),
        ({**on, "ip_protocol": "foo", "from_port": 1, "to_port": 2}, 400, "Invalid IP protocol foo."),
        ({**on, "ip_protocol": "tcp", "from_port": "a", "to_port": 2}, 400,
         "Invalid input received: To and From ports must be integers"),
        ({**on, "ip_protocol": "icmp", "from_port": "a", "to_port": 2}, 400,
         "Invalid input received: Type and Code must be integers for ICMP protocol type"),
        ({**on, "ip_protocol": "tcp", "from_port": 22, "to_port": 21}, 400,
         "Invalid port range 22:21. Former value cannot be greater than the later"),
        ({**on, "ip_protocol": "udp", "from_port": 1, "to_port": 65536}, 400,
         "Invalid port range 1:65536. Valid UDP ports should be between 1-65535"),
        ({**on, "ip_protocol": "icmp", "from_port": 256, "to_port": 0}, 400,
         "Invalid port range 256:0. For ICMP, the type:code must be valid"),
        ({**on, **tcp, "cidr": "10.0.0.300/8"}, 400, "10.0.0.300/8 is not a valid IP network."),
        ({**on, **tcp, "cidr": "10.0.0.1"}, 400, "10.0.0.1 is not a valid IP network."),
        ({**on, **tcp, "cidr": "10.0.0.0/0"}, 400, "Bad prefix for network in cidr 10.0.0.0/0"),
        ({**on, "ip_protocol": "tcp"}, 400, "Not enough parameters to build a valid rule."),
        ({**on, "ip_protocol": "tcp", "from_port": 80, "to_port": 80}, 400,
         f"This rule already exists in group {parent}"),
    ]  # fmt: skip
    for fields, code, text in cases:
        status, answer = await nova(cloud, "POST", RULES, token, {"security_group_rule": fields})
        assert (status, message(answer)) == (code, text), fields
    status, answer = await nova(cloud, "POST", RULES, token, {"security_group_rules": {}})
    assert status == 400 and message(answer) == "Missing parameter security_group_rule"
    status, answer = await nova(cloud, "DELETE", f"{RULES}/{MISSING}", token)
    assert status == 404 and message(answer) == f"Security group rule {MISSING} does not exist"
    status, answer = await nova(cloud, "DELETE", f"{RULES}/nope", token)
    assert status == 400 and message(answer) == "Security group id should be uuid"
    status, answer = await nova(
        cloud, "DELETE", f"{RULES}/{kept['security_group_rule']['id']}", await cloud.token(other)
    )
    assert status == 404
    assert await neutron_groups(cloud, token) == before


# --- a server's groups ------------------------------------------------------------------------------


async def test_add_and_remove_change_every_port_and_the_servers_views(
    cloud: Cloud, project: Any, image: str
) -> None:
    who, token = project
    web = await create_group(cloud, token, "web")
    [default] = [g for g in await neutron_groups(cloud, token) if g["name"] == "default"]
    async with (
        network(cloud, token) as first,
        network(cloud, token, cidr="10.32.0.0/24") as second,
        server(cloud, token, image, [first, second]) as vm,
    ):
        assert await port_groups(cloud, token, vm) == [[default["id"]]] * 2
        assert await action(cloud, token, vm, {"addSecurityGroup": {"name": "web"}}) == (202, None)
        assert await port_groups(cloud, token, vm) == [sorted([default["id"], web["id"]])] * 2
        shown = (await nova(cloud, "GET", f"{C}/servers/{vm}", token))[1]["server"]
        assert shown["security_groups"] == [{"name": "default"}, {"name": "web"}]
        status, listed = await nova(
            cloud, "GET", f"{C}/servers/{vm}/os-security-groups", token, version="2.96"
        )
        assert status == 200 and [g["name"] for g in listed["security_groups"]] == ["default", "web"]
        assert (
            listed["security_groups"][1]
            == (await nova(cloud, "GET", f"{GROUPS}/{web['id']}", token))[1]["security_group"]
        )
        # by id too; the server's groups go one by one, and with the last the views show none
        assert await action(cloud, token, vm, {"removeSecurityGroup": {"name": default["id"]}}) == (202, None)
        assert await port_groups(cloud, token, vm) == [[web["id"]]] * 2
        assert await action(cloud, token, vm, {"removeSecurityGroup": {"name": "web"}}) == (202, None)
        assert await port_groups(cloud, token, vm) == [[], []]
        shown = (await nova(cloud, "GET", f"{C}/servers/{vm}", token))[1]["server"]
        assert "security_groups" not in shown
        assert (await nova(cloud, "GET", f"{C}/servers/{vm}/os-security-groups", token))[1] == {
            "security_groups": []
        }
        # Nova changes a locked server's ports too (no lock check on these actions)
        assert (await action(cloud, token, vm, {"lock": None}))[0] == 202
        assert await action(cloud, token, vm, {"addSecurityGroup": {"name": "default"}}) == (202, None)
        assert await port_groups(cloud, token, vm) == [[default["id"]]] * 2
        assert (await action(cloud, token, vm, {"unlock": None}))[0] == 202
        status, actions = await nova(cloud, "GET", f"{C}/servers/{vm}/os-instance-actions", token)
        assert [a["action"] for a in actions["instanceActions"]] == ["unlock", "lock", "create"]  # no others


async def test_action_refusals_in_novas_words_change_no_port(cloud: Cloud, project: Any, image: str) -> None:
    who, token = project
    await create_group(cloud, token, "web")
    twin_a, twin_b = await create_group(cloud, token, "twin"), await create_group(cloud, token, "twin")
    other = await cloud.new_member("sgact")
    foreign = await create_group(cloud, await cloud.token(other), "foreign")
    async with (
        network(cloud, token) as net,
        network(cloud, token, port_security=False, cidr="10.33.0.0/24") as open_net,
        server(cloud, token, image, [net]) as vm,
        server(cloud, token, image, [open_net]) as open_vm,
        server(cloud, token, image, "none") as portless,
    ):
        before = await port_groups(cloud, token, vm)
        assert await port_groups(cloud, token, open_vm) == [[]]
        status, answer = await action(cloud, token, MISSING, {"addSecurityGroup": None})
        assert status == 404 and message(answer) == f"Instance {MISSING} could not be found."
        cases: list[tuple[str, Any, int, str]] = [
            (vm, {"addSecurityGroup": None}, 400, "Missing parameter dict"),
            (vm, {"addSecurityGroup": {}}, 400, "Security group not specified"),
            (vm, {"removeSecurityGroup": {"name": "  "}}, 400, "Security group name cannot be empty"),
            (vm, {"addSecurityGroup": {"name": "nope"}}, 404,
             f"Security group nope is not found for project {who.project_id}"),
            (vm, {"addSecurityGroup": {"name": foreign["id"]}}, 404,
             f"Security group {foreign['id']} is not found for project {who.project_id}"),
            (vm, {"addSecurityGroup": {"name": "twin"}}, 409,
             "Multiple security_group matches found for name 'twin', use an ID to be more specific."),
            (vm, {"addSecurityGroup": {"name": "default"}}, 400, "Duplicate items in the list"),
            (vm, {"removeSecurityGroup": {"name": "web"}}, 404,
             f"Security group web not associated with the instance {vm}"),
            (open_vm, {"addSecurityGroup": {"name": "web"}}, 400,
             "Network requires port_security_enabled and subnet associated in order to apply security"),
            (portless, {"addSecurityGroup": {"name": "web"}}, 404,
             f"instance_id {portless} could not be found as device id on any ports"),
        ]  # fmt: skip
        for target, body, code, text in cases:
            status, answer = await action(cloud, token, target, body)
            assert status == code and text in message(answer), (body, answer)
        status, answer = await action(
            cloud, await cloud.token(other), vm, {"addSecurityGroup": {"name": "web"}}
        )
        assert status == 404
        status, _ = await nova(cloud, "GET", f"{C}/servers/{vm}/os-security-groups", await cloud.token(other))
        assert status == 404
        assert await port_groups(cloud, token, vm) == before
        assert await port_groups(cloud, token, open_vm) == [[]]
        # an ambiguous name is fine by id
        assert await action(cloud, token, vm, {"addSecurityGroup": {"name": twin_a["id"]}}) == (202, None)
        assert twin_a["id"] in (await port_groups(cloud, token, vm))[0]
        assert twin_b["id"] not in (await port_groups(cloud, token, vm))[0]


async def test_cli_server_add_and_remove_security_group(cloud: Cloud, project: Any, image: str) -> None:
    who, token = project
    group = await create_group(cloud, token, "cli-web")
    async with network(cloud, token) as net, server(cloud, token, image, [net]) as vm:
        cloud.openstack("server", "add", "security", "group", vm, "cli-web", who=who, fmt=None)
        shown = cloud.openstack("server", "show", vm, who=who)
        names = shown["security_groups"]
        names = [g["name"] for g in names] if isinstance(names, list) else names
        assert "cli-web" in str(names) and "default" in str(names)
        assert group["id"] in (await port_groups(cloud, token, vm))[0]
        cloud.openstack("server", "remove", "security", "group", vm, "cli-web", who=who, fmt=None)
        assert group["id"] not in (await port_groups(cloud, token, vm))[0]
        failed = cloud.openstack_fails("server", "remove", "security", "group", vm, "cli-web", who=who)
        assert "not associated with the instance" in failed.stderr + failed.stdout
