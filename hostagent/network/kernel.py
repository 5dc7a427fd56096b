"""The kernel side of host networking: bridges, taps, veth pairs and qdhcp namespaces, through
pyroute2 (netlink) only, never the `ip` command.

Everything here blocks: callers run it in a worker thread (`asyncio.to_thread`), never on the
event loop. Each call opens its own short-lived IPRoute (or is handed the caller's).

Work inside a namespace runs in a thread of its own that enters the namespace with setns(2)
(which moves only the calling thread) and ends when the work is done, so no shared thread is
ever left in another namespace; sockets made there (netlink, the metadata listener) stay in it.

Safety: every link created here is tagged with the owner's IFLA_IFALIAS right after it is made,
and nothing here changes or deletes a link in the root namespace unless it carries that tag (a
link of one of our names that is not tagged is an error, never touched). Namespaces are ours
when the caller says so (a marker in its state directory, written before the namespace is
made); the links inside one of our namespaces are all ours. The kernel cannot set an alias in
the request that creates a link, so a crash between the two leaves an untagged link of our
name: it is reported, not adopted.

Host isolation: a bridge enslaves only our taps and veths, has no address, does not answer ARP
for the host's addresses (arp_ignore 8), drops whatever reaches its IP layer (rp_filter 1, no
routes), and, like every tap, has IPv6 off, so guests cannot reach the host through it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from hostagent.network.base import NetworkingError

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
NAMESPACE_TIMEOUT = 10.0  # seconds any one piece of work inside a namespace may take

_libc = ctypes.CDLL(None, use_errno=True)


@dataclasses.dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None  # bridge, tun, veth, …
    alias: str | None
    master: int  # 0: none
    mtu: int
    up: bool  # administratively
    mac: str | None
    stp: int | None = None  # bridges: IFLA_BR_STP_STATE
    forward_delay: int | None = None  # bridges: IFLA_BR_FORWARD_DELAY (centiseconds)

    @classmethod
    def from_msg(cls, msg: Any) -> Link:
        info = msg.get("IFLA_LINKINFO")
        kind = info.get("IFLA_INFO_KIND") if info is not None else None
        data = info.get("IFLA_INFO_DATA") if info is not None else None
        stp = forward_delay = None
        if kind == "bridge" and data is not None:
            stp, forward_delay = data.get("IFLA_BR_STP_STATE"), data.get("IFLA_BR_FORWARD_DELAY")
        return cls(
            index=msg["index"],
            name=msg.get("IFLA_IFNAME"),
            kind=kind,
            alias=msg.get("IFLA_IFALIAS"),
            master=msg.get("IFLA_MASTER") or 0,
            mtu=msg.get("IFLA_MTU"),
            up=bool(msg["flags"] & 1),
            mac=msg.get("IFLA_ADDRESS"),
            stp=stp,
            forward_delay=forward_delay,
        )


def iproute() -> IPRoute:
    """A netlink socket in the calling thread's namespace, subscribed to nothing."""
    return IPRoute(groups=0)


def find(ipr: IPRoute, name: str) -> Link | None:
    try:
        return Link.from_msg(ipr.link("get", ifname=name)[0])
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def links(ipr: IPRoute) -> list[Link]:
    return [Link.from_msg(msg) for msg in ipr.link("dump")]


def owned_links(ipr: IPRoute, owner: str) -> list[Link]:
    return [link for link in links(ipr) if link.alias == owner]


def _mine(link: Link | None, owner: str) -> Link | None:
    """The link, when it is ours; an error when one of our names is taken by a link that is not."""
    if link is not None and link.alias != owner:
        raise NetworkingError(f"{link.name} exists and was not created by this cloud ({owner}); not touched")
    return link


