"""Image v2 through the real `openstack` CLI and openstacksdk, and the raw API's answers:
uploads that stream, fail cleanly and refuse what Glance refuses, downloads, JSON-patch
updates, listing with filters and paging, tags, protection and (de)activation."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import openstack
import pytest

from tests.api.conftest import Cloud, Credentials

OCTET = {"Content-Type": "application/octet-stream"}
PATCH_TYPE = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def create_image(cloud: Cloud, token: str, **fields: Any) -> dict[str, Any]:
    """A queued image (raw/bare unless said otherwise) through the raw API."""
    body = {"name": unique("img"), "disk_format": "raw", "container_format": "bare", **fields}
    status, image, _ = await cloud.request("POST", "/image/v2/images", token=token, json=body)
    assert status == 201, image
    return image


async def upload(cloud: Cloud, token: str, image_id: str, data: bytes) -> tuple[int, Any]:
    status, body, _ = await cloud.request(
        "PUT", f"/image/v2/images/{image_id}/file", token=token, data=data, headers=OCTET
    )
    return status, body


async def get_image(cloud: Cloud, token: str, image_id: str) -> tuple[int, Any]:
    status, body, _ = await cloud.request("GET", f"/image/v2/images/{image_id}", token=token)
    return status, body


async def patch_image(cloud: Cloud, token: str, image_id: str, ops: list[dict[str, Any]]) -> tuple[int, Any]:
    status, body, _ = await cloud.request(
        "PATCH", f"/image/v2/images/{image_id}", token=token, json=ops, headers=PATCH_TYPE
    )
    return status, body


def image_files(cloud: Cloud, image_id: str) -> list[str]:
    """The image's file and any temporary file of an upload of it."""
    directory = cloud.state_dir / "images"
    if not directory.exists():
        return []
    return sorted(
        p.name for p in directory.iterdir() if p.name == image_id or p.name.startswith(f".{image_id}.")
    )


