"""Neutron's security groups and rules (api/network/security_groups.py) through the real
`openstack` CLI and raw HTTP: the default group made on first use, rules de-duplicated by
meaning, every bad input refused in Neutron's words with nothing changed, ports' groups and port
security, groups in use, tenancy and quotas."""

from __future__ import annotations

import uuid
from typing import Any

from tests.api.conftest import Cloud, Credentials
from tests.api.test_network import assert_neutron_error, call, networks_removed, unique


async def _rules(cloud: Cloud, token: str, group_id: str) -> list[dict[str, Any]]:
    status, body = await call(cloud, "GET", f"/security-group-rules?security_group_id={group_id}", token)
    assert status == 200, body
    return body["security_group_rules"]


async def _group(cloud: Cloud, token: str, name: str, **extra: Any) -> dict[str, Any]:
    status, body = await call(
        cloud, "POST", "/security-groups", token, {"security_group": {"name": name, **extra}}
    )
    assert status == 201, body
    return body["security_group"]


async def _default(cloud: Cloud, token: str) -> dict[str, Any]:
    status, body = await call(cloud, "GET", "/security-groups?name=default", token)
    assert status == 200 and len(body["security_groups"]) == 1, body
    return body["security_groups"][0]


async def test_default_group_is_made_on_first_use_with_neutrons_rules(
    cloud: Cloud, member: Credentials
) -> None:
    token = await cloud.token(member)
    default = await _default(cloud, token)
    assert default["description"] == "Default security group" and default["stateful"] is True
    rules = {
        (r["direction"], r["ethertype"], r["remote_group_id"], r["protocol"], r["remote_ip_prefix"])
        for r in default["security_group_rules"]
    }
    assert rules == {
        ("egress", "IPv4", None, None, None),
        ("egress", "IPv6", None, None, None),
        ("ingress", "IPv4", default["id"], None, None),
        ("ingress", "IPv6", default["id"], None, None),
    }
    assert all(r["belongs_to_default_sg"] for r in default["security_group_rules"])
    # Listing again does not make a second one.
    status, body = await call(cloud, "GET", "/security-groups", token)
    assert [g["name"] for g in body["security_groups"]].count("default") == 1
    # It cannot be renamed, nor deleted by its project.
    status, body = await call(
        cloud, "PUT", f"/security-groups/{default['id']}", token, {"security_group": {"name": "x"}}
    )
    assert status == 409
    assert_neutron_error(
        body, "SecurityGroupCannotUpdateDefault", "Updating default security group not allowed."
    )
    status, body = await call(cloud, "DELETE", f"/security-groups/{default['id']}", token)
    assert status == 409
    assert_neutron_error(body, "SecurityGroupCannotRemoveDefault")
    # A new group may not be called default.
    status, body = await call(
        cloud, "POST", "/security-groups", token, {"security_group": {"name": "default"}}
    )
    assert status == 409
    assert_neutron_error(body, "SecurityGroupDefaultAlreadyExists")


