"""Hostile input at the API edge (issue 10): names, metadata, user data, key names, key material and
image properties holding markup, shell metacharacters, line breaks, control characters, NUL or
megabytes either boot intact (and reach the host's libvirt XML as text) or are refused with an
OpenStack-shaped 400/413 — never a 500, never stored half-way.

On `actorstack up --hosts 3 --virt test` (the session `cloud`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import Cloud

COMPUTE = "/compute/v2.1"
NOVA_2_37 = {"X-OpenStack-Nova-API-Version": "2.37"}
# Printable, so a valid Nova name, yet everything a careless XML, dnsmasq or shell writer trips on.
HOSTILE = "<vm a='1' b=\"2\">&amp; ]]> $(id) `id` ; | --dhcp-option=3 \\ %s {{x}}</vm>"
MEGABYTE = 1024 * 1024


def _server_body(image: str, flavor: str, **fields: Any) -> dict[str, Any]:
    server = {
        "name": f"hostile-{uuid.uuid4().hex[:6]}",
        "imageRef": image,
        "flavorRef": flavor,
        "networks": "none",
        **fields,
    }
    return {"server": server}


@pytest.fixture(scope="module")
async def flavor(cloud: Cloud) -> str:
    status, body, _ = await cloud.request("GET", f"{COMPUTE}/flavors")
    assert status == 200, body
    return next(f["id"] for f in body["flavors"] if f["name"] == "m1.nano")


async def _servers_named(cloud: Cloud, prefix: str) -> list[dict[str, Any]]:
    status, body, _ = await cloud.request("GET", f"{COMPUTE}/servers")
    assert status == 200, body
    return [s for s in body["servers"] if s["name"].startswith(prefix)]


async def _create(cloud: Cloud, body: dict[str, Any]) -> tuple[int, Any]:
    status, data, _ = await cloud.request("POST", f"{COMPUTE}/servers", json=body, headers=NOVA_2_37)
    return status, data


async def _delete_server(cloud: Cloud, server_id: str) -> None:
    await cloud.request("DELETE", f"{COMPUTE}/servers/{server_id}")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, _, _ = await cloud.request("GET", f"{COMPUTE}/servers/{server_id}")
        if status == 404:
            return
        await _pause()
    raise AssertionError(f"server {server_id} was not deleted within 90 s")


async def _pause() -> None:
    """Between two polls of a state the test waits for (bounded by its caller's deadline)."""
    await asyncio.sleep(0.3)


async def _wait_status(cloud: Cloud, server_id: str, wanted: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = await cloud.request("GET", f"{COMPUTE}/servers/{server_id}")
        assert status == 200, body
        if body["server"]["status"] == wanted:
            return body["server"]
        if body["server"]["status"] == "ERROR" or time.monotonic() > deadline:
            raise AssertionError(
                f"server {server_id} is {body['server']['status']}, not {wanted}: "
                f"{body['server'].get('fault')}"
            )
        await _pause()


def _libvirt_xml(cloud: Cloud, server_id: str) -> Path:
    found = list(cloud.state_dir.glob(f"hosts/*/instances/{server_id}/libvirt.xml"))
    assert len(found) == 1, f"expected one libvirt.xml for {server_id}, found {found}"
    return found[0]


def _assert_refused(status: int, body: Any, codes: tuple[int, ...] = (400,)) -> None:
    """A refusal in Nova's shape (badRequest/overLimit), never a 500."""
    assert status in codes, (status, body)
    if isinstance(body, dict):
        (fault,) = body.values()
        assert fault["code"] == status and fault["message"], body


# --- what boots intact ---------------------------------------------------------------------------------


async def test_metacharacters_in_name_metadata_user_data_and_key_name_boot_intact(
    cloud: Cloud, image: str, flavor: str
) -> None:
    key_name = f"hostile key_{uuid.uuid4().hex[:6]}"  # spaces, dash, underscore: Nova's key name set
    status, key, _ = await cloud.request(
        "POST", f"{COMPUTE}/os-keypairs", json={"keypair": {"name": key_name}}
    )
    assert status in (200, 201), key
    name = f"hostile-{uuid.uuid4().hex[:6]} {HOSTILE}"[:255]
    metadata = {"k<&>'\"": HOSTILE[:255], "shell": "$(reboot); `halt` | rm -rf /"}
    user_data = base64.b64encode(
        b"#!/bin/sh\necho '<x>&' $(id) `id`\n\x00\x01\xff" + HOSTILE.encode()
    ).decode()
    server_id = None
    try:
        status, created = await _create(
            cloud,
            _server_body(
                image,
                flavor,
                name=name,
                metadata=metadata,
                user_data=user_data,
                key_name=key_name,
                description='one <&> "two" $(three)',
            ),
        )
        assert status == 202, created
        server_id = created["server"]["id"]
        shown = await _wait_status(cloud, server_id, "ACTIVE")
        assert shown["name"] == name and shown["metadata"] == metadata and shown["key_name"] == key_name

        status, admin_view, _ = await cloud.request(
            "GET", f"{COMPUTE}/servers/{server_id}", headers={"X-OpenStack-Nova-API-Version": "2.19"}
        )
        assert status == 200 and admin_view["server"]["description"] == 'one <&> "two" $(three)'

        # The host's domain definition parses, and the name is text in it, not markup.
        root = ET.parse(_libvirt_xml(cloud, server_id)).getroot()
        assert root.findtext("title") == name
        names = [e.text for e in root.iter("{urn:actorstack:instance:1}name")]
        assert names == [name]
        assert [e.tag for e in root.iter() if "vm" == e.tag] == []  # the name's <vm> never became one
    finally:
        if server_id is not None:
            await _delete_server(cloud, server_id)
        await cloud.request("DELETE", f"{COMPUTE}/os-keypairs/{key_name}")


def test_the_cli_shows_a_hostile_name_and_property_unchanged(cloud: Cloud, image: str) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]} {HOSTILE}"
    created = cloud.openstack(
        "server",
        "create",
        "--flavor",
        "m1.nano",
        "--image",
        image,
        "--nic",
        "none",
        "--property",
        f"note={HOSTILE}",
        "--wait",
        name,
        timeout=180,
    )
    try:
        shown = cloud.openstack("server", "show", created["id"])
        assert shown["name"] == name and shown["status"] == "ACTIVE"
        assert shown["properties"] in ({"note": HOSTILE}, f"note='{HOSTILE}'")
    finally:
        cloud.openstack("server", "delete", "--wait", created["id"], fmt=None, timeout=180)