def _tag(ipr: IPRoute, name: str, owner: str) -> Link:
    """Tag the link just created; if that fails, remove it (it is ours, untagged or not)."""
    link = find(ipr, name)
    if link is None:
        raise NetworkingError(f"{name} vanished right after it was created")
    try:
        ipr.link("set", index=link.index, ifalias=owner)
    except NetlinkError:
        ipr.link("del", index=link.index)
        raise
    return dataclasses.replace(link, alias=owner)


def delete_owned(ipr: IPRoute, link: Link, owner: str) -> bool:
    """Delete the link if it still is the one we saw and still carries our tag."""
    try:
        now = Link.from_msg(ipr.link("get", index=link.index)[0])
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise
    if now.alias != owner or now.name != link.name:
        return False
    try:
        ipr.link("del", index=now.index)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise
    return True


def _sysctl(name: str, path: str, value: str) -> None:
    """A per-interface setting of one of our links (in the calling thread's namespace)."""
    try:
        Path(f"/proc/sys/net/{path.format(name)}").write_text(value)
    except FileNotFoundError:
        pass  # IPv6 compiled out or disabled on the command line: nothing to turn off


def _isolate(name: str, bridge: bool) -> None:
    _sysctl(name, "ipv6/conf/{}/disable_ipv6", "1")
    if bridge:
        _sysctl(name, "ipv4/conf/{}/arp_ignore", "8")
        _sysctl(name, "ipv4/conf/{}/rp_filter", "1")


# --- the root namespace: bridges and taps -----------------------------------------------------


def ensure_bridge(ipr: IPRoute, name: str, mtu: int, owner: str) -> tuple[Link, str | None]:
    """The network's bridge, up, STP off, forward delay 0, no address. Returns the link and
    what was done: "created", "updated" or None."""
    link = _mine(find(ipr, name), owner)
    if link is not None and link.kind != "bridge":
        delete_owned(ipr, link, owner)
        link = None
    if link is None:
        ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0, mtu=mtu)
        link = _tag(ipr, name, owner)
        _isolate(name, bridge=True)
        ipr.link("set", index=link.index, state="up")
        return link, "created"
    _isolate(name, bridge=True)
    changed = False
    if link.stp != 0 or link.forward_delay != 0:
        ipr.link("set", index=link.index, kind="bridge", br_stp_state=0, br_forward_delay=0)
        changed = True
    changed |= _set(ipr, link, mtu=mtu, up=True)
    for addr in ipr.addr("dump", index=link.index):
        if addr.get("IFA_ADDRESS") and not str(addr.get("IFA_ADDRESS")).startswith("fe80:"):
            ipr.addr("del", index=link.index, address=addr.get("IFA_ADDRESS"), prefixlen=addr["prefixlen"])
            changed = True
    return link, "updated" if changed else None


def ensure_tap(
    ipr: IPRoute,
    name: str,
    host_mac: str,
    bridge: Link,
    mtu: int,
    up: bool,
    owner: str,
    seen: Mapping[str, Link] | None = None,
) -> str | None:
    """A persistent tap (libvirt opens it), on the bridge, with the network's MTU. `seen`: the
    links as a dump found them a moment ago (a full pass reads every link in one dump rather
    than one request per tap: pyroute2 spends about a millisecond decoding a link either way);
    without it, the tap is looked up."""
    link = _mine(seen.get(name) if seen is not None else find(ipr, name), owner)
    if link is not None and link.kind != "tun":
        delete_owned(ipr, link, owner)
        link = None
    if link is None:
        ipr.link("add", ifname=name, kind="tuntap", mode="tap")
        link = _tag(ipr, name, owner)
        _isolate(name, bridge=False)
        _set(ipr, link, mac=host_mac, master=bridge.index, mtu=mtu, up=up)
        return "created"
    _isolate(name, bridge=False)
    return "updated" if _set(ipr, link, mac=host_mac, master=bridge.index, mtu=mtu, up=up) else None


# --- VXLAN: the network across hosts ------------------------------------------------------------

