"""The nftables ruleset that enforces a host's security groups (`firewall.py` says what they
allow): a model of our two tables, element by element (`Ruleset`), its text as one transaction
that replaces both tables (`replace`), and the transaction that turns the tables of one model
into another's (`update`). Pure: nothing here touches the kernel; `nftables.py` applies.

The tables: one `bridge` and one `inet` table named `actorstack_<12 hex of sha256(owner)>`,
each with the owner as its comment. Conntrack does not exist in the bridge family here (no
nf_conntrack_bridge), but br_netfilter hands bridged IPv4 and IPv6 to the inet hooks with the
bridge as the input interface. So the inet table, for our bridges only (set `bridges`), puts each
network in a conntrack zone of its own (map `zones`) and copies each packet's conntrack state
into two bits of the packet mark. The bridge table's forward chain sends a packet from a
filtered tap to `egress_guard` and one to a filtered tap to `ingress_guard` (verdict maps by
interface name; a bad port's tap maps to drop). The guards do what every port needs, from named
sets keyed by tap (`port_macs`, `port_ipv4`, `port_ipv6`, `stateful_ports`), then `goto` the
port's rule chain (`out_<hash>`/`in_<hash>`: its groups' rules, then drop; ports with the same
rules share one). Nothing accepts: an allowed packet returns to the forward chain, so a packet
between two ports of this host passes the sender's egress and the receiver's ingress. Remote
groups are named sets (`sg_<group>_v4`/`_v6`). Rules are few and sets do the per-port work: the
kernel's cost grows with the number of sets in a transaction far faster than with rules (one
anonymous set per port and rule made a thousand ports take 20 s instead of 0.2 s).

So whatever differs between two firewalls is an element of a named set or map, a remote group's
set, or a rule chain, whose name is the hash of its statements (a chain's content never changes,
only which taps go to it); the hook chains and the guards are the same for every firewall.
`update` adds the new sets and chains, deletes and adds the changed elements, and deletes the
chains and sets nothing uses any more, in one transaction: all or nothing, so a tap whose rules
change goes from its old chain to its new one in one step, never through no filter. Its cost
follows the change, not the host's thousand ports (a full replace costs ~150 ms of `nft`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

from hostagent.network.firewall import (
    ICMP,
    ICMPV6,
    PORT_PROTOCOLS,
    Direction,
    Firewall,
    Network,
    PortFilter,
    Rule,
    check_owner,
    set_name,
    table_name,
)

ESTABLISHED = 0x20000000  # mark bit: conntrack says established or related
INVALID = 0x40000000  # mark bit: conntrack says invalid

# ICMPv6 that IPv6 needs whatever the rules say (Neutron's allowed types).
ND_FROM_UNSPECIFIED = (131, 135, 143)  # MLD reports and the NS of duplicate address detection
ND_EGRESS = (130, 131, 132, 133, 135, 136, 143)  # MLD, router and neighbour solicitation, NA
ND_INGRESS = (130, 131, 132, 134, 135, 136, 143)  # MLD, router advertisement, NS, NA
ROUTER_ADVERTISEMENT = 134

# The bridge table's sets keyed by tap: their type and whether they hold intervals.
PORT_SETS = {
    "port_macs": ("ifname . ether_addr", False),
    "port_ipv4": ("ifname . ether_addr . ipv4_addr", True),
    "port_ipv6": ("ifname . ether_addr . ipv6_addr", True),
    "stateful_ports": ("ifname", False),
}
MAPS = ("egress_ports", "ingress_ports", "egress_rules", "ingress_rules")  # tap -> verdict


@dataclasses.dataclass(frozen=True)
class Ruleset:
    """Our two tables, all that differs between two firewalls as elements and rule chains."""

    owner: str
    table: str
    sets: Mapping[str, frozenset[str]]  # the bridge table's sets (PORT_SETS, then sg_…) -> elements
    maps: Mapping[str, Mapping[str, str]]  # the bridge table's MAPS: tap -> verdict
    chains: Mapping[str, tuple[str, ...]]  # the rule chains: name -> statements
    zones: Mapping[str, int]  # the inet table's: bridge -> its conntrack zone

    def replace(self) -> str:
        """One transaction that replaces both tables (creating them first if they are missing,
        so that the deletes cannot fail): no moment without them."""
        out = []
        for family, body in (("bridge", self._bridge()), ("inet", self._inet())):
            out.append(f"table {family} {self.table} {{}}")
            out.append(f"delete table {family} {self.table}")
            out.append(f"table {family} {self.table} {{")
            out.append(f'\tcomment "{self.owner}"')
            out.extend(body)
            out.append("}")
        return "\n".join(out) + "\n"

    def _bridge(self) -> Iterator[str]:
        for name, elements in self.sets.items():
            yield from _set(name, elements)
        for name in MAPS:
            yield from _map(name, "type ifname : verdict", self.maps[name])
        yield from _chain("port_filter", PORT_FILTER)
        yield from _chain("egress_guard", EGRESS_GUARD)
        yield from _chain("ingress_guard", INGRESS_GUARD)
        for name, statements in self.chains.items():
            yield from _chain(name, statements)

    def _inet(self) -> Iterator[str]:
        yield from _declare("bridges", "ifname", False, [f'"{bridge}"' for bridge in self.zones])
        yield from _map("zones", "typeof iifname : ct zone", {k: str(v) for k, v in self.zones.items()})
        yield from _chain("pre_zone", PRE_ZONE)
        yield from _chain("pre_state", PRE_STATE)

    def update(self, before: Ruleset) -> Update | None:
        """The one transaction that turns the tables of `before` (what the kernel holds) into
        these, with counts of what it changes (no text and no counts when nothing differs);
        None when they are not the same tables (another owner): only a replace will do."""
        if (self.owner, self.table) != (before.owner, before.table) or self.maps.keys() != before.maps.keys():
            return None
        bridge, inet = f"bridge {self.table}", f"inet {self.table}"
        counts: collections.Counter[str] = collections.Counter()
        new_sets = [name for name in self.sets if name not in before.sets]
        new_chains = [name for name in self.chains if name not in before.chains]
        first: list[str] = []  # what the changed elements may name: new sets and chains
        if new_sets or new_chains:
            first.append(f"table {bridge} {{")
            for name in new_sets:
                first.extend(_set(name, self.sets[name]))
            for name in new_chains:
                first.extend(_chain(name, self.chains[name]))
            first.append("}")
        counts["firewall_sets_added"] = len(new_sets)
        counts["firewall_chains_added"] = len(new_chains)
        deleted: list[str] = []  # elements before added ones: a changed element is both
        added: list[str] = []
        for name, elements in self.sets.items():
            old = before.sets.get(name)
            if old is not None and old != elements:
                deleted.extend(_elements("delete", bridge, name, sorted(old - elements), counts))
                added.extend(_elements("add", bridge, name, sorted(elements - old), counts))
        for name, verdicts in self.maps.items():
            _map_changes(bridge, name, before.maps[name], verdicts, deleted, added, counts)
        zones = {bridge_: str(number) for bridge_, number in self.zones.items()}
        old_zones = {bridge_: str(number) for bridge_, number in before.zones.items()}
        _map_changes(inet, "zones", old_zones, zones, deleted, added, counts)
        deleted.extend(
            _elements("delete", inet, "bridges", [f'"{b}"' for b in old_zones.keys() - zones.keys()], counts)
        )
        added.extend(
            _elements("add", inet, "bridges", [f'"{b}"' for b in zones.keys() - old_zones.keys()], counts)
        )
        last = [f"delete chain {bridge} {name}" for name in before.chains if name not in self.chains]
        counts["firewall_chains_deleted"] = len(last)
        gone_sets = [name for name in before.sets if name not in self.sets]
        last += [f"delete set {bridge} {name}" for name in gone_sets]  # after the chains naming them
        counts["firewall_sets_deleted"] = len(gone_sets)
        lines = first + deleted + added + last
        return Update("\n".join(lines) + "\n" if lines else "", {k: n for k, n in counts.items() if n})


class Update(NamedTuple):
    text: str  # one nft transaction ("" when there is nothing to do)
    counts: dict[str, int]  # what it changes, for the log


def _elements(
    verb: str, table: str, name: str, elements: list[str], counts: collections.Counter[str]
) -> list[str]:
    """The command that adds (`verb` "add") or deletes ("delete") these elements, if any."""
    if not elements:
        return []
    counts["firewall_elements_added" if verb == "add" else "firewall_elements_deleted"] += len(elements)
    return [f"{verb} element {table} {name} {{ {', '.join(elements)} }}"]


def _map_changes(
    table: str,
    name: str,
    before: Mapping[str, str],
    after: Mapping[str, str],
    deleted: list[str],
    added: list[str],
    counts: collections.Counter[str],
) -> None:
    """A map's elements whose key went or whose value changed out, the new ones in."""
    if before == after:
        return
    gone = sorted(key for key, value in before.items() if after.get(key) != value)
    new = sorted(key for key, value in after.items() if before.get(key) != value)
    deleted.extend(_elements("delete", table, name, [f'"{key}"' for key in gone], counts))
    added.extend(_elements("add", table, name, [f'"{key}" : {after[key]}' for key in new], counts))