# --- what is refused --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "line\nbreak",
        "carriage\rreturn",
        "nul\x00byte",
        "escape\x1b[31m",
        "bell\x07",
        " leading",
        "trailing ",
        "x" * 256,
        "",
    ],
    ids=["newline", "cr", "nul", "ansi", "bell", "leading-space", "trailing-space", "256-chars", "empty"],
)
async def test_a_server_name_nova_would_refuse_is_a_400(
    cloud: Cloud, image: str, flavor: str, name: str
) -> None:
    marker = f"refused-{uuid.uuid4().hex[:6]}"
    status, body = await _create(cloud, _server_body(image, flavor, name=name, description=marker))
    _assert_refused(status, body)
    assert not await _servers_named(cloud, name[:20] or "\x00")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metadata", {"nul\x00key": "v"}),
        ("metadata", {"k": "nul\x00value"}),
        ("metadata", {"k": "v" * 256}),
        ("metadata", {"": "v"}),
        ("metadata", {"k": 1}),
        ("metadata", ["not", "a", "dict"]),
        ("user_data", "not base64 at all <&>"),
        ("user_data", "nul\x00"),
        ("user_data", base64.b64encode(b"x" * 60000).decode()),  # 80,000 characters: over Nova's 65,535
        ("description", "nul\x00byte"),
        ("description", "escape\x1b"),
        ("key_name", "nul\x00key"),
        ("key_name", "no such key <&>"),
        ("availability_zone", "nul\x00zone"),
        ("flavorRef", "nul\x00flavor"),
        ("imageRef", "nul\x00image"),
    ],
    ids=lambda v: repr(v)[:24],
)
async def test_hostile_server_fields_are_a_400_never_a_500(
    cloud: Cloud, image: str, flavor: str, field: str, value: Any
) -> None:
    name = f"refused-{uuid.uuid4().hex[:6]}"
    status, body = await _create(cloud, _server_body(image, flavor, name=name, **{field: value}))
    _assert_refused(status, body)
    assert not await _servers_named(cloud, name)


