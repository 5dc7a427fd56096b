"""Three hosts that share nothing but the broker and the API (tests/multinode/rig.py): servers of
one tenant network scheduled across them, talking over VXLAN with exactly the forwarding entries
the port records imply; DHCP and metadata per host; power actions and deletes through the
agents; a host whose last port goes leaves no tunnel on the others."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from actorstack.scratch import NO_DATABASE
from tests.api.conftest import Cloud, running_cloud
from tests.conftest import RUN_PREFIX, separate_services
from tests.multinode.rig import Guest, Rig

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the rig makes namespaces and bridges: root only")

ZERO = "00:00:00:00:00:00"


@pytest.fixture
async def rig_cloud() -> AsyncIterator[tuple[Cloud, Rig]]:
    workdir = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-rig-", dir="/tmp"))
    try:
        async with (
            separate_services(f"rig{uuid.uuid4().hex[:4]}") as services,
            running_cloud(services, workdir / "control", "--hosts", "0", "--storage", "none") as cloud,
            Rig(cloud.scratch, workdir) as rig,
        ):
            await cloud.scratch.wait_ready(hosts=len(rig.hosts), storage=False, timeout=90)
            yield cloud, rig
    finally:
        if not os.environ.get("RIG_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


async def until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await asyncio.to_thread(check)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


def _ns_run(namespace: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True, timeout=timeout
    )


async def test_servers_on_three_hosts_talk_over_vxlan(rig_cloud: tuple[Cloud, Rig]) -> None:
    cloud, rig = rig_cloud
    addresses = {h.name: h.address for h in rig.hosts}

    # The agents run as on other machines: no database URL, and no way to the database.
    for host in rig.hosts:
        assert host.process is not None
        assert (
            f"ACTORSTACK_DATABASE_URL={NO_DATABASE}".encode()
            in Path(f"/proc/{host.process.pid}/environ").read_bytes()
        )
        reached = _ns_run(host.namespace, "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/5432")
        assert reached.returncode != 0, "a host namespace reached PostgreSQL"

    image_file = rig.workdir / "tiny.raw"
    image_file.write_bytes(b"\0" * 1024 * 1024)
    image = cloud.openstack(
        "image",
        "create",
        "--file",
        str(image_file),
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "rig-img",
    )
    net = cloud.openstack("network", "create", "rig-net")
    assert net["provider:network_type"] == "vxlan" and net["mtu"] == 1450
    cloud.openstack("subnet", "create", "--network", net["id"], "--subnet-range", "10.77.0.0/24", "rig-sub")
    group = cloud.openstack("server", "group", "create", "--policy", "anti-affinity", "rig-group")
    cloud.openstack(
        "server", "create", "--image", image["id"], "--flavor", "m1.tiny", "--network", net["id"],
        "--hint", f"group={group['id']}", "--min", "3", "--max", "3", "--wait", "rig-vm", timeout=180,
    )  # fmt: skip
    servers = [s for s in cloud.openstack("server", "list", "--long") if s["Name"].startswith("rig-vm")]
    assert len(servers) == 3 and {s["Status"] for s in servers} == {"ACTIVE"}
    placed = {s["ID"]: s["Host"] for s in servers}
    assert sorted(placed.values()) == sorted(addresses), "anti-affinity puts one server on each host"

    dhcp_port = cloud.openstack("port", "list", "--network", net["id"], "--device-owner", "network:dhcp")[0]
    dhcp_ip = dhcp_port["Fixed IP Addresses"][0]["ip_address"]
    guests: dict[str, Guest] = {}
    bridge = "brq" + net["id"][:11]
    for server_id, host_name in sorted(placed.items(), key=lambda kv: kv[1]):
        port = cloud.openstack("port", "list", "--server", server_id)[0]
        ip = port["Fixed IP Addresses"][0]["ip_address"]
        host = rig.host(host_name)
        await until(
            lambda h=host: bridge in _ns_run(h.namespace, "ip", "-o", "link").stdout,
            f"{bridge} on {host_name}",
        )
        guests[server_id] = await rig.add_guest(host, bridge, port["MAC Address"], ip, 24, net["mtu"])

    # Each host's VXLAN device holds exactly what the port records imply: every other host's
    # ports at that host's address, and flooding to those hosts only.
    vxlan = f"vxlan-{net['provider:segmentation_id']}"

    def expected(host_name: str, on: dict[str, str]) -> set[tuple[str, str]]:
        others = {sid: h for sid, h in on.items() if h != host_name}
        entries = {(ZERO, addresses[h]) for h in others.values()}
        entries |= {(guests[sid].mac, addresses[h]) for sid, h in others.items()}
        return entries

    for host in rig.hosts:
        await until(lambda h=host: rig.fdb(h, vxlan) == expected(h.name, placed), f"the FDB of {host.name}")
        devices = await asyncio.to_thread(rig.vxlan_devices, host)
        assert devices == [{"name": vxlan, "vni": net["provider:segmentation_id"], "local": host.address}]

    # Packets cross the hosts, each way.
    ordered = list(guests.values())
    for a in ordered:
        for b in ordered:
            if a is not b and not await rig.ping(a, b.ip):
                raise AssertionError(
                    f"{a.namespace} on {a.host.name} cannot reach {b.ip} on {b.host.name}\n"
                    + await asyncio.to_thread(_diagnose, a, b)
                )

    # DHCP and metadata: each host serves its own guests from its own namespace.
    first = ordered[0]
    for host in rig.hosts:
        assert f"{host.dhcp_prefix}{net['id']}" in _ns_run(
            host.namespace, "ip", "netns", "list"
        ).stdout or any(
            name.startswith(f"{host.dhcp_prefix}{net['id']}") for name in os.listdir("/run/netns")
        )
    inner = _ns_run(first.namespace, "ip", "-o", "link").stdout
    ifname = next(line.split(": ")[1].split("@")[0] for line in inner.splitlines() if f"ar{rig.id}i" in line)
    lease = _ns_run(
        first.namespace,
        "busybox",
        "udhcpc",
        "-i",
        ifname,
        "-n",
        "-q",
        "-f",
        "-t",
        "3",
        "-T",
        "1",
        "-s",
        "/bin/true",
    )
    assert lease.returncode == 0 and first.ip in lease.stdout + lease.stderr, lease.stdout + lease.stderr
    assert (
        _ns_run(first.namespace, "ip", "route", "add", "169.254.169.254/32", "via", dhcp_ip).returncode == 0
    )
    url = "http://169.254.169.254/openstack/latest/meta_data.json"
    fetch = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode())"
    meta = _ns_run(first.namespace, sys.executable, "-c", fetch)
    server_of_first = next(sid for sid, g in guests.items() if g is first)
    assert meta.returncode == 0 and json.loads(meta.stdout)["uuid"] == server_of_first, meta.stderr

    # Power actions go through each server's own host.
    cloud.openstack("server", "stop", server_of_first, fmt=None)
    await until(lambda: cloud.openstack("server", "show", server_of_first)["status"] == "SHUTOFF", "SHUTOFF")
    cloud.openstack("server", "start", server_of_first, fmt=None)
    await until(lambda: cloud.openstack("server", "show", server_of_first)["status"] == "ACTIVE", "ACTIVE")

    # A host whose last port is gone leaves no tunnel behind: its VXLAN device goes, and the
    # others forget its address.
    last = rig.hosts[-1]
    leaving = next(sid for sid, h in placed.items() if h == last.name)
    cloud.openstack("server", "delete", "--wait", leaving, fmt=None, timeout=120)
    staying = {sid: h for sid, h in placed.items() if sid != leaving}
    for host in rig.hosts[:-1]:
        await until(
            lambda h=host: rig.fdb(h, vxlan) == expected(h.name, staying),
            f"{host.name} forgetting {last.name}",
        )
    await until(lambda: rig.fdb(last, vxlan) is None, f"{last.name}'s VXLAN device removed")
    a, b = (guests[sid] for sid in staying)
    assert await rig.ping(a, b.ip)

    for sid in staying:
        cloud.openstack("server", "delete", "--wait", sid, fmt=None, timeout=120)


def _diagnose(a: Guest, b: Guest) -> str:
    """What the two guests and their hosts hold, for a failure's message."""
    out = []
    for ns, argv in (
        (a.namespace, ["ip", "neigh"]),
        (a.namespace, ["ip", "-s", "link"]),
        (a.host.namespace, ["bridge", "fdb", "show"]),
        (a.host.namespace, ["bridge", "-d", "link"]),
        (a.host.namespace, ["ip", "-d", "-s", "link"]),
        (a.host.namespace, ["ip", "neigh", "show", "nud", "permanent"]),
        (b.host.namespace, ["bridge", "fdb", "show"]),
        (b.host.namespace, ["ip", "-s", "link"]),
    ):
        done = _ns_run(ns, *argv)
        out.append(f"--- {ns}: {' '.join(argv)}\n{done.stdout}{done.stderr}")
    return "\n".join(out)