async def test_cli_groups_and_rules(cloud: Cloud, member: Credentials) -> None:
    name = unique("sg")
    group = cloud.openstack("security", "group", "create", name, "--description", "web", who=member)
    assert group["name"] == name and group["description"] == "web"
    # A new group has Neutron's two egress rules.
    listed = cloud.openstack("security", "group", "rule", "list", group["id"], who=member)
    assert sorted(r["Direction"] for r in listed) == ["egress", "egress"]
    rule = cloud.openstack(
        "security", "group", "rule", "create", group["id"], "--protocol", "tcp", "--dst-port", "22",
        "--remote-ip", "10.0.0.0/8", who=member,
    )  # fmt: skip
    assert (rule["protocol"], rule["port_range_min"], rule["port_range_max"]) == ("tcp", 22, 22)
    assert rule["remote_ip_prefix"] == "10.0.0.0/8" and rule["direction"] == "ingress"
    # The same rule again: Neutron's 409 naming the one that exists; also by protocol number.
    error = cloud.openstack_fails(
        "security", "group", "rule", "create", group["id"], "--protocol", "6", "--dst-port", "22",
        "--remote-ip", "10.0.0.0/8", who=member,
    )  # fmt: skip
    assert f"Rule id is {rule['id']}" in error.stderr
    icmp = cloud.openstack(
        "security", "group", "rule", "create", group["id"], "--protocol", "icmp", "--icmp-type", "8",
        "--icmp-code", "0", who=member,
    )  # fmt: skip
    assert (icmp["port_range_min"], icmp["port_range_max"]) == (8, 0)
    shown = cloud.openstack("security", "group", "show", name, who=member)
    assert len(shown["rules"]) == 4
    cloud.openstack("security", "group", "rule", "delete", icmp["id"], who=member, fmt=None)
    cloud.openstack("security", "group", "set", name, "--name", name + "-2", who=member, fmt=None)
    assert cloud.openstack("security", "group", "show", group["id"], who=member)["name"] == name + "-2"
    cloud.openstack("security", "group", "delete", group["id"], who=member, fmt=None)
    token = await cloud.token(member)
    status, body = await call(cloud, "GET", f"/security-groups/{group['id']}", token)
    assert status == 404
    assert_neutron_error(body, "SecurityGroupNotFound", f"Security group {group['id']} does not exist")
    assert await _rules(cloud, token, group["id"]) == []


BAD_RULES: list[tuple[dict[str, Any], int, str, str]] = [
    ({"direction": "sideways"}, 400, "HTTPBadRequest", "'sideways' is not in ['ingress', 'egress']"),
    ({"direction": "ingress", "ethertype": "IPv5"}, 400, "SecurityGroupRuleInvalidEtherType", "IPv5"),
    ({"direction": "ingress", "protocol": "tcpx"}, 400, "SecurityGroupRuleInvalidProtocol", "tcpx"),
    ({"direction": "ingress", "protocol": 256}, 400, "SecurityGroupRuleInvalidProtocol", "256"),
    ({"direction": "ingress", "port_range_min": 22}, 400, "SecurityGroupProtocolRequiredWithPorts", ""),
    (
        {"direction": "ingress", "protocol": "tcp", "port_range_min": 30, "port_range_max": 20},
        400,
        "SecurityGroupInvalidPortRange",
        "port_range_min must be <= port_range_max",
    ),
    (
        {"direction": "ingress", "protocol": "tcp", "port_range_min": 0, "port_range_max": 20},
        400,
        "SecurityGroupInvalidPortValue",
        "Invalid value for port 0",
    ),
    (
        {"direction": "ingress", "protocol": "udp", "port_range_min": 1, "port_range_max": 70000},
        400,
        "SecurityGroupInvalidPortValue",
        "70000",
    ),
    (
        {"direction": "ingress", "protocol": "tcp", "port_range_max": 6},
        400,
        "SecurityGroupInvalidPortRange",
        "port_range_min must be <= port_range_max",
    ),
    (
        {"direction": "ingress", "protocol": "gre", "port_range_min": 1, "port_range_max": 2},
        400,
        "SecurityGroupInvalidProtocolForPort",
        "",
    ),
    (
        {"direction": "ingress", "protocol": "icmp", "port_range_min": 256},
        400,
        "SecurityGroupInvalidIcmpValue",
        "It must be 0 to 255",
    ),
    (
        {"direction": "ingress", "protocol": "icmp", "port_range_max": 0},
        400,
        "SecurityGroupMissingIcmpType",
        "",
    ),
    (
        {"direction": "ingress", "remote_ip_prefix": "10.0.0.300/24"},
        400,
        "HTTPBadRequest",
        "not a valid IP subnet",
    ),
    (
        {"direction": "ingress", "ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/24"},
        400,
        "SecurityGroupRuleParameterConflict",
        "Conflicting value ethertype IPv6 for CIDR 10.0.0.0/24",
    ),
    (
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "ipv6-icmp"},
        400,
        "SecurityGroupEthertypeConflictWithProtocol",
        "",
    ),
    ({"direction": "ingress", "unknown": 1}, 400, "HTTPBadRequest", "Unrecognized attribute(s) 'unknown'"),
]


