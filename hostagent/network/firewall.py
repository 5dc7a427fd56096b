"""Security groups on a Linux-bridge host: what the VM ports with a tap here may send and
receive (Neutron's iptables and OVS firewall drivers), validated from the control plane's rows.
Pure: `build` touches no kernel; `ruleset.py` turns a `Firewall` into nftables text and
`nftables.py` applies it with the `nft` command.

Semantics. A port with port security off is not filtered. From any other port (egress), the
source MAC must be the port's or an allowed pair's, and the source address one the port may use
with that MAC (its fixed IPs with its MAC, its allowed address pairs, IPv6 link-local; ARP
likewise); DHCP and ND pass, and the VM may act as neither DHCP server nor router. To it
(ingress), ARP, DHCP replies and ND pass. Then, for a stateful port, established and related
traffic passes and invalid is dropped; then the rules of the port's groups of that direction;
everything else is dropped. A row that fails validation is a problem (for the log) and is never
rendered: a bad rule or member is left out (it could only have allowed more), a bad port gets a
drop-everything filter (fail closed).

A host builds its firewall on every pass (each security group change, each plug, every periodic
pass) from all the rows of its ports, and most rows are those of the pass before: `Builder`
remembers each row's outcome, so a pass validates only the rows that changed.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import ipaddress
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, TypeVar, cast

from hostagent.network.desired import bridge_name, tap_name, valid_id, valid_mac

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
Row = Mapping[str, Any]

ZONES = 65000  # conntrack zones 1..65000, one per network (a collision only shares a zone)
COMMENT_MAX = 128  # bytes nftables keeps of a table's comment

# Neutron's protocol names (neutron_lib.constants.IP_PROTOCOL_MAP).
PROTOCOLS: dict[str, int] = {
    "ah": 51,
    "dccp": 33,
    "egp": 8,
    "esp": 50,
    "gre": 47,
    "hopopt": 0,
    "icmp": 1,
    "igmp": 2,
    "ip": 0,
    "ipip": 4,
    "ipv6-encap": 41,
    "ipv6-frag": 44,
    "ipv6-icmp": 58,
    "icmpv6": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "ipv6-route": 43,
    "ospf": 89,
    "pgm": 113,
    "rsvp": 46,
    "sctp": 132,
    "tcp": 6,
    "udp": 17,
    "udplite": 136,
    "vrrp": 112,
}
ICMP, ICMPV6 = 1, 58
PORT_PROTOCOLS = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp", 136: "udplite"}  # with port ranges
IPV6_ONLY = frozenset({41, 43, 44, 58, 59, 60})  # Neutron refuses them in IPv4 rules
LINK_LOCAL = IPv6Network("fe80::/64")


class Direction(enum.StrEnum):
    INGRESS = "ingress"  # to the VM
    EGRESS = "egress"  # from the VM


@dataclasses.dataclass(frozen=True)
class Rule:
    """One security group rule, validated: it allows what it matches."""

    direction: Direction
    ipv6: bool  # ethertype IPv6 (else IPv4)
    protocol: int | None  # None: any
    port_min: int | None  # tcp, udp, …: the destination ports; icmp: the type
    port_max: int | None  # icmp: the code
    remote_prefix: Network | None = None
    remote_group: str | None = None


@dataclasses.dataclass(frozen=True)
class AddressPair:
    """An allowed address pair: the VM may send from `cidr` with `mac`."""

    mac: str
    cidr: Network


@dataclasses.dataclass(frozen=True)
class PortFilter:
    """A port with port security: what its anti-spoofing elements and rule chains come from."""

    port_id: str
    network_id: str
    mac: str
    ips: tuple[Address, ...]
    pairs: tuple[AddressPair, ...]
    groups: tuple[str, ...]
    stateful: bool

    @property
    def tap(self) -> str:
        return tap_name(self.port_id)

    def sources(self, version: int) -> dict[str, list[Network]]:
        """The source addresses of one IP version the VM may use, by source MAC (merged, so that
        no two overlap: the kernel refuses overlapping intervals in a set)."""
        allowed: dict[str, list[Network]] = {self.mac: []}
        for ip in self.ips:
            if ip.version == version:
                allowed[self.mac].append(ipaddress.ip_network(ip))
        for pair in self.pairs:
            if pair.cidr.version == version:
                allowed.setdefault(pair.mac, []).append(pair.cidr)
        if version == 6:
            for networks in allowed.values():
                networks.append(LINK_LOCAL)
        return {mac: _collapse(networks) for mac, networks in allowed.items()}

    @property
    def macs(self) -> list[str]:
        return sorted({self.mac, *(pair.mac for pair in self.pairs)})


@dataclasses.dataclass(frozen=True)
class Firewall:
    """The desired filtering of this host's VM ports."""

    ports: Mapping[str, PortFilter]  # tap -> its filter (port security on)
    blocked: frozenset[str]  # taps whose rows were bad: everything dropped
    unfiltered: frozenset[str]  # taps with port security off
    zones: Mapping[str, int]  # bridge -> its conntrack zone
    rules: Mapping[str, tuple[Rule, ...]]  # security group -> its rules
    members: Mapping[str, tuple[Network, ...]]  # group used as a remote group -> its addresses
    problems: frozenset[str]  # rows left out, for the log


