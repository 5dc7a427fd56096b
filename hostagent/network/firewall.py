"""Security groups on a Linux-bridge host: what the VM ports with a tap here may send and
receive (Neutron's iptables and OVS firewall drivers), validated from the control plane's rows,
and the nftables ruleset that enforces it. Pure: `build` and `ruleset`/`render` touch no kernel;
`nftables.py` applies the text with the `nft` command.

Semantics. A port with port security off is not filtered. From any other port (egress), the
source MAC must be the port's or an allowed pair's, and the source address one the port may use
with that MAC (its fixed IPs with its MAC, its allowed address pairs, IPv6 link-local; ARP
likewise); DHCP and ND pass, and the VM may act as neither DHCP server nor router. To it
(ingress), ARP, DHCP replies and ND pass. Then, for a stateful port, established and related
traffic passes and invalid is dropped; then the rules of the port's groups of that direction;
everything else is dropped. A row that fails validation is a problem (for the log) and is never
rendered: a bad rule or member is left out (it could only have allowed more), a bad port gets a
drop-everything filter (fail closed).

The ruleset: one `bridge` and one `inet` table named `actorstack_<12 hex of sha256(owner)>`,
each with the owner as its comment, replaced as a whole in one transaction. Conntrack does not
exist in the bridge family here (no nf_conntrack_bridge), but br_netfilter hands bridged IPv4
and IPv6 to the inet hooks with the bridge as the input interface. So the inet table, for our
bridges only, puts each network in a conntrack zone of its own and copies each packet's
conntrack state into two bits of the packet mark. The bridge table's forward chain sends a
packet from a filtered tap to `egress_guard` and one to a filtered tap to `ingress_guard`
(verdict maps by interface name; a bad port's tap maps to drop). The guards do what every port
needs, from named sets keyed by tap (`port_macs`, `port_ipv4`, `port_ipv6`, `stateful_ports`),
then `goto` the port's rule chain (`out_<hash>`/`in_<hash>`: its groups' rules, then drop;
ports with the same rules share one). Nothing accepts: an allowed packet returns to the forward
chain, so a packet between two ports of this host passes the sender's egress and the receiver's
ingress. Remote groups are named sets (`sg_<group>_v4`/`_v6`), so that a membership change is a
set update. Rules are few and sets do the per-port work: the kernel's cost grows with the number
of sets in a transaction far faster than with rules (one anonymous set per port and rule made a
thousand ports take 20 s instead of 0.2 s).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import ipaddress
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from hostagent.network.desired import bridge_name, tap_name, valid_id, valid_mac

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
Row = Mapping[str, Any]

ESTABLISHED = 0x20000000  # mark bit: conntrack says established or related
INVALID = 0x40000000  # mark bit: conntrack says invalid
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

# ICMPv6 that IPv6 needs whatever the rules say (Neutron's allowed types).
ND_FROM_UNSPECIFIED = (131, 135, 143)  # MLD reports and the NS of duplicate address detection
ND_EGRESS = (130, 131, 132, 133, 135, 136, 143)  # MLD, router and neighbour solicitation, NA
ND_INGRESS = (130, 131, 132, 134, 135, 136, 143)  # MLD, router advertisement, NS, NA
ROUTER_ADVERTISEMENT = 134


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

    def same_but_members(self, other: Firewall) -> bool:
        """Whether the two differ in remote groups' members at most (and problems): then their
        rulesets differ in set elements only."""
        return dataclasses.replace(self, members={}, problems=frozenset()) == dataclasses.replace(
            other, members={}, problems=frozenset()
        )


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


@dataclasses.dataclass
class _Ports:
    filtered: dict[str, PortFilter] = dataclasses.field(default_factory=dict)
    blocked: set[str] = dataclasses.field(default_factory=set)
    unfiltered: set[str] = dataclasses.field(default_factory=set)
    zones: dict[str, int] = dataclasses.field(default_factory=dict)


def _add_port(row: Row, ports: _Ports, problems: set[str]) -> None:
    port_id = row.get("port_id")
    if not valid_id(port_id):
        problems.add(f"port {_show(port_id)}: bad id, not filtered (it has no tap)")
        return
    assert isinstance(port_id, str)
    tap = tap_name(port_id)
    if tap in ports.filtered or tap in ports.blocked or tap in ports.unfiltered:
        problems.add(f"port {port_id}: another port has its tap {tap}, both blocked")
        ports.filtered.pop(tap, None)
        ports.unfiltered.discard(tap)
        ports.blocked.add(tap)
        return
    try:
        port, secured = _port(row)
    except _ROW_ERRORS as exc:
        problems.add(f"port {port_id}: {_reason(exc)}, all its traffic dropped")
        ports.blocked.add(tap)
        return
    ports.zones[bridge_name(port.network_id)] = zone(port.network_id)
    if secured:
        ports.filtered[tap] = port
    else:
        ports.unfiltered.add(tap)


def _reason(exc: BaseException) -> str:
    return f"missing {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__


def build(rows: Row) -> Firewall:
    """The desired filtering from the control plane's rows (`ports`, `rules`, `members`)."""
    problems: set[str] = set()
    ports = _Ports()
    for row in _rows(rows, "ports", problems):
        _add_port(row, ports, problems)

    used = {group for port in ports.filtered.values() for group in port.groups}
    rules: dict[str, list[Rule]] = {}
    for row in _rows(rows, "rules", problems):
        try:
            group, rule = _rule(row)
        except _ROW_ERRORS as exc:
            problems.add(f"security group rule {_show(row.get('id'))}: {_reason(exc)}, left out")
            continue
        if group in used:
            rules.setdefault(group, []).append(rule)

    remote = {rule.remote_group for group in rules.values() for rule in group if rule.remote_group}
    members: dict[str, list[Network]] = {group: [] for group in remote}
    for row in _rows(rows, "members", problems):
        try:
            group, network = _id(row["security_group_id"], "security group id"), _network(row["ip"])
        except _ROW_ERRORS as exc:
            problems.add(f"security group member {_show(row.get('ip'))}: {_reason(exc)}, left out")
            continue
        if group in members:
            members[group].append(network)

    return Firewall(
        ports=dict(sorted(ports.filtered.items())),
        blocked=frozenset(ports.blocked),
        unfiltered=frozenset(ports.unfiltered),
        zones=dict(sorted(ports.zones.items())),
        rules={group: tuple(found) for group, found in sorted(rules.items())},
        members={group: tuple(_collapse(found)) for group, found in sorted(members.items())},
        problems=frozenset(problems),
    )


