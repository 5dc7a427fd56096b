"""The service catalog a token carries: every service of the cloud with a public, an internal and
an admin endpoint, so that a client set to any interface finds each service by its type (the real
`openstack` CLI and openstacksdk with `interface: internal`/`admin`)."""

from __future__ import annotations

from typing import Any

import openstack

from tests.api.conftest import Cloud

TYPES = {"identity", "compute", "image", "block-storage", "volumev3", "network"}


async def test_every_service_has_all_three_interfaces(cloud: Cloud) -> None:
    token = await cloud.token()
    status, body, _ = await cloud.request(
        "GET", "/identity/v3/auth/tokens", token=token, headers={"X-Subject-Token": token}
    )
    assert status == 200
    catalog = body["token"]["catalog"]
    by_type = {entry["type"]: entry for entry in catalog}
    assert TYPES <= set(by_type)
    assert "placement" not in by_type  # no placement API in this cloud (ARCHITECTURE.md says why)
    for type_ in TYPES:
        endpoints = by_type[type_]["endpoints"]
        assert sorted(e["interface"] for e in endpoints) == ["admin", "internal", "public"], type_
        assert len({e["url"] for e in endpoints}) == 1 and len({e["id"] for e in endpoints}) == 3
        assert all(e["region_id"] == "RegionOne" for e in endpoints)
    volume_url = by_type["block-storage"]["endpoints"][0]["url"]
    assert volume_url.endswith(f"/volume/v3/{body['token']['project']['id']}")


def test_the_cli_finds_every_service_on_the_internal_and_admin_interfaces(cloud: Cloud) -> None:
    for interface in ("internal", "admin"):
        flag = ("--os-interface", interface)
        assert isinstance(cloud.openstack("volume", "list", *flag), list)
        assert isinstance(cloud.openstack("network", "list", *flag), list)
        assert isinstance(cloud.openstack("server", "list", *flag), list)
        assert isinstance(cloud.openstack("image", "list", *flag), list)
        assert isinstance(cloud.openstack("project", "list", *flag), list)
        assert isinstance(cloud.openstack("volume", "snapshot", "list", *flag), list)


def test_openstacksdk_on_the_internal_interface(cloud: Cloud) -> None:
    conn: Any = openstack.connect(
        auth_url=f"{cloud.url}/identity/v3",
        username=cloud.admin.user,
        password=cloud.admin.password,
        project_name=cloud.admin.project,
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
        interface="internal",
    )
    try:
        assert conn.block_storage.get_endpoint().startswith(cloud.url + "/volume/v3/")
        assert isinstance(list(conn.network.networks()), list)
        assert isinstance(list(conn.block_storage.volumes()), list)
        assert isinstance(list(conn.compute.flavors()), list)
    finally:
        conn.close()
