"""Interoperable image import and tasks as Glance does them: /v2/info/import and /v2/info/stores,
staging (`uploading`), glance-direct and web-download imports (`importing`, then `active` with
the store in `stores`, or back to `queued` with `os_glance_failed_import`), the import lock,
each image's tasks, and the tasks API. Web downloads only ever reach a loopback HTTP server the
test starts; a second cloud allows its port (import filtering is Glance's, 80 and 443 only, on
the shared cloud)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from actors import db
from actorstack.scratch import PG_SERVER
from api.image import importer, task_records, web_download
from tests.api.conftest import Cloud, Credentials, running_cloud
from tests.api.test_images import OCTET, create_image, get_image, upload
from tests.conftest import RUN_PREFIX, separate_services

CAP = 1024 * 1024  # the import cloud's image size cap


async def stage(cloud: Cloud, token: str, image_id: str, data: bytes) -> tuple[int, Any]:
    status, body, _ = await cloud.request(
        "PUT", f"/image/v2/images/{image_id}/stage", token=token, data=data, headers=OCTET
    )
    return status, body


async def start_import(
    cloud: Cloud, token: str, image_id: str, **body: Any
) -> tuple[int, Any, dict[str, str]]:
    return await cloud.request("POST", f"/image/v2/images/{image_id}/import", token=token, json=body)


async def settled(
    cloud: Cloud, token: str, image_id: str, tasks: int = 1, timeout: float = 30
) -> dict[str, Any]:
    """The image once its `tasks` import tasks have ended (success or failure)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        listed = await image_tasks(cloud, token, image_id)
        if len(listed) >= tasks and all(t["status"] in ("success", "failure") for t in listed):
            status, image = await get_image(cloud, token, image_id)
            assert status == 200, image
            return image
        assert asyncio.get_running_loop().time() < deadline, f"import still running: {listed}"
        await asyncio.sleep(0.1)


async def image_tasks(cloud: Cloud, token: str, image_id: str) -> list[dict[str, Any]]:
    status, body, _ = await cloud.request("GET", f"/image/v2/images/{image_id}/tasks", token=token)
    assert status == 200, body
    return body["tasks"]


@pytest.fixture(scope="module")
async def origin() -> AsyncIterator[str]:
    """A loopback HTTP server with image data, errors and redirects: its base URL."""
    payload = os.urandom(300_000)

    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "image.qcow2":
            return web.Response(body=payload)
        if name == "big":
            return web.Response(body=b"\0" * (CAP + 1))
        if name == "moved":
            raise web.HTTPFound("/files/image.qcow2")
        if name == "to-filtered":
            raise web.HTTPFound(f"http://localhost:{request.url.port}/files/image.qcow2")
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/files/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ORIGIN_PAYLOAD[0] = payload
    try:
        yield f"http://127.0.0.1:{port}/files"
    finally:
        await runner.cleanup()


ORIGIN_PAYLOAD: list[bytes] = [b""]


@pytest.fixture(scope="module")
async def import_cloud(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cloud]:
    """A cloud whose import filtering lets web-download reach the loopback origin (any port;
    `localhost` refused, to see a redirect to it refused), with a 1 MiB image size cap."""
    env = {
        "ACTORSTACK_IMAGE_IMPORT_ALLOWED_PORTS": "any",
        "ACTORSTACK_IMAGE_IMPORT_DISALLOWED_HOSTS": "localhost",
        "ACTORSTACK_IMAGE_SIZE_CAP": str(CAP),
    }
    state_dir = tmp_path_factory.mktemp(f"{RUN_PREFIX}-import-state")
    async with (
        separate_services("import") as services,
        running_cloud(
            services,
            state_dir,
            "--hosts",
            "1",
            "--virt",
            "test",
            "--network",
            "none",
            "--storage",
            "none",
            env=env,
        ) as cloud,
    ):
        yield cloud


