"""Quotas of compute, block storage and networking through the real `openstack` CLI (which asks
all three services for `quota show`) and raw HTTP, and `openstack limits show`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.api.conftest import Cloud, Credentials

COMPUTE_DEFAULTS = {
    "instances": 10,
    "cores": 20,
    "ram": 51200,
    "key_pairs": 100,
    "metadata_items": 128,
    "server_groups": 10,
    "server_group_members": 10,
    "injected_files": 5,
    "injected_file_content_bytes": 10240,
    "injected_file_path_bytes": 255,
}
NOVA_NETWORK = {"fixed_ips", "floating_ips", "security_groups", "security_group_rules"}
INJECTED = {"injected_files", "injected_file_content_bytes", "injected_file_path_bytes"}
VOLUME_DEFAULTS = {
    "volumes": 10,
    "gigabytes": 1000,
    "snapshots": 10,
    "backups": 10,
    "backup_gigabytes": 1000,
    "per_volume_gigabytes": -1,
    "groups": 10,
}
NETWORK_DEFAULTS = {
    "network": 100,
    "subnet": 100,
    "port": 500,
    "router": 10,
    "floatingip": 50,
    "security_group": 10,
    "security_group_rule": 100,
    "rbac_policy": 10,
    "subnetpool": -1,
}


def mv(version: str) -> dict[str, str]:
    return {"OpenStack-API-Version": f"compute {version}"}


def as_dict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {row["Resource"]: row["Limit"] for row in rows}


@pytest.fixture
async def project(cloud: Cloud) -> AsyncIterator[dict[str, Any]]:
    """A fresh project (made with the CLI), removed afterwards with its quotas."""
    made = cloud.openstack("project", "create", f"quota-{uuid.uuid4().hex[:8]}")
    yield made
    token = await cloud.token()
    await cloud.request("DELETE", f"/compute/v2.1/os-quota-sets/{made['id']}", token=token)
    cloud.openstack("project", "delete", made["id"], fmt=None)


def test_quota_show_lists_every_service_with_the_defaults(cloud: Cloud) -> None:
    shown = as_dict(cloud.openstack("quota", "show"))
    assert shown["instances"] == 10 and shown["cores"] == 20 and shown["ram"] == 51200
    assert shown["key-pairs"] == 100 and shown["server-groups"] == 10 and shown["properties"] == 128
    assert shown["volumes"] == 10 and shown["gigabytes"] == 1000 and shown["per-volume-gigabytes"] == -1
    assert shown["networks"] == 100 and shown["ports"] == 500 and shown["routers"] == 10
    default = as_dict(cloud.openstack("quota", "show", "--default"))
    assert default["instances"] == 10 and default["volumes"] == 10 and default["subnets"] == 100


def test_quota_show_with_usage(cloud: Cloud) -> None:
    rows = {r["Resource"]: r for r in cloud.openstack("quota", "show", "--usage")}
    assert rows["instances"]["Limit"] == 10 and rows["instances"]["In Use"] == 0
    assert rows["volumes"]["Reserved"] == 0 and rows["networks"]["In Use"] == 0


async def test_admin_sets_and_shows_another_projects_quotas(cloud: Cloud, project: dict[str, Any]) -> None:
    cloud.openstack("quota", "set", "--instances", "5", "--key-pairs", "3", project["name"], fmt=None)
    shown = as_dict(cloud.openstack("quota", "show", project["name"]))
    assert shown["instances"] == 5 and shown["key-pairs"] == 3
    assert shown["cores"] == 20 and shown["volumes"] == 10  # the rest keep their defaults

    cloud.openstack(
        "quota",
        "set",
        "--volumes",
        "7",
        "--gigabytes",
        "70",
        "--networks",
        "9",
        "--ports",
        "90",
        project["id"],
        fmt=None,
    )
    shown = as_dict(cloud.openstack("quota", "show", project["id"]))
    assert (shown["volumes"], shown["gigabytes"], shown["networks"], shown["ports"]) == (7, 70, 9, 90)
    assert as_dict(cloud.openstack("quota", "show", project["id"]))["instances"] == 5
    admin_own = as_dict(cloud.openstack("quota", "show"))
    assert admin_own["instances"] == 10 and admin_own["volumes"] == 10  # only that project changed

    status, body, _ = await cloud.request("GET", f"/compute/v2.1/os-quota-sets/{project['id']}")
    assert status == 200 and body["quota_set"]["id"] == project["id"]
    assert body["quota_set"]["instances"] == 5 and body["quota_set"]["key_pairs"] == 3

    cloud.openstack("quota", "delete", project["id"], fmt=None)
    shown = as_dict(cloud.openstack("quota", "show", project["id"]))
    assert (shown["instances"], shown["key-pairs"], shown["volumes"], shown["networks"]) == (10, 100, 10, 100)


def test_limits_show_absolute(cloud: Cloud) -> None:
    # The CLI shows openstacksdk's names for Nova's and Cinder's absolute limits.
    limits = {row["Name"]: row["Value"] for row in cloud.openstack("limits", "show", "--absolute")}
    assert limits["max_total_instances"] == 10 and limits["max_total_cores"] == 20
    assert limits["max_total_ram_size"] == 51200 and limits["max_total_keypairs"] == 100
    assert limits["total_instances_used"] == 0 and limits["total_ram_used"] == 0
    assert limits["max_total_volumes"] == 10 and limits["total_volumes_used"] == 0
    assert limits["max_total_volume_gigabytes"] == 1000


async def test_limits_follow_the_quotas_and_the_microversion(cloud: Cloud, member: Credentials) -> None:
    status, _, _ = await cloud.request(
        "PUT",
        f"/compute/v2.1/os-quota-sets/{member.project_id}",
        json={"quota_set": {"cores": 7, "key_pairs": 2}},
    )
    assert status == 200
    status, body, _ = await cloud.request("GET", "/compute/v2.1/limits", who=member, headers=mv("2.1"))
    absolute = body["limits"]["absolute"]
    assert status == 200 and body["limits"]["rate"] == []
    assert absolute["maxTotalCores"] == 7 and absolute["maxTotalKeypairs"] == 2
    assert absolute["maxTotalFloatingIps"] == -1 and absolute["maxImageMeta"] == 128
    assert absolute["maxPersonality"] == 5 and absolute["totalServerGroupsUsed"] == 0
    status, body, _ = await cloud.request("GET", "/compute/v2.1/limits", who=member, headers=mv("2.57"))
    absolute = body["limits"]["absolute"]
    assert not {
        "maxTotalFloatingIps",
        "maxImageMeta",
        "maxPersonality",
        "maxSecurityGroups",
        "totalFloatingIpsUsed",
    } & set(absolute)
    assert absolute["maxTotalCores"] == 7

    status, body, _ = await cloud.request("GET", f"/compute/v2.1/limits?tenant_id={member.project_id}")
    assert status == 200 and body["limits"]["absolute"]["maxTotalCores"] == 7  # admins may ask for others
    status, _, _ = await cloud.request(
        "GET", f"/compute/v2.1/limits?tenant_id={member.project_id}", who=member
    )
    assert status == 403
    status, body, _ = await cloud.request("GET", f"/volume/v3/{member.project_id}/limits", who=member)
    assert status == 200 and body["limits"]["absolute"]["maxTotalVolumes"] == 10


async def test_quota_keys_follow_the_microversion(cloud: Cloud, member: Credentials) -> None:
    path = f"/compute/v2.1/os-quota-sets/{member.project_id}"
    status, body, _ = await cloud.request("GET", path, who=member, headers=mv("2.1"))
    assert status == 200
    assert set(body["quota_set"]) == {"id"} | set(COMPUTE_DEFAULTS) | NOVA_NETWORK
    assert {k: body["quota_set"][k] for k in COMPUTE_DEFAULTS} == COMPUTE_DEFAULTS
    assert all(body["quota_set"][k] == -1 for k in NOVA_NETWORK)
    status, body, _ = await cloud.request("GET", path, who=member, headers=mv("2.36"))
    assert set(body["quota_set"]) == {"id"} | set(COMPUTE_DEFAULTS)
    status, body, _ = await cloud.request("GET", path, who=member, headers=mv("2.57"))
    assert set(body["quota_set"]) == {"id"} | (set(COMPUTE_DEFAULTS) - INJECTED)
    status, body, _ = await cloud.request("GET", f"{path}/defaults", who=member, headers=mv("2.57"))
    assert body["quota_set"] == {
        "id": member.project_id,
        **{k: v for k, v in COMPUTE_DEFAULTS.items() if k not in INJECTED},
    }

    status, body, _ = await cloud.request(
        "PUT", path, headers=mv("2.57"), json={"quota_set": {"injected_files": 1}}
    )
    assert status == 400 and "injected_files" in body["badRequest"]["message"]
    status, body, _ = await cloud.request(
        "PUT", path, headers=mv("2.1"), json={"quota_set": {"floating_ips": 4}}
    )
    assert status == 200 and body["quota_set"]["floating_ips"] == 4 and "id" not in body["quota_set"]
    status, body, _ = await cloud.request("PUT", path, headers=mv("2.1"), json={"quota_set": {"networks": 4}})
    assert status == 400 and body["badRequest"]["message"] == "The networks quota has been removed"


async def test_quota_detail_counts_the_users_keypairs(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    for name in ("one", "two"):
        key = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        status, _, _ = await cloud.request(
            "POST",
            "/compute/v2.1/os-keypairs",
            token=token,
            json={"keypair": {"name": name, "public_key": key}},
        )
        assert status == 200
    status, body, _ = await cloud.request(
        "GET", f"/compute/v2.1/os-quota-sets/{member.project_id}/detail", token=token
    )
    assert status == 200 and body["quota_set"]["id"] == member.project_id
    assert body["quota_set"]["key_pairs"] == {"limit": 100, "in_use": 2, "reserved": 0}
    assert body["quota_set"]["instances"] == {"limit": 10, "in_use": 0, "reserved": 0}
    status, body, _ = await cloud.request(
        "GET", f"/compute/v2.1/os-quota-sets/{member.project_id}/detail?user_id={member.user_id}"
    )
    assert body["quota_set"]["key_pairs"]["in_use"] == 2  # an admin asking about that user


async def test_members_cannot_set_quotas(cloud: Cloud, member: Credentials) -> None:
    reader = await cloud.new_member("rd", role="reader")
    for who in (member, reader):
        status, body, _ = await cloud.request(
            "PUT",
            f"/compute/v2.1/os-quota-sets/{who.project_id}",
            who=who,
            json={"quota_set": {"instances": 1000}},
        )
        assert status == 403
        assert (
            body["forbidden"]["message"]
            == "Policy doesn't allow os_compute_api:os-quota-sets:update to be performed."
        )
        status, _, _ = await cloud.request("DELETE", f"/compute/v2.1/os-quota-sets/{who.project_id}", who=who)
        assert status == 403
        status, _, _ = await cloud.request(
            "PUT",
            f"/volume/v3/{who.project_id}/os-quota-sets/{who.project_id}",
            who=who,
            json={"quota_set": {"volumes": 1000}},
        )
        assert status == 403
        status, _, _ = await cloud.request(
            "PUT", f"/networking/v2.0/quotas/{who.project_id}", who=who, json={"quota": {"network": 1000}}
        )
        assert status == 403
        status, body, _ = await cloud.request("GET", f"/compute/v2.1/os-quota-sets/{who.project_id}", who=who)
        assert status == 200 and body["quota_set"]["instances"] == 10  # readable, and unchanged
    err = cloud.openstack_fails("quota", "set", "--instances", "1000", who=member)
    assert "403" in err.stderr or "Policy doesn't allow" in err.stderr
    assert as_dict(cloud.openstack("quota", "show", who=member))["instances"] == 10


async def test_members_cannot_read_another_projects_quotas(cloud: Cloud, member: Credentials) -> None:
    other = await cloud.new_member("other")
    for path in (
        f"/compute/v2.1/os-quota-sets/{other.project_id}",
        f"/compute/v2.1/os-quota-sets/{other.project_id}/detail",
        f"/volume/v3/{member.project_id}/os-quota-sets/{other.project_id}",
        f"/networking/v2.0/quotas/{other.project_id}",
        f"/networking/v2.0/quotas/{other.project_id}/details",
    ):
        status, body, _ = await cloud.request("GET", path, who=member)
        assert status == 403, (path, body)
    status, body, _ = await cloud.request("GET", f"/compute/v2.1/os-quota-sets/{other.project_id}/detail")
    assert status == 200  # an admin may


async def test_bad_quota_updates_are_refused_and_change_nothing(cloud: Cloud, member: Credentials) -> None:
    path = f"/compute/v2.1/os-quota-sets/{member.project_id}"
    for body in (
        {"quota_set": {"instances": -2}},
        {"quota_set": {"instances": "many"}},
        {"quota_set": {"instances": 1.5}},
        {"quota_set": {"instances": True}},
        {"quota_set": {"instances": 2**31}},
        {"quota_set": {"instances": 5, "bananas": 1}},
        {"quota_set": {"instances": 5, "force": "maybe"}},
        {"quota_sets": {"instances": 5}},
        {"quota_set": [1]},
    ):
        status, answer, _ = await cloud.request("PUT", path, json=body)
        assert status == 400, (body, answer)
    status, answer, _ = await cloud.request(
        "PUT", path, data=b'{"quota_set": ', headers={"Content-Type": "application/json"}
    )
    assert status == 400 and answer["badRequest"]["code"] == 400
    status, answer, _ = await cloud.request(
        "PUT",
        path,
        data=b'{"quota_set": {"x": "' + b"9" * (2 * 1024 * 1024) + b'"}}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 413
    status, answer, _ = await cloud.request("GET", path)
    assert answer["quota_set"]["instances"] == 10

    status, answer, _ = await cloud.request(
        "PUT", path, json={"quota_set": {"instances": "-1", "force": True}}
    )
    assert status == 200 and answer["quota_set"]["instances"] == -1  # strings of integers, and unlimited
    status, answer, _ = await cloud.request("DELETE", path)
    assert status == 202
    status, answer, _ = await cloud.request("GET", path)
    assert answer["quota_set"]["instances"] == 10

    volume = f"/volume/v3/{member.project_id}/os-quota-sets/{member.project_id}"
    status, answer, _ = await cloud.request("PUT", volume, json={"quota_set": {"volumes": 5, "bananas": 1}})
    assert status == 400 and "Bad key(s) in quota set: bananas" in answer["badRequest"]["message"]
    status, answer, _ = await cloud.request("PUT", volume, json={"quota_set": {"volumes": -5}})
    assert status == 400
    status, answer, _ = await cloud.request(
        "PUT", f"/networking/v2.0/quotas/{member.project_id}", json={"quota": {"network": 5, "bananas": 1}}
    )
    assert status == 400 and answer["NeutronError"]["type"] == "BadRequest"
    status, answer, _ = await cloud.request(
        "PUT", f"/networking/v2.0/quotas/{member.project_id}", json={"quota": {"network": "lots"}}
    )
    assert status == 400
    status, answer, _ = await cloud.request(
        "GET", f"/volume/v3/{member.project_id}/os-quota-sets/{member.project_id}", who=member
    )
    assert answer["quota_set"]["volumes"] == 10
    status, answer, _ = await cloud.request("GET", f"/networking/v2.0/quotas/{member.project_id}", who=member)
    assert answer["quota"]["network"] == 100


async def test_unknown_projects(cloud: Cloud, member: Credentials) -> None:
    # Nova asks Keystone about the project and refuses one that does not exist...
    status, body, _ = await cloud.request("GET", "/compute/v2.1/os-quota-sets/no-such-project")
    assert (
        status == 400
        and body["badRequest"]["message"] == "Project ID no-such-project is not a valid project."
    )
    status, _, _ = await cloud.request(
        "PUT", "/compute/v2.1/os-quota-sets/no-such-project", json={"quota_set": {"instances": 1}}
    )
    assert status == 400
    # ...unless the caller may not ask Keystone (a member), when it takes the id on trust.
    status, body, _ = await cloud.request(
        "GET", "/compute/v2.1/os-quota-sets/no-such-project/defaults", who=member
    )
    assert status == 200 and body["quota_set"]["id"] == "no-such-project"
    # Cinder and Neutron do not check: an unknown project has the defaults.
    status, body, _ = await cloud.request(
        "GET", f"/volume/v3/{member.project_id}/os-quota-sets/no-such-project"
    )
    assert status == 200 and body["quota_set"] == {"id": "no-such-project", **VOLUME_DEFAULTS}
    status, body, _ = await cloud.request("GET", "/networking/v2.0/quotas/no-such-project")
    assert status == 200 and body["quota"] == NETWORK_DEFAULTS


async def test_volume_and_network_quota_shapes(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    pid = member.project_id
    status, body, _ = await cloud.request(
        "GET", f"/volume/v3/{pid}/os-quota-sets/{pid}?usage=True", token=token
    )
    assert status == 200 and body["quota_set"]["id"] == pid
    assert body["quota_set"]["volumes"] == {"limit": 10, "in_use": 0, "reserved": 0}
    status, body, _ = await cloud.request(
        "GET", f"/volume/v3/{pid}/os-quota-sets/{pid}/defaults", token=token
    )
    assert body["quota_set"] == {"id": pid, **VOLUME_DEFAULTS}
    status, body, _ = await cloud.request(
        "GET", f"/volume/v3/{pid}/os-quota-sets/{pid}?usage=sometimes", token=token
    )
    assert status == 400

    status, body, _ = await cloud.request(
        "PUT", f"/volume/v3/{pid}/os-quota-sets/{pid}", json={"quota_set": {"volumes": "4", "tenant_id": pid}}
    )
    assert status == 200 and body["quota_set"]["volumes"] == 4 and "id" not in body["quota_set"]
    status, _, _ = await cloud.request("DELETE", f"/volume/v3/{pid}/os-quota-sets/{pid}")
    assert status == 200

    status, body, _ = await cloud.request("GET", f"/networking/v2.0/quotas/{pid}/details", token=token)
    assert status == 200 and body["quota"]["network"] == {"limit": 100, "used": 0, "reserved": 0}
    status, body, _ = await cloud.request("GET", f"/networking/v2.0/quotas/{pid}/default", token=token)
    assert body["quota"] == NETWORK_DEFAULTS
    status, body, _ = await cloud.request(
        "PUT", f"/networking/v2.0/quotas/{pid}", json={"quota": {"network": 3, "check_limit": True}}
    )
    assert status == 200 and body["quota"]["network"] == 3
    status, body, _ = await cloud.request("GET", "/networking/v2.0/quotas")
    assert {"project_id": pid, "tenant_id": pid, **NETWORK_DEFAULTS, "network": 3} in body["quotas"]
    status, _, _ = await cloud.request("GET", "/networking/v2.0/quotas", token=token)
    assert status == 403
    status, _, _ = await cloud.request("DELETE", f"/networking/v2.0/quotas/{pid}")
    assert status == 204
    status, body, _ = await cloud.request("GET", f"/networking/v2.0/quotas/{pid}", token=token)
    assert body["quota"]["network"] == 100
    # What those services do not have answers 404, as the services answer it.
    status, body, _ = await cloud.request("GET", f"/volume/v3/{pid}/no-such-resource", token=token)
    assert status == 404
    status, body, _ = await cloud.request("GET", "/networking/v2.0/routers", token=token)
    assert status == 404 and body["NeutronError"]["type"] == "HTTPNotFound"
