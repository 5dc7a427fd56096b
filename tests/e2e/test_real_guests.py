"""Real guests end to end, through the real `openstack` CLI, on qemu:///system.

A cloud of its own (`actorstack up --virt qemu`, its own database and vhost) boots the test
image (`actorstack testimage build`, uploaded with `openstack image create`) on a network with
a keypair; the guest's serial console, read with `openstack console log show`, must show the
DHCP lease of exactly the address `server show` reports, the metadata of that very server, the
imported key, and a marker written to and read back from a volume attached while it runs.
Afterwards nothing of it may be left on the host. A second test boots two servers on one
network: each reads its own metadata.

Skipped where qemu:///system or root (bridges, namespaces) is missing — except in CI, where
tools/setup provides both and a skip would hide a broken cloud, so there it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import CliError, Cloud, running_cloud
from tests.conftest import ROOT, qemu_scratch_dir, separate_services
from tests.hostagent.test_libvirt_driver import qemu_system_unavailable

MARK = "actorstack-guest: "
BOOT_TIMEOUT = 240.0  # create → the guest's metadata lines; ~6 s measured with TCG, CI is slower


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the cloud's networking makes bridges, taps and namespaces"
    missing = [tool for tool in ("syslinux", "mcopy", "mkfs.fat", "dnsmasq") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (tools/setup installs them)"
    return qemu_system_unavailable()


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    with qemu_scratch_dir("e2e", _why_not(), "the real-guest end-to-end test") as path:
        yield path


@pytest.fixture(scope="module")
async def qemu_cloud(state_dir: Path) -> AsyncIterator[Cloud]:
    async with separate_services("e2e") as services:
        async with running_cloud(
            services,
            state_dir,
            "--virt",
            "qemu",
            "--hosts",
            "1",
            "--no-test-image",
            "--host-heartbeat",
            "1",
            "--sync-interval",
            "2",
            "--shutdown-timeout",
            "10",
        ) as cloud:
            yield cloud


@pytest.fixture(scope="module")
def test_image(qemu_cloud: Cloud) -> str:
    """Built with the CLI and uploaded with the openstack CLI, as the README shows."""
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "actorstack.cli",
            "testimage",
            "build",
            "--state-dir",
            str(qemu_cloud.state_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    path = built.stdout.strip()
    image = qemu_cloud.openstack(
        "image",
        "create",
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        "--public",
        "--min-ram",
        "128",
        "--file",
        path,
        "actorstack-test",
    )
    assert image["status"] == "active"
    return image["id"]


@pytest.fixture(scope="module")
def keypair(qemu_cloud: Cloud, state_dir: Path) -> tuple[str, str]:
    """(name, public key) of a key imported from a file made with ssh-keygen."""
    key = state_dir / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e@actorstack", "-f", str(key)],
        check=True,
        timeout=30,
    )
    public = (key.parent / "id_ed25519.pub").read_text().strip()
    qemu_cloud.openstack("keypair", "create", "--public-key", f"{key}.pub", "e2e-key")
    return "e2e-key", public


@pytest.fixture
def network(qemu_cloud: Cloud) -> Iterator[dict[str, Any]]:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    net = qemu_cloud.openstack("network", "create", name)
    octet = 100 + uuid.uuid4().int % 100
    subnet = qemu_cloud.openstack(
        "subnet", "create", f"{name}-subnet", "--network", net["id"], "--subnet-range", f"10.{octet}.0.0/24"
    )
    yield {"id": net["id"], "name": name, "subnet": subnet["id"]}
    try:
        qemu_cloud.openstack("network", "delete", net["id"], fmt=None)
    except CliError:
        pass  # the test deleted it


def guest_lines(cloud: Cloud, server_id: str) -> list[str]:
    """The guest's own report lines (without the marker), from `openstack console log show`."""
    text = cloud.openstack("console", "log", "show", server_id, fmt=None)
    return [line.split(MARK, 1)[1].strip() for line in text.splitlines() if MARK in line]


def wait_for_line(
    cloud: Cloud, server_id: str, pattern: str, *, timeout: float = BOOT_TIMEOUT
) -> re.Match[str]:
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = guest_lines(cloud, server_id)
        for line in lines:
            found = regex.fullmatch(line)
            if found:
                return found
        if any("failed" in line for line in lines):
            break
        time.sleep(1)
    raise AssertionError(
        f"server {server_id}'s console never showed {pattern!r}; it shows:\n" + "\n".join(lines)
    )


def fixed_ip(server: dict[str, Any], network: str) -> str:
    addresses = server["addresses"]
    if isinstance(addresses, str):  # older CLIs print "net=ip"
        return addresses.split("=", 1)[1].split(",")[0].strip()
    return addresses[network][0]


def metadata_of(cloud: Cloud, server_id: str) -> dict[str, Any]:
    found = wait_for_line(cloud, server_id, r"meta_data\.json (\{.*\})")
    return json.loads(found.group(1))


