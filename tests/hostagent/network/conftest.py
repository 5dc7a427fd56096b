"""Fixtures for the host networking tests: rows in the test database, HostNetworking on the
real kernel, and guests faked as client namespaces on a network's bridge.

Everything a test creates in the kernel is found and removed when it ends, whatever happened:
links are tagged `astest:<run prefix>:<hex>` (the owner tag of the test's HostNetworking, so
`ip -d link | grep <run prefix>` finds a leftover), namespaces are named after the run prefix
(clients) or recorded in the test's state directory (qdhcp), dnsmasq runs from pid files in
that directory. The sweep only ever considers those: never another run's or cloud's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pyroute2 import netns

from hostagent.network import HostNetworking, NetworkSettings, kernel
from tests.conftest import RUN_PREFIX
from tests.hostagent.local_control import LocalControl

OWNER_PREFIX = f"astest:{RUN_PREFIX}"
HEX = RUN_PREFIX.removeprefix("astest_")  # 8 hex digits, unique per run

CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21


def _why_not() -> str | None:
    """Why this process cannot run the kernel tests, or None if it can."""
    if os.geteuid() != 0:
        return "not running as root"
    try:
        status = Path("/proc/self/status").read_text()
        caps = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:"))
        effective = int(caps, 16)
    except (OSError, StopIteration, ValueError):
        return "cannot read this process's capabilities"
    for cap, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")):
        if not effective >> cap & 1:
            return f"root without {name} (an unprivileged container?)"
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun"
    missing = [
        tool
        for tool in ("dnsmasq", "nsenter", "busybox")
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None
    ]
    if missing:
        return f"missing {', '.join(missing)} (Debian: dnsmasq-base, util-linux, busybox-static)"
    return None


WHY_NOT = _why_not()
needs_root = pytest.mark.skipif(
    WHY_NOT is not None, reason=f"host networking tests need root with bridges and namespaces: {WHY_NOT}"
)


# --- the database rows ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Server:
    id: str
    hostname: str
    port_id: str
    mac: str
    ip: str
    key_name: str
    key_data: str


@dataclasses.dataclass(frozen=True)
class Topology:
    host: str
    network_id: str
    subnet_id: str
    cidr: str
    gateway: str
    dhcp_port_id: str
    dhcp_mac: str
    dhcp_ip: str
    servers: tuple[Server, ...]


def random_mac() -> str:
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in os.urandom(3))


SERVER_SQL = """
INSERT INTO servers (id, version, project_id, user_id, display_name, vm_state, power_state, flavor,
                     image_id, host, availability_zone, hostname, key_name, key_data, user_data, metadata,
                     reservation_id, launch_index, nics, bound_ports)
VALUES ($1, 1, 'proj', 'user', $2, 'active', 1, $3, $4, $5, 'nova', $6, $7, $8, $9, $10, 'r-test', $11,
        $12, $13)
"""
VM_PORT_SQL = """
INSERT INTO ports (id, network_id, project_id, mac_address, status, device_id, device_owner, binding_host_id,
                   binding_vif_type)
VALUES ($1, $2, 'proj', $3::macaddr, 'ACTIVE', $4, 'compute:nova', $5, 'bridge')
"""
DHCP_PORT_SQL = """
INSERT INTO ports (id, network_id, project_id, mac_address, status, device_id, device_owner)
VALUES ($1, $2, 'proj', $3::macaddr, 'ACTIVE', $4, 'network:dhcp')
"""
ADDRESS_SQL = """
INSERT INTO ip_allocations (subnet_id, ip_address, port_id, network_id) VALUES ($1, $2::inet, $3, $4)
"""
NETWORK_SQL = "INSERT INTO networks (id, project_id, name, mtu) VALUES ($1, 'proj', $2, $3)"
SUBNET_SQL = """
INSERT INTO subnets (id, network_id, project_id, ip_version, cidr, gateway_ip, enable_dhcp, dns_nameservers,
                     allocation_pools, host_routes)
