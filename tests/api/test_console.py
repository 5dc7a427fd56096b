"""The console output action (`openstack console log show`) on `actorstack up --virt test`: the
API reads the console.log the server's host agent made in the state directory it shares with it.
One server is booted for the whole module; each test writes the log it then reads."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from api.compute.console import MAX_CONSOLE_BYTES, render
from tests.api.conftest import Cloud, Credentials

NOVA = {"OpenStack-API-Version": "compute 2.96"}


@pytest.fixture(scope="module")
async def owner(cloud: Cloud) -> Credentials:
    return await cloud.new_member("con")


@pytest.fixture(scope="module")
async def owner_token(cloud: Cloud, owner: Credentials) -> str:
    return await cloud.token(owner)


@pytest.fixture(scope="module")
async def server(cloud: Cloud, image: str, owner_token: str) -> AsyncIterator[dict[str, Any]]:
    """An ACTIVE server of `owner`'s project (its id and host), deleted after the module."""
    status, body, _ = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        token=owner_token,
        headers=NOVA,
        json={"server": {"name": "console", "imageRef": image, "flavorRef": "42", "networks": "none"}},
    )
    assert status == 202, body
    server_id = body["server"]["id"]
    try:
        deadline = time.monotonic() + 60
        while True:
            _, shown, _ = await cloud.request("GET", f"/compute/v2.1/servers/{server_id}", token=owner_token)
            if shown["server"]["status"] == "ACTIVE":
                break
            assert shown["server"]["status"] == "BUILD" and time.monotonic() < deadline, shown["server"]
            await asyncio.sleep(0.2)
        # The host is shown to admins only.
        _, shown, _ = await cloud.request("GET", f"/compute/v2.1/servers/{server_id}")
        yield {"id": server_id, "host": shown["server"]["OS-EXT-SRV-ATTR:host"]}
    finally:
        await cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=owner_token)


@pytest.fixture
def console_log(cloud: Cloud, server: dict[str, Any]) -> Path:
    """The file the server's host agent made for QEMU's serial console (`up` gives each
    simulated host its own directory)."""
    path = cloud.state_dir / "hosts" / server["host"] / "instances" / server["id"] / "console.log"
    assert path.is_file(), f"the host agent made no {path}"
    return path


async def console_output(cloud: Cloud, server_id: str, token: str, args: Any) -> tuple[int, Any]:
    status, body, _ = await cloud.request(
        "POST", f"/compute/v2.1/servers/{server_id}/action", token=token, json={"os-getConsoleOutput": args}
    )
    return status, body


async def test_console_log_is_returned_whole_or_its_last_lines(
    cloud: Cloud, server: dict[str, Any], console_log: Path, owner_token: str
) -> None:
    async def output(args: Any, token: str = owner_token) -> str:
        status, body = await console_output(cloud, server["id"], token, args)
        assert status == 200, body
        return body["output"]

    console_log.write_bytes(b"boot\nkernel\nlogin: ")
    for whole in ({}, {"length": -1}, {"length": "-1"}, {"length": None}, {"length": 50}):
        assert await output(whole) == "boot\nkernel\nlogin: "
    assert await output({"length": 2}) == await output({"length": "2"}) == "kernel\nlogin: "
    assert await output({"length": 0}) == ""
    # As Nova: the last N pieces between line feeds, so a final newline counts as one of them.
    console_log.write_bytes(b"boot\nkernel\nready\n")
    assert await output({"length": 2}) == "ready\n"
    assert await output({"length": 3}, await cloud.token()) == "kernel\nready\n"  # an admin


def test_cli_shows_the_last_lines(
    cloud: Cloud, server: dict[str, Any], console_log: Path, owner: Credentials
) -> None:
    console_log.write_bytes(b"one\ntwo\nthree\nfour")
    shown = cloud.openstack("console", "log", "show", "--lines", "2", server["id"], who=owner, fmt=None)
    assert shown == "three\nfour\n"  # the CLI adds the final newline
    shown = cloud.openstack("console", "log", "show", server["id"], who=owner, fmt=None)
    assert shown == "one\ntwo\nthree\nfour\n"


async def test_control_characters_are_stripped_as_nova_does(
    cloud: Cloud, server: dict[str, Any], console_log: Path, owner_token: str
) -> None:
    console_log.write_bytes(b"\x1b[0;32mOK\x1b[0m\r\n\tbell\x07 nul\x00 del\x7f\nna\xc3\xafve \xff\xfe\n")
    status, body = await console_output(cloud, server["id"], owner_token, {})
    assert status == 200
    assert body == {"output": "[0;32mOK[0m\n\tbell nul del\x7f\nna\u00efve \ufffd\ufffd\n"}


