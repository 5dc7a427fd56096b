"""Compute's reports and settings: os-simple-tenant-usage (computed from launch and termination
times), os-migrations, os-instance_usage_audit_log, os-quota-class-sets, per-user quotas and
os-server-password."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

from tests.api.conftest import Cloud
from tests.api.test_compute_server_actions import boot, wait_for


async def _call(cloud: Cloud, method: str, path: str, version: str = "2.1", **kwargs: Any) -> tuple[int, Any]:
    status, body, _ = await cloud.request(
        method, f"/compute/v2.1{path}", headers={"OpenStack-API-Version": f"compute {version}"}, **kwargs
    )
    return status, body


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


async def test_tenant_usage_counts_each_server_from_launch_to_deletion(cloud: Cloud, image: str) -> None:
    who = await cloud.new_member("usage")
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    kept = await boot(cloud, image, who, name="kept")
    gone = await boot(cloud, image, who, name="gone")
    await wait_for(cloud, kept, "ACTIVE", who)
    await wait_for(cloud, gone, "ACTIVE", who)
    await asyncio.sleep(1)
    await cloud.request("DELETE", f"/compute/v2.1/servers/{gone}", who=who)
    deadline = time.monotonic() + 30
    while (await cloud.request("GET", f"/compute/v2.1/servers/{gone}", who=who))[0] != 404:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)
    end = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    query = f"?start={_stamp(start)}&end={_stamp(end)}"
    stranger = await cloud.new_member("stranger")
    status, _, _ = await cloud.request(
        "GET", f"/compute/v2.1/os-simple-tenant-usage/{who.project_id}{query}", who=stranger
    )
    assert status == 403  # a member reads their own project's only
    status, body, _ = await cloud.request(
        "GET", f"/compute/v2.1/os-simple-tenant-usage/{who.project_id}{query}", who=who
    )
    assert status == 200
    usage = body["tenant_usage"]
    servers = {s["name"]: s for s in usage["server_usages"]}
    assert servers["gone"]["state"] == "terminated" and servers["gone"]["ended_at"]
    assert servers["kept"]["state"] == "active" and servers["kept"]["ended_at"] is None
    lived = datetime.datetime.fromisoformat(servers["gone"]["ended_at"]) - datetime.datetime.fromisoformat(
        servers["gone"]["started_at"]
    )
    assert abs(servers["gone"]["hours"] - lived.total_seconds() / 3600) < 1e-6
    assert servers["gone"]["uptime"] == int(lived.total_seconds())
    assert usage["total_hours"] == sum(s["hours"] for s in usage["server_usages"])
    assert (
        abs(usage["total_memory_mb_usage"] - sum(s["hours"] * s["memory_mb"] for s in servers.values()))
        < 1e-6
    )
    status, body = await _call(cloud, "GET", f"/os-simple-tenant-usage{query}&detailed=1")
    ours = [u for u in body["tenant_usages"] if u["tenant_id"] == who.project_id]
    assert len(ours) == 1 and len(ours[0]["server_usages"]) == 2
    status, body = await _call(
        cloud, "GET", f"/os-simple-tenant-usage?start={_stamp(end)}&end={_stamp(start)}"
    )
    assert status == 400
    status, body = await _call(cloud, "GET", "/os-simple-tenant-usage?start=yesterday")
    assert status == 400
    status, page = await _call(
        cloud, "GET", f"/os-simple-tenant-usage/{who.project_id}{query}&limit=1", "2.40"
    )
    assert len(page["tenant_usage"]["server_usages"]) == 1 and page["tenant_usage_links"]
    await cloud.request("DELETE", f"/compute/v2.1/servers/{kept}", who=who)


async def test_migrations_are_none_and_the_query_is_checked(cloud: Cloud) -> None:
    assert await _call(cloud, "GET", "/os-migrations") == (200, {"migrations": []})
    assert (await _call(cloud, "GET", "/os-migrations?migration_type=resize&status=done"))[0] == 200
    assert (await _call(cloud, "GET", "/os-migrations?migration_type=teleport"))[0] == 400
    assert (await _call(cloud, "GET", "/os-migrations?marker=abc", "2.59"))[0] == 400
    assert (await _call(cloud, "GET", "/os-migrations?bogus=1", "2.59"))[0] == 400
    member = await cloud.new_member("mig")
    assert (await cloud.request("GET", "/compute/v2.1/os-migrations", who=member))[0] == 403


async def test_usage_audit_log_reports_every_host_not_run(cloud: Cloud) -> None:
    status, body = await _call(cloud, "GET", "/os-instance_usage_audit_log")
    log = body["instance_usage_audit_logs"]
    assert status == 200 and log["num_hosts"] == len(log["hosts_not_run"]) == log["num_hosts_not_run"] >= 3
    assert log["overall_status"] == f"0 of {log['num_hosts']} hosts done. 0 errors."
    status, body = await _call(cloud, "GET", "/os-instance_usage_audit_log/2012-07-05 10:00:00")
    period = body["instance_usage_audit_log"]
    assert (period["period_beginning"], period["period_ending"]) == (
        "2012-06-01 00:00:00",
        "2012-07-01 00:00:00",
    )
    assert (await _call(cloud, "GET", "/os-instance_usage_audit_log/not-a-date"))[0] == 400


async def test_the_default_quota_class_is_the_defaults(cloud: Cloud) -> None:
    status, before = await _call(cloud, "GET", "/os-quota-class-sets/default", "2.57")
    assert status == 200 and before["quota_class_set"]["id"] == "default"
    assert "injected_files" not in before["quota_class_set"] and "server_groups" in before["quota_class_set"]
    old = before["quota_class_set"]["key_pairs"]
    try:
        status, body = await _call(
            cloud,
            "PUT",
            "/os-quota-class-sets/default",
            "2.57",
            json={"quota_class_set": {"key_pairs": old + 7}},
        )
        assert (
            status == 200
            and body["quota_class_set"]["key_pairs"] == old + 7
            and "id" not in body["quota_class_set"]
        )
        member = await cloud.new_member("qc")
        _, quotas = await _call(cloud, "GET", f"/os-quota-sets/{member.project_id}", "2.57")
        assert quotas["quota_set"]["key_pairs"] == old + 7  # a project without its own limit
    finally:
        await _call(
            cloud, "PUT", "/os-quota-class-sets/default", json={"quota_class_set": {"key_pairs": old}}
        )
    status, other = await _call(
        cloud, "PUT", "/os-quota-class-sets/gold", json={"quota_class_set": {"cores": 99}}
    )
    assert status == 200 and other["quota_class_set"]["cores"] == 99
    _, shown = await _call(cloud, "GET", "/os-quota-class-sets/gold")
    assert shown["quota_class_set"]["cores"] == 99 and "fixed_ips" in shown["quota_class_set"]  # before 2.50
    assert (await _call(cloud, "PUT", "/os-quota-class-sets/gold", json={"quota_class_set": {"bogus": 1}}))[
        0
    ] == 400


async def test_a_users_own_quota_limits_their_servers(cloud: Cloud, image: str) -> None:
    who = await cloud.new_member("userq")
    project = f"/os-quota-sets/{who.project_id}"
    assert (await _call(cloud, "PUT", project, json={"quota_set": {"instances": 5}}))[0] == 200
    status, body = await _call(
        cloud, "PUT", f"{project}?user_id={who.user_id}", json={"quota_set": {"instances": 9}}
    )
    assert status == 400 and "must be less than or equal to 5" in body["badRequest"]["message"]
    status, body = await _call(
        cloud, "PUT", f"{project}?user_id={who.user_id}", json={"quota_set": {"instances": 1}}
    )
    assert status == 200 and body["quota_set"]["instances"] == 1
    _, shown = await _call(cloud, "GET", f"{project}?user_id={who.user_id}")
    assert shown["quota_set"]["instances"] == 1
    _, shown = await _call(cloud, "GET", project)
    assert shown["quota_set"]["instances"] == 5
    first = await boot(cloud, image, who)
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        who=who,
        json={"server": {"name": "second", "imageRef": image, "flavorRef": "42", "networks": "none"}},
        headers={"OpenStack-API-Version": "compute 2.96"},
    )
    assert status == 403 and "Quota exceeded for instances" in body["forbidden"]["message"]
    _, detail = await _call(cloud, "GET", f"{project}/detail?user_id={who.user_id}")
    assert detail["quota_set"]["instances"] == {"limit": 1, "in_use": 1, "reserved": 0}
    assert (await _call(cloud, "DELETE", f"{project}?user_id={who.user_id}"))[0] == 202
    _, shown = await _call(cloud, "GET", f"{project}?user_id={who.user_id}")
    assert shown["quota_set"]["instances"] == 5
    await cloud.request("DELETE", f"/compute/v2.1/servers/{first}", who=who)


async def test_server_password_is_empty_until_posted_and_clears(cloud: Cloud, image: str) -> None:
    who = await cloud.new_member("pw")
    server = await boot(cloud, image, who)
    status, body, _ = await cloud.request(
        "GET", f"/compute/v2.1/servers/{server}/os-server-password", who=who
    )
    assert (status, body) == (200, {"password": ""})
    status, _, _ = await cloud.request(
        "DELETE", f"/compute/v2.1/servers/{server}/os-server-password", who=who
    )
    assert status == 204
    other = await cloud.new_member("pw2")
    status, _, _ = await cloud.request("GET", f"/compute/v2.1/servers/{server}/os-server-password", who=other)
    assert status == 404
    await cloud.request("DELETE", f"/compute/v2.1/servers/{server}", who=who)