def host_leftovers(
    cloud: Cloud, server_id: str, network_id: str, port_ids: list[str], volume_ids: list[str]
) -> list[str]:
    """What of these resources is still on the host."""
    left = []
    domains = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    if f"instance-{server_id}" in domains:
        left.append(f"domain instance-{server_id}")
    left += [str(p) for p in cloud.state_dir.glob(f"hosts/*/instances/{server_id}")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30).stdout
    for name in [f"brq{network_id[:11]}", *(f"tap{p[:11]}" for p in port_ids)]:
        if f" {name}:" in links or f" {name}@" in links:
            left.append(f"link {name}")
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    if f"qdhcp-{network_id}" in namespaces:
        left.append(f"namespace qdhcp-{network_id}")
    dnsmasq = subprocess.run(["pgrep", "-af", "dnsmasq"], capture_output=True, text=True, timeout=30).stdout
    left += [f"dnsmasq: {line}" for line in dnsmasq.splitlines() if network_id in line]
    left += [str(p) for v in volume_ids for p in cloud.state_dir.glob(f"volumes/*{v}*")]
    return left


def wait_gone(cloud: Cloud, *args: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            cloud.openstack(*args)
        except CliError:
            return
        time.sleep(1)
    raise AssertionError(f"openstack {' '.join(args)} still finds it")


def test_a_real_guest_takes_its_lease_reads_its_metadata_and_uses_its_volume(
    qemu_cloud: Cloud, test_image: str, keypair: tuple[str, str], network: dict[str, Any]
) -> None:
    cloud = qemu_cloud
    key_name, public_key = keypair
    server = cloud.openstack(
        "server",
        "create",
        "--image",
        "actorstack-test",
        "--flavor",
        "m1.micro",
        "--network",
        network["id"],
        "--key-name",
        key_name,
        "--wait",
        "e2e-guest",
        timeout=BOOT_TIMEOUT,
    )
    server_id = server["id"]
    volume_id = None
    try:
        assert server["status"] == "ACTIVE"
        shown = cloud.openstack("server", "show", server_id)
        ip = fixed_ip(shown, network["name"])
        ports = cloud.openstack("port", "list", "--server", server_id)
        assert [p["Fixed IP Addresses"][0]["ip_address"] for p in ports] == [ip]
        port_ids = [p["ID"] for p in ports]

        # the lease of exactly that address, then the server's own metadata and the key
        lease = wait_for_line(cloud, server_id, r"lease eth0 ip=(\S+)/24 router=\S+ server=(\S+) lease=\d+s")
        assert lease.group(1) == ip
        meta = metadata_of(cloud, server_id)
        assert meta["uuid"] == server_id
        assert meta["name"] == "e2e-guest"
        assert (
            meta["hostname"].split(".")[0]
            == shown.get("OS-EXT-SRV-ATTR:hostname", "e2e-guest")
            == "e2e-guest"
        )
        assert meta["public_keys"] == {key_name: public_key + "\n"} or meta["public_keys"] == {
            key_name: public_key
        }
        key_line = wait_for_line(cloud, server_id, r"openssh-key (.+)")
        assert key_line.group(1) == public_key
        wait_for_line(cloud, server_id, "ready")

        # a 1 GB volume, attached live: the guest writes its marker to /dev/vdb and reads it back
        volume = cloud.openstack("volume", "create", "--size", "1", "e2e-volume")
        volume_id = volume["id"]
        deadline = time.monotonic() + 60
        while cloud.openstack("volume", "show", volume_id)["status"] != "available":
            assert time.monotonic() < deadline, "the volume never became available"
            time.sleep(0.5)
        cloud.openstack("server", "add", "volume", server_id, volume_id, fmt=None)
        marker = wait_for_line(
            cloud,
            server_id,
            r"volume vdb serial=(\S+) found=none wrote=(\S+) read=(\S+) (ok|MISMATCH)",
            timeout=90,
        )
        assert marker.group(1) == volume_id[:20]  # virtio-blk shows the first 20 bytes of the serial
        assert marker.group(2) == marker.group(3) and marker.group(4) == "ok"
        assert cloud.openstack("volume", "show", volume_id)["status"] == "in-use"
        cloud.openstack("server", "remove", "volume", server_id, volume_id, fmt=None)
        wait_for_line(cloud, server_id, "volume vdb gone", timeout=90)
        deadline = time.monotonic() + 60
        while cloud.openstack("volume", "show", volume_id)["status"] != "available":
            assert time.monotonic() < deadline, "the volume never became available after the detach"
            time.sleep(0.5)
    finally:
        cloud.openstack("server", "delete", "--wait", server_id, fmt=None, timeout=BOOT_TIMEOUT)
        if volume_id is not None:
            cloud.openstack("volume", "delete", volume_id, fmt=None)
            wait_gone(cloud, "volume", "show", volume_id)

    # everything of it gone from the host once the network is deleted too
    cloud.openstack("network", "delete", network["id"], fmt=None)
    deadline = time.monotonic() + 30
    while left := host_leftovers(cloud, server_id, network["id"], port_ids, [volume_id]):
        assert time.monotonic() < deadline, f"left on the host after delete: {left}"
        time.sleep(0.5)


def test_two_guests_on_one_network_each_read_their_own_metadata(
    qemu_cloud: Cloud, test_image: str, keypair: tuple[str, str], network: dict[str, Any]
) -> None:
    cloud = qemu_cloud
    ids = []
    try:
        for name in ("e2e-one", "e2e-two"):
            ids.append(
                cloud.openstack(
                    "server",
                    "create",
                    "--image",
                    "actorstack-test",
                    "--flavor",
                    "m1.micro",
                    "--network",
                    network["id"],
                    "--key-name",
                    keypair[0],
                    name,
                )["id"]
            )
        for server_id, name in zip(ids, ("e2e-one", "e2e-two"), strict=True):
            deadline = time.monotonic() + BOOT_TIMEOUT
            while (shown := cloud.openstack("server", "show", server_id))["status"] != "ACTIVE":
                assert shown["status"] == "BUILD" and time.monotonic() < deadline, shown.get("fault")
                time.sleep(1)
            lease = wait_for_line(cloud, server_id, r"lease eth0 ip=(\S+)/24 .*")
            assert lease.group(1) == fixed_ip(shown, network["name"])
            meta = metadata_of(cloud, server_id)
            assert (meta["uuid"], meta["name"]) == (server_id, name)
    finally:
        for server_id in ids:
            cloud.openstack("server", "delete", "--wait", server_id, fmt=None, timeout=BOOT_TIMEOUT)


def http_get(namespace: str, ip: str, port: int) -> str | None:
    """The body an HTTP GET of ip:port answers from inside `namespace`, or None when no
    connection is made within 3 s (a dropped SYN)."""
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    s = socket.create_connection(({ip!r}, {port}), timeout=3)\n"
        "except OSError:\n"
        "    sys.exit(3)\n"
        "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
        "data = b''\n"
        "while chunk := s.recv(4096):\n"
        "    data += chunk\n"
        "print(data.decode(errors='replace').split('\\r\\n\\r\\n', 1)[-1].strip())\n"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def wait_reachable(namespace: str, ip: str, port: int, want: bool, timeout: float = 30.0) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        body = http_get(namespace, ip, port)
        if (body is not None) == want:
            return body
        assert time.monotonic() < deadline, (
            f"{ip}:{port} from {namespace}: never {'reachable' if want else 'dropped'}"
        )
        time.sleep(0.5)


def test_a_guest_is_reachable_only_as_its_security_groups_allow(
    qemu_cloud: Cloud, test_image: str, keypair: tuple[str, str], network: dict[str, Any]
) -> None:
    """The guest's TCP service, seen from the network's DHCP namespace (on the same network but
    in no group): dropped until a rule allows the port, dropped again once the rule is gone; a
    server booted with no group is in `default`, which admits only its own members."""
    cloud = qemu_cloud
    group = cloud.openstack("security", "group", "create", f"e2e-sg-{uuid.uuid4().hex[:6]}")
    ids = []
    try:
        for name, groups in (("e2e-web", ["--security-group", group["id"]]), ("e2e-plain", [])):
            ids.append(
                cloud.openstack(
                    "server", "create", "--image", "actorstack-test", "--flavor", "m1.micro", "--network",
                    network["id"], "--key-name", keypair[0], *groups, "--wait", name, timeout=BOOT_TIMEOUT,
                )["id"]
            )  # fmt: skip
        web, plain = (cloud.openstack("server", "show", server_id) for server_id in ids)
        assert web["security_groups"] == [{"name": group["name"]}], web["security_groups"]
        assert plain["security_groups"] == [{"name": "default"}], plain["security_groups"]
        namespace = f"qdhcp-{network['id']}"
        for server in (web, plain):
            wait_for_line(cloud, server["id"], "listening tcp 8080")
        web_ip, plain_ip = fixed_ip(web, network["name"]), fixed_ip(plain, network["name"])
        # Nothing admits the namespace yet: both guests' port 8080 drop its SYN.
        assert http_get(namespace, web_ip, 8080) is None
        assert http_get(namespace, plain_ip, 8080) is None
        rule = cloud.openstack(
            "security", "group", "rule", "create", group["id"], "--protocol", "tcp", "--dst-port", "8080"
        )
        answer = wait_reachable(namespace, web_ip, 8080, True)
        assert answer is not None and answer.split(".")[0] == "e2e-web", answer
        assert http_get(namespace, plain_ip, 8080) is None  # the rule is not the default group's
        cloud.openstack("security", "group", "rule", "delete", rule["id"], fmt=None)
        wait_reachable(namespace, web_ip, 8080, False)
    finally:
        for server_id in ids:
            cloud.openstack("server", "delete", "--wait", server_id, fmt=None, timeout=BOOT_TIMEOUT)
        cloud.openstack("security", "group", "delete", group["id"], fmt=None)