async def test_info_says_what_is_offered(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    status, body, _ = await cloud.request("GET", "/image/v2/info/import", token=token)
    assert status == 200 and body["import-methods"]["value"] == ["glance-direct", "web-download"], body
    status, body, _ = await cloud.request("GET", "/image/v2/info/stores", token=token)
    assert status == 200 and body["stores"] == [
        {"id": "local", "description": "Image data in the cloud's state directory", "default": True}
    ]
    status, body, _ = await cloud.request("GET", "/image/v2/info/stores/detail", token=token)
    assert status == 403, body
    status, body, _ = await cloud.request("GET", "/image/v2/info/stores/detail", token=await cloud.token())
    assert status == 200 and body["stores"][0]["type"] == "file", body
    status, body, headers = await cloud.request(
        "POST",
        "/image/v2/images",
        token=token,
        json={"name": "headers", "disk_format": "raw", "container_format": "bare"},
    )
    assert headers["OpenStack-image-import-methods"] == "glance-direct,web-download"
    assert headers["OpenStack-image-store-ids"] == "local"
    await cloud.request("DELETE", f"/image/v2/images/{body['id']}", token=token)


async def test_glance_direct_import(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    data = os.urandom(200_000)
    image = await create_image(cloud, token, visibility="private")
    status, body = await stage(cloud, token, image["id"], data)
    assert status == 204, body
    staged = (await get_image(cloud, token, image["id"]))[1]
    assert staged["status"] == "uploading" and staged["size"] == len(data) and "stores" not in staged
    assert (await stage(cloud, token, image["id"], data))[0] == 409  # staged already
    assert (await upload(cloud, token, image["id"], data))[0] == 409  # not queued
    status, _, headers = await start_import(cloud, token, image["id"], method={"name": "glance-direct"})
    assert status == 202
    image = await settled(cloud, token, image["id"])
    assert image["status"] == "active" and image["stores"] == "local", image
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["os_hash_algo"] == "sha512" and image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert image["os_glance_importing_to_stores"] == "" and image["os_glance_failed_import"] == ""
    assert "os_glance_import_task" not in image
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{cloud.url}/image/v2/images/{image['id']}/file", headers={"X-Auth-Token": token}) as r,
    ):
        assert r.status == 200 and await r.read() == data
    (task,) = await image_tasks(cloud, token, image["id"])
    assert task["status"] == "success" and task["type"] == "api_image_import", task
    assert task["request_id"] == headers["x-openstack-request-id"]
    assert task["input"]["import_req"]["method"]["name"] == "glance-direct"
    assert task["result"] == {"image_id": image["id"]} and task["expires_at"] is not None
    assert not (cloud.state_dir / "staging" / image["id"]).exists()
    # Once active, an image is no target for an import.
    status, err, _ = await start_import(cloud, token, image["id"], method={"name": "glance-direct"})
    assert status == 409 and err["message"] == "Image with status active cannot be target for import"
    assert (await cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=token))[0] == 204


async def test_imports_refuse_what_glance_refuses(cloud: Cloud, member: Credentials) -> None:
    token = await cloud.token(member)
    image = await create_image(cloud, token)
    path = image["id"]
    for body, code, message in (
        ({}, 400, "Import request requires a 'method' field."),
        ({"method": {}}, 400, "Import request requires a 'name' field."),
        ({"method": {"name": "copy-image"}}, 400, "Unknown import method name 'copy-image'."),
        (
            {"method": {"name": "glance-direct"}, "all_stores": "yes"},
            400,
            "'all_stores' must be boolean value only",
        ),
        (
            {"method": {"name": "glance-direct"}, "stores": ["fast"]},
            409,
            "Unknown scheme 'fast' found in URI",
        ),
        (
            {"method": {"name": "glance-direct"}, "stores": ["local"], "all_stores": True},
            400,
            "All_stores parameter can't be used with x-image-meta-store header or stores parameter",
        ),
        (
            {"method": {"name": "glance-direct"}},
            409,
            "Image needs to be staged before 'glance-direct' method can be used",
        ),
        (
            {"method": {"name": "web-download", "uri": "http://127.0.0.1:8080/image"}},
            400,
            "URI for web-download does not pass filtering: http://127.0.0.1:8080/image",
        ),
        ({"method": {"name": "web-download", "uri": "ftp://example.com/i"}}, 400, "does not pass filtering"),
        ({"method": {"name": "web-download"}}, 400, "URI for web-download does not pass filtering: None"),
    ):
        status, err, _ = await start_import(cloud, token, path, **body)
        assert status == code and message in err["message"], (body, err)
    assert (await get_image(cloud, token, path))[1]["status"] == "queued"
    assert await image_tasks(cloud, token, path) == []
    # Staging needs octet-stream, and only the owner project stages or imports.
    status, _, _ = await cloud.request(
        "PUT",
        f"/image/v2/images/{path}/stage",
        token=token,
        data=b"x",
        headers={"Content-Type": "text/plain"},
    )
    assert status == 415
    stranger = await cloud.token(await cloud.new_member("stranger"))
    assert (await stage(cloud, stranger, path, b"x"))[0] == 404
    status, _, _ = await start_import(cloud, stranger, path, method={"name": "glance-direct"})
    assert status == 404
    status, _, _ = await cloud.request("GET", f"/image/v2/images/{path}/tasks", token=stranger)
    assert status == 404
    # A staged image that is deleted leaves no staged data behind.
    assert (await stage(cloud, token, path, b"staged"))[0] == 204
    assert (cloud.state_dir / "staging" / path).exists()
    assert (await cloud.request("DELETE", f"/image/v2/images/{path}", token=token))[0] == 204
    assert not (cloud.state_dir / "staging" / path).exists()