VXLAN_PORT = 4789  # IANA's; Neutron's default too


def _vxlan_params(ipr: IPRoute, index: int) -> tuple[int | None, str | None, int | None]:
    msg = ipr.link("get", index=index)[0]
    info = msg.get("IFLA_LINKINFO")
    data = info.get("IFLA_INFO_DATA") if info is not None else None
    if data is None:
        return None, None, None
    return data.get("IFLA_VXLAN_ID"), data.get("IFLA_VXLAN_LOCAL"), data.get("IFLA_VXLAN_PORT")


def ensure_vxlan(
    ipr: IPRoute, name: str, vni: int, local: str, bridge: Link, mtu: int, owner: str
) -> tuple[Link, str | None]:
    """The network's VXLAN device on its bridge: unicast only (no multicast group), no source
    learning (forwarding entries come from the port records, `sync_fdb`), ARP answered locally
    from the neighbour entries (`proxy`), and isolated on the bridge, so that what the local DHCP
    port says never leaves the host (every host serves DHCP for its own guests)."""
    link = _mine(find(ipr, name), owner)
    if link is not None and (
        link.kind != "vxlan" or _vxlan_params(ipr, link.index) != (vni, local, VXLAN_PORT)
    ):
        delete_owned(ipr, link, owner)
        link = None
    done = None
    if link is None:
        ipr.link(
            "add",
            ifname=name,
            kind="vxlan",
            vxlan_id=vni,
            vxlan_local=local,
            vxlan_port=VXLAN_PORT,
            vxlan_learning=0,
            vxlan_proxy=1,
            mtu=mtu,
        )
        link = _tag(ipr, name, owner)
        _isolate(name, bridge=False)
        done = "created"
    changed = _set(ipr, link, master=bridge.index, mtu=mtu, up=True)
    isolate_port(ipr, link.index)
    return link, done or ("updated" if changed else None)


def isolate_port(ipr: IPRoute, index: int) -> None:
    """Mark a bridge port isolated: it forwards to and from the bridge's other ports, but never to
    another isolated one (the VXLAN device and the DHCP port's veth: a host's DHCP and metadata
    answer its own guests only)."""
    ipr.brport("set", index=index, isolated=1)


def _fdb_entries(ipr: IPRoute, index: int) -> set[tuple[str, str]]:
    """The VXLAN device's own forwarding entries (those with a remote destination)."""
    found = set()
    for entry in ipr.fdb("dump", ifindex=index):
        dst, mac = entry.get("NDA_DST"), entry.get("NDA_LLADDR")
        if entry.get("ifindex") == index and dst and mac:
            found.add((str(mac).lower(), str(dst)))
    return found


def sync_fdb(ipr: IPRoute, link: Link, wanted: frozenset[tuple[str, str]]) -> tuple[int, int]:
    """Make the VXLAN device's forwarding entries exactly `wanted` ((MAC, VTEP) pairs; the
    all-zeroes MAC is flooding). Returns (added, removed)."""
    have = _fdb_entries(ipr, link.index)
    for mac, dst in sorted(have - wanted):
        with _ignore(errno.ENOENT):
            ipr.fdb("del", ifindex=link.index, lladdr=mac, dst=dst)
    for mac, dst in sorted(wanted - have):
        ipr.fdb("append", ifindex=link.index, lladdr=mac, dst=dst)  # permanent, as the kernel makes it
    return len(wanted - have), len(have - wanted)