def removal(owner: str) -> str:
    """One transaction that deletes both tables, whether they exist or not."""
    table = table_name(owner)
    return "".join(f"table {f} {table} {{}}\ndelete table {f} {table}\n" for f in ("bridge", "inet"))


class _PortElements(NamedTuple):
    macs: tuple[str, ...]  # of port_macs
    ipv4: tuple[str, ...]  # of port_ipv4
    ipv6: tuple[str, ...]  # of port_ipv6


def _port_elements(port: PortFilter) -> _PortElements:
    tap = f'"{port.tap}"'
    return _PortElements(
        tuple(f"{tap} . {mac}" for mac in port.macs),
        *(
            tuple(
                f"{tap} . {mac} . {_element(network)}"
                for mac, networks in port.sources(version).items()
                for network in networks
            )
            for version in (4, 6)
        ),
    )


_GroupElements = tuple[frozenset[str], frozenset[str]]  # a remote group's IPv4 and IPv6 sets


def _group_elements(networks: Iterable[Network]) -> _GroupElements:
    v4: list[str] = []
    v6: list[str] = []
    for network in networks:
        (v6 if network.version == 6 else v4).append(_element(network))
    return frozenset(v4), frozenset(v6)


class Renderer:
    """`ruleset` with a memory of each port's elements and each remote group's, by object (a
    `Builder` hands the same PortFilter, and the same tuple of a group's addresses, for rows that
    did not change), so that a host of a thousand ports renders its firewall in a few
    milliseconds. Only what the last ruleset used is kept."""

    def __init__(self) -> None:
        self._ports: dict[int, tuple[PortFilter, _PortElements]] = {}  # id -> the port (kept alive)
        self._groups: dict[int, tuple[tuple[Network, ...], _GroupElements]] = {}  # id -> its members

    def ruleset(self, firewall: Firewall, owner: str) -> Ruleset:
        check_owner(owner)
        kept, self._ports = self._ports, {}
        kept_groups, self._groups = self._groups, {}
        macs: list[str] = []
        ipv4: list[str] = []
        ipv6: list[str] = []
        for port in firewall.ports.values():
            entry = kept.get(id(port))
            if entry is None or entry[0] is not port:
                entry = (port, _port_elements(port))
            self._ports[id(port)] = entry  # the same tuple, not a new one: see firewall.Builder
            elements = entry[1]
            macs.extend(elements.macs)
            ipv4.extend(elements.ipv4)
            ipv6.extend(elements.ipv6)
        sets = {
            "port_macs": frozenset(macs),
            "port_ipv4": frozenset(ipv4),
            "port_ipv6": frozenset(ipv6),
            "stateful_ports": frozenset(f'"{tap}"' for tap, port in firewall.ports.items() if port.stateful),
        }
        for group, networks in firewall.members.items():
            seen = kept_groups.get(id(networks))
            if seen is None or seen[0] is not networks:
                seen = (networks, _group_elements(networks))
            self._groups[id(networks)] = seen
            sets[set_name(group, False)], sets[set_name(group, True)] = seen[1]
        blocked = dict.fromkeys(firewall.blocked, "drop")
        egress, egress_chains = _policies(firewall, Direction.EGRESS)
        ingress, ingress_chains = _policies(firewall, Direction.INGRESS)
        return Ruleset(
            owner=owner,
            table=table_name(owner),
            sets=sets,
            maps={
                "egress_ports": dict.fromkeys(firewall.ports, "jump egress_guard") | blocked,
                "ingress_ports": dict.fromkeys(firewall.ports, "jump ingress_guard") | blocked,
                "egress_rules": egress,
                "ingress_rules": ingress,
            },
            chains=dict(sorted((egress_chains | ingress_chains).items())),
            zones=dict(firewall.zones),
        )