VALUES ($1, $2, 'proj', 4, $3::cidr, $4::inet, $5, $6, $7, $8)
"""
FLAVOR = {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1}


async def add_server(
    pool: asyncpg.Pool,
    *,
    host: str,
    network_id: str,
    subnet_id: str,
    ip: str,
    index: int = 0,
    user_data: str | None = None,
) -> Server:
    """An active server on `host` with one port on the network, at `ip`."""
    server_id, port_id = str(uuid.uuid4()), str(uuid.uuid4())
    hostname = f"vm-{HEX}-{index}"
    key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{uuid.uuid4().hex} test-{index}@{HEX}"
    server = Server(
        id=server_id,
        hostname=hostname,
        port_id=port_id,
        mac=random_mac(),
        ip=ip,
        key_name=f"key-{index}",
        key_data=key,
    )
    nics = [
        {
            "port_id": port_id,
            "network_id": network_id,
            "mac_address": server.mac,
            "delete_on_termination": True,
        }
    ]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            SERVER_SQL,
            server_id,
            f"{RUN_PREFIX}-vm-{index}",
            FLAVOR,
            str(uuid.uuid4()),
            host,
            hostname,
            server.key_name,
            key,
            user_data,
            {"role": f"r{index}"},
            index,
            nics,
            [port_id],
        )
        await conn.execute(VM_PORT_SQL, port_id, network_id, server.mac, server_id, host)
        await conn.execute(ADDRESS_SQL, subnet_id, ip, port_id, network_id)
    return server


async def make_topology(
    pool: asyncpg.Pool, *, servers: int = 2, octet: int = 77, dhcp: bool = True, mtu: int = 1450
) -> Topology:
    """A network with a /24 subnet (gateway .1, DHCP port .2) and `servers` active servers on
    host h1-<hex> (a host name of this test's own), each with one port (.10, .11, …)."""
    host = f"h1-{uuid.uuid4().hex[:6]}"
    network_id, subnet_id, dhcp_port_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    net = f"10.{octet}.0"
    cidr, gateway, dhcp_ip, dhcp_mac = f"{net}.0/24", f"{net}.1", f"{net}.2", random_mac()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(NETWORK_SQL, network_id, f"{RUN_PREFIX}-net", mtu)
        await conn.execute(
            SUBNET_SQL,
            subnet_id,
            network_id,
            cidr,
            gateway,
            dhcp,
            ["192.0.2.53"],
            [{"start": f"{net}.2", "end": f"{net}.254"}],
            [{"destination": "198.51.100.0/24", "nexthop": f"{net}.254"}],
        )
        if dhcp:
            await conn.execute(DHCP_PORT_SQL, dhcp_port_id, network_id, dhcp_mac, f"dhcp-{network_id}")
            await conn.execute(ADDRESS_SQL, subnet_id, dhcp_ip, dhcp_port_id, network_id)
    made = [
        await add_server(
            pool, host=host, network_id=network_id, subnet_id=subnet_id, ip=f"{net}.{10 + i}", index=i + 1
        )
        for i in range(servers)
    ]
    return Topology(
        host=host,
        network_id=network_id,
        subnet_id=subnet_id,
        cidr=cidr,
        gateway=gateway,
        dhcp_port_id=dhcp_port_id,
        dhcp_mac=dhcp_mac,
        dhcp_ip=dhcp_ip,
        servers=tuple(made),
    )


# --- the kernel, swept after every test ---------------------------------------------------------


class Sweeper:
    """Records what a test creates in the kernel and removes all of it at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.namespaces: list[str] = []  # client namespaces, named after the run
        self.links: list[str] = []  # links the test made without our tag (root namespace)

    def namespace(self, suffix: str) -> str:
        name = f"{RUN_PREFIX}-{suffix}"
        self.namespaces.append(name)
        return name

    def sweep(self) -> list[str]:
        """Remove everything; what had to be removed is returned (a clean test leaves nothing)."""
        return self._sweep_dnsmasq() + self._sweep_namespaces() + self._sweep_links()

    def _sweep_dnsmasq(self) -> list[str]:
        leftovers = []
        for pid_file in self.workdir.rglob("pid"):
            try:
                pid = int(pid_file.read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if f"--pid-file={pid_file}".encode() in cmdline:
                leftovers.append(f"dnsmasq {pid}")
                os.kill(pid, signal.SIGKILL)
        return leftovers

    def _sweep_namespaces(self) -> list[str]:
        """The DHCP namespaces the test's networks left, and the client namespaces it made."""
        leftovers = []
        for marker in self.workdir.rglob("netns"):
            name = marker.read_text().strip()
            if name.startswith("qdhcp-") and kernel.namespace_inode(name) is not None:
                leftovers.append(f"namespace {name}")
                netns.remove(name)
        for name in kernel.namespaces():
            ours = name in self.namespaces
            if not ours and name.startswith("qdhcp-"):
                ours = any(
                    (link.alias or "").startswith(OWNER_PREFIX) for link in kernel.namespace_links(name)
                )
            if ours:
                if name not in self.namespaces:
                    leftovers.append(f"namespace {name}")
                netns.remove(name)
        return leftovers

    def _sweep_links(self) -> list[str]:
        leftovers = []
        with kernel.iproute() as ipr:
            for link in kernel.links(ipr):
                if (link.alias or "").startswith(OWNER_PREFIX) or link.name in self.links:
                    if link.name not in self.links:
                        leftovers.append(f"link {link.name}")
                    try:
                        ipr.link("del", index=link.index)
                    except Exception:  # noqa: BLE001 - gone already (a veth's peer went first)
                        pass
        return leftovers


@pytest.fixture
def workdir() -> Iterator[Path]:
    """World-searchable (so dnsmasq can drop to nobody), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-net-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sweeper(workdir: Path) -> Iterator[Sweeper]:
    s = Sweeper(workdir)
    try:
        yield s
    finally:
        # pyroute2's sync API runs a loop of its own: not on the thread of the running one
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(s.sweep).result(timeout=60)


def owner_tag() -> str:
    return f"{OWNER_PREFIX}:{uuid.uuid4().hex[:8]}"


StartNetworking = Callable[..., Awaitable[HostNetworking]]


@pytest.fixture
async def start_networking(
    pool: asyncpg.Pool, workdir: Path, sweeper: Sweeper
) -> AsyncIterator[StartNetworking]:
    """Start HostNetworkings (stopped, and their kernel objects swept, when the test ends)."""
    started: list[HostNetworking] = []

    async def start(settings: NetworkSettings | None = None, **overrides: Any) -> HostNetworking:
        if settings is None:
            values: dict[str, Any] = {
                "owner": owner_tag(),
                "state_dir": workdir / "network",
                "hosts": frozenset(),
                "interval": 3600.0,
                "remove_on_stop": True,
            }
            values.update(overrides)
            settings = NetworkSettings(**values)
        networking = HostNetworking(LocalControl(pool, hosts=settings.hosts), settings)
        await networking.start()
        started.append(networking)
        return networking

    yield start
    for networking in reversed(started):
        await networking.stop()


# --- guests: client namespaces on a bridge --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Client:
    namespace: str
    outer: str  # the veth end on the bridge (as a guest's tap)


_client_count = 0


async def add_client(sweeper: Sweeper, bridge: str, mac: str) -> Client:
    return await asyncio.to_thread(_add_client, sweeper, bridge, mac)


def _add_client(sweeper: Sweeper, bridge: str, mac: str) -> Client:
    """A namespace whose eth0 (MAC `mac`) is on the bridge, like a guest on its tap."""
    global _client_count
    _client_count += 1
    namespace = sweeper.namespace(f"client{_client_count}")
    outer = f"c{HEX}{_client_count:03d}"[:15]
    sweeper.links.append(outer)
    netns.create(namespace)
    with kernel.iproute() as ipr:
        ipr.link(
            "add", ifname=outer, kind="veth", peer={"ifname": "eth0", "net_ns_fd": namespace, "address": mac}
        )
        index = ipr.link_lookup(ifname=outer)[0]
        ipr.link("set", index=index, master=ipr.link_lookup(ifname=bridge)[0], state="up")
    kernel.run_in_namespace(namespace, _up, "eth0")
    return Client(namespace=namespace, outer=outer)


def _up(name: str) -> None:
    with kernel.iproute() as ipr:
        for link in ("lo", name):
            ipr.link("set", index=ipr.link_lookup(ifname=link)[0], state="up")


async def remove_client(client: Client) -> None:
    await asyncio.to_thread(netns.remove, client.namespace)  # its eth0 goes, and with it the veth's outer end


UDHCPC_SCRIPT = """#!/bin/sh
if [ "$1" = bound ]; then
  {
    echo "ip=$ip"
    echo "mask=$mask"
    echo "router=$router"
    echo "dns=$dns"
    echo "hostname=$hostname"
    echo "mtu=$mtu"
    echo "staticroutes=$staticroutes"
  } > "$LEASE_FILE"
fi
exit 0
"""


async def dhcp_lease(client: Client, workdir: Path) -> dict[str, str]:
    """Run busybox udhcpc in the client (bounded: 5 discovers 1 s apart) and return what it got."""
    script = workdir / "udhcpc.sh"
    if not script.exists():
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
    lease_file = workdir / f"lease-{client.namespace}"
    lease_file.unlink(missing_ok=True)
    proc = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--net=/run/netns/{client.namespace}",
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-f",
        "-t",
        "5",
        "-T",
        "1",
        "-A",
        "1",
        "-O",
        "staticroutes",
        "-O",
        "mtu",
        "-s",
        str(script),
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LEASE_FILE": str(lease_file)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=15)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("udhcpc did not finish within 15 s") from None
    assert proc.returncode == 0, f"udhcpc failed ({proc.returncode}): {output.decode(errors='replace')}"
    return dict(line.split("=", 1) for line in lease_file.read_text().splitlines())


def _configure(ip: str, prefixlen: int, via: str) -> None:
    with kernel.iproute() as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=index, address=ip, prefixlen=prefixlen)
        ipr.route("add", dst="169.254.169.254/32", gateway=via)


async def configure(client: Client, ip: str, prefixlen: int, via: str) -> None:
    """The client's address and its route to the metadata service (what cloud-init would do)."""
    await asyncio.to_thread(kernel.run_in_namespace, client.namespace, _configure, ip, prefixlen, via)


def _http_get(path: str, port: int, timeout: float) -> tuple[int, str, bytes]:
    with socket.create_connection(("169.254.169.254", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n".encode())
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), body


async def http_get(namespace: str, path: str, port: int = 80, timeout: float = 5.0) -> tuple[int, str, bytes]:
    """GET http://169.254.169.254<path> from inside a namespace: (status, content type, body)."""
    return await asyncio.to_thread(kernel.run_in_namespace, namespace, _http_get, path, port, timeout)


def json_body(body: bytes) -> Any:
    return json.loads(body)
