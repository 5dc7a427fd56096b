"""What the kernel should hold, read from the control plane: the desired state of a converge pass.

A VM port needs its tap when it is bound to one of our hosts and its server lives there (not
deleted, not being deleted). A network with at least one such tap needs its bridge and, when
it has a DHCP port with an address on a DHCP-enabled IPv4 subnet, a qdhcp namespace, dnsmasq
and a metadata listener. The DHCP port is distributed: every host that serves the network uses
that port's MAC and addresses in its own namespace (hosts are not L2-connected to each other).

Everything that reaches a kernel name, a path or a dnsmasq file is validated here: ids are
`[A-Za-z0-9][A-Za-z0-9_-]{0,63}`, MACs are lower-case colon hex, addresses are parsed IPv4,
hostnames are `[a-z0-9-]{1,63}`. A row that fails is left out and reported as a problem (the
caller logs each problem once), never written anywhere.

Naming follows Neutron's Linux-bridge agent: `brq` + network id[:11], `tap` + port id[:11],
`ns-` + DHCP port id[:11] (inside the namespace), `qdhcp-` + network id.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from hostagent.control import Control

DHCP_OWNER = "network:dhcp"
ZERO_MAC = "00:00:00:00:00:00"
MAX_VNI = 2**24 - 1
METADATA_IP = IPv4Address("169.254.169.254")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_HOSTNAME = re.compile(r"[a-z0-9-]{1,63}")


def bridge_name(network_id: str) -> str:
    return "brq" + network_id[:11]


def tap_name(port_id: str) -> str:
    return "tap" + port_id[:11]


def dhcp_interface_name(port_id: str) -> str:
    return "ns-" + port_id[:11]


def vxlan_name(vni: int) -> str:
    return f"vxlan-{vni}"


NAMESPACE_PREFIX = "qdhcp-"


def namespace_name(network_id: str, prefix: str = NAMESPACE_PREFIX) -> str:
    return prefix + network_id


def valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def valid_mac(value: object) -> bool:
    """A unicast MAC in PostgreSQL's macaddr text form."""
    return isinstance(value, str) and _MAC.fullmatch(value) is not None and not int(value[:2], 16) & 1


def valid_hostname(value: object) -> bool:
    return isinstance(value, str) and _HOSTNAME.fullmatch(value) is not None


@dataclasses.dataclass(frozen=True)
class TapSpec:
    """A VM port's tap on this host."""

    port_id: str
    server_id: str
    network_id: str
    mac: str
    up: bool  # the port and its network are administratively up

    @property
    def name(self) -> str:
        return tap_name(self.port_id)

    @property
    def host_mac(self) -> str:
        """The tap's own (host side) MAC: the guest's with the first octet fe, as libvirt does, so
        that a bridge, which takes the lowest MAC of its ports, never takes a tap's."""
        return "fe" + self.mac[2:]


@dataclasses.dataclass(frozen=True)
class DhcpSubnet:
    """One IPv4 subnet dnsmasq serves, with the options it hands out."""

    id: str
    cidr: IPv4Network
    server_ip: IPv4Address  # the DHCP port's address on it
    gateway: IPv4Address | None
    dns: tuple[IPv4Address, ...] = ()
    routes: tuple[tuple[IPv4Network, IPv4Address], ...] = ()  # host_routes

    @property
    def tag(self) -> str:
        return f"subnet-{self.id}"

    def __post_init__(self) -> None:
        if not valid_id(self.id):
            raise ValueError(f"bad subnet id {self.id!r}")


@dataclasses.dataclass(frozen=True)
class DhcpHost:
    """One dhcp-hostsfile line: this MAC gets this address and name."""

    mac: str
    hostname: str
    ip: IPv4Address

    def __post_init__(self) -> None:
        if not (valid_mac(self.mac) and valid_hostname(self.hostname) and isinstance(self.ip, IPv4Address)):
            raise ValueError(f"bad DHCP host {self!r}")