def ruleset(firewall: Firewall, owner: str) -> Ruleset:
    """The firewall's ruleset (a `Renderer` remembers ports from one call to the next)."""
    return Renderer().ruleset(firewall, owner)


def render(firewall: Firewall, owner: str) -> str:
    """The whole ruleset as one `nft -f` transaction that replaces our tables."""
    return ruleset(firewall, owner).replace()


def _element(network: Network) -> str:
    full = network.prefixlen == network.max_prefixlen
    return str(network.network_address) if full else str(network)


def _policies(firewall: Firewall, direction: Direction) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Each port's rules of one direction as a chain, shared by the ports whose rules are the
    same (most share a project's default group): tap -> its verdict, chain name -> statements."""
    taps: dict[str, str] = {}
    chains: dict[str, tuple[str, ...]] = {}
    verdicts: dict[tuple[str, ...], str] = {}  # a port's groups -> the verdict
    for tap, port in firewall.ports.items():
        verdict = verdicts.get(port.groups)
        if verdict is None:
            rules = [
                r for group in port.groups for r in firewall.rules.get(group, ()) if r.direction is direction
            ]
            # Each rule only allows, so their order does not matter: sorted, the text is stable.
            statements = (*sorted({_rule_statement(rule) for rule in rules}), "drop")
            digest = hashlib.sha256("\n".join(statements).encode()).hexdigest()[:16]
            name = f"{'out' if direction is Direction.EGRESS else 'in'}_{digest}"
            chains[name] = statements
            verdict = verdicts[port.groups] = f"goto {name}"
        taps[tap] = verdict
    return taps, chains


# --- the text -------------------------------------------------------------------------------------


def _declare(name: str, kind: str, interval: bool, elements: Iterable[str]) -> Iterator[str]:
    listed = sorted(elements)
    yield f"\tset {name} {{"
    yield f"\t\ttype {kind};" + (" flags interval;" if interval else "")
    if listed:
        yield "\t\telements = { " + ",\n\t\t\t".join(listed) + " }"
    yield "\t}"


def _set(name: str, elements: Iterable[str]) -> Iterator[str]:
    """A set of the bridge table: a port set or a remote group's."""
    kind, interval = PORT_SETS.get(name) or ("ipv6_addr" if name.endswith("_v6") else "ipv4_addr", True)
    return _declare(name, kind, interval, elements)


def _map(name: str, kind: str, values: Mapping[str, str]) -> Iterator[str]:
    yield f"\tmap {name} {{"
    yield f"\t\t{kind};"
    if values:
        yield "\t\telements = { " + ",\n\t\t\t".join(f'"{k}" : {v}' for k, v in sorted(values.items())) + " }"
    yield "\t}"


def _chain(name: str, statements: Iterable[str]) -> Iterator[str]:
    yield f"\tchain {name} {{"
    for statement in statements:
        yield f"\t\t{statement}"
    yield "\t}"


# --- the statements -------------------------------------------------------------------------------


def _types(types: Iterable[int]) -> str:
    return "{ " + ", ".join(str(t) for t in types) + " }"


def _stateful(interface: str) -> list[str]:
    return [
        f"{interface} @stateful_ports meta mark & {INVALID:#x} != 0 drop",
        f"{interface} @stateful_ports meta mark & {ESTABLISHED:#x} != 0 return",
    ]


def _egress_guard() -> tuple[str, ...]:
    """From a VM (jumped to for every port with port security): anti-spoofing and what IP needs,
    then conntrack, then the port's rules (a goto: their `return` allows, their `drop` drops)."""
    return (
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
    )


def _ingress_guard() -> tuple[str, ...]:
    """To a VM: ARP, DHCP replies and ND, then conntrack, then the port's rules."""
    return (
        "meta protocol arp return",
        "udp sport 67 udp dport 68 return",
        "udp sport 547 udp dport 546 return",
        f"icmpv6 type {_types(ND_INGRESS)} return",
        *_stateful("oifname"),
        "oifname vmap @ingress_rules",
        "drop",
    )


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


# Priority filter (-200): before br_netfilter's forward hook (-1), which hands IP packets to the
# inet forward hooks and then resumes the bridge's, skipping some (br_nf_hook_thresh).
PORT_FILTER = (
    "type filter hook forward priority filter; policy accept;",
    "iifname vmap @egress_ports",
    "oifname vmap @ingress_ports",
)
EGRESS_GUARD = _egress_guard()
INGRESS_GUARD = _ingress_guard()

# Conntrack for our bridges' packets: a zone per network, the state in two mark bits (the bits
# cleared first: a mark from elsewhere must not pass for conntrack's word).
PRE_ZONE = (
    "type filter hook prerouting priority raw; policy accept;",  # before conntrack looks
    "iifname @bridges ct zone set iifname map @zones",
)
PRE_STATE = (
    "type filter hook prerouting priority mangle; policy accept;",  # after it has
    f"iifname @bridges meta mark set meta mark & {~(ESTABLISHED | INVALID) & 0xFFFFFFFF:#x}",
    f"iifname @bridges ct state established,related meta mark set meta mark | {ESTABLISHED:#x}",
    f"iifname @bridges ct state invalid meta mark set meta mark | {INVALID:#x}",
)