async def test_bad_rules_are_refused_in_neutrons_words_and_change_nothing(
    cloud: Cloud, member: Credentials
) -> None:
    token = await cloud.token(member)
    group = await _group(cloud, token, unique("sg"))
    before = await _rules(cloud, token, group["id"])
    for rule, code, kind, text in BAD_RULES:
        body = {"security_group_rule": {"security_group_id": group["id"], **rule}}
        status, answer = await call(cloud, "POST", "/security-group-rules", token, body)
        assert status == code, (rule, answer)
        assert_neutron_error(answer, kind, text)
    # A prefix and a remote group at once; a remote group or a group that is not there.
    both = {"direction": "ingress", "remote_ip_prefix": "10.0.0.0/8", "remote_group_id": group["id"]}
    status, answer = await call(
        cloud,
        "POST",
        "/security-group-rules",
        token,
        {"security_group_rule": {"security_group_id": group["id"], **both}},
    )
    assert status == 400
    assert_neutron_error(answer, "SecurityGroupRemoteGroupAndRemoteIpPrefix")
    # A prefix is kept as given; its network is what it means (and what is de-duplicated).
    body = {"security_group_id": group["id"], "direction": "ingress", "remote_ip_prefix": "10.2.3.124/24"}
    status, answer = await call(cloud, "POST", "/security-group-rules", token, {"security_group_rule": body})
    assert status == 201, answer
    made = answer["security_group_rule"]
    assert (made["remote_ip_prefix"], made["normalized_cidr"]) == ("10.2.3.124/24", "10.2.3.0/24")
    body["remote_ip_prefix"] = "10.2.3.0/24"
    status, answer = await call(cloud, "POST", "/security-group-rules", token, {"security_group_rule": body})
    assert status == 409
    assert_neutron_error(answer, "SecurityGroupRuleExists", made["id"])
    status, _ = await call(cloud, "DELETE", f"/security-group-rules/{made['id']}", token)
    assert status == 204
    missing = str(uuid.uuid4())
    for body in (
        {"security_group_id": "not-a-uuid", "direction": "ingress"},
        {"security_group_id": group["id"], "direction": "ingress", "remote_group_id": "bad_group_id"},
        {"security_group_id": missing, "direction": "ingress"},
        {"security_group_id": group["id"], "direction": "ingress", "remote_group_id": missing},
    ):
        status, answer = await call(
            cloud, "POST", "/security-group-rules", token, {"security_group_rule": body}
        )
        assert status == 404
        named = body.get("remote_group_id") or body["security_group_id"]
        assert_neutron_error(answer, "SecurityGroupNotFound", f"Security group {named} does not exist")
    # One bad rule of a bulk create: none of them is made.
    bulk = {
        "security_group_rules": [
            {"security_group_id": group["id"], "direction": "ingress", "protocol": "tcp"},
            {"security_group_id": group["id"], "direction": "ingress", "protocol": "nope"},
        ]
    }
    status, answer = await call(cloud, "POST", "/security-group-rules", token, bulk)
    assert status == 400
    assert await _rules(cloud, token, group["id"]) == before