@dataclasses.dataclass(frozen=True)
class DhcpSpec:
    """A network's DHCP server on this host: the DHCP port in the qdhcp namespace."""

    network_id: str
    port_id: str
    mac: str
    mtu: int
    subnets: tuple[DhcpSubnet, ...]
    hosts: tuple[DhcpHost, ...]
    namespace_prefix: str = NAMESPACE_PREFIX

    @property
    def namespace(self) -> str:
        return namespace_name(self.network_id, self.namespace_prefix)

    @property
    def interface(self) -> str:
        """The veth end inside the namespace."""
        return dhcp_interface_name(self.port_id)

    @property
    def veth(self) -> str:
        """The veth end on the bridge."""
        return tap_name(self.port_id)

    @property
    def addresses(self) -> frozenset[IPv4Interface]:
        """The DHCP port's addresses with their subnets' prefixes, and the metadata address."""
        own = {IPv4Interface(f"{s.server_ip}/{s.cidr.prefixlen}") for s in self.subnets}
        return frozenset(own | {IPv4Interface(f"{METADATA_IP}/32")})


@dataclasses.dataclass(frozen=True)
class RemotePort:
    """A port of the network on another host (l2population): its MAC and IPv4 addresses, and
    the underlay address of its host's VXLAN tunnel endpoint."""

    mac: str
    vtep: IPv4Address
    ips: tuple[IPv4Address, ...]


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    id: str
    mtu: int
    taps: tuple[TapSpec, ...]
    dhcp: DhcpSpec | None
    vni: int | None = None  # a VXLAN network's VNI (None: a host-local network)
    remotes: tuple[RemotePort, ...] = ()  # its ports on other hosts, each host's VTEP with them

    @property
    def bridge(self) -> str:
        return bridge_name(self.id)

    @property
    def vxlan(self) -> str | None:
        """The VXLAN device on the bridge (named after the VNI, as Neutron's Linux-bridge agent)."""
        return vxlan_name(self.vni) if self.vni is not None else None

    @property
    def vteps(self) -> tuple[IPv4Address, ...]:
        """The other hosts with ports on the network: where broadcast and unknown frames go,
        each once (head-end replication), and nowhere else."""
        return tuple(sorted({r.vtep for r in self.remotes}))

    def fdb(self) -> frozenset[tuple[str, str]]:
        """The VXLAN device's forwarding entries: (MAC, VTEP) for every remote port, and the
        all-zeroes MAC to every VTEP (flooding only to the hosts that have ports)."""
        entries = {(ZERO_MAC, str(vtep)) for vtep in self.vteps}
        entries |= {(r.mac, str(r.vtep)) for r in self.remotes}
        return frozenset(entries)

    def neighbours(self) -> frozenset[tuple[str, str]]:
        """(IPv4 address, MAC) of every remote port: answered on this host by the VXLAN
        device's ARP proxy, so ARP for them never crosses the underlay."""
        return frozenset((str(ip), r.mac) for r in self.remotes for ip in r.ips)


@dataclasses.dataclass(frozen=True)
class Desired:
    networks: Mapping[str, NetworkSpec]
    problems: frozenset[str]  # rows left out, for the log

    def taps(self) -> dict[str, TapSpec]:
        return {tap.name: tap for net in self.networks.values() for tap in net.taps}


async def load(
    control: Control,
    hosts: Iterable[str],
    skip_servers: Iterable[str] = (),
    namespace_prefix: str = NAMESPACE_PREFIX,
) -> Desired:
    """The desired state, from one consistent snapshot of the control plane's. `skip_servers`:
    servers whose taps are not wanted whatever the control plane says yet (just unplugged)."""
    rows = await control.desired_network(sorted(hosts))
    skip = set(skip_servers)
    taps = [row for row in rows["taps"] if row["server_id"] not in skip]
    wanted = {row["network_id"] for row in taps}
    subnets = [row for row in rows["subnets"] if row["network_id"] in wanted]
    addresses = [row for row in rows["addresses"] if row["network_id"] in wanted]
    remotes = [row for row in rows.get("remotes", []) if row["network_id"] in wanted]
    return build(taps, subnets, addresses, remotes, namespace_prefix=namespace_prefix)