async def test_metadata_updates_refuse_what_create_refuses(cloud: Cloud, image: str, flavor: str) -> None:
    status, created = await _create(cloud, _server_body(image, flavor))
    assert status == 202, created
    server_id = created["server"]["id"]
    try:
        for change in ({"nul": "a\x00b"}, {"a\x00b": "x"}, {"k": "v" * 256}):
            status, body, _ = await cloud.request(
                "POST", f"{COMPUTE}/servers/{server_id}/metadata", json={"metadata": change}
            )
            _assert_refused(status, body)
        status, body, _ = await cloud.request(
            "PUT", f"{COMPUTE}/servers/{server_id}/metadata/k", json={"meta": {"k": "a\x00b"}}
        )
        _assert_refused(status, body)
        status, body, _ = await cloud.request(
            "PUT", f"{COMPUTE}/servers/{server_id}", json={"server": {"name": "a\x00b"}}
        )
        _assert_refused(status, body)
        status, body, _ = await cloud.request(
            "PUT", f"{COMPUTE}/servers/{server_id}", json={"server": {"description": "a\x00b"}}
        )
        _assert_refused(status, body)
        status, body, _ = await cloud.request("GET", f"{COMPUTE}/servers/{server_id}/metadata")
        assert status == 200 and body["metadata"] == {}
    finally:
        await _delete_server(cloud, server_id)


async def test_huge_bodies_are_413_and_huge_fields_400(cloud: Cloud, image: str, flavor: str) -> None:
    name = f"huge-{uuid.uuid4().hex[:6]}"
    attempts: list[tuple[dict[str, Any], tuple[int, ...]]] = [
        (_server_body(image, flavor, name=name + "x" * (2 * MEGABYTE)), (413,)),
        (_server_body(image, flavor, name=name, user_data="A" * (2 * MEGABYTE)), (413,)),
        # 640 KB, inside the body limit, but far more items than Nova's metadata_items quota
        (_server_body(image, flavor, name=name, metadata={f"k{i}": "v" * 200 for i in range(3000)}), (403,)),
        (_server_body(image, flavor, name=name, description="d" * 300_000), (400,)),
    ]
    deep = json.dumps(_server_body(image, flavor, name=name, metadata={"k": "DEEP"})).replace(
        '"DEEP"', "[" * 100_000 + "]" * 100_000
    )  # past any JSON decoder's recursion limit
    try:
        for body, codes in attempts:
            status, answer = await _create(cloud, body)
            _assert_refused(status, answer, codes)
        status, answer, _ = await cloud.request(
            "POST",
            f"{COMPUTE}/servers",
            data=deep.encode(),
            headers={**NOVA_2_37, "Content-Type": "application/json"},
        )
        _assert_refused(status, answer)
        status, answer, _ = await cloud.request(
            "POST",
            f"{COMPUTE}/servers",
            data=b'{"server": {"name": "\xff"}}',
            headers={**NOVA_2_37, "Content-Type": "application/json"},
        )
        _assert_refused(status, answer)  # not UTF-8
    finally:
        leaked = await _servers_named(cloud, name)
        for server in leaked:  # a refusal that did not happen must not leave a server behind
            await _delete_server(cloud, server["id"])
    assert not leaked


async def test_nul_in_paths_and_queries_is_never_a_500(cloud: Cloud) -> None:
    for path in (
        f"{COMPUTE}/servers/%00",
        f"{COMPUTE}/servers?name=%00",
        f"{COMPUTE}/flavors/%00",
        f"{COMPUTE}/os-keypairs/a%00b",
        "/networking/v2.0/networks?name=%00",
        "/networking/v2.0/ports/%00",
        "/image/v2/images/%00",
        "/image/v2/images?name=%00",
        f"{COMPUTE}/servers/{'x' * 10000}",
    ):
        status, body, _ = await cloud.request("GET", path)
        assert status in (200, 400, 404, 414), (path, status, body)


# --- keys, networks, images ------------------------------------------------------------------------------


