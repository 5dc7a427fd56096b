"""The compute hosts as Nova shows them to an admin: os-hypervisors (per microversion, with
statistics, uptime, search and servers), os-services, and the compute version documents."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.api.conftest import Cloud


def _at(version: str) -> dict[str, str]:
    return {"OpenStack-API-Version": f"compute {version}"}


async def _get(cloud: Cloud, path: str, version: str = "2.1", **kwargs: Any) -> tuple[int, Any]:
    status, body, _ = await cloud.request("GET", f"/compute/v2.1{path}", headers=_at(version), **kwargs)
    return status, body


async def test_versions_document_lists_v2_0_then_v2_1_and_each_has_its_own_document(cloud: Cloud) -> None:
    status, body, _ = await cloud.request("GET", "/compute/", who=False)
    assert status == 200
    assert [v["id"] for v in body["versions"]] == ["v2.0", "v2.1"]
    legacy, current = body["versions"]
    assert (legacy["status"], legacy["version"], legacy["min_version"]) == ("SUPPORTED", "", "")
    assert (current["status"], current["min_version"], current["version"]) == ("CURRENT", "2.1", "2.96")
    for listed in body["versions"]:
        href = listed["links"][0]["href"]
        status, one, _ = await cloud.request("GET", href.removeprefix(cloud.url), who=False)
        assert status == 200 and one["version"]["id"] == listed["id"]
        assert one["version"]["links"] == listed["links"]
        assert one["version"]["media-types"][0]["base"] == "application/json"


async def test_hypervisor_statistics_are_the_sums_over_the_enabled_hosts(cloud: Cloud) -> None:
    _, detail = await _get(cloud, "/os-hypervisors/detail")
    enabled = [h for h in detail["hypervisors"] if h["status"] == "enabled"]
    status, body = await _get(cloud, "/os-hypervisors/statistics")
    assert status == 200
    stats = body["hypervisor_statistics"]
    assert stats["count"] == len(enabled)
    for key in ("vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used", "running_vms"):
        assert stats[key] == sum(h[key] for h in enabled), key
    status, _ = await _get(cloud, "/os-hypervisors/statistics", "2.88")
    assert status == 404  # gone from 2.88, as in Nova


async def test_hypervisor_uptime_counts_from_its_agents_start(cloud: Cloud) -> None:
    _, listed = await _get(cloud, "/os-hypervisors")
    first = listed["hypervisors"][0]
    status, body = await _get(cloud, f"/os-hypervisors/{first['id']}/uptime")
    assert status == 200
    assert body["hypervisor"]["hypervisor_hostname"] == first["hypervisor_hostname"]
    shape = r" \d\d:\d\d:\d\d up (\d+ days?, )?( ?\d+:\d\d|\d+ min)"
    assert re.fullmatch(shape, body["hypervisor"]["uptime"])
    status, body = await _get(cloud, "/os-hypervisors/99999999/uptime")
    assert status == 404 and "could not be found" in body["itemNotFound"]["message"]
    # 2.88 shows it in the detail view instead, and the route is gone
    status, detail = await _get(cloud, "/os-hypervisors/detail", "2.88")
    assert status == 200 and all("uptime" in h and "vcpus" not in h for h in detail["hypervisors"])
    status, _ = await _get(cloud, f"/os-hypervisors/{detail['hypervisors'][0]['id']}/uptime", "2.88")
    assert status == 404


async def test_hypervisor_search_and_servers_match_part_of_the_hostname(cloud: Cloud) -> None:
    _, listed = await _get(cloud, "/os-hypervisors")
    name = listed["hypervisors"][0]["hypervisor_hostname"]
    status, found = await _get(cloud, f"/os-hypervisors/{name[1:]}/search")
    assert status == 200 and name in [h["hypervisor_hostname"] for h in found["hypervisors"]]
    status, found = await _get(cloud, f"/os-hypervisors/{name}/servers")
    assert status == 200 and found["hypervisors"][0]["hypervisor_hostname"] == name
    status, body = await _get(cloud, "/os-hypervisors/no-such-host-xyz/search")
    message = "No hypervisor matching 'no-such-host-xyz' could be found."
    assert status == 404 and body["itemNotFound"]["message"] == message
    # from 2.53 they are query parameters of the list; the routes are gone
    status, _ = await _get(cloud, f"/os-hypervisors/{name}/search", "2.53")
    assert status == 404
    status, found = await _get(cloud, f"/os-hypervisors?hypervisor_hostname_pattern={name}", "2.53")
    assert status == 200 and [h["hypervisor_hostname"] for h in found["hypervisors"]] == [name]
    status, _ = await _get(cloud, f"/os-hypervisors?hypervisor_hostname_pattern={name}&limit=1", "2.53")
    assert status == 400
    status, found = await _get(cloud, "/os-hypervisors?with_servers=true", "2.75")
    assert status == 200 and all(isinstance(h["servers"], list) for h in found["hypervisors"])
    status, _ = await _get(cloud, "/os-hypervisors?bogus=1", "2.53")
    assert status == 400


async def test_hypervisor_ids_cpu_info_and_paging_follow_the_microversion(cloud: Cloud) -> None:
    _, old = await _get(cloud, "/os-hypervisors/detail")
    assert all(isinstance(h["id"], int) and isinstance(h["cpu_info"], str) for h in old["hypervisors"])
    _, v228 = await _get(cloud, "/os-hypervisors/detail", "2.28")
    assert all(isinstance(h["cpu_info"], dict) for h in v228["hypervisors"])
    _, v253 = await _get(cloud, "/os-hypervisors/detail", "2.53")
    ids = [h["id"] for h in v253["hypervisors"]]
    assert all(uuid.UUID(i) for i in ids)
    status, body = await _get(cloud, "/os-hypervisors/not-a-uuid", "2.53")
    assert status == 400 and body["badRequest"]["message"] == "Invalid uuid not-a-uuid"
    status, shown = await _get(cloud, f"/os-hypervisors/{ids[0]}", "2.53")
    assert status == 200 and shown["hypervisor"]["id"] == ids[0]
    status, page = await _get(cloud, "/os-hypervisors?limit=1", "2.53")
    assert [h["id"] for h in page["hypervisors"]] == ids[:1]
    assert "marker=" + ids[0] in page["hypervisors_links"][0]["href"]
    status, page = await _get(cloud, f"/os-hypervisors?marker={ids[0]}", "2.53")
    assert [h["id"] for h in page["hypervisors"]] == ids[1:]


async def test_services_show_forced_down_only_from_2_11(cloud: Cloud) -> None:
    _, old = await _get(cloud, "/os-services", "2.10")
    assert old["services"] and all("forced_down" not in s for s in old["services"])
    _, new = await _get(cloud, "/os-services", "2.11")
    assert all(s["forced_down"] is False for s in new["services"])
    host = new["services"][0]["host"]
    _, one = await _get(cloud, f"/os-services?host={host}&binary=nova-compute", "2.11")
    assert [s["host"] for s in one["services"]] == [host]