# A row as the control plane gives it, or as a test writes it.
Row = Mapping[str, Any]


def build(
    taps: Sequence[Row],
    subnets: Sequence[Row],
    addresses: Sequence[Row],
    remotes: Sequence[Row] = (),
    *,
    namespace_prefix: str = NAMESPACE_PREFIX,
) -> Desired:
    """The desired state from the rows of the four queries (a pure function)."""
    problems: set[str] = set()
    tap_specs: dict[str, list[TapSpec]] = {}
    mtus: dict[str, int] = {}
    vnis: dict[str, int | None] = {}
    for row in taps:
        if not (
            valid_id(row["port_id"])
            and valid_id(row["network_id"])
            and valid_id(row["server_id"])
            and valid_mac(row["mac"])
        ):
            problems.add(f"port {row['port_id']!r}: bad id or MAC, no tap")
            continue
        tap = TapSpec(
            port_id=row["port_id"],
            server_id=row["server_id"],
            network_id=row["network_id"],
            mac=row["mac"],
            up=bool(row["up"]),
        )
        tap_specs.setdefault(tap.network_id, []).append(tap)
        mtus[tap.network_id] = int(row["mtu"])
        vnis[tap.network_id] = _vni(row, problems)

    subnet_rows: dict[str, list[Row]] = {}
    for row in subnets:
        subnet_rows.setdefault(row["network_id"], []).append(row)
    address_rows: dict[str, list[Row]] = {}
    for row in addresses:
        address_rows.setdefault(row["network_id"], []).append(row)
    remote_ports: dict[str, list[RemotePort]] = {}
    for row in remotes:
        remote = _remote(row, problems)
        if remote is not None:
            remote_ports.setdefault(row["network_id"], []).append(remote)

    networks = {}
    for network_id, specs in sorted(tap_specs.items()):
        specs.sort(key=lambda t: t.port_id)
        dhcp = _dhcp(
            network_id,
            mtus[network_id],
            subnet_rows.get(network_id, []),
            address_rows.get(network_id, []),
            problems,
        )
        if dhcp is not None and namespace_prefix != NAMESPACE_PREFIX:
            dhcp = dataclasses.replace(dhcp, namespace_prefix=namespace_prefix)
        vni = vnis[network_id]
        networks[network_id] = NetworkSpec(
            id=network_id,
            mtu=mtus[network_id],
            taps=tuple(specs),
            dhcp=dhcp,
            vni=vni,
            remotes=tuple(sorted(remote_ports.get(network_id, []), key=lambda r: r.mac)) if vni else (),
        )
    return Desired(networks=networks, problems=frozenset(problems))


def _vni(row: Row, problems: set[str]) -> int | None:
    if row.get("network_type") != "vxlan":
        return None
    vni = row.get("segmentation_id")
    if vni is None:
        return None  # no segment (yet): the network stays on this host
    if isinstance(vni, bool) or not isinstance(vni, int) or not 1 <= vni <= MAX_VNI:
        problems.add(f"network {row['network_id']!r}: bad VNI {vni!r}, kept on this host")
        return None
    return vni


def _remote(row: Row, problems: set[str]) -> RemotePort | None:
    """A remote port's row; None (a problem) when its MAC or addresses are not well formed."""
    try:
        vtep = IPv4Address(row["tunnel_ip"])
        ips = tuple(IPv4Address(ip) for ip in row["ips"] or ())
    except (TypeError, ValueError):
        problems.add(f"port {row.get('port_id')!r}: bad tunnel or port address, not reachable across hosts")
        return None
    if not valid_mac(row["mac"]):
        problems.add(f"port {row.get('port_id')!r}: bad MAC {row['mac']!r}, not reachable across hosts")
        return None
    return RemotePort(mac=row["mac"], vtep=vtep, ips=ips)