async def wait_for_status(cloud: Cloud, token: str, image_id: str, wanted: str, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, image = await get_image(cloud, token, image_id)
        assert status == 200, image
        if image["status"] == wanted:
            return
        assert asyncio.get_running_loop().time() < deadline, f"image stayed {image['status']}, not {wanted}"
        await asyncio.sleep(0.05)


async def open_upload(
    cloud: Cloud, token: str, image_id: str, length: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw HTTP upload that announces `length` bytes; the caller sends (some of) them."""
    address = urlsplit(cloud.url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(
        f"PUT /image/v2/images/{image_id}/file HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"X-Auth-Token: {token}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


@pytest.fixture
def qcow2_file(tmp_path: Path) -> Path:
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "64M"], check=True, capture_output=True)
    return path


@pytest.fixture
def raw_file(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 4321))
    return path


@pytest.fixture
async def admin_token(cloud: Cloud) -> str:
    return await cloud.token()


def test_cli_image_lifecycle_with_qcow2_and_raw_images(
    cloud: Cloud, qcow2_file: Path, raw_file: Path, tmp_path: Path
) -> None:
    qname, rname = unique("cirros"), unique("raw")
    qcow2 = cloud.openstack(
        "image",
        "create",
        "--file",
        str(qcow2_file),
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        qname,
    )
    raw = cloud.openstack(
        "image",
        "create",
        "--file",
        str(raw_file),
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        rname,
    )
    qbytes, rbytes = qcow2_file.read_bytes(), raw_file.read_bytes()
    assert qcow2["status"] == "active" and qcow2["disk_format"] == "qcow2"
    assert qcow2["size"] == len(qbytes) and qcow2["virtual_size"] == 64 * 1024 * 1024
    assert qcow2["checksum"] == hashlib.md5(qbytes).hexdigest()
    assert raw["size"] == raw["virtual_size"] == len(rbytes)

    shown = cloud.openstack("image", "show", rname)
    assert shown["id"] == raw["id"] and shown["checksum"] == hashlib.md5(rbytes).hexdigest()
    assert shown["properties"]["os_hash_algo"] == "sha512"
    assert shown["properties"]["os_hash_value"] == hashlib.sha512(rbytes).hexdigest()
    listed = {i["Name"]: i["Status"] for i in cloud.openstack("image", "list")}
    assert listed[qname] == listed[rname] == "active"

    for name, original in ((rname, rbytes), (qname, qbytes)):
        out = tmp_path / f"{name}.out"
        cloud.openstack("image", "save", "--file", str(out), name, fmt=None)
        assert out.read_bytes() == original

    cloud.openstack(
        "image",
        "set",
        "--property",
        "os_distro=cirros",
        "--min-ram",
        "128",
        "--tag",
        "golden",
        rname,
        fmt=None,
    )
    shown = cloud.openstack("image", "show", rname)
    assert (
        shown["properties"]["os_distro"] == "cirros"
        and shown["min_ram"] == 128
        and shown["tags"] == ["golden"]
    )
    cloud.openstack("image", "set", "--public", rname, fmt=None)
    assert cloud.openstack("image", "show", rname)["visibility"] == "public"

    assert image_files(cloud, raw["id"]) == [raw["id"]]
    cloud.openstack("image", "delete", qname, rname, fmt=None)
    err = cloud.openstack_fails("image", "show", rname)
    assert "No Image found" in err.stderr
    assert image_files(cloud, raw["id"]) == [] and image_files(cloud, qcow2["id"]) == []


@pytest.fixture
def sdk(cloud: Cloud) -> Iterator[openstack.connection.Connection]:
    conn = openstack.connect(
        auth_url=f"{cloud.url}/identity/v3",
        username=cloud.admin.user,
        password=cloud.admin.password,
        project_name=cloud.admin.project,
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
    )
    try:
        yield conn
    finally:
        conn.close()


def test_openstacksdk_creates_lists_downloads_and_deletes(
    sdk: openstack.connection.Connection, raw_file: Path, tmp_path: Path
) -> None:
    name = unique("sdk")
    image = sdk.image.create_image(
        name,
        filename=str(raw_file),
        disk_format="raw",
        container_format="bare",
        validate_checksum=True,
        allow_duplicates=True,
        os_distro="debian",
        build="42",
    )
    try:
        fetched = sdk.image.get_image(image.id)
        assert fetched.status == "active" and fetched.size == raw_file.stat().st_size
        assert fetched.os_distro == "debian" and fetched.properties["build"] == "42"
        assert [i.id for i in sdk.image.images(name=name)] == [image.id]
        out = tmp_path / "sdk.out"
        sdk.image.download_image(image, output=str(out))  # the SDK checks the sha512 it is given
        assert out.read_bytes() == raw_file.read_bytes()
    finally:
        sdk.image.delete_image(image.id)
    assert sdk.image.find_image(name) is None


async def test_upload_to_an_active_image_is_a_conflict(cloud: Cloud, admin_token: str) -> None:
    image = await create_image(cloud, admin_token)
    assert (await upload(cloud, admin_token, image["id"], b"first"))[0] == 204
    status, body = await upload(cloud, admin_token, image["id"], b"second")
    assert status == 409 and body["code"] == "409 Conflict"
    _, shown = await get_image(cloud, admin_token, image["id"])
    assert shown["size"] == 5 and shown["checksum"] == hashlib.md5(b"first").hexdigest()


async def test_interrupted_upload_returns_the_image_to_queued_without_a_file(
    cloud: Cloud, admin_token: str
) -> None:
    image = await create_image(cloud, admin_token)
    _, writer = await open_upload(cloud, admin_token, image["id"], 20 * 1024 * 1024)
    try:
        writer.write(os.urandom(5 * 1024 * 1024))
        await writer.drain()
        await wait_for_status(cloud, admin_token, image["id"], "saving")
    finally:
        writer.transport.abort()  # the client vanishes mid-stream
    await wait_for_status(cloud, admin_token, image["id"], "queued")
    assert image_files(cloud, image["id"]) == []
    _, shown = await get_image(cloud, admin_token, image["id"])
    assert shown["size"] is None and shown["checksum"] is None
    # Queued again, so a new upload goes through.
    assert (await upload(cloud, admin_token, image["id"], b"complete"))[0] == 204
    await wait_for_status(cloud, admin_token, image["id"], "active")


async def test_image_deleted_during_its_upload_leaves_no_data(cloud: Cloud, admin_token: str) -> None:
    image = await create_image(cloud, admin_token)
    reader, writer = await open_upload(cloud, admin_token, image["id"], 2 * 1024 * 1024)
    try:
        writer.write(b"a" * 1024 * 1024)
        await writer.drain()
        await wait_for_status(cloud, admin_token, image["id"], "saving")
        status, _, _ = await cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=admin_token)
        assert status == 204
        writer.write(b"b" * 1024 * 1024)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 15)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 410"), status_line
    assert image_files(cloud, image["id"]) == []
    assert (await get_image(cloud, admin_token, image["id"]))[0] == 404


async def test_upload_refusals(cloud: Cloud, admin_token: str) -> None:
    image = await create_image(cloud, admin_token)
    path = f"/image/v2/images/{image['id']}/file"
    status, body, _ = await cloud.request(
        "PUT", path, token=admin_token, data=b"x", headers={"Content-Type": "application/json"}
    )
    assert status == 415, body
    status, body, _ = await cloud.request(
        "PUT",
        path,
        token=admin_token,
        data=b"x",
        headers={**OCTET, "X-OpenStack-Image-Size": str(2 * 1024**4)},
    )
    assert status == 413 and "too large" in body["message"]
    assert (await get_image(cloud, admin_token, image["id"]))[1]["status"] == "queued"
    unformatted = await create_image(cloud, admin_token, disk_format=None, container_format=None)
    status, body = await upload(cloud, admin_token, unformatted["id"], b"x")
    assert status == 400 and "disk_format, container_format must be set" in body["message"]
    assert (await upload(cloud, admin_token, str(uuid.uuid4()), b"x"))[0] == 404


async def test_download_streams_with_glance_headers(cloud: Cloud, admin_token: str) -> None:
    data = os.urandom(2 * 1024 * 1024 + 17)
    image = await create_image(cloud, admin_token)
    path = f"/image/v2/images/{image['id']}/file"
    status, body, _ = await cloud.request("GET", path, token=admin_token)
    assert status == 204 and not body  # no data yet
    assert (await upload(cloud, admin_token, image["id"], data))[0] == 204
    async with aiohttp.ClientSession() as session:
        async with session.get(cloud.url + path, headers={"X-Auth-Token": admin_token}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert response.headers["Content-MD5"] == hashlib.md5(data).hexdigest()
            assert int(response.headers["Content-Length"]) == len(data)
            assert await response.read() == data
        async with session.get(
            cloud.url + path, headers={"X-Auth-Token": admin_token, "Range": "bytes=100-199"}
        ) as response:
            assert response.status == 206 and "Content-MD5" not in response.headers
            assert await response.read() == data[100:200]


async def test_create_refuses_what_glance_refuses(
    cloud: Cloud, admin_token: str, member: Credentials
) -> None:
    async def post(body: Any, token: str = admin_token, raw: bytes | None = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = (
            {"data": raw, "headers": {"Content-Type": "application/json"}} if raw else {"json": body}
        )
        status, answer, _ = await cloud.request("POST", "/image/v2/images", token=token, **kwargs)
        return status, answer

    status, body = await post(None, raw=b'{"name": "broken", ')
    assert status == 400 and body["code"] == "400 Bad Request" and body["title"] == "Bad Request"
    assert (await post(["not", "an", "object"]))[0] == 400
    for forbidden in (
        {"status": "active"},
        {"size": 1},
        {"checksum": "0" * 32},
        {"os_hash_value": "x"},
        {"deleted": "yes"},
        {"os_glance_import_task": "x"},
        {"self": "/v2/images/x"},
    ):
        status, body = await post({"name": "nope", **forbidden})
        assert status == 403, (forbidden, body)
    for invalid in (
        {"disk_format": "floppy"},
        {"container_format": "crate"},
        {"visibility": "everyone"},
        {"min_ram": -1},
        {"min_disk": "10"},
        {"protected": "yes"},
        {"tags": "one"},
        {"custom": 5},
        {"id": "not-a-uuid"},
        {"name": "n" * 256},
    ):
        status, body = await post({"name": "nope", **invalid})
        assert status == 400, (invalid, body)

    chosen = str(uuid.uuid4())
    status, image = await post(
        {"id": chosen, "name": "mine", "tags": ["a", "a", "b"], "hw_disk_bus": "virtio"}
    )
    assert status == 201 and image["id"] == chosen and image["status"] == "queued"
    assert (
        image["visibility"] == "shared" and image["tags"] == ["a", "b"] and image["hw_disk_bus"] == "virtio"
    )
    assert (await post({"id": chosen}))[0] == 409

    member_token = await cloud.token(member)
    status, body = await post({"name": "theirs", "owner": cloud.admin.project}, token=member_token)
    assert status == 403
    status, body = await post({"name": "public", "visibility": "public"}, token=member_token)
    assert status == 403 and "publicize_image" in body["message"]
    status, image = await post({"name": "for", "owner": member.project_id})
    assert status == 201 and image["owner"] == member.project_id  # an admin may create for any project


async def test_patch_updates_and_refuses_like_glance(cloud: Cloud, admin_token: str) -> None:
    image = await create_image(cloud, admin_token, os_distro="cirros")
    status, body = await patch_image(
        cloud,
        admin_token,
        image["id"],
        [
            {"op": "replace", "path": "/name", "value": "renamed"},
            {"op": "add", "path": "/min_disk", "value": 2},
            {"op": "add", "path": "/hw_video_model", "value": "virtio"},
            {"op": "remove", "path": "/os_distro"},
            {"op": "replace", "path": "/protected", "value": True},
        ],
    )
    assert status == 200, body
    assert body["name"] == "renamed" and body["min_disk"] == 2 and body["protected"] is True
    assert body["hw_video_model"] == "virtio" and "os_distro" not in body
    assert (await get_image(cloud, admin_token, image["id"]))[1]["hw_video_model"] == "virtio"

    status, body, headers = await cloud.request(
        "PATCH",
        f"/image/v2/images/{image['id']}",
        token=admin_token,
        json=[{"op": "replace", "path": "/name", "value": "x"}],
    )  # application/json
    assert status == 415 and "application/openstack-images-v2.1-json-patch" in headers["Accept-Patch"]
    for ops, expected in (
        ([{"op": "replace", "path": "/status", "value": "active"}], 403),
        ([{"op": "remove", "path": "/name"}], 403),
        ([{"op": "replace", "path": "/nope", "value": "x"}], 409),
        ([{"op": "move", "path": "/name", "value": "x"}], 400),
        ([{"op": "replace", "path": "/min_ram", "value": "lots"}], 400),
    ):
        status, body = await patch_image(cloud, admin_token, image["id"], ops)
        assert status == expected, (ops, body)
    status, body, _ = await cloud.request(
        "PATCH", f"/image/v2/images/{image['id']}", token=admin_token, data=b"[{", headers=PATCH_TYPE
    )
    assert status == 400
    assert (await get_image(cloud, admin_token, image["id"]))[1][
        "name"
    ] == "renamed"  # refusals changed nothing


async def test_protected_image_cannot_be_deleted(cloud: Cloud, admin_token: str) -> None:
    image = await create_image(cloud, admin_token, protected=True)
    path = f"/image/v2/images/{image['id']}"
    status, body, _ = await cloud.request("DELETE", path, token=admin_token)
    assert status == 403 and "protected" in body["message"]
    assert (
        await patch_image(
            cloud, admin_token, image["id"], [{"op": "replace", "path": "/protected", "value": False}]
        )
    )[0] == 200
    assert (await cloud.request("DELETE", path, token=admin_token))[0] == 204
    assert (await cloud.request("DELETE", path, token=admin_token))[0] == 404


async def test_tags_are_added_and_removed_one_by_one(cloud: Cloud, admin_token: str) -> None:
    image = await create_image(cloud, admin_token, tags=["base"])
    path = f"/image/v2/images/{image['id']}/tags"
    assert (await cloud.request("PUT", f"{path}/extra", token=admin_token))[0] == 204
    assert (await cloud.request("PUT", f"{path}/extra", token=admin_token))[0] == 204  # idempotent
    assert (await get_image(cloud, admin_token, image["id"]))[1]["tags"] == ["base", "extra"]
    assert (await cloud.request("DELETE", f"{path}/base", token=admin_token))[0] == 204
    assert (await cloud.request("DELETE", f"{path}/base", token=admin_token))[0] == 404
    assert (await get_image(cloud, admin_token, image["id"]))[1]["tags"] == ["extra"]


async def test_deactivated_image_data_is_for_admins_only(
    cloud: Cloud, admin_token: str, member: Credentials
) -> None:
    image = await create_image(cloud, admin_token, visibility="public")
    actions = f"/image/v2/images/{image['id']}/actions"
    assert (await cloud.request("POST", f"{actions}/deactivate", token=admin_token))[0] == 403  # still queued
    assert (await upload(cloud, admin_token, image["id"], b"data"))[0] == 204
    member_token = await cloud.token(member)
    assert (await cloud.request("POST", f"{actions}/deactivate", token=member_token))[0] == 403
    assert (await cloud.request("POST", f"{actions}/deactivate", token=admin_token))[0] == 204
    assert (await cloud.request("POST", f"{actions}/deactivate", token=admin_token))[0] == 204
    assert (await get_image(cloud, member_token, image["id"]))[1]["status"] == "deactivated"
    file = f"/image/v2/images/{image['id']}/file"
    assert (await cloud.request("GET", file, token=member_token))[0] == 403
    status, data, _ = await cloud.request("GET", file, token=admin_token)
    assert status == 200 and data == "data"
    assert (await cloud.request("POST", f"{actions}/reactivate", token=admin_token))[0] == 204
    status, data, _ = await cloud.request("GET", file, token=member_token)
    assert status == 200 and data == "data"


async def test_listing_filters_sorts_and_pages(cloud: Cloud, admin_token: str) -> None:
    tag = unique("batch")
    names = [f"{tag}-{n}" for n in ("d", "b", "e", "a", "c")]
    created = {}
    for index, name in enumerate(names):
        image = await create_image(
            cloud,
            admin_token,
            name=name,
            tags=[tag],
            min_ram=index,
            series="even" if index % 2 == 0 else "odd",
        )
        created[name] = image["id"]
    hidden = await create_image(cloud, admin_token, name=f"{tag}-hidden", tags=[tag], os_hidden=True)

    async def listing(query: str) -> dict[str, Any]:
        status, body, _ = await cloud.request("GET", f"/image/v2/images?{query}", token=admin_token)
        assert status == 200, body
        return body

    seen, query = [], f"tag={tag}&sort=name:asc&limit=2"
    while True:
        page = await listing(query)
        seen += [i["name"] for i in page["images"]]
        if "next" not in page:
            break
        assert page["next"].startswith("/v2/images?") and "marker=" in page["next"]
        query = page["next"].split("?", 1)[1]
    assert seen == sorted(names)
    assert page["first"] == f"/v2/images?tag={tag}&sort=name%3Aasc&limit=2"
    assert page["schema"] == "/v2/schemas/images"

    by_key = await listing(f"tag={tag}&sort_key=name&sort_dir=desc")
    assert [i["name"] for i in by_key["images"]] == sorted(names, reverse=True)
    newest_first = await listing(f"tag={tag}")
    assert [i["name"] for i in newest_first["images"]] == list(reversed(names))
    assert [i["name"] for i in (await listing(f"tag={tag}&series=odd&sort=name:asc"))["images"]] == [
        f"{tag}-a",
        f"{tag}-b",
    ]
    assert [i["id"] for i in (await listing(f"name={tag}-c"))["images"]] == [created[f"{tag}-c"]]
    in_list = await listing(f"name=in:{tag}-a,{tag}-e&sort=name:asc")
    assert [i["name"] for i in in_list["images"]] == [f"{tag}-a", f"{tag}-e"]
    assert [i["id"] for i in (await listing(f"tag={tag}&os_hidden=true"))["images"]] == [hidden["id"]]
    marker = created[f"{tag}-b"]
    after_b = await listing(f"tag={tag}&sort=name:asc&marker={marker}")
    assert [i["name"] for i in after_b["images"]] == [f"{tag}-c", f"{tag}-d", f"{tag}-e"]

    for bad in (
        f"marker={uuid.uuid4()}",
        "sort_key=owner",
        "sort_dir=sideways",
        "limit=-1",
        "limit=many",
        "visibility=everyone",
        "member_status=maybe",
        "os_hidden=perhaps",
        "sort=name&sort_key=name",
    ):
        status, body, _ = await cloud.request("GET", f"/image/v2/images?{bad}", token=admin_token)
        assert status == 400, (bad, body)


async def test_schemas_are_served(cloud: Cloud, admin_token: str) -> None:
    status, image_schema, _ = await cloud.request("GET", "/image/v2/schemas/image", token=admin_token)
    assert status == 200 and image_schema["name"] == "image"
    assert "qcow2" in image_schema["properties"]["disk_format"]["enum"]
    assert image_schema["additionalProperties"] == {"type": "string"}
    status, images_schema, _ = await cloud.request("GET", "/image/v2/schemas/images", token=admin_token)
    assert status == 200 and images_schema["properties"]["images"]["items"]["name"] == "image"
    status, members_schema, _ = await cloud.request("GET", "/image/v2/schemas/members", token=admin_token)
    assert status == 200 and "status" in members_schema["properties"]["members"]["items"]["properties"]