async def test_rules_of_other_projects_groups_are_not_found(cloud: Cloud, member: Credentials) -> None:
    other = await cloud.new_member("other")
    mine, theirs = await cloud.token(member), await cloud.token(other)
    group = await _group(cloud, mine, unique("sg"))
    foreign = await _group(cloud, theirs, unique("sg"))
    # Their group as mine's remote group, their group's rules, their group itself: not found.
    body = {"security_group_id": group["id"], "direction": "ingress", "remote_group_id": foreign["id"]}
    status, answer = await call(cloud, "POST", "/security-group-rules", mine, {"security_group_rule": body})
    assert status == 404
    assert_neutron_error(answer, "SecurityGroupNotFound")
    body = {"security_group_id": foreign["id"], "direction": "ingress"}
    status, answer = await call(cloud, "POST", "/security-group-rules", mine, {"security_group_rule": body})
    assert status == 404
    for method in ("GET", "DELETE"):
        status, answer = await call(cloud, method, f"/security-groups/{foreign['id']}", mine)
        assert status == 404, answer
    rule_id = foreign["security_group_rules"][0]["id"]
    status, answer = await call(cloud, "DELETE", f"/security-group-rules/{rule_id}", mine)
    assert status == 404
    assert_neutron_error(answer, "SecurityGroupRuleNotFound")
    status, listed = await call(cloud, "GET", "/security-groups", mine)
    assert foreign["id"] not in {g["id"] for g in listed["security_groups"]}
    assert len(await _rules(cloud, theirs, foreign["id"])) == 2