# --- the ruleset --------------------------------------------------------------------------------


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


def _element(network: Network) -> str:
    full = network.prefixlen == network.max_prefixlen
    return str(network.network_address) if full else str(network)


@dataclasses.dataclass(frozen=True)
class Ruleset:
    """The nft text of a firewall: the remote groups' sets apart from the rest, so that a change
    of members alone can be applied as set updates."""

    owner: str
    table: str
    sets: Mapping[str, tuple[str, ...]]  # the bridge table's named sets -> their elements
    bridge: tuple[str, ...]  # the bridge table's other declarations (maps and chains)
    inet: tuple[str, ...]  # the inet table's declarations

    def replace(self) -> str:
        """One transaction that replaces both tables (creating them first if they are missing,
        so that the deletes cannot fail): no moment without them."""
        out = []
        for family, body in (("bridge", self._bridge_body()), ("inet", self.inet)):
            out.append(f"table {family} {self.table} {{}}")
            out.append(f"delete table {family} {self.table}")
            out.append(f"table {family} {self.table} {{")
            out.append(f'\tcomment "{self.owner}"')
            out.extend(body)
            out.append("}")
        return "\n".join(out) + "\n"

    def _bridge_body(self) -> list[str]:
        body: list[str] = []
        for name, elements in self.sets.items():
            body.extend(
                _set(name, "ipv6_addr" if name.endswith("_v6") else "ipv4_addr", elements, interval=True)
            )
        return body + list(self.bridge)

    def update(self, before: Ruleset) -> str | None:
        """The set updates that turn `before` into this (one transaction, "" when nothing
        changed); None when more than the sets' elements changed."""
        if self._shape() != before._shape():
            return None
        out = []
        for name, elements in self.sets.items():
            if elements != before.sets[name]:
                out.append(f"flush set bridge {self.table} {name}")
                if elements:
                    out.append(f"add element bridge {self.table} {name} {{ {', '.join(elements)} }}")
        return "\n".join(out) + "\n" if out else ""

    def _shape(self) -> tuple[object, ...]:
        """All but the sets' elements."""
        return (self.owner, self.table, self.bridge, self.inet, tuple(self.sets))

    def changed_sets(self, before: Ruleset) -> int:
        return sum(1 for name, elements in self.sets.items() if before.sets.get(name) != elements)


def removal(owner: str) -> str:
    """One transaction that deletes both tables, whether they exist or not."""
    table = table_name(owner)
    return "".join(f"table {f} {table} {{}}\ndelete table {f} {table}\n" for f in ("bridge", "inet"))


def ruleset(firewall: Firewall, owner: str, before: Ruleset | None = None) -> Ruleset:
    """The firewall's nft text. `before`: the ruleset of a firewall that differs from this one
    in its members only, if there is one (then only the sets are rendered anew)."""
    check_owner(owner)
    if before is not None:
        return dataclasses.replace(before, sets=group_sets(firewall))
    return Ruleset(
        owner=owner,
        table=table_name(owner),
        sets=group_sets(firewall),
        bridge=tuple(_bridge(firewall)),
        inet=tuple(_inet(firewall)),
    )


