"""Image list filters as Glance reads them (size and the other integer columns, ranges, operators,
visibility for an admin), every malformed or out-of-range value a 400 and never a 500; and
deactivation by the image's own project, as Glance's default policy allows."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Cloud, Credentials
from tests.api.test_images import create_image, get_image, unique, upload

LIST = "/image/v2/images"


async def listed(cloud: Cloud, token: str, query: str) -> tuple[int, Any]:
    limit = "" if "limit=" in query else "limit=1000&"
    status, body, _ = await cloud.request("GET", f"{LIST}?{limit}{query}", token=token)
    return status, body


async def test_integer_filters_match_the_columns(cloud: Cloud) -> None:
    token = await cloud.token()
    tag = unique("sizes")
    images = []
    for size, min_ram in ((1000, 0), (2000, 256), (3000, 512)):
        image = await create_image(cloud, token, tags=[tag], min_ram=min_ram, min_disk=1)
        assert (await upload(cloud, token, image["id"], b"x" * size))[0] == 204
        images.append(image["id"])
    try:
        for query, expected in (
            ("size=2000", [images[1]]),
            ("size_min=1500&size_max=3000", [images[1], images[2]]),
            ("min_ram=512", [images[2]]),
            ("min_ram_max=256", [images[0], images[1]]),
            ("min_disk=1&size=1000", [images[0]]),
            ("virtual_size_min=2500", [images[2]]),
        ):
            status, body = await listed(cloud, token, f"tag={tag}&{query}")
            assert status == 200, (query, body)
            assert sorted(i["id"] for i in body["images"]) == sorted(expected), query
        # `size` is the image's size, never an extra property of that name.
        status, body = await listed(cloud, token, f"tag={tag}&size=999999")
        assert body["images"] == []
        for query, message in (
            ("size=big", "Invalid value 'big' for parameter 'size': an integer is expected."),
            ("size_min=1e3", "Unable to filter on a range with a non-numeric value."),
            ("size_max=99999999999999999999", "out of range"),
            ("min_ram=3000000000", "out of range"),
            ("min_disk_min=-99999999999", "out of range"),
            ("created_at=yesterday", 'Bad "created_at" query filter format. Use ISO 8601 DateTime notation.'),
            ("updated_at=near:2024-01-01T00:00:00Z", "Unable to filter using the specified operator."),
            ("created_at=lt:0001-01-01T00:00:00%2B14:00", 'Bad "created_at" query filter format.'),
            ("name=like:abc", "Unable to filter by unknown operator 'like'."),
            ("visibility=everyone", "Invalid visibility value: everyone"),
            ("member_status=maybe", "Invalid status: maybe"),
            ("os_hidden=perhaps", "Invalid value 'perhaps' for 'os_hidden' filter."),
            ("limit=-1", "limit param must be positive"),
            ("limit=ten", "limit param must be an integer"),
            ("sort_key=owner", "Invalid sort key: owner."),
            ("sort_dir=sideways", "Invalid sort direction: sideways"),
            ("sort=name:sideways", "Invalid sort direction: sideways"),
        ):
            status, err = await listed(cloud, token, query)
            assert status == 400 and message in err["message"], (query, err)
        status, body = await listed(
            cloud, token, f"tag={tag}&created_at=gte:2000-01-01T00:00:00Z&name=in:x,y"
        )
        assert status == 200 and body["images"] == []
    finally:
        for image_id in images:
            await cloud.request("DELETE", f"{LIST}/{image_id}", token=token)


async def test_an_admin_lists_by_any_visibility(cloud: Cloud) -> None:
    token = await cloud.token()
    image = await create_image(cloud, token, visibility="community")
    try:
        for visibility in ("public", "private", "shared", "community", "all", ""):
            status, body = await listed(cloud, token, f"visibility={visibility}")
            assert status == 200, (visibility, body)
            assert all(i["visibility"] == visibility for i in body["images"]) or visibility == "all"
        status, body = await listed(cloud, token, "visibility=community")
        assert image["id"] in {i["id"] for i in body["images"]}
    finally:
        await cloud.request("DELETE", f"{LIST}/{image['id']}", token=token)


async def test_the_owner_project_deactivates_and_reactivates(cloud: Cloud, member: Credentials) -> None:
    owner = await cloud.token(member)
    image = await create_image(cloud, owner, visibility="shared")
    actions = f"{LIST}/{image['id']}/actions"
    assert (await upload(cloud, owner, image["id"], b"data"))[0] == 204
    sharer = await cloud.new_member("sharer")
    status, _, _ = await cloud.request(
        "POST", f"{LIST}/{image['id']}/members", token=owner, json={"member": sharer.project_id}
    )
    assert status == 200
    shared_with = await cloud.token(sharer)
    status, err, _ = await cloud.request("POST", f"{actions}/deactivate", token=shared_with)
    assert status == 403 and err["message"] == "You are not authorized to complete deactivate action.", err
    assert (await cloud.request("POST", f"{actions}/deactivate", token=owner))[0] == 204
    assert (await get_image(cloud, owner, image["id"]))[1]["status"] == "deactivated"
    # Nobody but an admin downloads a deactivated image, its owner included.
    status, err, _ = await cloud.request("GET", f"{LIST}/{image['id']}/file", token=owner)
    assert status == 403 and "deactivated" in err["message"], err
    status, err, _ = await cloud.request("POST", f"{actions}/reactivate", token=shared_with)
    assert status == 403, err
    assert (await cloud.request("POST", f"{actions}/reactivate", token=owner))[0] == 204
    status, data, _ = await cloud.request("GET", f"{LIST}/{image['id']}/file", token=owner)
    assert status == 200 and data == "data"
    # A queued image is neither deactivated nor reactivated.
    queued = await create_image(cloud, owner)
    status, err, _ = await cloud.request("POST", f"{LIST}/{queued['id']}/actions/deactivate", token=owner)
    assert status == 403 and err["message"] == "Not allowed to deactivate image in status 'queued'", err
    for image_id in (image["id"], queued["id"]):
        await cloud.request("DELETE", f"{LIST}/{image_id}", token=owner)


async def test_openapi_describes_every_list_parameter(cloud: Cloud) -> None:
    """So that the fuzzer reaches every filter."""
    status, document, _ = await cloud.request("GET", "/openapi.json", who=False)
    assert status == 200
    paths = document["paths"]

    def query_names(path: str) -> set[str]:
        return {p["name"] for p in paths[path]["get"].get("parameters", []) if p["in"] == "query"}

    assert query_names(LIST) >= {
        "limit",
        "marker",
        "sort",
        "sort_key",
        "sort_dir",
        "member_status",
        "visibility",
        "os_hidden",
        "protected",
        "tag",
        "name",
        "id",
        "status",
        "container_format",
        "disk_format",
        "owner",
        "checksum",
        "os_hash_algo",
        "os_hash_value",
        "size",
        "virtual_size",
        "min_disk",
        "min_ram",
        "size_min",
        "size_max",
        "virtual_size_min",
        "min_ram_max",
        "created_at",
        "updated_at",
    }
    size = next(p for p in paths[LIST]["get"]["parameters"] if p["name"] == "size_min")
    assert size["schema"]["type"] == "integer" and size["schema"]["maximum"] == 2**63 - 1
    assert query_names("/image/v2/metadefs/namespaces") >= {"limit", "marker", "visibility", "resource_types"}
    assert query_names("/image/v2/metadefs/namespaces/{namespace}/tags") >= {"limit", "marker", "sort_key"}