async def test_a_public_key_with_a_second_line_is_refused(cloud: Cloud) -> None:
    """A key line with an extra line would put a second, unreviewed key into the guest's
    authorized_keys through the metadata service."""
    status, made, _ = await cloud.request(
        "POST", f"{COMPUTE}/os-keypairs", json={"keypair": {"name": f"gen-{uuid.uuid4().hex[:6]}"}}
    )
    assert status in (200, 201), made
    await cloud.request("DELETE", f"{COMPUTE}/os-keypairs/{made['keypair']['name']}")
    good = made["keypair"]["public_key"].strip()
    for public_key in (
        good + "\nssh-rsa AAAAB3NzaC1yc2E injected",
        good + " comment\rinjected",
        good + " nul\x00",
        "x" * (2 * MEGABYTE),
    ):
        name = f"imp-{uuid.uuid4().hex[:6]}"
        status, body, _ = await cloud.request(
            "POST", f"{COMPUTE}/os-keypairs", json={"keypair": {"name": name, "public_key": public_key}}
        )
        try:
            _assert_refused(status, body, (400, 413))
        finally:
            if status < 300:
                await cloud.request("DELETE", f"{COMPUTE}/os-keypairs/{name}")
    for name in ("semi;colon", "new\nline", "nul\x00", "<tag>"):
        status, body, _ = await cloud.request(
            "POST", f"{COMPUTE}/os-keypairs", json={"keypair": {"name": name}}
        )
        _assert_refused(status, body)


@pytest.mark.parametrize("field", ["name", "description"])
async def test_network_and_port_strings_with_nul_are_a_400(cloud: Cloud, field: str) -> None:
    status, body, _ = await cloud.request(
        "POST", "/networking/v2.0/networks", json={"network": {field: "a\x00b"}}
    )
    assert status == 400, body
    assert body["NeutronError"]["message"]


async def test_a_network_with_hostile_names_keeps_them_as_text(cloud: Cloud) -> None:
    status, net, _ = await cloud.request(
        "POST", "/networking/v2.0/networks", json={"network": {"name": HOSTILE, "description": "a\nb"}}
    )
    assert status == 201, net
    network_id = net["network"]["id"]
    try:
        status, shown, _ = await cloud.request("GET", f"/networking/v2.0/networks/{network_id}")
        assert status == 200 and shown["network"]["name"] == HOSTILE
        status, body, _ = await cloud.request(
            "POST",
            "/networking/v2.0/subnets",
            json={
                "subnet": {
                    "network_id": network_id,
                    "cidr": "10.77.0.0/24",
                    "ip_version": 4,
                    "dns_nameservers": ["10.0.0.1\n--dhcp-option=3"],
                }
            },
        )
        assert status == 400, body
        status, body, _ = await cloud.request(
            "POST",
            "/networking/v2.0/ports",
            json={"port": {"network_id": network_id, "mac_address": "fa:16:3e:00:00:01\n--dhcp-host=x"}},
        )
        assert status == 400, body
    finally:
        await cloud.request("DELETE", f"/networking/v2.0/networks/{network_id}")


async def test_image_names_and_properties_with_nul_or_megabytes_are_refused(cloud: Cloud) -> None:
    made = []
    try:
        for body in (
            {"name": "a\x00b"},
            {"name": "i", "prop": "a\x00b"},
            {"name": "i", "a\x00b": "v"},
            {"name": "x" * 300},
            {"name": "i", "prop": "x" * (2 * MEGABYTE)},
        ):
            status, data, _ = await cloud.request("POST", "/image/v2/images", json=body)
            if status == 201:
                made.append(data["id"])
            assert status in (400, 413), (body.keys(), status, data)
        status, data, _ = await cloud.request(
            "POST", "/image/v2/images", json={"name": HOSTILE, "prop": HOSTILE}
        )
        assert status == 201, data
        made.append(data["id"])
        status, shown, _ = await cloud.request("GET", f"/image/v2/images/{data['id']}")
        assert status == 200 and shown["name"] == HOSTILE and shown["prop"] == HOSTILE
    finally:
        for image_id in made:
            await cloud.request("DELETE", f"/image/v2/images/{image_id}")