def group_sets(firewall: Firewall) -> dict[str, tuple[str, ...]]:
    """The remote groups' named sets (an IPv4 and an IPv6 one per group) -> their elements."""
    sets: dict[str, tuple[str, ...]] = {}
    for group, networks in firewall.members.items():
        for ipv6 in (False, True):
            sets[set_name(group, ipv6)] = tuple(_element(n) for n in networks if (n.version == 6) == ipv6)
    return sets


def render(firewall: Firewall, owner: str) -> str:
    """The whole ruleset as one `nft -f` transaction that replaces our tables."""
    return ruleset(firewall, owner).replace()


def _set(name: str, kind: str, elements: Sequence[str], interval: bool = False) -> Iterator[str]:
    yield f"\tset {name} {{"
    yield f"\t\ttype {kind};" + (" flags interval;" if interval else "")
    if elements:
        yield "\t\telements = { " + ",\n\t\t\t".join(elements) + " }"
    yield "\t}"


def _map(name: str, verdicts: Mapping[str, str]) -> Iterator[str]:
    yield f"\tmap {name} {{"
    yield "\t\ttype ifname : verdict;"
    if verdicts:
        yield (
            "\t\telements = { " + ",\n\t\t\t".join(f'"{k}" : {v}' for k, v in sorted(verdicts.items())) + " }"
        )
    yield "\t}"


def _chain(name: str, statements: Iterable[str]) -> Iterator[str]:
    yield f"\tchain {name} {{"
    for statement in statements:
        yield f"\t\t{statement}"
    yield "\t}"


def _sources(firewall: Firewall, version: int) -> list[str]:
    """The (tap, MAC, source address) elements of the anti-spoofing set of an IP version."""
    return [
        f'"{tap}" . {mac} . {_element(network)}'
        for tap, port in firewall.ports.items()
        for mac, networks in port.sources(version).items()
        for network in networks
    ]