def _dhcp(
    network_id: str,
    mtu: int,
    subnets: list[Row],
    addresses: list[Row],
    problems: set[str],
) -> DhcpSpec | None:
    dhcp_rows = [a for a in addresses if a["device_owner"] == DHCP_OWNER]
    if not subnets or not dhcp_rows:
        return None
    # One DHCP port per network; should there be more, the one named after the network wins.
    port_ids = list(dict.fromkeys(a["port_id"] for a in dhcp_rows))
    port_ids.sort(
        key=lambda pid: next(a["device_id"] for a in dhcp_rows if a["port_id"] == pid) != f"dhcp-{network_id}"
    )
    port_id = port_ids[0]
    mac = next(a["mac"] for a in dhcp_rows if a["port_id"] == port_id)
    if not valid_id(port_id) or not valid_mac(mac):
        problems.add(f"network {network_id}: bad DHCP port id or MAC {port_id!r} {mac!r}, no DHCP")
        return None
    server_ips: dict[str, IPv4Address] = {}
    for a in dhcp_rows:
        if a["port_id"] == port_id:
            server_ips.setdefault(a["subnet_id"], IPv4Address(a["ip"]))

    served: dict[str, DhcpSubnet] = {}
    for row in subnets:
        subnet = _subnet(row, server_ips.get(row["id"]), problems)
        if subnet is not None:
            served[subnet.id] = subnet
    if not served:
        return None

    hosts = []
    for a in addresses:
        if a["port_id"] in port_ids or a["subnet_id"] not in served:
            continue
        ip = IPv4Address(a["ip"])
        if not valid_mac(a["mac"]):
            problems.add(f"port {a['port_id']!r}: bad MAC {a['mac']!r}, no DHCP entry")
            continue
        hostname = a["hostname"]
        if hostname is not None and not valid_hostname(hostname):
            problems.add(f"port {a['port_id']!r}: bad hostname {hostname!r}, DHCP names it by its address")
            hostname = None
        hosts.append(DhcpHost(mac=a["mac"], hostname=hostname or "host-" + str(ip).replace(".", "-"), ip=ip))
    return DhcpSpec(
        network_id=network_id,
        port_id=port_id,
        mac=mac,
        mtu=mtu,
        subnets=tuple(served.values()),
        hosts=tuple(hosts),
    )


def _subnet(row: Row, server_ip: IPv4Address | None, problems: set[str]) -> DhcpSubnet | None:
    subnet_id = row["id"]
    if not valid_id(subnet_id):
        problems.add(f"subnet {subnet_id!r}: bad id, not served")
        return None
    if server_ip is None:
        problems.add(f"subnet {subnet_id}: the DHCP port has no address on it, not served")
        return None
    cidr = IPv4Network(row["cidr"])
    gateway = IPv4Address(row["gateway_ip"]) if row["gateway_ip"] else None
    dns = []
    for value in row["dns_nameservers"] or ():
        try:
            dns.append(IPv4Address(value))
        except ValueError:
            problems.add(f"subnet {subnet_id}: DNS server {value!r} is not an IPv4 address, left out")
    routes = []
    host_routes = row["host_routes"]
    if isinstance(host_routes, str):
        host_routes = json.loads(host_routes)
    for route in host_routes or ():
        try:
            routes.append((IPv4Network(route["destination"]), IPv4Address(route["nexthop"])))
        except (KeyError, TypeError, ValueError):
            problems.add(f"subnet {subnet_id}: host route {route!r} is not an IPv4 route, left out")
    return DhcpSubnet(
        id=subnet_id, cidr=cidr, server_ip=server_ip, gateway=gateway, dns=tuple(dns), routes=tuple(routes)
    )