async def test_a_remote_group_with_members_on_two_hosts(rig_cloud: tuple[Cloud, Rig]) -> None:
    """`db` admits ICMP from the members of `clients`, who sit on two other hosts: they reach it
    and an outsider does not; a port joining or leaving `clients` changes that on the third
    host by a message (within seconds, well before its periodic pass), and so does a rule."""
    cloud, rig = rig_cloud
    image_file = rig.workdir / "tiny.raw"
    image_file.write_bytes(b"\0" * 1024 * 1024)
    image = cloud.openstack(
        "image", "create", "--file", str(image_file), "--disk-format", "raw", "--container-format", "bare",
        "sg-img",
    )  # fmt: skip
    net = cloud.openstack("network", "create", "sg-net")
    cloud.openstack("subnet", "create", "--network", net["id"], "--subnet-range", "10.78.0.0/24", "sg-sub")
    clients = cloud.openstack("security", "group", "create", "clients")
    db = cloud.openstack("security", "group", "create", "db")
    others = cloud.openstack("security", "group", "create", "others")
    cloud.openstack(
        "security", "group", "rule", "create", db["id"], "--protocol", "icmp", "--remote-group", clients["id"]
    )
    spread = cloud.openstack("server", "group", "create", "--policy", "anti-affinity", "sg-spread")
    names = {"sg-c1": clients, "sg-c2": clients, "sg-db": db}
    for name, group in names.items():
        cloud.openstack(
            "server", "create", "--image", image["id"], "--flavor", "m1.tiny", "--network", net["id"],
            "--security-group", group["id"], "--hint", f"group={spread['id']}", "--wait", name, timeout=180,
        )  # fmt: skip
    cloud.openstack(
        "server", "create", "--image", image["id"], "--flavor", "m1.tiny", "--network", net["id"],
        "--security-group", others["id"], "--wait", "sg-out", timeout=180,
    )  # fmt: skip
    listed = {
        s["Name"]: s for s in cloud.openstack("server", "list", "--long") if s["Name"].startswith("sg-")
    }
    assert len({listed[n]["Host"] for n in names}) == 3, "anti-affinity puts each on a host of its own"

    guests: dict[str, Guest] = {}
    ports: dict[str, str] = {}
    for name, server in sorted(listed.items()):
        port = cloud.openstack("port", "list", "--server", server["ID"])[0]
        ports[name] = port["ID"]
        host = rig.host(server["Host"])
        tap = "tap" + port["ID"][:11]
        await until(
            lambda h=host, t=tap: t in _ns_run(h.namespace, "ip", "-o", "link").stdout, f"{tap} of {name}"
        )
        ip = port["Fixed IP Addresses"][0]["ip_address"]
        guests[name] = await rig.add_tap_guest(host, tap, port["MAC Address"], ip, 24, net["mtu"])
    target = guests["sg-db"].ip

    async def reaches(name: str, want: bool, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while await rig.ping(guests[name], target, count=1) != want:
            assert time.monotonic() < deadline, (
                f"{name} {'never reached' if want else 'still reaches'} {target}"
            )
        return None

    await reaches("sg-c1", True)
    await reaches("sg-c2", True)
    assert not await rig.ping(guests["sg-out"], target, count=2)
    # db does not reach the clients: their groups admit nothing in (replies to their pings do).
    assert not await rig.ping(guests["sg-db"], guests["sg-c1"].ip, count=1)

    # The outsider joins `clients`: db's host learns its address by a message.
    started = time.monotonic()
    cloud.openstack("port", "set", "--security-group", clients["id"], ports["sg-out"], fmt=None)
    await reaches("sg-out", True)
    joined = time.monotonic() - started
    # c1 leaves `clients` (only `others` left): db's host forgets it.
    cloud.openstack(
        "port", "set", "--no-security-group", "--security-group", others["id"], ports["sg-c1"], fmt=None
    )
    await reaches("sg-c1", False)
    # A rule: ICMP from anywhere; then c1 reaches db again, until the rule goes.
    rule = cloud.openstack("security", "group", "rule", "create", db["id"], "--protocol", "icmp")
    await reaches("sg-c1", True)
    cloud.openstack("security", "group", "rule", "delete", rule["id"], fmt=None)
    await reaches("sg-c1", False)
    assert joined < 10, f"a membership change took {joined:.1f} s to reach the host"
    for server in listed.values():
        cloud.openstack("server", "delete", "--wait", server["ID"], fmt=None, timeout=120)
