"""Servers on networks, through the real `openstack` CLI: `server create --network` and `--port`
create or claim ports, `server show` lists the fixed IP, deleting the server deletes the ports it
created and releases the others; and on the host (the cloud runs as root with Linux networking)
the bridge, tap, DHCP namespace and dnsmasq of a booted server exist and are gone after delete."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from hostagent.network import kernel
from tests.api.conftest import Cloud
from tests.hostagent.network.conftest import http_get

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="Linux bridges and namespaces need root")


@pytest.fixture
def network(cloud: Cloud) -> Any:
    """A network with a /24 subnet; removed (with whatever is left on it) after the test."""
    name = f"net-{uuid.uuid4().hex[:8]}"
    net = cloud.openstack("network", "create", name)
    subnet = cloud.openstack(
        "subnet", "create", "--network", net["id"], "--subnet-range", "10.20.0.0/24", f"{name}-subnet"
    )
    yield {"id": net["id"], "name": name, "subnet": subnet["id"]}
    for port in cloud.openstack("port", "list", "--network", net["id"], "--long"):
        if port.get("Device Owner") != "network:dhcp":
            cloud.openstack("port", "delete", port["ID"], fmt=None)
    cloud.openstack("network", "delete", net["id"], fmt=None)


def _addresses(shown: dict[str, Any]) -> dict[str, list[str]]:
    """`addresses` as the CLI prints it (a dict in recent clients, "net=ip, ip" text in old ones)."""
    value = shown["addresses"]
    if isinstance(value, dict):
        return value
    result: dict[str, list[str]] = {}
    for part in value.split(";"):
        if "=" in part:
            net, ips = part.split("=", 1)
            result[net.strip()] = [ip.strip() for ip in ips.split(",")]
    return result


def _wait(predicate: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)


def test_boot_on_a_network_shows_the_fixed_ip_and_delete_removes_the_port(
    cloud: Cloud, image: str, network: Any
) -> None:
    created = cloud.openstack(
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        image,
        "--network",
        network["id"],
        "--wait",
        f"vm-{uuid.uuid4().hex[:8]}",
        timeout=180,
    )
    assert created["status"] == "ACTIVE"
    server = created["id"]
    shown = cloud.openstack("server", "show", server)
    ips = _addresses(shown)[network["name"]]
    [port] = cloud.openstack("port", "list", "--server", server, "--long")
    port = cloud.openstack("port", "show", port["ID"])
    assert [f["ip_address"] for f in port["fixed_ips"]] == ips
    assert ips[0].startswith("10.20.0.") and ips[0] not in ("10.20.0.0", "10.20.0.1")
    assert port["device_owner"].startswith("compute:") and port["device_id"] == server
    assert port["binding_host_id"] == shown["OS-EXT-SRV-ATTR:host"]
    _wait(lambda: cloud.openstack("port", "show", port["id"])["status"] == "ACTIVE", "the port to be ACTIVE")

    cloud.openstack("server", "delete", "--wait", server, fmt=None, timeout=120)
    _wait(
        lambda: not cloud.openstack("port", "list", "--device-id", server), "the server's port to be deleted"
    )
    listed = {p["ID"] for p in cloud.openstack("port", "list", "--network", network["id"])}
    assert port["id"] not in listed


def test_boot_with_a_port_keeps_the_port_after_delete(cloud: Cloud, image: str, network: Any) -> None:
    port = cloud.openstack(
        "port",
        "create",
        "--network",
        network["id"],
        "--fixed-ip",
        f"subnet={network['subnet']},ip-address=10.20.0.77",
        f"p-{uuid.uuid4().hex[:8]}",
    )
    created = cloud.openstack(
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        image,
        "--port",
        port["id"],
        "--wait",
        f"vm-{uuid.uuid4().hex[:8]}",
        timeout=180,
    )
    server = created["id"]
    assert _addresses(cloud.openstack("server", "show", server))[network["name"]] == ["10.20.0.77"]
    # the port is in use: a second server cannot take it
    err = cloud.openstack_fails(
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        image,
        "--port",
        port["id"],
        f"vm-{uuid.uuid4().hex[:8]}",
    )
    assert "in use" in (err.stderr + err.stdout)
    cloud.openstack("server", "delete", "--wait", server, fmt=None, timeout=120)

    def released() -> Any:
        shown = cloud.openstack("port", "show", port["id"])
        return shown if shown["device_id"] == "" and shown["status"] == "DOWN" else None

    shown = _wait(released, "the port to be released")
    assert [f["ip_address"] for f in shown["fixed_ips"]] == ["10.20.0.77"]
    cloud.openstack("port", "delete", port["id"], fmt=None)


def test_a_network_with_a_server_cannot_be_deleted(cloud: Cloud, image: str, network: Any) -> None:
    created = cloud.openstack(
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        image,
        "--network",
        network["id"],
        "--wait",
        f"vm-{uuid.uuid4().hex[:8]}",
        timeout=180,
    )
    err = cloud.openstack_fails("network", "delete", network["id"])
    assert err.returncode != 0
    assert cloud.openstack("network", "show", network["id"])["id"] == network["id"]
    cloud.openstack("server", "delete", "--wait", created["id"], fmt=None, timeout=120)


async def test_networks_auto_and_bad_requests(cloud: Cloud, image: str) -> None:
    """`auto` takes the project's one network, none gives no NIC, several are ambiguous (409);
    a network or port that does not exist is a 400 and creates nothing."""
    who = await cloud.new_member("netauto")
    token = await cloud.token(who)

    def boot(networks: Any) -> dict[str, Any]:
        return {
            "server": {
                "name": f"vm-{uuid.uuid4().hex[:6]}",
                "imageRef": image,
                "flavorRef": "1",
                "networks": networks,
            }
        }

    headers = {"X-OpenStack-Nova-API-Version": "2.37"}
    status, body, _ = await cloud.request(
        "POST", "/compute/v2.1/servers", token=token, json=boot("auto"), headers=headers
    )
    assert status == 202, body
    server = body["server"]["id"]
    status, shown, _ = await cloud.request("GET", f"/compute/v2.1/servers/{server}", token=token)
    assert shown["server"]["addresses"] == {}

    net = cloud.openstack("network", "create", f"n-{uuid.uuid4().hex[:6]}", who=who)
    cloud.openstack(
        "subnet", "create", "--network", net["id"], "--subnet-range", "10.30.0.0/24", "s1", who=who
    )
    status, body, _ = await cloud.request(
        "POST", "/compute/v2.1/servers", token=token, json=boot("auto"), headers=headers
    )
    assert status == 202, body
    auto_server = body["server"]["id"]
    status, shown, _ = await cloud.request("GET", f"/compute/v2.1/servers/{auto_server}", token=token)
    assert list(shown["server"]["addresses"]) == [net["name"]]

    second = cloud.openstack("network", "create", f"n-{uuid.uuid4().hex[:6]}", who=who)
    status, body, _ = await cloud.request(
        "POST", "/compute/v2.1/servers", token=token, json=boot("auto"), headers=headers
    )
    assert status == 409 and "Multiple possible networks" in body["conflictingRequest"]["message"]

    missing = str(uuid.uuid4())
    for networks in (
        [{"uuid": missing}],
        [{"port": missing}],
        [{"uuid": "not-a-uuid"}],
        [{"uuid": net["id"], "fixed_ip": "10.99.0.5"}],
        [{"uuid": net["id"], "fixed_ip": "x"}],
    ):
        status, body, _ = await cloud.request(
            "POST", "/compute/v2.1/servers", token=token, json=boot(networks), headers=headers
        )
        assert status in (400, 404), (networks, status, body)
    status, listed, _ = await cloud.request("GET", "/compute/v2.1/servers", token=token)
    assert {s["id"] for s in listed["servers"]} == {server, auto_server}

    for sid in (server, auto_server):
        await cloud.request("DELETE", f"/compute/v2.1/servers/{sid}", token=token)
    _wait(
        lambda: (
            not cloud.openstack(
                "port", "list", "--network", net["id"], "--device-owner", "compute:nova", who=who
            )
        ),
        "the auto server's port to go",
    )
    cloud.openstack("network", "delete", second["id"], fmt=None, who=who)
    _wait(lambda: _try_delete(cloud, net["id"], who), "the network to be deletable")


def _try_delete(cloud: Cloud, network_id: str, who: Any) -> bool:
    try:
        cloud.openstack("network", "delete", network_id, fmt=None, who=who)
        return True
    except AssertionError:
        return False


# --- the host side ---------------------------------------------------------------------------------


def _links() -> dict[str, dict[str, Any]]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.get_links()
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in links}
        return {
            link.get_attr("IFLA_IFNAME"): {
                "master": names.get(link.get_attr("IFLA_MASTER")),
                "alias": link.get_attr("IFLA_IFALIAS"),
            }
            for link in links
        }


def _namespaces() -> set[str]:
    from pyroute2 import netns

    return set(netns.listnetns())


def _dnsmasq_for(network_id: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "dnsmasq" in cmdline.split("\0")[0] and network_id in cmdline:
            found.append(int(proc.name))
    return found


@needs_root
def test_a_booted_server_has_its_bridge_tap_namespace_and_dnsmasq_until_deleted(
    cloud: Cloud, image: str, network: Any
) -> None:
    created = cloud.openstack(
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        image,
        "--network",
        network["id"],
        "--wait",
        f"vm-{uuid.uuid4().hex[:8]}",
        timeout=180,
    )
    server = created["id"]
    [port] = cloud.openstack("port", "list", "--server", server)
    bridge, tap, namespace = f"brq{network['id'][:11]}", f"tap{port['ID'][:11]}", f"qdhcp-{network['id']}"
    links = _links()
    assert bridge in links and links[tap]["master"] == bridge
    assert links[bridge]["alias"] and links[bridge]["alias"].startswith("actorstack:")
    assert namespace in _namespaces()
    assert any(link.name.startswith("ns-") for link in kernel.namespace_links(namespace))  # the DHCP veth
    assert _dnsmasq_for(network["id"])
    # the metadata listener answers inside the namespace (404: the namespace's own address is no port's)
    status, _, _ = asyncio.run(http_get(namespace, "/openstack/latest/meta_data.json"))
    assert status == 404
    hosts = list((cloud.state_dir / "network").rglob("host*"))
    mac = cloud.openstack("port", "show", port["ID"])["mac_address"]
    assert any(mac in path.read_text() for path in hosts if path.is_file())

    cloud.openstack("server", "delete", "--wait", server, fmt=None, timeout=120)
    _wait(lambda: tap not in _links() and bridge not in _links(), "the tap and bridge to go")
    _wait(
        lambda: namespace not in _namespaces() and not _dnsmasq_for(network["id"]),
        "the namespace and dnsmasq to go",
    )