def sync_neighbours(ipr: IPRoute, link: Link, wanted: frozenset[tuple[str, str]]) -> tuple[int, int]:
    """Make the VXLAN device's neighbour entries exactly `wanted` ((IPv4, MAC) pairs, permanent),
    which its ARP proxy answers from. Returns (added, removed)."""
    have = set()
    for entry in ipr.neigh("dump", ifindex=link.index, family=socket.AF_INET):
        ip, mac = entry.get("NDA_DST"), entry.get("NDA_LLADDR")
        if entry.get("ifindex") == link.index and ip and mac:
            have.add((str(ip), str(mac).lower()))
    for ip, mac in sorted(have - wanted):
        with _ignore(errno.ENOENT):
            ipr.neigh("del", ifindex=link.index, dst=ip, lladdr=mac)
    for ip, mac in sorted(wanted - have):
        ipr.neigh("replace", ifindex=link.index, dst=ip, lladdr=mac, state="permanent")
    return len(wanted - have), len(have - wanted)


class _ignore:
    """Suppress a NetlinkError of one errno (an entry already gone)."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        return isinstance(exc, NetlinkError) and exc.code == self.code


def _set(
    ipr: IPRoute,
    link: Link,
    *,
    mac: str | None = None,
    master: int | None = None,
    mtu: int | None = None,
    up: bool | None = None,
) -> bool:
    """Bring the link to what is asked; True if anything changed."""
    changes: dict[str, Any] = {}
    if mac is not None and link.mac != mac:
        changes["address"] = mac
    if master is not None and link.master != master:
        changes["master"] = master
    if mtu is not None and link.mtu != mtu:
        changes["mtu"] = mtu
    if changes:
        ipr.link("set", index=link.index, **changes)
    if up is not None and link.up != up:
        ipr.link("set", index=link.index, state="up" if up else "down")
        changes["state"] = up
    return bool(changes)


# --- namespaces ---------------------------------------------------------------------------------


def namespaces() -> list[str]:
    return sorted(netns.listnetns())


def namespace_inode(name: str) -> int | None:
    """The namespace's identity (its nsfs inode), None if there is none of that name."""
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except FileNotFoundError:
        return None


def create_namespace(name: str) -> None:
    netns.create(name)


def remove_namespace(name: str) -> bool:
    if namespace_inode(name) is None:
        return False
    netns.remove(name)
    return True


def run_in_namespace(name: str, fn: Callable[..., T], *args: Any, timeout: float = NAMESPACE_TIMEOUT) -> T:
    """fn(*args) in a thread of its own inside the namespace; that thread ends with it."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(NETNS_DIR / name, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {name}: {os.strerror(err)}")
            finally:
                os.close(fd)
            outcome["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"netns:{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise NetworkingError(f"work in namespace {name} took longer than {timeout}s")
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def _links_here() -> list[Link]:
    with iproute() as ipr:
        return links(ipr)


def namespace_links(name: str) -> list[Link]:
    return run_in_namespace(name, _links_here)


def ensure_namespace(name: str, marker: Path, owner: str) -> str | None:
    """Our namespace. The marker (in our state directory) is written before the namespace is
    created, so a crash in between still leaves it recognisably ours; an unrecorded namespace
    of our name is adopted only if it holds a link with our tag."""
    if namespace_inode(name) is not None:
        if not marker.exists():
            if not namespace_has_link_of(name, owner):
                raise NetworkingError(
                    f"namespace {name} exists and was not created by this cloud; not touched"
                )
            marker.write_text(name + "\n")
        return None
    marker.write_text(name + "\n")
    create_namespace(name)
    return "created"


def ensure_dhcp_veth(
    ipr: IPRoute,
    namespace: str,
    veth: str,
    interface: str,
    mac: str,
    mtu: int,
    addresses: Iterable[IPv4Interface],
    bridge: Link,
    owner: str,
) -> str | None:
    """The veth pair of the DHCP port: `veth` on the bridge, `interface` in the namespace with
    the port's MAC and addresses (exactly those), lo up."""
    wanted = frozenset(addresses)
    outer = _mine(find(ipr, veth), owner)
    inside: bool | None = None  # None: no such interface inside
    if outer is not None and outer.kind == "veth":
        inside = run_in_namespace(namespace, _configure_inside, interface, owner, mac, mtu, wanted)
    done: str | None = None
    if inside is None:  # make the pair (again): whatever half is left goes first
        if outer is not None:
            delete_owned(ipr, outer, owner)
        run_in_namespace(namespace, _delete_here, interface)
        ipr.link(
            "add",
            ifname=veth,
            kind="veth",
            mtu=mtu,
            peer={"ifname": interface, "net_ns_fd": namespace, "address": mac, "mtu": mtu},
        )
        outer = _tag(ipr, veth, owner)
        _isolate(veth, bridge=False)
        if run_in_namespace(namespace, _configure_inside, interface, owner, mac, mtu, wanted) is None:
            raise NetworkingError(f"{interface} did not appear in namespace {namespace}")
        done = "created"
    else:
        _isolate(veth, bridge=False)
    assert outer is not None
    if (_set(ipr, outer, master=bridge.index, mtu=mtu, up=True) or inside) and done is None:
        done = "updated"
    return done