def zone(network_id: str) -> int:
    """The network's conntrack zone: stable across restarts and hosts."""
    return zlib.crc32(network_id.encode()) % ZONES + 1


# --- validation ---------------------------------------------------------------------------------


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _id(value: object, what: str) -> str:
    if not valid_id(value):
        raise ValueError(f"bad {what} {_show(value)}")
    assert isinstance(value, str)
    return value


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} is {_show(value)}, not true or false")
    return value


def _list(value: object, what: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{what} is {_show(value)}, not a list")
    return value


def _address(value: object) -> Address:
    if not isinstance(value, str) or "%" in value:  # no IPv6 scope ids
        raise ValueError(f"bad address {_show(value)}")
    return ipaddress.ip_address(value)


def _network(value: object) -> Network:
    """An address or a CIDR (host bits are dropped, as iptables does)."""
    if not isinstance(value, str) or "%" in value:
        raise ValueError(f"bad address or CIDR {_show(value)}")
    return ipaddress.ip_network(value, strict=False)


def _integer(value: object, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} {_show(value)} is not an integer from {low} to {high}")
    return value


def _collapse(networks: Iterable[Network]) -> list[Network]:
    networks = list(dict.fromkeys(networks))
    if len(networks) <= 4 and not any(
        a.version == b.version and a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :]
    ):
        return networks  # a port's few addresses: much cheaper than collapsing
    v4 = [n for n in networks if isinstance(n, IPv4Network)]
    v6 = [n for n in networks if isinstance(n, IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def _collapsed(networks: Iterable[Network]) -> tuple[Network, ...]:
    return tuple(_collapse(networks))


def _pair(value: object, port_mac: str) -> AddressPair:
    if not isinstance(value, Mapping):
        raise ValueError(f"allowed address pair {_show(value)} is not an object")
    mac = value.get("mac_address") or port_mac
    if not valid_mac(mac):
        raise ValueError(f"allowed address pair MAC {_show(mac)}")
    return AddressPair(mac=mac, cidr=_network(value["ip_address"]))


def _port(row: Row) -> tuple[PortFilter, bool]:
    """The port's filter and whether port security is on; ValueError (or KeyError, TypeError)
    when anything in the row is not well formed."""
    mac = row["mac"]
    if not valid_mac(mac):
        raise ValueError(f"bad MAC {_show(mac)}")
    port = PortFilter(
        port_id=row["port_id"],
        network_id=_id(row["network_id"], "network id"),
        mac=mac,
        ips=tuple(_address(ip) for ip in _list(row["ips"], "ips")),
        pairs=tuple(_pair(p, mac) for p in _list(row.get("allowed_address_pairs") or [], "address pairs")),
        groups=tuple(_id(g, "security group id") for g in _list(row["security_groups"], "security groups")),
        stateful=_flag(row.get("stateful", True), "stateful"),
    )
    return port, _flag(row["port_security_enabled"], "port_security_enabled")


def _protocol(value: object, ipv6: bool) -> int | None:
    """A rule's protocol as a number (None: any). Protocol 0 means any, as in Neutron's
    iptables driver; icmp in an IPv6 rule is ICMPv6, as Neutron normalises it."""
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in PROTOCOLS:
        number = PROTOCOLS[value.lower()]
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = _integer(int(value), 0, 255, "protocol")
    else:
        number = _integer(value, 0, 255, "protocol")
    if number == ICMP and ipv6:
        number = ICMPV6
    if number in IPV6_ONLY and not ipv6:
        raise ValueError(f"protocol {_show(value)} in an IPv4 rule")
    return number or None


def _ports(protocol: int | None, low: object, high: object) -> tuple[int | None, int | None]:
    if low is None and high is None:
        return None, None
    if protocol in PORT_PROTOCOLS:
        first = _integer(low, 0, 65535, "port_range_min")
        last = _integer(high, first, 65535, "port_range_max")
        return first, last
    if protocol in (ICMP, ICMPV6):
        if low is None:
            raise ValueError(f"an ICMP code {_show(high)} without a type")
        code = None if high is None else _integer(high, 0, 255, "ICMP code")
        return _integer(low, 0, 255, "ICMP type"), code
    raise ValueError(f"a port range for protocol {protocol}")


def _rule(row: Row) -> tuple[str, Rule]:
    group = _id(row["security_group_id"], "security group id")
    direction = Direction(row["direction"])
    if row["ethertype"] not in ("IPv4", "IPv6"):
        raise ValueError(f"bad ethertype {_show(row['ethertype'])}")
    ipv6 = row["ethertype"] == "IPv6"
    protocol = _protocol(row.get("protocol"), ipv6)
    port_min, port_max = _ports(protocol, row.get("port_range_min"), row.get("port_range_max"))
    prefix = row.get("remote_ip_prefix")
    remote_group = row.get("remote_group_id")
    if prefix is not None and remote_group is not None:
        raise ValueError("both a remote prefix and a remote group")
    remote_prefix = None if prefix is None else _network(prefix)
    if remote_prefix is not None and (remote_prefix.version == 6) != ipv6:
        raise ValueError(f"remote prefix {remote_prefix} in an {row['ethertype']} rule")
    if remote_prefix is not None and remote_prefix.prefixlen == 0:
        remote_prefix = None  # 0.0.0.0/0, ::/0: any
    rule = Rule(
        direction=direction,
        ipv6=ipv6,
        protocol=protocol,
        port_min=port_min,
        port_max=port_max,
        remote_prefix=remote_prefix,
        remote_group=None if remote_group is None else _id(remote_group, "remote group id"),
    )
    return group, rule


_ROW_ERRORS = (KeyError, TypeError, ValueError, AttributeError)


def _rows(rows: Row, key: str, problems: set[str]) -> list[Row]:
    found = rows.get(key) or []
    if not isinstance(found, list | tuple):
        problems.add(f"{key}: {_show(found)} is not a list, left out")
        return []
    good = [row for row in found if isinstance(row, Mapping)]
    if len(good) != len(found):
        problems.add(f"{key}: rows that are not objects, left out")
    return good


@dataclasses.dataclass(frozen=True)
class _PortRow:
    """What one port row says, validated: its filter, or why it has none."""

    port_id: object
    tap: str | None  # None: a bad id (no tap to filter)
    port: PortFilter | None  # None: a bad row (its tap is blocked) or a bad id
    secured: bool  # port security on
    problem: str | None


def _read_port(row: Row) -> _PortRow:
    port_id = row.get("port_id")
    if not valid_id(port_id):
        return _PortRow(
            port_id, None, None, False, f"port {_show(port_id)}: bad id, not filtered (it has no tap)"
        )
    assert isinstance(port_id, str)
    tap = tap_name(port_id)
    try:
        port, secured = _port(row)
    except _ROW_ERRORS as exc:
        return _PortRow(port_id, tap, None, False, f"port {port_id}: {_reason(exc)}, all its traffic dropped")
    return _PortRow(port_id, tap, port, secured, None)


def _read_rule(row: Row) -> tuple[str, Rule] | str:
    """(its group, the rule), or the problem."""
    try:
        return _rule(row)
    except _ROW_ERRORS as exc:
        return f"security group rule {_show(row.get('id'))}: {_reason(exc)}, left out"


def _read_member(row: Row) -> tuple[str, Network] | str:
    """(the group, an address of its member), or the problem."""
    try:
        return _id(row["security_group_id"], "security group id"), _network(row["ip"])
    except _ROW_ERRORS as exc:
        return f"security group member {_show(row.get('ip'))}: {_reason(exc)}, left out"


@dataclasses.dataclass
class _Ports:
    filtered: dict[str, PortFilter] = dataclasses.field(default_factory=dict)
    blocked: set[str] = dataclasses.field(default_factory=set)
    unfiltered: set[str] = dataclasses.field(default_factory=set)
    zones: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, read: _PortRow, problems: set[str]) -> None:
        if read.tap is None:
            problems.add(str(read.problem))
            return
        tap = read.tap
        if tap in self.filtered or tap in self.blocked or tap in self.unfiltered:
            problems.add(f"port {read.port_id}: another port has its tap {tap}, both blocked")
            self.filtered.pop(tap, None)
            self.unfiltered.discard(tap)
            self.blocked.add(tap)
            return
        if read.port is None:
            problems.add(str(read.problem))
            self.blocked.add(tap)
            return
        self.zones[bridge_name(read.port.network_id)] = zone(read.port.network_id)
        if read.secured:
            self.filtered[tap] = read.port
        else:
            self.unfiltered.add(tap)


def _reason(exc: BaseException) -> str:
    return f"missing {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__


A = TypeVar("A")
T = TypeVar("T")


class Builder:
    """`build` with a memory: each row's outcome (its filter, rule or member, or its problem) is
    kept for the next build, keyed by the row's text, and so is each remote group's collapsed
    addresses, so that a pass over rows of which few changed validates only those, and an
    unchanged row gives the very same objects (equal at the cost of an identity check). Only
    what the last build used is kept. Rows are JSON values (what the control plane sends): two
    rows with the same text say the same. One build at a time.

    The keys are strings, which the garbage collector does not track: what a build keeps for the
    next is a few thousand objects that outlive a collection or two, and every such object counts
    towards the next full collection of the process (~0.1 s with a cloud's objects in it)."""

    def __init__(self) -> None:
        self._before: dict[str, Any] = {}
        self._now: dict[str, Any] = {}

    def _recall(self, key: str, make: Callable[[A], T], argument: A) -> T:
        """`make(argument)`, or what it gave in this build or the last one for the same key."""
        found = self._now.get(key)
        if found is None:
            found = self._before.get(key)
            if found is None:
                found = make(argument)
            self._now[key] = found
        return cast(T, found)

    def build(self, rows: Row) -> Firewall:
        """The desired filtering from the control plane's rows (`ports`, `rules`, `members`)."""
        self._before, self._now = self._now, {}
        problems: set[str] = set()
        ports = _Ports()
        for row in _rows(rows, "ports", problems):
            ports.add(self._recall("port " + repr(row), _read_port, row), problems)

        used = {group for port in ports.filtered.values() for group in port.groups}
        rules: dict[str, list[Rule]] = {}
        for row in _rows(rows, "rules", problems):
            rule = self._recall("rule " + repr(row), _read_rule, row)
            if isinstance(rule, str):
                problems.add(rule)
            elif rule[0] in used:
                rules.setdefault(rule[0], []).append(rule[1])

        remote = {rule.remote_group for group in rules.values() for rule in group if rule.remote_group}
        members: dict[str, dict[str, Network]] = {group: {} for group in remote}  # row's text -> address
        for row in _rows(rows, "members", problems):
            key = repr(row)
            member = self._recall("member " + key, _read_member, row)
            if isinstance(member, str):
                problems.add(member)
            elif member[0] in members:
                members[member[0]][key] = member[1]

        def collapsed(group: str) -> tuple[Network, ...]:
            found = members[group]
            return self._recall("\n".join(("members", group, *found)), _collapsed, found.values())

        firewall = Firewall(
            ports=dict(sorted(ports.filtered.items())),
            blocked=frozenset(ports.blocked),
            unfiltered=frozenset(ports.unfiltered),
            zones=dict(sorted(ports.zones.items())),
            rules={group: tuple(found) for group, found in sorted(rules.items())},
            members={group: collapsed(group) for group in sorted(members)},
            problems=frozenset(problems),
        )
        self._before = {}
        return firewall


def build(rows: Row) -> Firewall:
    """The desired filtering from the control plane's rows (`ports`, `rules`, `members`)."""
    return Builder().build(rows)


# --- what a change revokes ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Revocation:
    """Connections that a change no longer allows, as conntrack entries of the port's network's
    zone: to the port's addresses (ingress) or from them (egress), of a protocol and destination
    ports (None: any), with a peer in `peers` (None: any). Without deleting them, a stateful
    port would keep passing a connection that a rule admitted after the rule is gone (Neutron
    deletes them too). A connection still allowed by another rule loses nothing that matters:
    its next packet is tracked anew and admitted by that rule."""

    zone: int
    direction: Direction
    version: int
    addresses: tuple[Network, ...]
    protocol: int | None = None
    port_min: int | None = None
    port_max: int | None = None
    peers: tuple[Network, ...] | None = None

    def matches(
        self, zone: int | None, protocol: int, source: Address, destination: Address, dport: int | None
    ) -> bool:
        """Whether a conntrack entry (its original direction) is one of these connections."""
        if zone != self.zone or source.version != self.version:
            return False
        port, peer = (destination, source) if self.direction is Direction.INGRESS else (source, destination)
        if not any(port in network for network in self.addresses):
            return False
        if self.peers is not None and not any(peer in network for network in self.peers):
            return False
        if self.protocol is not None and protocol != self.protocol:
            return False
        if self.port_min is not None and self.protocol in PORT_PROTOCOLS:
            high = self.port_max if self.port_max is not None else self.port_min
            return dport is not None and self.port_min <= dport <= high
        return True


def _minus(old: Iterable[Network], new: Sequence[Network]) -> tuple[Network, ...]:
    """The addresses of `old` that `new` does not hold, as networks."""
    left: list[Network] = []
    for network in old:
        pieces = [network]
        for taken in new:
            if taken.version != network.version:
                continue
            next_pieces: list[Network] = []
            for piece in pieces:
                if piece.subnet_of(taken):  # type: ignore[arg-type]
                    continue
                if taken.subnet_of(piece):  # type: ignore[arg-type]
                    next_pieces.extend(piece.address_exclude(taken))  # type: ignore[arg-type]
                else:
                    next_pieces.append(piece)
            pieces = next_pieces
        left.extend(pieces)
    return tuple(_collapse(left))


def _port_addresses(port: PortFilter, version: int) -> tuple[Network, ...]:
    addresses = [ipaddress.ip_network(ip) for ip in port.ips if ip.version == version]
    addresses += [pair.cidr for pair in port.pairs if pair.cidr.version == version]
    return tuple(_collapse(addresses))


def _revoke(port: PortFilter, rule: Rule, peers: tuple[Network, ...] | None) -> Revocation | None:
    version = 6 if rule.ipv6 else 4
    addresses = _port_addresses(port, version)
    if not addresses or peers == ():
        return None
    return Revocation(
        zone(port.network_id),
        rule.direction,
        version,
        addresses,
        rule.protocol,
        rule.port_min,
        rule.port_max,
        peers,
    )


def _everything(port: PortFilter) -> Iterator[Revocation]:
    for version in (4, 6):
        addresses = _port_addresses(port, version)
        if addresses:
            for direction in Direction:
                yield Revocation(zone(port.network_id), direction, version, addresses)


def revocations(before: Firewall, after: Firewall) -> frozenset[Revocation]:
    """The connections of this host's stateful ports that `before` allowed and `after` may not:
    those a removed rule admitted (a rule deleted, a group left), those with a peer a remote
    group lost, and all of a port that is now blocked."""
    found: set[Revocation | None] = set()
    for tap, old in before.ports.items():
        if not old.stateful:
            continue  # no connection was admitted as established
        new = after.ports.get(tap)
        if new is None:
            if tap in after.blocked:
                found.update(_everything(old))
            continue  # gone, or port security off: nothing it had is refused now
        if not new.stateful:
            continue
        old_rules = {rule for group in old.groups for rule in before.rules.get(group, ())}
        new_rules = {rule for group in new.groups for rule in after.rules.get(group, ())}
        for rule in old_rules - new_rules:
            peers = before.members.get(rule.remote_group, ()) if rule.remote_group else None
            if rule.remote_prefix is not None:
                peers = (rule.remote_prefix,)
            found.add(_revoke(old, rule, peers))
        for rule in old_rules & new_rules:
            if rule.remote_group:
                lost = _minus(
                    before.members.get(rule.remote_group, ()), after.members.get(rule.remote_group, ())
                )
                found.add(_revoke(old, rule, lost))
    found.discard(None)
    return frozenset(r for r in found if r is not None)


# --- names ------------------------------------------------------------------------------------


def table_name(owner: str) -> str:
    """Our tables' name (in both families): the owner's, and nothing anyone else would choose."""
    return "actorstack_" + hashlib.sha256(owner.encode()).hexdigest()[:12]


def check_owner(owner: str) -> None:
    """The owner becomes the tables' comment: printable ASCII, no quote or backslash, and as
    long as nftables keeps (128 bytes)."""
    if not (
        owner
        and len(owner) <= COMMENT_MAX
        and owner.isascii()
        and owner.isprintable()
        and '"' not in owner
        and "\\" not in owner
    ):
        raise ValueError(
            f"an nftables owner tag is 1-{COMMENT_MAX} printable ASCII characters without quote or "
            f"backslash, not {owner!r}"
        )


def set_name(group: str, ipv6: bool) -> str:
    return f"sg_{group}_v{6 if ipv6 else 4}"
