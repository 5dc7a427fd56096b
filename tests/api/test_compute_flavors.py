"""Compute flavors through the real `openstack` CLI, openstacksdk and raw HTTP: the shapes each
microversion gives, private flavors, and the refusals a client must get."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import openstack
import pytest

from tests.api.conftest import CliError, Cloud, Credentials

BOOTSTRAP = {"m1.nano", "m1.micro", "m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge"}
VERSION_HEADERS = ("OpenStack-API-Version", "X-OpenStack-Nova-API-Version", "Vary")


def mv(version: str) -> dict[str, str]:
    return {"OpenStack-API-Version": f"compute {version}"}


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def flavor_name(cloud: Cloud) -> Iterator[str]:
    """A name for a flavor the test creates; the flavor is deleted afterwards if it exists."""
    name = unique("flv")
    yield name
    try:
        cloud.openstack("flavor", "delete", name, fmt=None)
    except CliError:
        pass


@pytest.fixture
async def private_flavor(cloud: Cloud) -> AsyncIterator[str]:
    """A private flavor made through the API; its id."""
    flavor_id = unique("priv")
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/flavors",
        json={
            "flavor": {
                "name": flavor_id,
                "id": flavor_id,
                "ram": 128,
                "vcpus": 1,
                "disk": 0,
                "os-flavor-access:is_public": False,
            }
        },
    )
    assert status == 200, body
    yield flavor_id
    await cloud.request("DELETE", f"/compute/v2.1/flavors/{flavor_id}")


def test_flavor_list_shows_the_bootstrap_flavors(cloud: Cloud) -> None:
    flavors = cloud.openstack("flavor", "list")
    by_name = {f["Name"]: f for f in flavors}
    assert BOOTSTRAP <= set(by_name)
    assert by_name["m1.small"]["RAM"] == 2048 and by_name["m1.small"]["VCPUs"] == 1
    assert by_name["m1.small"]["Disk"] == 20 and by_name["m1.small"]["ID"] == "2"


def test_flavor_show_gives_the_classic_m1_tiny(cloud: Cloud) -> None:
    flavor = cloud.openstack("flavor", "show", "m1.tiny")
    assert (flavor["id"], flavor["ram"], flavor["vcpus"], flavor["disk"]) == ("1", 512, 1, 1)
    assert flavor["os-flavor-access:is_public"] is True and flavor["properties"] == {}


def test_flavor_lifecycle_with_properties_through_the_cli(cloud: Cloud, flavor_name: str) -> None:
    created = cloud.openstack(
        "flavor",
        "create",
        "--ram",
        "256",
        "--disk",
        "1",
        "--vcpus",
        "1",
        "--property",
        "hw:cpu_policy=shared",
        flavor_name,
    )
    assert created["name"] == flavor_name and created["ram"] == 256
    assert created["properties"] == {"hw:cpu_policy": "shared"}
    assert uuid.UUID(created["id"])  # no --id: Nova generates a UUID

    cloud.openstack(
        "flavor",
        "set",
        "--property",
        "hw:numa_nodes=1",
        "--property",
        "hw:mem_page_size=large",
        flavor_name,
        fmt=None,
    )
    assert cloud.openstack("flavor", "show", flavor_name)["properties"] == {
        "hw:cpu_policy": "shared",
        "hw:numa_nodes": "1",
        "hw:mem_page_size": "large",
    }

    cloud.openstack("flavor", "unset", "--property", "hw:cpu_policy", flavor_name, fmt=None)
    assert cloud.openstack("flavor", "show", flavor_name)["properties"] == {
        "hw:numa_nodes": "1",
        "hw:mem_page_size": "large",
    }

    cloud.openstack("flavor", "delete", flavor_name, fmt=None)
    assert flavor_name not in {f["Name"] for f in cloud.openstack("flavor", "list", "--all")}
    err = cloud.openstack_fails("flavor", "show", flavor_name)
    assert "No Flavor found" in err.stderr or "404" in err.stderr


async def test_extra_specs_api_keys_and_status_codes(cloud: Cloud, flavor_name: str) -> None:
    created = cloud.openstack("flavor", "create", "--ram", "128", "--disk", "0", "--vcpus", "1", flavor_name)
    base = f"/compute/v2.1/flavors/{created['id']}/os-extra_specs"
    status, body, _ = await cloud.request(
        "POST", base, json={"extra_specs": {"quota:disk_read_bytes_sec": 10240}}
    )
    assert status == 200 and body == {"extra_specs": {"quota:disk_read_bytes_sec": 10240}}
    status, body, _ = await cloud.request("GET", base)
    assert status == 200 and body == {"extra_specs": {"quota:disk_read_bytes_sec": "10240"}}  # stored as text
    status, body, _ = await cloud.request("PUT", f"{base}/hw:cpu_policy", json={"hw:cpu_policy": "dedicated"})
    assert status == 200 and body == {"hw:cpu_policy": "dedicated"}
    status, body, _ = await cloud.request("GET", f"{base}/hw:cpu_policy")
    assert status == 200 and body == {"hw:cpu_policy": "dedicated"}
    status, body, _ = await cloud.request("PUT", f"{base}/hw:cpu_policy", json={"hw:numa_nodes": "1"})
    assert status == 400 and body["badRequest"]["message"] == "Request body and URI mismatch"
    status, body, _ = await cloud.request("POST", base, json={"extra_specs": {"bad/key": "x"}})
    assert status == 400
    status, _, _ = await cloud.request("DELETE", f"{base}/hw:cpu_policy")
    assert status == 200
    status, body, _ = await cloud.request("DELETE", f"{base}/hw:cpu_policy")
    assert status == 404
    assert (
        body["itemNotFound"]["message"]
        == f"Flavor {created['id']} has no extra specs with key hw:cpu_policy."
    )
    status, body, _ = await cloud.request("GET", "/compute/v2.1/flavors/nope/os-extra_specs")
    assert status == 404 and body["itemNotFound"]["message"] == "Flavor nope could not be found."


async def test_known_extra_specs_are_validated_from_2_86(cloud: Cloud, flavor_name: str) -> None:
    created = cloud.openstack("flavor", "create", "--ram", "128", "--disk", "0", "--vcpus", "1", flavor_name)
    base = f"/compute/v2.1/flavors/{created['id']}/os-extra_specs"
    bogus = {"extra_specs": {"hw:cpu_policy": "bogus"}}
    status, body, _ = await cloud.request("POST", base, json=bogus, headers=mv("2.86"))
    assert (
        status == 400 and "'bogus' is not one of: dedicated, shared, mixed" in body["badRequest"]["message"]
    )
    status, body, _ = await cloud.request(
        "POST", base, json={"extra_specs": {"hw:numa_nodes": "0"}}, headers=mv("2.86")
    )
    assert status == 400 and "less than the min value" in body["badRequest"]["message"]
    status, body, _ = await cloud.request("GET", base)
    assert body == {"extra_specs": {}}  # nothing was written
    status, _, _ = await cloud.request("POST", base, json=bogus, headers=mv("2.85"))
    assert status == 200  # not validated before 2.86, as in Nova


async def test_response_shapes_follow_the_microversion(cloud: Cloud) -> None:
    shapes = {}
    for version in ("2.1", "2.55", "2.61", "2.75"):
        status, body, headers = await cloud.request("GET", "/compute/v2.1/flavors/1", headers=mv(version))
        assert status == 200 and headers["OpenStack-API-Version"] == f"compute {version}"
        shapes[version] = body["flavor"]
    assert "description" not in shapes["2.1"] and "extra_specs" not in shapes["2.1"]
    assert shapes["2.1"]["swap"] == "" and shapes["2.75"]["swap"] == 0
    assert "description" in shapes["2.55"] and "extra_specs" not in shapes["2.55"]
    assert shapes["2.61"]["extra_specs"] == {} and "description" in shapes["2.61"]
    assert shapes["2.1"]["links"] == [
        {"rel": "self", "href": f"{cloud.url}/compute/v2.1/flavors/1"},
        {"rel": "bookmark", "href": f"{cloud.url}/compute/flavors/1"},
    ]
    status, body, _ = await cloud.request("GET", "/compute/v2.1/flavors", headers=mv("2.55"))
    assert set(body["flavors"][0]) == {"id", "name", "links", "description"}


async def test_description_is_set_from_2_55_only(cloud: Cloud, flavor_name: str) -> None:
    body = {"flavor": {"name": flavor_name, "ram": 128, "vcpus": 1, "disk": 0, "description": "small one"}}
    status, answer, _ = await cloud.request("POST", "/compute/v2.1/flavors", json=body, headers=mv("2.54"))
    assert status == 400 and "description" in answer["badRequest"]["message"]
    status, answer, _ = await cloud.request("POST", "/compute/v2.1/flavors", json=body, headers=mv("2.55"))
    assert status == 200 and answer["flavor"]["description"] == "small one"
    path = f"/compute/v2.1/flavors/{answer['flavor']['id']}"
    status, _, _ = await cloud.request("PUT", path, json={"flavor": {"description": "x"}}, headers=mv("2.54"))
    assert status == 404  # the update API does not exist before 2.55
    status, answer, _ = await cloud.request(
        "PUT", path, json={"flavor": {"description": "renamed"}}, headers=mv("2.55")
    )
    assert status == 200 and answer["flavor"]["description"] == "renamed"
    cloud.openstack("flavor", "set", "--description", "via the cli", flavor_name, fmt=None)
    assert cloud.openstack("flavor", "show", flavor_name)["description"] == "via the cli"


async def test_microversion_headers_on_every_compute_response(cloud: Cloud) -> None:
    status, _, headers = await cloud.request("GET", "/compute/v2.1/flavors")
    assert status == 200 and headers["OpenStack-API-Version"] == "compute 2.1"
    assert headers["X-OpenStack-Nova-API-Version"] == "2.1"
    assert headers["Vary"] == "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
    status, _, headers = await cloud.request("GET", "/compute/v2.1/flavors", headers=mv("latest"))
    assert headers["OpenStack-API-Version"] == "compute 2.96"
    status, _, headers = await cloud.request(
        "GET", "/compute/v2.1/flavors", headers={"X-OpenStack-Nova-API-Version": "2.60"}
    )
    assert (
        headers["OpenStack-API-Version"] == "compute 2.60"
        and headers["X-OpenStack-Nova-API-Version"] == "2.60"
    )
    status, _, headers = await cloud.request(
        "GET",
        "/compute/v2.1/flavors",
        headers={"OpenStack-API-Version": "volume 3.5, compute 2.40", "X-OpenStack-Nova-API-Version": "2.10"},
    )
    assert headers["OpenStack-API-Version"] == "compute 2.40"  # the standard header wins
    status, body, headers = await cloud.request("GET", "/compute/v2.1/flavors/nope", headers=mv("2.30"))
    assert status == 404 and headers["OpenStack-API-Version"] == "compute 2.30"
    assert body == {"itemNotFound": {"code": 404, "message": "Flavor nope could not be found."}}

    status, body, headers = await cloud.request("GET", "/compute/v2.1/flavors", headers=mv("2.97"))
    assert status == 406
    assert body["computeFault"]["message"] == (
        "Version 2.97 is not supported by the API. Minimum is 2.1 and maximum is 2.96."
    )
    status, body, _ = await cloud.request("GET", "/compute/v2.1/flavors", headers=mv("2.0"))
    assert status == 406
    for malformed in ("2", "two.one", "2.01x", "2.-1"):
        status, body, _ = await cloud.request("GET", "/compute/v2.1/flavors", headers=mv(malformed))
        assert status == 400, malformed
        assert "is of invalid format" in body["badRequest"]["message"]


async def test_flavor_list_filters_sorting_and_paging(cloud: Cloud) -> None:
    status, body, _ = await cloud.request("GET", "/compute/v2.1/flavors/detail?minRam=4096&minDisk=80")
    assert status == 200 and {f["name"] for f in body["flavors"]} >= {"m1.large", "m1.xlarge"}
    assert all(f["ram"] >= 4096 and f["disk"] >= 80 for f in body["flavors"])
    for huge in (
        "minRam=99999999999999999999999",
        "minDisk=9223372036854775808",
        "minRam=-99999999999999999999",
    ):
        status, body, _ = await cloud.request("GET", f"/compute/v2.1/flavors?{huge}")
        assert status == 200, (huge, body)  # beyond any value the columns hold: no error (was a 500)
        assert (body["flavors"] == []) == (not huge.startswith("minRam=-")), huge
    status, body, _ = await cloud.request(
        "GET", "/compute/v2.1/flavors/detail?sort_key=memory_mb&sort_dir=desc"
    )
    rams = [f["ram"] for f in body["flavors"]]
    assert rams == sorted(rams, reverse=True)

    status, first, _ = await cloud.request("GET", "/compute/v2.1/flavors?limit=2")
    assert status == 200 and len(first["flavors"]) == 2
    last = first["flavors"][-1]["id"]
    assert first["flavors_links"] == [
        {"rel": "next", "href": f"{cloud.url}/compute/v2.1/flavors?limit=2&marker={last}"}
    ]
    status, second, _ = await cloud.request("GET", f"/compute/v2.1/flavors?limit=2&marker={last}")
    assert not {f["id"] for f in first["flavors"]} & {f["id"] for f in second["flavors"]}
    status, everything, _ = await cloud.request("GET", "/compute/v2.1/flavors")
    ids = [f["id"] for f in everything["flavors"]]
    assert ids == sorted(ids) and "flavors_links" not in everything  # by flavor id, as text
    assert [f["id"] for f in first["flavors"] + second["flavors"]] == ids[:4]

    for query, message in (
        ("marker=nope", "marker [nope] not found"),
        ("minRam=big", "Invalid minRam filter [big]"),
        ("is_public=maybe", "Invalid is_public filter [maybe]"),
    ):
        status, body, _ = await cloud.request("GET", f"/compute/v2.1/flavors?{query}")
        assert status == 400 and body["badRequest"]["message"] == message, query
    for query in ("sort_key=flavor", "sort_dir=up", "limit=-1"):
        status, _, _ = await cloud.request("GET", f"/compute/v2.1/flavors?{query}")
        assert status == 400, query
    status, _, _ = await cloud.request("GET", "/compute/v2.1/flavors?unknown=1", headers=mv("2.74"))
    assert status == 200
    status, _, _ = await cloud.request("GET", "/compute/v2.1/flavors?unknown=1", headers=mv("2.75"))
    assert status == 400


async def test_private_flavor_is_visible_only_with_access(cloud: Cloud, private_flavor: str) -> None:
    insider, outsider = await cloud.new_member("in"), await cloud.new_member("out")
    path = f"/compute/v2.1/flavors/{private_flavor}"
    for who in (insider, outsider):
        status, _, _ = await cloud.request("GET", path, who=who)
        assert status == 404
    status, body, _ = await cloud.request("GET", f"{path}/os-flavor-access")
    assert status == 200 and body == {"flavor_access": []}

    status, body, _ = await cloud.request(
        "POST", f"{path}/action", json={"addTenantAccess": {"tenant": insider.project_id}}
    )
    assert status == 200
    assert body == {"flavor_access": [{"flavor_id": private_flavor, "tenant_id": insider.project_id}]}
    status, body, _ = await cloud.request(
        "POST", f"{path}/action", json={"addTenantAccess": {"tenant": insider.project_id}}
    )
    assert status == 409 and "already exists" in body["conflictingRequest"]["message"]
    status, body, _ = await cloud.request(
        "POST", f"{path}/action", json={"addTenantAccess": {"tenant": "nope"}}
    )
    assert status == 400 and body["badRequest"]["message"] == "Project ID nope is not a valid project."

    status, body, _ = await cloud.request("GET", path, who=insider)
    assert status == 200 and body["flavor"]["os-flavor-access:is_public"] is False
    status, body, _ = await cloud.request("GET", "/compute/v2.1/flavors", who=insider)
    assert private_flavor in {f["id"] for f in body["flavors"]}
    status, body, _ = await cloud.request("GET", "/compute/v2.1/flavors?is_public=false", who=outsider)
    assert private_flavor not in {f["id"] for f in body["flavors"]}  # members cannot widen the filter
    status, _, _ = await cloud.request("GET", path, who=outsider)
    assert status == 404
    status, _, _ = await cloud.request("GET", f"{path}/os-flavor-access", who=insider)
    assert status == 403
    status, _, _ = await cloud.request(
        "POST", f"{path}/action", who=insider, json={"addTenantAccess": {"tenant": outsider.project_id}}
    )
    assert status == 403

    status, body, _ = await cloud.request("GET", "/compute/v2.1/flavors/detail?is_public=false")
    assert private_flavor in {f["id"] for f in body["flavors"]}
    assert all(f["os-flavor-access:is_public"] is False for f in body["flavors"])
    status, body, _ = await cloud.request("GET", "/compute/v2.1/flavors?is_public=none")
    assert {private_flavor, "1"} <= {f["id"] for f in body["flavors"]}

    status, body, _ = await cloud.request(
        "POST", f"{path}/action", json={"removeTenantAccess": {"tenant": insider.project_id}}
    )
    assert status == 200 and body == {"flavor_access": []}
    status, _, _ = await cloud.request("GET", path, who=insider)
    assert status == 404
    status, body, _ = await cloud.request(
        "POST", f"{path}/action", json={"removeTenantAccess": {"tenant": insider.project_id}}
    )
    assert status == 404


def test_private_flavor_for_a_project_through_the_cli(cloud: Cloud, flavor_name: str) -> None:
    project = cloud.openstack("project", "create", unique("fa"))
    try:
        created = cloud.openstack(
            "flavor",
            "create",
            "--ram",
            "64",
            "--disk",
            "0",
            "--vcpus",
            "1",
            "--private",
            "--project",
            project["id"],
            flavor_name,
        )
        assert created["os-flavor-access:is_public"] is False
        shown = cloud.openstack("flavor", "show", flavor_name)
        assert shown["access_project_ids"] == [project["id"]]
    finally:
        cloud.openstack("flavor", "delete", flavor_name, fmt=None)
        cloud.openstack("project", "delete", project["id"], fmt=None)


async def test_members_and_readers_cannot_manage_flavors(cloud: Cloud, member: Credentials) -> None:
    reader = await cloud.new_member("rd", role="reader")
    name = unique("sneaky")
    for who in (member, reader):
        status, body, _ = await cloud.request(
            "POST",
            "/compute/v2.1/flavors",
            who=who,
            json={"flavor": {"name": name, "ram": 64, "vcpus": 1, "disk": 0}},
        )
        assert status == 403, body
        assert body["forbidden"]["message"] == (
            "Policy doesn't allow os_compute_api:os-flavor-manage:create to be performed."
        )
        for method, path, payload in (
            ("DELETE", "/compute/v2.1/flavors/1", None),
            ("PUT", "/compute/v2.1/flavors/1", {"flavor": {"description": "mine"}}),
            ("POST", "/compute/v2.1/flavors/1/os-extra_specs", {"extra_specs": {"a": "b"}}),
            ("PUT", "/compute/v2.1/flavors/1/os-extra_specs/a", {"a": "b"}),
            ("DELETE", "/compute/v2.1/flavors/1/os-extra_specs/a", None),
        ):
            status, _, _ = await cloud.request(method, path, who=who, json=payload, headers=mv("2.55"))
            assert status == 403, (method, path)
        status, body, _ = await cloud.request("GET", "/compute/v2.1/flavors/1", who=who)
        assert status == 200 and body["flavor"]["name"] == "m1.tiny"
    err = cloud.openstack_fails(
        "flavor", "create", "--ram", "64", "--disk", "0", "--vcpus", "1", name, who=member
    )
    assert "403" in err.stderr
    status, body, _ = await cloud.request("GET", "/compute/v2.1/flavors/1", headers=mv("2.55"))
    assert body["flavor"]["description"] is None  # nothing changed
    assert name not in {f["Name"] for f in cloud.openstack("flavor", "list", "--all")}


async def test_bad_flavor_requests_are_refused_and_change_nothing(cloud: Cloud, flavor_name: str) -> None:
    good = {"name": flavor_name, "ram": 64, "vcpus": 1, "disk": 0}
    for bad, field in (
        ({**good, "ram": 0}, "ram"),
        ({**good, "vcpus": "two"}, "vcpus"),
        ({**good, "disk": -1}, "disk"),
        ({**good, "ram": True}, "ram"),
        ({**good, "name": " padded"}, "name"),
        ({**good, "name": ""}, "name"),
        ({**good, "id": "has/slash"}, "id"),
        ({**good, "rxtx_factor": 0}, "rxtx_factor"),
        ({**good, "os-flavor-access:is_public": "perhaps"}, "os-flavor-access:is_public"),
        ({**good, "surprise": 1}, "surprise"),
        ({k: v for k, v in good.items() if k != "ram"}, "ram"),
    ):
        status, body, headers = await cloud.request("POST", "/compute/v2.1/flavors", json={"flavor": bad})
        assert status == 400, (bad, body)
        assert field in body["badRequest"]["message"]
        assert headers["OpenStack-API-Version"] == "compute 2.1"
    status, body, _ = await cloud.request(
        "POST", "/compute/v2.1/flavors", data=b'{"flavor": {', headers={"Content-Type": "application/json"}
    )
    assert status == 400 and body["badRequest"]["code"] == 400
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/flavors",
        data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert status == 413 and body["overLimit"]["code"] == 413
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/flavors",
        data=json.dumps({"flavor": good}),
        headers={"Content-Type": "text/plain"},
    )
    assert status == 415
    assert flavor_name not in {f["Name"] for f in cloud.openstack("flavor", "list", "--all")}

    status, body, _ = await cloud.request(
        "POST", "/compute/v2.1/flavors", json={"flavor": {**good, "name": "m1.tiny"}}
    )
    assert (
        status == 409 and body["conflictingRequest"]["message"] == "Flavor with name m1.tiny already exists."
    )
    status, body, _ = await cloud.request(
        "POST", "/compute/v2.1/flavors", json={"flavor": {**good, "id": "1"}}
    )
    assert status == 409 and body["conflictingRequest"]["message"] == "Flavor with ID 1 already exists."
    status, body, _ = await cloud.request(
        "POST", "/compute/v2.1/flavors", json={"flavor": {**good, "id": 4242}}
    )
    assert status == 200 and body["flavor"]["id"] == "4242"  # a numeric id is kept as text
    status, _, _ = await cloud.request("DELETE", "/compute/v2.1/flavors/4242")
    assert status == 202
    status, body, _ = await cloud.request("DELETE", "/compute/v2.1/flavors/4242")
    assert status == 404 and body["itemNotFound"]["message"] == "Flavor 4242 could not be found."


def test_openstacksdk_lists_and_finds_flavors(cloud: Cloud) -> None:
    conn = openstack.connect(
        auth_url=f"{cloud.url}/identity/v3",
        username=cloud.admin.user,
        password=cloud.admin.password,
        project_name=cloud.admin.project,
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
        load_yaml_config=False,
        load_envvars=False,
    )
    try:
        flavors = {f.name: f for f in conn.compute.flavors()}
        assert BOOTSTRAP <= set(flavors)
        assert (flavors["m1.medium"].ram, flavors["m1.medium"].vcpus, flavors["m1.medium"].disk) == (
            4096,
            2,
            40,
        )
        tiny = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
        assert tiny.id == "1" and tiny.is_public is True
        assert conn.compute.get_flavor("3").name == "m1.medium"
    finally:
        conn.close()