async def test_only_the_last_100_kib_are_read(
    cloud: Cloud, server: dict[str, Any], console_log: Path, owner_token: str
) -> None:
    line = b"0123456789abcdef" * 4 + b"\n"  # 65 bytes
    head = b"HEAD\n" + line * 2000
    tail = line * 2000 + b"TAIL"
    console_log.write_bytes(head + tail)
    status, body = await console_output(cloud, server["id"], owner_token, {})
    assert status == 200
    output = body["output"]
    assert len(output) == MAX_CONSOLE_BYTES and output.endswith("TAIL") and "HEAD" not in output
    assert output.encode() == (head + tail)[-MAX_CONSOLE_BYTES:]


@pytest.mark.parametrize(
    "args",
    [
        {"length": "abc"},
        {"length": -2},
        {"length": "-2"},
        {"length": 1.5},
        {"length": [3]},
        {"length": True},
        {"length": ""},
        {"length": 3, "extra": 1},
        None,
        "5",
    ],
)
async def test_a_bad_length_is_a_400(
    cloud: Cloud, server: dict[str, Any], owner_token: str, args: Any
) -> None:
    status, body = await console_output(cloud, server["id"], owner_token, args)
    assert status == 400, body
    assert body["badRequest"]["code"] == 400 and "Invalid input" in body["badRequest"]["message"]


async def test_another_projects_server_and_an_unknown_one_are_404(
    cloud: Cloud, server: dict[str, Any], console_log: Path
) -> None:
    console_log.write_bytes(b"secret\n")
    stranger = await cloud.token(await cloud.new_member("other"))
    unknown = str(uuid.uuid4())
    for server_id in (server["id"], unknown):
        status, body = await console_output(cloud, server_id, stranger, {"length": 1})
        assert status == 404, body
        assert body["itemNotFound"]["message"] == f"Instance {server_id} could not be found."
    admin = await cloud.token()
    status, body = await console_output(cloud, unknown, admin, {})
    assert status == 404 and "itemNotFound" in body


async def test_a_reader_of_the_servers_project_gets_403(
    cloud: Cloud, server: dict[str, Any], owner: Credentials
) -> None:
    admin = await cloud.token()
    reader = Credentials(f"con-reader-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(12), owner.project)
    status, user, _ = await cloud.request(
        "POST",
        "/identity/v3/users",
        token=admin,
        json={
            "user": {"name": reader.user, "password": reader.password, "default_project_id": owner.project_id}
        },
    )
    assert status == 201, user
    _, roles, _ = await cloud.request("GET", "/identity/v3/roles?name=reader", token=admin)
    user_id, role_id = user["user"]["id"], roles["roles"][0]["id"]
    grant = f"/identity/v3/projects/{owner.project_id}/users/{user_id}/roles/{role_id}"
    status, _, _ = await cloud.request("PUT", grant, token=admin)
    assert status == 204
    status, body = await console_output(cloud, server["id"], await cloud.token(reader), {})
    assert status == 403 and "os_compute_api:os-console-output" in body["forbidden"]["message"], body


async def test_a_server_without_a_host_is_409_not_ready(cloud: Cloud, image: str, owner_token: str) -> None:
    """A flavor no host has the disk for: the server never gets a host."""
    admin = await cloud.token()
    status, flavor, _ = await cloud.request(
        "POST",
        "/compute/v2.1/flavors",
        token=admin,
        json={"flavor": {"name": f"huge-disk-{uuid.uuid4().hex[:6]}", "ram": 64, "vcpus": 1, "disk": 10**8}},
    )
    assert status == 200, flavor
    request = {"name": "nowhere", "imageRef": image, "flavorRef": flavor["flavor"]["id"], "networks": "none"}
    status, body, _ = await cloud.request(
        "POST", "/compute/v2.1/servers", token=owner_token, headers=NOVA, json={"server": request}
    )
    assert status == 202, body
    server_id = body["server"]["id"]
    try:
        status, body = await console_output(cloud, server_id, owner_token, {})
        assert status == 409, body
        assert body["conflictingRequest"]["message"] == f"Instance {server_id} is not ready"
    finally:
        await cloud.request("DELETE", f"/compute/v2.1/servers/{server_id}", token=owner_token)
        await cloud.request("DELETE", f"/compute/v2.1/flavors/{flavor['flavor']['id']}", token=admin)


async def test_a_server_whose_console_log_is_missing_has_no_console(
    cloud: Cloud, server: dict[str, Any], console_log: Path, owner_token: str
) -> None:
    aside = console_log.with_name("console.log.aside")
    console_log.rename(aside)
    try:
        status, body = await console_output(cloud, server["id"], owner_token, {})
    finally:
        aside.rename(console_log)
    assert status == 404 and body["itemNotFound"]["message"] == "Guest does not have a console available."


# --- the pure parts -----------------------------------------------------------------------------


def test_render_tails_lines_like_novas_compute_manager() -> None:
    assert render(b"a\nb\nc", None) == "a\nb\nc"
    assert render(b"a\nb\nc", 2) == "b\nc"
    assert render(b"a\nb\nc\n", 2) == "c\n"
    assert render(b"a\nb\nc", 0) == ""
    assert render(b"a\r\nb\x1b", None) == "a\nb"
