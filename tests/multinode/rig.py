"""A multi-node rig: three "machines" on this one, for tests of what spans hosts.

Each host is a network namespace of its own (`<run>-h<i>`) with an underlay address on a fabric
bridge the rig makes in the root namespace (198.18.<n>.0/24, the benchmarking range: nothing of
the machine's is there), a state directory of its own and its own `actorstack hostagent` process,
started inside the namespace (`nsenter --net`). They share no directory and have no database
credentials: each agent holds a host token and a broker user of its own (`actorstack host
credentials --broker-user`), and reaches the control plane (an `actorstack up --hosts 0` in the
root namespace, listening on loopback) only through two TCP relays the rig runs on the fabric
address, for the API and for RabbitMQ. From inside a host namespace PostgreSQL is unreachable:
it listens on the root namespace's loopback.

Guests are namespaces too (`<run>-g<n>`): a veth whose outer end the rig puts on the network's
bridge inside the guest's host, with the port's MAC and address inside, as a real guest's tap
would be.

Everything the rig makes carries the run's prefix (namespace names, the fabric links' alias), and
is removed when the rig closes, whatever happened: the agents stopped (they remove their bridges,
taps, VXLAN devices and DHCP namespaces), the namespaces deleted, the fabric bridge deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pyroute2 import IPRoute, NetNS, netns

from actorstack.scratch import ScratchCloud, ScratchProcess
from tests.conftest import RUN_PREFIX
from tests.faults.proxy import TcpProxy

TAG = f"{RUN_PREFIX}:rig"  # the alias of the rig's links in the root namespace
READY = "host agent started"


@dataclasses.dataclass
class RigHost:
    name: str
    namespace: str
    address: str  # its underlay (tunnel) address
    state_dir: Path
    process: ScratchProcess | None = None

    @property
    def dhcp_prefix(self) -> str:
        return f"{self.namespace}-qdhcp-"


@dataclasses.dataclass
class Guest:
    namespace: str
    host: RigHost
    mac: str
    ip: str
    prefixlen: int


class Rig:
    def __init__(self, cloud: ScratchCloud, workdir: Path, hosts: int = 3) -> None:
        self.cloud = cloud
        self.workdir = workdir
        self.id = f"{random.randrange(16**5):05x}"
        self.net = f"198.18.{random.randrange(1, 255)}"
        self.fabric_ip = f"{self.net}.1"
        self.bridge = f"ar{self.id}fab"
        self.hosts = [
            RigHost(f"{RUN_PREFIX}-h{i}", f"{RUN_PREFIX}-h{i}", f"{self.net}.{10 + i}", workdir / f"h{i}")
            for i in range(1, hosts + 1)
        ]
        self.guests: list[Guest] = []
        self._stack = contextlib.AsyncExitStack()
        self.api: TcpProxy | None = None
        self.broker: TcpProxy | None = None

    # --- the machines ---------------------------------------------------------------------------

    async def __aenter__(self) -> Rig:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        stack = self._stack
        stack.push_async_callback(asyncio.to_thread, self._remove_fabric)
        await asyncio.to_thread(self._make_fabric)
        # The relays run on an event loop of their own, in a thread: a test's blocking call (the
        # openstack CLI waiting for a server) must not stall the hosts' traffic to the cloud.
        relays = _LoopThread()
        stack.callback(relays.close)
        self.api = relays.run(_started(TcpProxy("127.0.0.1", self.cloud.port, listen_host=self.fabric_ip)))
        stack.callback(relays.run, self.api.close())
        broker = urlsplit(self.cloud.amqp_url)
        self.broker = relays.run(
            _started(
                TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672, listen_host=self.fabric_ip)
            )
        )
        stack.callback(relays.run, self.broker.close())
        for host in self.hosts:
            stack.push_async_callback(asyncio.to_thread, self._remove_namespace, host.namespace)
            await asyncio.to_thread(self._make_host, host)
        stack.push_async_callback(asyncio.to_thread, self._sweep)
        stack.push_async_callback(self._stop_agents)
        for host in self.hosts:
            await asyncio.to_thread(host.state_dir.mkdir, parents=True, exist_ok=True)
            host.process = await asyncio.to_thread(self._start_agent, host)
        for host in self.hosts:
            assert host.process is not None
            await host.process.wait_for_event(READY, 90)

    def _make_fabric(self) -> None:
        with IPRoute() as ipr:
            ipr.link("add", ifname=self.bridge, kind="bridge", br_stp_state=0, br_forward_delay=0)
            index = ipr.link_lookup(ifname=self.bridge)[0]
            ipr.link("set", index=index, ifalias=TAG)
            ipr.addr("add", index=index, address=self.fabric_ip, prefixlen=24)
            ipr.link("set", index=index, state="up")

    def _remove_fabric(self) -> None:
        with IPRoute() as ipr:
            for link in ipr.get_links():
                if link.get_attr("IFLA_IFALIAS") == TAG:
                    with contextlib.suppress(Exception):
                        ipr.link("del", index=link["index"])

    def _make_host(self, host: RigHost) -> None:
        """The host's namespace, with its underlay veth on the fabric."""
        netns.create(host.namespace)
        index = self.hosts.index(host) + 1
        outer, inner = f"ar{self.id}h{index}", f"ar{self.id}u{index}"
        with IPRoute() as ipr:
            ipr.link("add", ifname=outer, kind="veth", peer=inner)
            outer_index = ipr.link_lookup(ifname=outer)[0]
            ipr.link("set", index=outer_index, ifalias=TAG)
            bridge = ipr.link_lookup(ifname=self.bridge)[0]
            ipr.link("set", index=outer_index, master=bridge, state="up")
            ipr.link("set", index=ipr.link_lookup(ifname=inner)[0], net_ns_fd=host.namespace)
        with NetNS(host.namespace) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            underlay = ns.link_lookup(ifname=inner)[0]
            ns.addr("add", index=underlay, address=host.address, prefixlen=24)
            ns.link("set", index=underlay, state="up")

    @staticmethod
    def _remove_namespace(name: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            netns.remove(name)

    def _sweep(self) -> None:
        """What a killed agent would leave: its DHCP namespaces and dnsmasq processes."""
        for host in self.hosts:
            for name in netns.listnetns():
                if name.startswith(host.dhcp_prefix):
                    self._remove_namespace(name)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"dnsmasq") and any(str(self.workdir).encode() in a for a in argv):
                with contextlib.suppress(OSError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def _start_agent(self, host: RigHost) -> ScratchProcess:
        assert self.api is not None and self.broker is not None
        env = self.cloud.host_env(host.name)
        user = urlsplit(env["ACTORSTACK_AMQP_URL"])
        netloc = f"{user.netloc.rpartition('@')[0]}@{self.fabric_ip}:{self.broker.port}"
        env["ACTORSTACK_AMQP_URL"] = urlunsplit(user._replace(netloc=netloc))
        env["ACTORSTACK_CONTROL_URL"] = f"http://{self.fabric_ip}:{self.api.port}"
        env["ACTORSTACK_STATE_DIR"] = str(host.state_dir)
        return self.cloud.start(
            host.name,
            "hostagent",
            "--name",
            host.name,
            "--virt",
            "test",
            "--network",
            "linux",
            "--storage",
            "none",
            "--tunnel-ip",
            host.address,
            "--host-ip",
            host.address,
            "--dhcp-namespace-prefix",
            host.dhcp_prefix,
            "--host-heartbeat",
            "1",
            "--sync-interval",
            "1",
            "--log-format",
            "json",
            env=env,
            wrapper=["nsenter", f"--net=/run/netns/{host.namespace}"],
        )

    async def _stop_agents(self) -> None:
        """SIGTERM (each removes what it made in its namespace), SIGKILL after 60 s."""
        await asyncio.gather(*(h.process.stop(60) for h in self.hosts if h.process is not None))

    def host(self, name: str) -> RigHost:
        return next(h for h in self.hosts if h.name == name)

    # --- guests -----------------------------------------------------------------------------------

    async def add_guest(
        self, host: RigHost, bridge: str, mac: str, ip: str, prefixlen: int, mtu: int
    ) -> Guest:
        """A namespace as a guest: its NIC's outer end on `bridge` in the host's namespace."""
        guest = Guest(f"{RUN_PREFIX}-g{len(self.guests) + 1}", host, mac, ip, prefixlen)
        self._stack.push_async_callback(asyncio.to_thread, self._remove_namespace, guest.namespace)
        await asyncio.to_thread(self._make_guest, guest, bridge, mtu)
        self.guests.append(guest)
        return guest

    async def add_tap_guest(
        self, host: RigHost, tap: str, mac: str, ip: str, prefixlen: int, mtu: int
    ) -> Guest:
        """A namespace as a guest behind the tap its host's agent made for the port, as QEMU
        would use it: a wire (`TapWire`) copies frames between the tap's file descriptor and a
        veth into the guest's namespace, so what the guest sends enters the bridge through the
        tap, where the host's firewall filters it by the tap's name."""
        guest = Guest(f"{RUN_PREFIX}-g{len(self.guests) + 1}", host, mac, ip, prefixlen)
        self._stack.push_async_callback(asyncio.to_thread, self._remove_namespace, guest.namespace)
        outer = await asyncio.to_thread(self._make_guest, guest, None, mtu)
        wire = TapWire(host.namespace, tap, outer)
        self._stack.callback(wire.close)
        await asyncio.to_thread(wire.start)
        self.guests.append(guest)
        return guest

    def _make_guest(self, guest: Guest, bridge: str | None, mtu: int) -> str:
        """The guest's namespace and veth; the outer end on `bridge`, or (None) alone and up in
        the host's namespace. Its name."""
        netns.create(guest.namespace)
        n = len(self.guests) + 1
        outer, inner = f"ar{self.id}o{n}", f"ar{self.id}i{n}"
        with IPRoute() as ipr:
            ipr.link("add", ifname=outer, kind="veth", peer=inner)
            ipr.link("set", index=ipr.link_lookup(ifname=outer)[0], net_ns_fd=guest.host.namespace)
            ipr.link("set", index=ipr.link_lookup(ifname=inner)[0], net_ns_fd=guest.namespace)
        with NetNS(guest.host.namespace) as ns:
            index = ns.link_lookup(ifname=outer)[0]
            if bridge is None:
                ns.link("set", index=index, mtu=mtu, state="up")
            else:
                master = ns.link_lookup(ifname=bridge)[0]
                ns.link("set", index=index, master=master, mtu=mtu, state="up")
        with NetNS(guest.namespace) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            index = ns.link_lookup(ifname=inner)[0]
            ns.link("set", index=index, address=guest.mac, mtu=mtu)
            ns.addr("add", index=index, address=guest.ip, prefixlen=guest.prefixlen)
            ns.link("set", index=index, state="up")
        return outer

    async def ping(self, guest: Guest, ip: str, count: int = 3) -> bool:
        """Bounded: `count` echo requests, 2 s each at most (busybox's ping: tools/setup installs
        busybox-static; iputils' ping is not on every machine)."""
        done = await asyncio.to_thread(
            subprocess.run,
            ["ip", "netns", "exec", guest.namespace, "busybox", "ping", "-c", str(count), "-W", "2", ip],
            capture_output=True,
            timeout=30,
        )
        return done.returncode == 0

    # --- what the hosts' kernels hold -------------------------------------------------------------

    def fdb(self, host: RigHost, device: str) -> set[tuple[str, str]] | None:
        """The (MAC, destination) forwarding entries of a VXLAN device in the host; None if the
        host has no such device."""
        with NetNS(host.namespace) as ns:
            found = ns.link_lookup(ifname=device)
            if not found:
                return None
            entries = set()
            for entry in ns.fdb("dump", ifindex=found[0]):
                dst, mac = entry.get("NDA_DST"), entry.get("NDA_LLADDR")
                if entry.get("ifindex") == found[0] and dst and mac:
                    entries.add((str(mac).lower(), str(dst)))
            return entries

    def vxlan_devices(self, host: RigHost) -> list[dict[str, Any]]:
        """The host's VXLAN devices: name, VNI, local address."""
        with NetNS(host.namespace) as ns:
            devices = []
            for link in ns.get_links():
                info = link.get_attr("IFLA_LINKINFO")
                if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
                    continue
                data = info.get_attr("IFLA_INFO_DATA")
                devices.append(
                    {
                        "name": link.get_attr("IFLA_IFNAME"),
                        "vni": data.get_attr("IFLA_VXLAN_ID"),
                        "local": data.get_attr("IFLA_VXLAN_LOCAL"),
                    }
                )
            return devices


T = TypeVar("T")

_TUNSETIFF = 0x400454CA
_IFF_TAP, _IFF_NO_PI = 0x0002, 0x1000
_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4


class TapWire:
    """QEMU's side of a tap, for a namespace guest: a thread in the host's namespace holds the
    tap's file descriptor and copies every frame between it and a packet socket on a veth end
    whose peer is the guest's NIC. Bounded: it stops when closed (at the rig's end)."""

    def __init__(self, namespace: str, tap: str, veth: str) -> None:
        self.namespace, self.tap, self.veth = namespace, tap, veth
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"tap wire {tap}", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import fcntl
        import select
        import socket
        import struct

        try:
            netns.setns(self.namespace)  # this thread only
            tap = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            fcntl.ioctl(tap, _TUNSETIFF, struct.pack("16sH", self.tap.encode(), _IFF_TAP | _IFF_NO_PI))
            wire = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
            wire.bind((self.veth, 0))
            wire.setblocking(False)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([tap, wire], [], [], 0.2)
                if tap in readable:
                    with contextlib.suppress(BlockingIOError, OSError):
                        wire.send(os.read(tap, 65536))
                if wire in readable:
                    with contextlib.suppress(BlockingIOError, OSError):
                        frame, address = wire.recvfrom(65536)
                        if address[2] != _PACKET_OUTGOING:
                            os.write(tap, frame)
        finally:
            wire.close()
            os.close(tap)


class _LoopThread:
    """An event loop in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rig relays", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def _started(proxy: TcpProxy) -> TcpProxy:
    await proxy.start()
    return proxy


@contextlib.asynccontextmanager
async def rig(cloud: ScratchCloud, workdir: Path, hosts: int = 3) -> AsyncIterator[Rig]:
    async with Rig(cloud, workdir, hosts) as made:
        yield made
