"""A cloud of its own for the fuzzer (destructive requests must not reach the session cloud), a
project and member of its own inside it, and a few real resources whose ids the fuzzer uses as
path parameters, so that requests get past "not found" into the handlers' real checks."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from actorstack.scratch import ScratchServices
from tests.api.conftest import Cloud, Credentials, running_cloud
from tests.conftest import RUN_PREFIX, separate_services

TIMEOUT = 30.0  # seconds for one HTTP request to the cloud


def _json_session() -> requests.Session:
    """A session that asks for JSON, as OpenStack's SDKs do (Glance's errors take the type the
    client accepts: HTML for */*)."""
    session = requests.Session()
    session.headers["Accept"] = "application/json"
    return session


@dataclasses.dataclass
class World:
    """The fuzzed cloud, its admin's token and the member (of a project of its own) that fuzzes."""

    cloud: Cloud
    member: Credentials
    database_url: str
    ids: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # path parameter -> real values
    admin_project_id: str = ""
    session: requests.Session = dataclasses.field(default_factory=_json_session)

    def token(self, who: Credentials) -> str:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": who.user, "domain": {"id": "default"}, "password": who.password}
                    },
                },
                "scope": {"project": {"name": who.project, "domain": {"id": "default"}}},
            }
        }
        r = self.session.post(f"{self.cloud.url}/identity/v3/auth/tokens", json=body, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        return r.headers["X-Subject-Token"]

    def call(
        self,
        method: str,
        path: str,
        token: str,
        *,
        expect: int | tuple[int, ...] = (200, 201, 202, 204),
        **kwargs: Any,
    ) -> Any:
        r = self.session.request(
            method,
            self.cloud.url + path,
            headers={"X-Auth-Token": token, **kwargs.pop("headers", {})},
            timeout=TIMEOUT,
            **kwargs,
        )
        allowed = (expect,) if isinstance(expect, int) else expect
        assert r.status_code in allowed, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return (
            r.json()
            if r.content and r.headers.get("Content-Type", "").startswith("application/json")
            else None
        )


def wait_for(probe: Any, what: str, timeout: float = 60.0) -> Any:
    """Poll `probe` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def fuzz_state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-fuzz-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
async def fuzz_services() -> AsyncIterator[ScratchServices]:
    async with separate_services("fuzz") as services:
        yield services


@pytest.fixture(scope="module")
async def fuzz_cloud(fuzz_services: ScratchServices, fuzz_state_dir: Path) -> AsyncIterator[Cloud]:
    """`actorstack up` on a database and vhost of its own, with no kernel networking (the fuzzer
    creates networks; nothing of them may reach this machine's kernel)."""
    async with running_cloud(
        fuzz_services,
        fuzz_state_dir,
        "--hosts",
        "1",
        "--virt",
        "test",
        "--network",
        "none",
        "--host-heartbeat",
        "1",
        "--sync-interval",
        "2",
        "--shutdown-timeout",
        "5",
        # The fuzzer's image imports and import tasks reach no host but this machine's loopback.
        env={"ACTORSTACK_IMAGE_IMPORT_ALLOWED_HOSTS": "127.0.0.1"},
    ) as cloud:
        yield cloud


def _seed(world: World, token: str, admin_token: str) -> dict[str, list[str]]:
    """One of each resource in the member's project; their ids by path parameter name."""
    member, c = world.member, world.call
    compute, net, vol = "/compute/v2.1", "/networking/v2.0", f"/volume/v3/{member.project_id}"
    flavors = c("GET", f"{compute}/flavors", token)["flavors"]
    flavor = next(f["id"] for f in flavors if f["name"] == "m1.nano")
    image = c(
        "POST",
        "/image/v2/images",
        token,
        json={"name": "fuzz-img", "disk_format": "raw", "container_format": "bare"},
    )["id"]
    c(
        "PUT",
        f"/image/v2/images/{image}/file",
        token,
        data=b"\0" * 4096,
        headers={"Content-Type": "application/octet-stream"},
    )
    c("PUT", f"/image/v2/images/{image}/tags/t1", token)
    keypair = c("POST", f"{compute}/os-keypairs", token, json={"keypair": {"name": "fuzzkey"}})["keypair"][
        "name"
    ]
    group = c(
        "POST",
        f"{compute}/os-server-groups",
        token,
        json={"server_group": {"name": "fuzz-group", "policies": ["anti-affinity"]}},
    )["server_group"]["id"]
    network = c("POST", f"{net}/networks", token, json={"network": {"name": "fuzz-net", "tags": ["t1"]}})
    network_id = network["network"]["id"]
    subnet = c(
        "POST",
        f"{net}/subnets",
        token,
        json={"subnet": {"network_id": network_id, "cidr": "10.77.0.0/24", "ip_version": 4}},
    )["subnet"]["id"]
    port = c("POST", f"{net}/ports", token, json={"port": {"network_id": network_id, "name": "fuzz-port"}})
    volume = c(
        "POST",
        f"{vol}/volumes",
        token,
        json={"volume": {"size": 1, "name": "fuzz-vol", "metadata": {"k1": "v1"}}},
    )["volume"]["id"]
    server = c(
        "POST",
        f"{compute}/servers",
        token,
        json={
            "server": {
                "name": "fuzz-vm",
                "flavorRef": flavor,
                "imageRef": image,
                "networks": "none",
                "metadata": {"k1": "v1"},
            }
        },
        headers={"OpenStack-API-Version": "compute 2.37"},
    )["server"]["id"]
    # Built or failed: either way a server to fuzz (a slow machine may be slow to build it).
    wait_for(
        lambda: c("GET", f"{compute}/servers/{server}", token)["server"]["status"] != "BUILD",
        "server",
        timeout=150,
    )
    wait_for(
        lambda: c("GET", f"{vol}/volumes/{volume}", token)["volume"]["status"] != "creating",
        "volume",
        timeout=150,
    )
    credential = c(
        "POST",
        f"/identity/v3/users/{member.user_id}/application_credentials",
        token,
        json={"application_credential": {"name": "fuzz-cred"}},
    )["application_credential"]["id"]
    roles = c("GET", "/identity/v3/roles", admin_token)["roles"]
    services = c("GET", f"{compute}/os-services", admin_token)["services"]
    hypervisors = c("GET", f"{compute}/os-hypervisors", admin_token)["hypervisors"]
    endpoints = c("GET", "/identity/v3/endpoints", admin_token)["endpoints"]
    volume_types = c("GET", f"{vol}/types", token)["volume_types"]
    return {
        "server_id": [server],
        "volume_id": [volume],
        "image_id": [image],
        "flavor_id": [flavor, "1"],
        "network_id": [network_id],
        "subnet_id": [subnet],
        "port_id": [port["port"]["id"]],
        "resource_id": [network_id, subnet, port["port"]["id"]],
        "collection": ["networks", "subnets", "ports"],
        "group_id": [group],
        "name": [keypair],
        "key": ["k1"],
        "tag": ["t1"],
        "project_id": [member.project_id],
        "target_project_id": [member.project_id],
        "member_id": [member.project_id],
        "user_id": [member.user_id],
        "app_cred_id": [credential],
        "role_id": [r["id"] for r in roles],
        "domain_id": ["default"],
        "service_id": [str(s["id"]) for s in services],
        "hypervisor_id": [str(h["id"]) for h in hypervisors],
        "endpoint_id": [e["id"] for e in endpoints][:3],
        "type_id": [t["id"] for t in volume_types],
        "alias": ["tag", "quotas"],
        "network": ["none"],
        "request_id": ["req-0"],
    }


def _clean(world: World, admin_token: str) -> None:
    """Delete every server and volume (all projects), and wait until they are gone: their files and
    domains are the host's, and must not be left behind."""
    c = world.call
    vol = f"/volume/v3/{world.admin_project_id}"
    for server in c("GET", "/compute/v2.1/servers?all_tenants=1", admin_token)["servers"]:
        c("DELETE", f"/compute/v2.1/servers/{server['id']}", admin_token, expect=(204, 404, 409))
    wait_for(
        lambda: not c("GET", "/compute/v2.1/servers?all_tenants=1", admin_token)["servers"], "servers gone"
    )
    for volume in c("GET", f"{vol}/volumes?all_tenants=1", admin_token)["volumes"]:
        c(
            "POST",
            f"{vol}/volumes/{volume['id']}/action",
            admin_token,
            expect=(202, 400, 404),
            json={"os-reset_status": {"status": "available", "attach_status": "detached"}},
        )
        c("DELETE", f"{vol}/volumes/{volume['id']}", admin_token, expect=(202, 400, 404))
    wait_for(lambda: not c("GET", f"{vol}/volumes?all_tenants=1", admin_token)["volumes"], "volumes gone")


@pytest.fixture(scope="module", params=["member", "admin"])
async def world(
    request: pytest.FixtureRequest, fuzz_cloud: Cloud, fuzz_services: ScratchServices
) -> AsyncIterator[World]:
    """The fuzzing user, in a project of its own: a member, then a user holding the admin role,
    so that admin-only operations get past policy to their bodies too."""
    member = await fuzz_cloud.new_member(f"fuzz{request.param}", role=request.param)
    world = World(fuzz_cloud, member, fuzz_services.database_url)
    admin_token = world.token(fuzz_cloud.admin)
    world.admin_project_id = world.call("GET", "/identity/v3/projects?name=admin", admin_token)["projects"][
        0
    ]["id"]
    world.ids = _seed(world, world.token(member), admin_token)
    try:
        yield world
    finally:
        try:
            _clean(world, world.token(fuzz_cloud.admin))
        finally:
            world.session.close()