async def test_the_openstack_cli_imports_a_staged_image(cloud: Cloud, tmp_path: Any) -> None:
    data = os.urandom(50_000)
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    # Created through the API: the CLI's `image create` would read its standard input as data.
    image = await create_image(cloud, await cloud.token())
    try:
        await asyncio.to_thread(
            cloud.openstack, "image", "stage", "--file", str(source), image["id"], fmt=None
        )
        await asyncio.to_thread(cloud.openstack, "image", "import", "--method", "glance-direct", image["id"])
        token = await cloud.token()
        done = await settled(cloud, token, image["id"])
        assert done["status"] == "active" and done["size"] == len(data)
        methods = await asyncio.to_thread(cloud.openstack, "image", "import", "info")
        assert "glance-direct" in str(methods)
    finally:
        await asyncio.to_thread(cloud.openstack, "image", "delete", image["id"], fmt=None)


async def test_web_download_imports_from_a_url(import_cloud: Cloud, origin: str) -> None:
    cloud = import_cloud
    token = await cloud.token()
    image = await create_image(cloud, token, disk_format="qcow2")
    status, err, _ = await start_import(
        cloud, token, image["id"], method={"name": "web-download", "uri": f"{origin}/moved"}
    )
    assert status == 202, err
    image = await settled(cloud, token, image["id"])
    payload = ORIGIN_PAYLOAD[0]
    assert image["status"] == "active" and image["size"] == len(payload), image
    assert image["os_hash_value"] == hashlib.sha512(payload).hexdigest()
    (task,) = await image_tasks(cloud, token, image["id"])
    assert task["status"] == "success" and task["input"]["import_req"]["method"]["uri"] == f"{origin}/moved"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing", "answered HTTP 404"),
        ("big", "The incoming image is too large"),
        ("to-filtered", "does not pass filtering"),
    ],
)
async def test_a_failed_web_download_puts_the_image_back(
    import_cloud: Cloud, origin: str, name: str, reason: str
) -> None:
    cloud = import_cloud
    token = await cloud.token()
    image = await create_image(cloud, token)
    status, err, _ = await start_import(
        cloud, token, image["id"], method={"name": "web-download", "uri": f"{origin}/{name}"}
    )
    assert status == 202, err
    image = await settled(cloud, token, image["id"])
    assert image["status"] == "queued" and image["os_glance_failed_import"] == "local", image
    assert image["os_glance_importing_to_stores"] == "" and "os_glance_import_task" not in image
    assert image["size"] is None and "stores" not in image
    (task,) = await image_tasks(cloud, token, image["id"])
    assert task["status"] == "failure" and reason in task["message"], task
    assert not (cloud.state_dir / "images" / image["id"]).exists()
    # The lock is gone: the image takes another import.
    status, err, _ = await start_import(
        cloud, token, image["id"], method={"name": "web-download", "uri": f"{origin}/image.qcow2"}
    )
    assert status == 202, err
    image = await settled(cloud, token, image["id"], tasks=2)
    assert image["status"] == "active" and image["os_glance_failed_import"] == "", image