def _find_here(name: str) -> Link | None:
    with iproute() as ipr:
        return find(ipr, name)


def _delete_here(name: str) -> None:
    with iproute() as ipr:
        link = find(ipr, name)
        if link is not None:
            ipr.link("del", index=link.index)


def _configure_inside(
    interface: str, owner: str, mac: str, mtu: int, addresses: frozenset[IPv4Interface]
) -> bool | None:
    """Runs inside our namespace, where every link is ours. Whether anything changed; None if
    the interface is not there (or is not a veth), and then nothing was touched."""
    changed = False
    with iproute() as ipr:
        link = find(ipr, interface)
        if link is None or link.kind != "veth":
            return None
        lo = find(ipr, "lo")
        if lo is not None and not lo.up:
            ipr.link("set", index=lo.index, state="up")
            changed = True
        if link.alias != owner:
            ipr.link("set", index=link.index, ifalias=owner)
            changed = True
        if link.mac != mac and link.up:
            ipr.link("set", index=link.index, state="down")  # a MAC may not change while up
            link = dataclasses.replace(link, up=False)
        changed |= _set(ipr, link, mac=mac, mtu=mtu)
        have = {
            IPv4Interface(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}")
            for a in ipr.addr("dump", index=link.index, family=socket.AF_INET)
        }
        for extra in have - addresses:
            ipr.addr("del", index=link.index, address=str(extra.ip), prefixlen=extra.network.prefixlen)
            changed = True
        for missing in sorted(addresses - have):
            ipr.addr("add", index=link.index, address=str(missing.ip), prefixlen=missing.network.prefixlen)
            changed = True
        changed |= _set(ipr, link, up=True)
    return changed


def namespace_has_link_of(name: str, owner: str) -> bool:
    """Whether a namespace holds a link tagged by `owner`: the proof that an unrecorded
    qdhcp namespace is ours."""
    try:
        return any(link.alias == owner for link in namespace_links(name))
    except (OSError, NetlinkError):  # gone meanwhile, or not a namespace we may enter
        return False


# --- the metadata service's needs ---------------------------------------------------------------


def _listen_here(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def listen_in_namespace(name: str, address: str, port: int) -> socket.socket:
    """A listening TCP socket bound inside the namespace (it stays there)."""
    return run_in_namespace(name, _listen_here, address, port)


def _neighbour_here(ip: str) -> str | None:
    with iproute() as ipr:
        for msg in ipr.neigh("dump", family=socket.AF_INET):
            # NUD_INCOMPLETE (1) and NUD_FAILED (32) carry no proof of who holds the address
            if msg.get("NDA_DST") == ip and msg.get("NDA_LLADDR") and not msg["state"] & (1 | 32):
                return str(msg.get("NDA_LLADDR")).lower()
    return None


def neighbour_mac(namespace: str, ip: str) -> str | None:
    """The MAC the namespace's neighbour table holds for an address, if any."""
    return run_in_namespace(namespace, _neighbour_here, ip)
