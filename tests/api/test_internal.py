"""The internal API host agents read from (api/internal): only with a host token, and only what
the token's hosts may see. The cloud's agents use it for everything (they hold no database
credentials), so every other test of a server's life passes through it too."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import aiohttp
import asyncpg

from api.internal import credentials
from tests.api.conftest import Cloud
from tests.conftest import PG_SERVER, RUN_PREFIX

BASE = "/internal/v1"


async def _host_key() -> str:
    conn = await asyncpg.connect(f"{PG_SERVER}/{RUN_PREFIX}")
    try:
        return str(await conn.fetchval("SELECT value #>> '{}' FROM cluster_settings WHERE key = 'host_key'"))
    finally:
        await conn.close()


async def _get(cloud: Cloud, path: str, token: str | None, **params: Any) -> tuple[int, Any, bytes]:
    headers = {credentials.HEADER: token} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(cloud.url + BASE + path, headers=headers, params=params) as r,
    ):
        raw = await r.read()
        data = None
        if r.content_type == "application/json":
            data = await r.json()
        return r.status, data, raw


async def _hosts(cloud: Cloud) -> list[str]:
    listed = cloud.openstack("compute", "service", "list")
    return sorted(s["Host"] for s in listed if s["Binary"] == "nova-compute")


async def test_the_internal_api_takes_only_a_valid_host_token(cloud: Cloud) -> None:
    key = await _host_key()
    hosts = await _hosts(cloud)
    status, body, _ = await _get(cloud, "/config", None)
    assert status == 401 and "host token" in body["error"]["message"]
    # A user's Keystone token is no host token.
    async with (
        aiohttp.ClientSession() as s,
        s.get(cloud.url + BASE + "/config", headers={"X-Auth-Token": await cloud.token()}) as r,
    ):
        assert r.status == 401
    forged = credentials.mint("not the cloud's key", hosts)
    assert (await _get(cloud, "/config", forged))[0] == 401
    # Another host's name spliced into a valid token breaks its signature.
    version, _, signature = credentials.mint(key, [hosts[0]]).split(".")
    payload = credentials.mint(key, hosts).split(".")[1]
    assert (await _get(cloud, "/config", f"{version}.{payload}.{signature}"))[0] == 401
    status, body, _ = await _get(cloud, "/config", credentials.mint(key, [hosts[0]]))
    assert status == 200 and body["hosts"] == [hosts[0]] and body["shards"] > 0


async def test_a_host_token_reads_its_own_hosts_only(cloud: Cloud) -> None:
    key = await _host_key()
    hosts = await _hosts(cloud)
    member = await cloud.new_member("internal")
    # A private image of the member's, and a server booted from it on some host.
    image_bytes = uuid.uuid4().bytes * 4096
    token = await cloud.token(member)
    status, image, _ = await cloud.request(
        "POST",
        "/image/v2/images",
        token=token,
        json={"name": "internal-test", "disk_format": "raw", "container_format": "bare"},
    )
    assert status == 201, image
    status, _, _ = await cloud.request(
        "PUT",
        f"/image/v2/images/{image['id']}/file",
        token=token,
        data=image_bytes,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 204
    created = cloud.openstack(
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        image["id"],
        "--nic",
        "none",
        "--wait",
        f"internal-{uuid.uuid4().hex[:6]}",
        who=member,
        timeout=180,
    )
    server = created["id"]
    try:
        shown = cloud.openstack("server", "show", server)
        mine = shown["OS-EXT-SRV-ATTR:host"]
        other = next(h for h in hosts if h != mine)
        own, foreign = credentials.mint(key, [mine]), credentials.mint(key, [other])

        status, body, _ = await _get(cloud, f"/hosts/{mine}/servers", own)
        assert status == 200 and body["servers"][server] == "active"
        status, body, _ = await _get(cloud, f"/hosts/{other}/servers", foreign)
        assert status == 200 and server not in body["servers"]
        assert (await _get(cloud, f"/hosts/{mine}/servers", foreign))[0] == 403
        assert (await _get(cloud, "/network/desired", foreign, host=mine))[0] == 403

        # The instance data of a server is its host's only; a private image, too.
        status, body, _ = await _get(cloud, f"/metadata/servers/{server}/interfaces", foreign)
        assert status == 200 and body["interfaces"] == []
        status, found, _ = await _get(cloud, f"/images/{image['id']}", foreign)
        assert status == 404
        assert (await _get(cloud, f"/images/{image['id']}/file", foreign))[0] == 404
        status, found, _ = await _get(cloud, f"/images/{image['id']}", own)
        assert status == 200 and found["image"]["size"] == len(image_bytes)
        status, _, raw = await _get(cloud, f"/images/{image['id']}/file", own)
        assert status == 200 and raw == image_bytes
        assert found["image"]["os_hash_value"] == hashlib.sha512(image_bytes).hexdigest()
    finally:
        cloud.openstack("server", "delete", "--wait", server, fmt=None, timeout=120)
        await cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=token)