async def test_ports_carry_groups_and_port_security_as_neutron(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    default = await _default(cloud, token)
    web = await _group(cloud, token, unique("web"))
    async with networks_removed(cloud) as created:
        status, body = await call(cloud, "POST", "/networks", token, {"network": {"name": unique("net")}})
        net = body["network"]
        created.append(net["id"])
        status, body = await call(
            cloud,
            "POST",
            "/subnets",
            token,
            {"subnet": {"network_id": net["id"], "cidr": "10.7.0.0/24", "ip_version": 4}},
        )
        assert status == 201, body
        # No groups asked: the default group.
        status, body = await call(cloud, "POST", "/ports", token, {"port": {"network_id": net["id"]}})
        assert status == 201 and body["port"]["security_groups"] == [default["id"]], body
        port = body["port"]
        # Replaced by update; the group is then in use.
        status, body = await call(
            cloud, "PUT", f"/ports/{port['id']}", token, {"port": {"security_groups": [web["id"]]}}
        )
        assert status == 200 and body["port"]["security_groups"] == [web["id"]], body
        status, body = await call(cloud, "DELETE", f"/security-groups/{web['id']}", token)
        assert status == 409
        assert_neutron_error(body, "SecurityGroupInUse", f"Security Group {web['id']} in use.")
        # Port security cannot go while the port has groups; with them removed in the same request it can.
        status, body = await call(
            cloud, "PUT", f"/ports/{port['id']}", token, {"port": {"port_security_enabled": False}}
        )
        assert status == 409
        assert_neutron_error(body, "PortSecurityPortHasSecurityGroup")
        status, body = await call(
            cloud,
            "PUT",
            f"/ports/{port['id']}",
            token,
            {"port": {"port_security_enabled": False, "security_groups": []}},
        )
        assert status == 200 and body["port"]["security_groups"] == [], body
        assert body["port"]["port_security_enabled"] is False
        # Without port security, no groups.
        status, body = await call(
            cloud, "PUT", f"/ports/{port['id']}", token, {"port": {"security_groups": [web["id"]]}}
        )
        assert status == 400
        assert_neutron_error(body, "PortSecurityAndIPRequiredForSecurityGroups")
        body = {
            "port": {"network_id": net["id"], "port_security_enabled": False, "security_groups": [web["id"]]}
        }
        status, answer = await call(cloud, "POST", "/ports", token, body)
        assert status == 400
        assert_neutron_error(answer, "PortSecurityAndIPRequiredForSecurityGroups")
        # A group that is not there, or another project's.
        other = await cloud.new_member("other")
        foreign = await _group(cloud, await cloud.token(other), unique("sg"))
        for group_id in (str(uuid.uuid4()), foreign["id"]):
            body = {"port": {"network_id": net["id"], "security_groups": [group_id]}}
            status, answer = await call(cloud, "POST", "/ports", token, body)
            assert status == 404
            assert_neutron_error(answer, "SecurityGroupNotFound", group_id)
        status, body = await call(cloud, "GET", f"/ports?network_id={net['id']}&device_owner=", token)
        assert [p["id"] for p in body["ports"]] == [port["id"]]
        # The group is free again once the port is gone.
        status, body = await call(cloud, "DELETE", f"/ports/{port['id']}", token)
        assert status == 204
    status, body = await call(cloud, "DELETE", f"/security-groups/{web['id']}", token)
    assert status == 204, body


async def test_security_group_quotas(cloud: Cloud, member: Credentials) -> None:
    admin = await cloud.token()
    token = await cloud.token(member)
    await _default(cloud, token)
    status, body = await call(
        cloud,
        "PUT",
        f"/quotas/{member.project_id}",
        admin,
        {"quota": {"security_group": 2, "security_group_rule": 7}},
    )
    assert status == 200, body
    group = await _group(cloud, token, unique("sg"))  # the default group and this one: 2; 6 rules
    status, body = await call(
        cloud, "POST", "/security-groups", token, {"security_group": {"name": unique("sg")}}
    )
    assert status == 409
    assert_neutron_error(body, "OverQuota", "security_group")
    rule = {"security_group_id": group["id"], "direction": "ingress", "protocol": "tcp"}
    status, body = await call(cloud, "POST", "/security-group-rules", token, {"security_group_rule": rule})
    assert status == 201, body
    rule = {"security_group_id": group["id"], "direction": "ingress", "protocol": "udp"}
    status, body = await call(cloud, "POST", "/security-group-rules", token, {"security_group_rule": rule})
    assert status == 409
    assert_neutron_error(body, "OverQuota", "security_group_rule")
    status, body = await call(cloud, "GET", f"/quotas/{member.project_id}/details", token)
    assert body["quota"]["security_group"]["used"] == 2 and body["quota"]["security_group_rule"]["used"] == 7


async def test_a_boot_names_groups_that_exist_or_is_refused(
    cloud: Cloud, member: Credentials, image: str
) -> None:
    """`server create --security-group` of a group the project does not have is refused (400,
    nothing made); with no group the server's new port is in `default`, with one in that one."""
    token = await cloud.token(member)
    web = await _group(cloud, token, unique("web"))
    async with networks_removed(cloud) as created:
        net = cloud.openstack("network", "create", unique("net"), who=member)
        created.append(net["id"])
        cloud.openstack(
            "subnet", "create", "--network", net["id"], "--subnet-range", "10.9.0.0/24", "s", who=member
        )
        # (The CLI looks the name up first; the API refuses it as Nova does, for any client.)
        boot = {
            "server": {
                "name": unique("vm"), "imageRef": image, "flavorRef": "1", "networks": [{"uuid": net["id"]}],
                "security_groups": [{"name": "no-such-group"}],
            }
        }  # fmt: skip
        status, answer, _ = await cloud.request("POST", "/compute/v2.1/servers", token=token, json=boot)
        assert status == 400 and answer == {
            "badRequest": {"code": 400, "message": "Security group no-such-group not found."}
        }, answer
        assert cloud.openstack("server", "list", who=member) == []
        status, body = await call(
            cloud, "GET", f"/ports?network_id={net['id']}&device_owner=compute:nova", token
        )
        assert body["ports"] == []
        ids = []
        for groups in ([], ["--security-group", web["name"]]):
            server = cloud.openstack(
                "server", "create", "--image", image, "--flavor", "m1.tiny", "--network", net["id"], *groups,
                "--wait", unique("vm"), who=member,
            )  # fmt: skip
            ids.append(server["id"])
            shown = cloud.openstack("server", "show", server["id"], who=member)
            want = web["name"] if groups else "default"
            assert shown["security_groups"] in ([{"name": want}], f"name='{want}'"), shown["security_groups"]
            status, body = await call(cloud, "GET", f"/ports?device_id={server['id']}", token)
            expected = [web["id"]] if groups else [(await _default(cloud, token))["id"]]
            assert [p["security_groups"] for p in body["ports"]] == [expected]
        for server_id in ids:
            cloud.openstack("server", "delete", "--wait", server_id, who=member, fmt=None)