def _policies(firewall: Firewall, direction: Direction) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each port's rules of one direction as a chain, shared by the ports whose rules are the
    same (most share a project's default group): tap -> chain name, chain name -> statements."""
    taps: dict[str, str] = {}
    chains: dict[str, list[str]] = {}
    for tap, port in firewall.ports.items():
        rules = [
            r for group in port.groups for r in firewall.rules.get(group, ()) if r.direction is direction
        ]
        # Each rule only allows, so their order does not matter: sorted, the text is stable.
        statements = [*sorted({_rule_statement(rule) for rule in rules}), "drop"]
        digest = hashlib.sha256("\n".join(statements).encode()).hexdigest()[:16]
        name = f"{'out' if direction is Direction.EGRESS else 'in'}_{digest}"
        chains[name] = statements
        taps[tap] = f"goto {name}"
    return taps, dict(sorted(chains.items()))


def _bridge(firewall: Firewall) -> Iterator[str]:
    ports = firewall.ports
    yield from _set(
        "port_macs", "ifname . ether_addr", [f'"{t}" . {m}' for t, p in ports.items() for m in p.macs]
    )
    yield from _set("port_ipv4", "ifname . ether_addr . ipv4_addr", _sources(firewall, 4), interval=True)
    yield from _set("port_ipv6", "ifname . ether_addr . ipv6_addr", _sources(firewall, 6), interval=True)
    yield from _set("stateful_ports", "ifname", [f'"{t}"' for t, p in ports.items() if p.stateful])
    blocked = dict.fromkeys(firewall.blocked, "drop")
    yield from _map("egress_ports", dict.fromkeys(ports, "jump egress_guard") | blocked)
    yield from _map("ingress_ports", dict.fromkeys(ports, "jump ingress_guard") | blocked)
    egress, egress_chains = _policies(firewall, Direction.EGRESS)
    ingress, ingress_chains = _policies(firewall, Direction.INGRESS)
    yield from _map("egress_rules", egress)
    yield from _map("ingress_rules", ingress)
    # Priority filter (-200): before br_netfilter's forward hook (-1), which hands IP packets to
    # the inet forward hooks and then resumes the bridge's, skipping some (br_nf_hook_thresh).
    yield from _chain(
        "port_filter",
        [
            "type filter hook forward priority filter; policy accept;",
            "iifname vmap @egress_ports",
            "oifname vmap @ingress_ports",
        ],
    )
    yield from _chain("egress_guard", _egress_guard())
    yield from _chain("ingress_guard", _ingress_guard())
    for name, statements in (egress_chains | ingress_chains).items():
        yield from _chain(name, statements)


def _types(types: Iterable[int]) -> str:
    return "{ " + ", ".join(str(t) for t in types) + " }"


def _stateful(interface: str) -> list[str]:
    return [
        f"{interface} @stateful_ports meta mark & {INVALID:#x} != 0 drop",
        f"{interface} @stateful_ports meta mark & {ESTABLISHED:#x} != 0 return",
    ]


def _egress_guard() -> list[str]:
    """From a VM (jumped to for every port with port security): anti-spoofing and what IP needs,
    then conntrack, then the port's rules (a goto: their `return` allows, their `drop` drops)."""
    return [
        "iifname . ether saddr != @port_macs drop",
        "iifname . arp saddr ether . arp saddr ip @port_ipv4 return",
        "arp saddr ip 0.0.0.0 iifname . arp saddr ether @port_macs return",  # ARP probes
        "meta protocol != { ip, ip6 } drop",
        "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return",
        "meta protocol ip iifname . ether saddr . ip saddr != @port_ipv4 drop",
        f"ip6 saddr :: ip6 daddr ff02::/16 icmpv6 type {_types(ND_FROM_UNSPECIFIED)} return",
        "meta protocol ip6 iifname . ether saddr . ip6 saddr != @port_ipv6 drop",
        "udp sport 68 udp dport 67 return",
        "udp sport 67 udp dport 68 drop",
        "udp sport 546 udp dport 547 return",
        "udp sport 547 udp dport 546 drop",
        f"icmpv6 type {ROUTER_ADVERTISEMENT} drop",
        f"icmpv6 type {_types(ND_EGRESS)} return",
        *_stateful("iifname"),
        "iifname vmap @egress_rules",
        "drop",
    ]


def _ingress_guard() -> list[str]:
    """To a VM: ARP, DHCP replies and ND, then conntrack, then the port's rules."""
    return [
        "meta protocol arp return",
        "udp sport 67 udp dport 68 return",
        "udp sport 547 udp dport 546 return",
        f"icmpv6 type {_types(ND_INGRESS)} return",
        *_stateful("oifname"),
        "oifname vmap @ingress_rules",
        "drop",
    ]


def _rule_statement(rule: Rule) -> str:
    family = "ip6" if rule.ipv6 else "ip"
    parts = [f"meta protocol {family}"]
    peer = f"{family} {'saddr' if rule.direction is Direction.INGRESS else 'daddr'}"
    if rule.remote_group is not None:
        parts.append(f"{peer} @{set_name(rule.remote_group, rule.ipv6)}")
    elif rule.remote_prefix is not None:
        parts.append(f"{peer} {_element(rule.remote_prefix)}")
    parts.extend(_protocol_match(rule))
    parts.append("return")
    return " ".join(parts)


def _protocol_match(rule: Rule) -> list[str]:
    protocol = rule.protocol
    if protocol is None:
        return []
    if protocol in PORT_PROTOCOLS and rule.port_min is not None:
        ports = f"{rule.port_min}" if rule.port_min == rule.port_max else f"{rule.port_min}-{rule.port_max}"
        return [f"{PORT_PROTOCOLS[protocol]} dport {ports}"]
    if protocol in (ICMP, ICMPV6) and rule.port_min is not None:
        name = "icmpv6" if protocol == ICMPV6 else "icmp"
        match = [f"{name} type {rule.port_min}"]
        if rule.port_max is not None:
            match.append(f"{name} code {rule.port_max}")
        return match
    return [f"meta l4proto {protocol}"]


def _inet(firewall: Firewall) -> Iterator[str]:
    """Conntrack for our bridges' packets: a zone per network, the state in two mark bits (the
    bits cleared first: a mark from elsewhere must not pass for conntrack's word)."""
    yield from _set("bridges", "ifname", [f'"{bridge}"' for bridge in firewall.zones])
    zones = ", ".join(f'"{bridge}" : {number}' for bridge, number in firewall.zones.items())
    yield from _chain(
        "pre_zone",
        [
            "type filter hook prerouting priority raw; policy accept;",  # before conntrack looks
            *([f"iifname @bridges ct zone set iifname map {{ {zones} }}"] if zones else []),
        ],
    )
    yield from _chain(
        "pre_state",
        [
            "type filter hook prerouting priority mangle; policy accept;",  # after it has
            f"iifname @bridges meta mark set meta mark & {~(ESTABLISHED | INVALID) & 0xFFFFFFFF:#x}",
            f"iifname @bridges ct state established,related meta mark set meta mark | {ESTABLISHED:#x}",
            f"iifname @bridges ct state invalid meta mark set meta mark | {INVALID:#x}",
        ],
    )
