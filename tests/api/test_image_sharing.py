"""Image visibility and sharing between projects: private images are invisible to others, public
and community images readable by all (community ones listed only on request), shared images
reach their members, and only the owner project's members or an admin change anything."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.api.conftest import Cloud, Credentials
from tests.api.test_images import create_image, get_image, patch_image, unique, upload


async def list_ids(cloud: Cloud, token: str, query: str = "") -> set[str]:
    status, body, _ = await cloud.request("GET", f"/image/v2/images?limit=1000&{query}", token=token)
    assert status == 200, body
    return {i["id"] for i in body["images"]}


async def test_another_projects_private_image_does_not_exist_for_you(
    cloud: Cloud, member: Credentials
) -> None:
    owner_token = await cloud.token(member)
    image = await create_image(cloud, owner_token, visibility="private")
    assert (await upload(cloud, owner_token, image["id"], b"secret bytes"))[0] == 204
    stranger = await cloud.new_member("stranger")
    token = await cloud.token(stranger)
    path = f"/image/v2/images/{image['id']}"
    for method, suffix, kwargs in (
        ("GET", "", {}),
        ("GET", "/file", {}),
        (
            "PATCH",
            "",
            {
                "json": [{"op": "replace", "path": "/name", "value": "mine"}],
                "headers": {"Content-Type": "application/openstack-images-v2.1-json-patch"},
            },
        ),
        ("DELETE", "", {}),
        ("PUT", "/tags/mine", {}),
        ("GET", "/members", {}),
        ("POST", "/members", {"json": {"member": stranger.project_id}}),
    ):
        status, body, _ = await cloud.request(method, path + suffix, token=token, **kwargs)
        assert status == 404, (method, suffix, body)
    assert image["id"] not in await list_ids(cloud, token)
    assert image["id"] not in await list_ids(cloud, token, "visibility=all&member_status=all")
    err = await asyncio.to_thread(cloud.openstack_fails, "image", "show", image["id"], who=stranger)
    assert "No Image found" in err.stderr
    listed = await asyncio.to_thread(cloud.openstack, "image", "list", "--private", who=stranger)
    assert image["id"] not in {i["ID"] for i in listed}
    # Its owner and the admin still see it.
    assert image["id"] in await list_ids(cloud, owner_token)
    admin_token = await cloud.token()
    assert (await get_image(cloud, admin_token, image["id"]))[0] == 200


async def test_public_and_community_images_are_readable_not_writable_by_others(
    cloud: Cloud, member: Credentials
) -> None:
    admin_token = await cloud.token()
    public = await create_image(cloud, admin_token, visibility="public")
    owner_token = await cloud.token(member)
    community = await create_image(cloud, owner_token, visibility="community")
    assert (await upload(cloud, owner_token, community["id"], b"community data"))[0] == 204
    other = await cloud.new_member("reader-of-all")
    token = await cloud.token(other)

    default = await list_ids(cloud, token)
    assert public["id"] in default and community["id"] not in default  # community: only when asked
    assert community["id"] in await list_ids(cloud, token, "visibility=community")
    assert community["id"] in await list_ids(cloud, owner_token)  # but its owner always sees it
    assert (await get_image(cloud, token, community["id"]))[0] == 200
    status, data, _ = await cloud.request("GET", f"/image/v2/images/{community['id']}/file", token=token)
    assert status == 200 and data == "community data"

    for image in (public, community):
        status, _ = await patch_image(
            cloud, token, image["id"], [{"op": "replace", "path": "/name", "value": "x"}]
        )
        assert status == 403
        status, _, _ = await cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=token)
        assert status == 403
        status, _, _ = await cloud.request("PUT", f"/image/v2/images/{image['id']}/tags/mine", token=token)
        assert status == 403
    status, _ = await upload(cloud, token, public["id"], b"overwrite")
    assert status == 403
    assert (await get_image(cloud, admin_token, public["id"]))[1]["status"] == "queued"


async def test_a_member_cannot_publicize(cloud: Cloud, member: Credentials, tmp_path: Path) -> None:
    data = tmp_path / "img.raw"
    data.write_bytes(os.urandom(4096))
    name = unique("mine")
    err = await asyncio.to_thread(
        cloud.openstack_fails,
        "image",
        "create",
        "--public",
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--file",
        str(data),
        name,
        who=member,
    )
    assert "403" in err.stderr
    await asyncio.to_thread(
        cloud.openstack,
        "image",
        "create",
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--file",
        str(data),
        name,
        who=member,
    )
    err = await asyncio.to_thread(cloud.openstack_fails, "image", "set", "--public", name, who=member)
    # openstacksdk's PATCH sends an empty Accept, so Glance answers its plain-text page and the
    # CLI shows the status; the message is Glance's.
    assert "403" in err.stderr and "Forbidden" in err.stderr
    image_id = (await asyncio.to_thread(cloud.openstack, "image", "show", name, who=member))["id"]
    status, body, _ = await cloud.request(
        "PATCH",
        f"/image/v2/images/{image_id}",
        who=member,
        json=[{"op": "replace", "path": "/visibility", "value": "public"}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    assert status == 403 and body["message"] == "You are not authorized to complete publicize_image action."
    await asyncio.to_thread(cloud.openstack, "image", "set", "--community", name, who=member, fmt=None)
    shown = await asyncio.to_thread(cloud.openstack, "image", "show", name, who=member)
    assert shown["visibility"] == "community"


async def test_sharing_with_another_project_through_the_cli(
    cloud: Cloud, member: Credentials, tmp_path: Path
) -> None:
    data = os.urandom(256 * 1024)
    source = tmp_path / "shared.raw"
    source.write_bytes(data)
    name = unique("shared")
    consumer = await cloud.new_member("consumer")
    run = cloud.openstack

    image = await asyncio.to_thread(
        run,
        "image",
        "create",
        "--shared",
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--file",
        str(source),
        name,
        who=member,
    )
    # A project member may not look projects up by name in Keystone: share by project id.
    added = await asyncio.to_thread(run, "image", "add", "project", name, consumer.project_id, who=member)
    assert added["status"] == "pending" and added["member_id"] == consumer.project_id

    consumer_token = await cloud.token(consumer)
    assert image["id"] not in await list_ids(cloud, consumer_token)  # pending: not listed…
    assert (await get_image(cloud, consumer_token, image["id"]))[0] == 200  # …but reachable by id
    assert image["id"] in await list_ids(cloud, consumer_token, "member_status=pending")
    # The owner cannot answer for the member.
    owner_token = await cloud.token(member)
    status, _, _ = await cloud.request(
        "PUT",
        f"/image/v2/images/{image['id']}/members/{consumer.project_id}",
        token=owner_token,
        json={"status": "accepted"},
    )
    assert status == 403

    await asyncio.to_thread(run, "image", "set", "--accept", image["id"], who=consumer, fmt=None)
    listed = await asyncio.to_thread(run, "image", "list", who=consumer)
    assert image["id"] in {i["ID"] for i in listed}
    out = tmp_path / "received.raw"
    await asyncio.to_thread(run, "image", "save", "--file", str(out), name, who=consumer, fmt=None)
    assert out.read_bytes() == data
    err = await asyncio.to_thread(
        cloud.openstack_fails, "image", "set", "--name", "taken", name, who=consumer
    )
    assert "403" in err.stderr
    err = await asyncio.to_thread(cloud.openstack_fails, "image", "delete", name, who=consumer)
    assert "403" in err.stderr
    assert (await get_image(cloud, owner_token, image["id"]))[1]["name"] == name

    # Members: the owner sees all of them, a member only its own.
    third = await cloud.new_member("third")
    await asyncio.to_thread(run, "image", "add", "project", name, third.project_id, who=member)
    owner_view = await asyncio.to_thread(run, "image", "member", "list", name, who=member)
    assert {m["Member ID"] for m in owner_view} == {consumer.project_id, third.project_id}
    consumer_view = await asyncio.to_thread(run, "image", "member", "list", name, who=consumer)
    assert [(m["Member ID"], m["Status"]) for m in consumer_view] == [(consumer.project_id, "accepted")]
    status, _, _ = await cloud.request(
        "GET", f"/image/v2/images/{image['id']}/members/{third.project_id}", token=consumer_token
    )
    assert status == 404

    await asyncio.to_thread(run, "image", "set", "--reject", image["id"], who=consumer, fmt=None)
    assert image["id"] not in await list_ids(cloud, consumer_token)
    await asyncio.to_thread(
        run, "image", "remove", "project", name, consumer.project_id, who=member, fmt=None
    )
    assert (await get_image(cloud, consumer_token, image["id"]))[0] == 404


async def test_only_shared_images_have_members(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    image = await create_image(cloud, token, visibility="private")
    members = f"/image/v2/images/{image['id']}/members"
    status, body, _ = await cloud.request("POST", members, token=token, json={"member": "someone"})
    assert status == 403 and "Only shared images have members" in body["message"]
    shared = await create_image(cloud, token)
    members = f"/image/v2/images/{shared['id']}/members"
    status, added, _ = await cloud.request("POST", members, token=token, json={"member": "someone"})
    assert status == 200 and added["status"] == "pending" and added["schema"] == "/v2/schemas/member"
    assert (await cloud.request("POST", members, token=token, json={"member": "someone"}))[0] == 409
    assert (await cloud.request("POST", members, token=token, json={"nobody": "x"}))[0] == 400
    assert (await cloud.request("DELETE", f"{members}/someone", token=token))[0] == 204
    assert (await cloud.request("DELETE", f"{members}/someone", token=token))[0] == 404


async def test_readers_can_look_but_not_write(cloud: Cloud) -> None:
    reader = await cloud.new_member("reader", role="reader")
    token = await cloud.token(reader)
    status, body, _ = await cloud.request(
        "POST",
        "/image/v2/images",
        token=token,
        json={"name": "nope", "disk_format": "raw", "container_format": "bare"},
    )
    assert status == 403, body
    admin_token = await cloud.token()
    image = await create_image(cloud, admin_token, owner=reader.project_id, visibility="private")
    assert image["id"] in await list_ids(cloud, token)
    assert (await get_image(cloud, token, image["id"]))[0] == 200
    assert (await upload(cloud, token, image["id"], b"data"))[0] == 403
    rename = [{"op": "replace", "path": "/name", "value": "x"}]
    assert (await patch_image(cloud, token, image["id"], rename))[0] == 403
    assert (await cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=token))[0] == 403
    assert (await upload(cloud, admin_token, image["id"], b"data"))[0] == 204
    status, data, _ = await cloud.request("GET", f"/image/v2/images/{image['id']}/file", token=token)
    assert status == 200 and data == "data"