async def test_tasks_api_imports_for_admins(import_cloud: Cloud, origin: str) -> None:
    cloud = import_cloud
    admin = await cloud.token()
    body = {
        "type": "import",
        "input": {
            "import_from": f"{origin}/image.qcow2",
            "import_from_format": "qcow2",
            "image_properties": {"name": "from-task", "disk_format": "qcow2", "container_format": "bare"},
        },
    }
    status, task, headers = await cloud.request("POST", "/image/v2/tasks", token=admin, json=body)
    assert status == 201 and task["status"] == "pending" and task["message"] == "", task
    assert headers["Location"].endswith(f"/image/v2/tasks/{task['id']}")
    deadline = asyncio.get_running_loop().time() + 30
    while task["status"] in ("pending", "processing"):
        assert asyncio.get_running_loop().time() < deadline, task
        await asyncio.sleep(0.1)
        status, task, _ = await cloud.request("GET", f"/image/v2/tasks/{task['id']}", token=admin)
    assert task["status"] == "success", task
    status, image = await get_image(cloud, admin, task["result"]["image_id"])
    assert (
        image["status"] == "active"
        and image["name"] == "from-task"
        and image["size"] == len(ORIGIN_PAYLOAD[0])
    )
    status, listed, _ = await cloud.request("GET", "/image/v2/tasks?type=import&sort_dir=asc", token=admin)
    assert task["id"] in {t["id"] for t in listed["tasks"]} and "input" not in listed["tasks"][0]
    status, err, _ = await cloud.request("DELETE", f"/image/v2/tasks/{task['id']}", token=admin)
    assert status == 405, err
    # A URL that fails: the task fails and its image is gone again.
    failing = {**body, "input": {**body["input"], "import_from": f"{origin}/missing"}}
    status, task, _ = await cloud.request("POST", "/image/v2/tasks", token=admin, json=failing)
    assert status == 201, task
    while task["status"] in ("pending", "processing"):
        await asyncio.sleep(0.1)
        status, task, _ = await cloud.request("GET", f"/image/v2/tasks/{task['id']}", token=admin)
    assert task["status"] == "failure" and "404" in task["message"] and task["result"] is None, task
    assert (await get_image(cloud, admin, task["image_id"]))[0] == 404
    for bad, message in (
        ({"type": "import"}, "Task 'input' is required"),
        ({"type": "export", "input": {}}, "'export' is not one of"),
        (
            {**body, "input": {"import_from": f"{origin}/x"}},
            "Input does not contain 'import_from_format' field",
        ),
        (
            {**body, "input": {**body["input"], "import_from": "file:///etc/passwd"}},
            "File based imports are not allowed",
        ),
    ):
        status, err, _ = await cloud.request("POST", "/image/v2/tasks", token=admin, json=bad)
        assert status == 400 and message in err["message"], (bad, err)
    member = await cloud.new_member()
    status, err, _ = await cloud.request("GET", "/image/v2/tasks", token=await cloud.token(member))
    assert status == 403 and err["message"] == "You are not authorized to complete tasks_api_access action."


async def test_an_import_whose_runner_died_is_failed_and_its_image_put_back(cloud: Cloud) -> None:
    """The reaper of every API process: a task left running, untouched for STALE, by a process
    that stopped fails, and its image is queued again with its store failed and its lock gone."""
    token = await cloud.token()
    image = await create_image(cloud, token)
    assert (await stage(cloud, token, image["id"], b"staged data"))[0] == 204
    pool = await db.create_pool(f"{PG_SERVER}/{RUN_PREFIX}", min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn, conn.transaction():
            task = await task_records.create(
                conn,
                type="api_image_import",
                owner=image["owner"],
                input={
                    "image_id": image["id"],
                    "import_req": {"method": {"name": "glance-direct"}},
                    "backend": ["local"],
                },
                image_id=image["id"],
                request_id=None,
                user_id=None,
            )
            await conn.execute(
                "UPDATE images SET properties = properties || $2 WHERE id = $1",
                image["id"],
                {importer.LOCK: task["id"]},
            )
        # While the lock's task runs, another import is refused.
        status, err, _ = await start_import(cloud, token, image["id"], method={"name": "glance-direct"})
        assert status == 409 and err["message"] == "Image has active task", err
        # Its runner falls silent; the next reaping (ours, or the cloud's own) fails it.
        await pool.execute(
            "UPDATE image_tasks SET updated_at = now() - interval '1 hour' WHERE id = $1", task["id"]
        )
        reaper = importer.Importer(pool, cloud.state_dir, CAP, web_download.Filter())
        assert await reaper.reap() <= 1
        assert await reaper.reap() == 0
    finally:
        await pool.close()
    status, shown = await get_image(cloud, token, image["id"])
    assert shown["status"] == "queued" and shown["size"] is None, shown
    assert (
        shown["os_glance_failed_import"] == "local" and shown.get("os_glance_importing_to_stores", "") == ""
    )
    assert importer.LOCK not in shown
    assert not (cloud.state_dir / "staging" / image["id"]).exists()
    (task_view,) = await image_tasks(cloud, token, image["id"])
    assert task_view["status"] == "failure" and task_view["message"] == importer.INTERRUPTED
    await cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=token)
