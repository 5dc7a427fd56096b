"""Security groups on the real kernel, with real packets: HostFirewall in a host namespace of the
test's own, with Linux bridges (`brq…`) whose ports are veths named like taps (`tap…`); the
other end of each sits in a namespace of its own that plays the VM, with the port's MAC and
addresses. Packets are busybox pings and Python sockets made inside those namespaces.

Everything is named after the run (`<run prefix>-fw…` namespaces, `astest:<run prefix>:…`
owner tags), and the sweeper removes the namespaces when a test ends, whatever happened; the
tables, bridges and veths go with them. Nothing is made in the root namespace.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostagent.network import kernel
from hostagent.network.desired import bridge_name, tap_name
from hostagent.network.firewall import Builder, build, table_name, zone
from hostagent.network.nftables import FirewallError, HostFirewall
from tests.hostagent.network.conftest import Sweeper, needs_root, owner_tag
from tests.hostagent.network.firewall_rows import ANY_ROWS

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("nft", path="/usr/sbin:/usr/bin:/sbin:/bin") is None, reason="no nft"),
]

_names = itertools.count(1)


def sh(
    *argv: str, check: bool = True, timeout: float = 15, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout, input=input)


def rule(
    group: str,
    direction: str = "ingress",
    protocol: str | None = None,
    ports: tuple[int, int | None] | None = None,
    ethertype: str = "IPv4",
    remote_group: str | None = None,
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "security_group_id": group,
        "direction": direction,
        "ethertype": ethertype,
        "protocol": protocol,
        "port_range_min": ports[0] if ports else None,
        "port_range_max": ports[1] if ports else None,
        "remote_ip_prefix": None,
        "remote_group_id": remote_group,
    }


def egress_any(group: str) -> list[dict[str, Any]]:
    """What Neutron's default group has: everything out."""
    return [rule(group, "egress"), rule(group, "egress", ethertype="IPv6")]


@dataclasses.dataclass
class Vm:
    namespace: str
    network_id: str
    port_id: str
    mac: str
    ip: str

    @property
    def tap(self) -> str:
        return tap_name(self.port_id)


class Lab:
    """A host namespace with our bridges, VMs on them, and the firewall; the test edits the rows
    (`ports`, `rules`, `members`) and applies them."""

    def __init__(self, sweeper: Sweeper) -> None:
        self.sweeper = sweeper
        self.host = sweeper.namespace(f"fwhost{next(_names)}")
        sh("ip", "netns", "add", self.host)
        sh("ip", "-n", self.host, "link", "set", "lo", "up")
        self.owner = owner_tag()
        self.firewall = HostFirewall(self.owner, netns=self.host)
        self.ports: dict[str, dict[str, Any]] = {}  # VM namespace -> its port row
        self.rules: list[dict[str, Any]] = []
        self.members: list[dict[str, Any]] = []
        self._closing: list[socket.socket] = []

    def close(self) -> None:
        for sock in self._closing:
            sock.close()

    # --- the topology ---

    def network(self) -> str:
        network_id = str(uuid.uuid4())
        self.bridge(bridge_name(network_id))
        return network_id

    def bridge(self, name: str) -> None:
        sh(
            "ip",
            "-n",
            self.host,
            "link",
            "add",
            name,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        )
        sh("ip", "-n", self.host, "link", "set", name, "up")

    def namespace(self, port: str, bridge: str | None, mac: str) -> str:
        """A namespace whose eth0 is the peer of `port` in the host namespace, on `bridge` (or
        on none: a link of the host's own)."""
        name = self.sweeper.namespace(f"fw{next(_names)}")
        sh("ip", "netns", "add", name)
        peer = ["peer", "name", "eth0", "address", mac, "netns", name]
        sh("ip", "-n", self.host, "link", "add", port, "type", "veth", *peer)
        sh("ip", "-n", self.host, "link", "set", port, *(["master", bridge] if bridge else []), "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        return name

    def vm(self, network_id: str, ip: str | None, *, address: bool = True, **port: Any) -> Vm:
        """A VM with a port on the network: its row (port security on, group `default`, unless
        `port` says otherwise) and its namespace, with the address configured unless not."""
        port_id, mac = str(uuid.uuid4()), "fa:16:3e:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:3])
        vm = Vm(
            self.namespace(tap_name(port_id), bridge_name(network_id), mac),
            network_id,
            port_id,
            mac,
            ip or "",
        )
        if ip and address:
            family = "-6" if ":" in ip else "-4"
            extra = ["nodad"] if ":" in ip else []
            sh(
                "ip",
                family,
                "-n",
                vm.namespace,
                "addr",
                "add",
                f"{ip}/{64 if ':' in ip else 24}",
                "dev",
                "eth0",
                *extra,
            )
            sh(
                "ip", family, "-n", vm.namespace, "route", "add", "default", "dev", "eth0"
            )  # any source routes back
        self.ports[vm.namespace] = {
            "port_id": port_id,
            "network_id": network_id,
            "mac": mac,
            "ips": [ip] if ip else [],
            "port_security_enabled": True,
            "allowed_address_pairs": [],
            "security_groups": ["default"],
            "stateful": True,
        } | port
        return vm

    def apply(self, **kwargs: Any) -> dict[str, int]:
        firewall = build({"ports": list(self.ports.values()), "rules": self.rules, "members": self.members})
        assert not firewall.problems, firewall.problems
        return self.firewall.apply(firewall, **kwargs)

    # --- traffic ---

    def in_namespace(self, namespace: str, family: int, kind: int) -> socket.socket:
        sock = kernel.run_in_namespace(namespace, socket.socket, family, kind)
        self._closing.append(sock)
        return sock

    def udp_listener(self, vm: Vm, port: int) -> socket.socket:
        sock = self.in_namespace(vm.namespace, socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("0.0.0.0", port))
        return sock

    def udp_send(self, vm: Vm, source: str, sport: int, destination: str, dport: int, payload: bytes) -> None:
        sock = self.in_namespace(vm.namespace, socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((source, sport))
        sock.sendto(payload, (destination, dport))
        sock.close()

    def tcp_listener(self, vm: Vm, port: int) -> socket.socket:
        sock = self.in_namespace(vm.namespace, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(16)
        return sock

    def tcp_connects(self, vm: Vm, ip: str, port: int, timeout: float = 2.0) -> bool:
        sock = self.in_namespace(vm.namespace, socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
            return True
        except OSError:
            return False
        finally:
            sock.close()


def pings(vm: Vm | str, ip: str, attempts: int = 1) -> bool:
    """One echo answered within a second (of `attempts` tries: a new ping process each time, so
    a new conntrack entry: busybox's echo id is its pid)."""
    namespace = vm.namespace if isinstance(vm, Vm) else vm
    command = "ping6" if ":" in ip else "ping"
    for _ in range(attempts):
        if (
            sh(
                "ip", "netns", "exec", namespace, "busybox", command, "-c", "1", "-W", "1", ip, check=False
            ).returncode
            == 0
        ):
            return True
    return False


def received(sock: socket.socket, timeout: float = 1.0) -> list[tuple[bytes, str]]:
    """What arrives on a UDP socket within `timeout` seconds: (payload, source address)."""
    got = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, (address, _) = sock.recvfrom(2048)
        except TimeoutError:
            break
        got.append((data, address))
    return got


def revoked(counts: dict[str, int]) -> dict[str, int]:
    """An apply's counts, having checked that it deleted conntrack entries (how many depends on
    how many pings it took to get an answer: each is an entry)."""
    counts = dict(counts)
    assert counts.pop("conntrack_entries_deleted", 0) >= 1, counts
    return counts


@pytest.fixture
def lab(sweeper: Sweeper) -> Iterator[Lab]:
    made = Lab(sweeper)
    try:
        yield made
    finally:
        made.close()  # the sweeper removes the namespaces, and the tables, bridges and veths with them


# --- filtering ----------------------------------------------------------------------------------------


def test_ingress_is_dropped_unless_a_rule_allows_it_and_rule_changes_apply_next_time(lab: Lab) -> None:
    net = lab.network()
    a, b = lab.vm(net, "10.50.0.1"), lab.vm(net, "10.50.0.2")
    lab.rules = egress_any("default")
    assert lab.apply() == {"firewall_replaced": 1}
    for port in (22, 23):
        lab.tcp_listener(b, port)
    assert not pings(a, b.ip) and not pings(b, a.ip)  # default drop, both ways
    assert not lab.tcp_connects(a, b.ip, 22, timeout=1)

    icmp, ssh = rule("default", protocol="icmp"), rule("default", protocol="tcp", ports=(22, 22))
    lab.rules += [icmp, ssh]
    # Not a replace: both taps go from their old ingress chain to the new one in one transaction.
    swapped = {
        "firewall_chains_added": 1,
        "firewall_elements_deleted": 2,
        "firewall_elements_added": 2,
        "firewall_chains_deleted": 1,
    }
    assert lab.apply() == swapped
    assert pings(a, b.ip, attempts=2) and pings(b, a.ip, attempts=2)
    assert lab.tcp_connects(a, b.ip, 22)
    assert not lab.tcp_connects(a, b.ip, 23, timeout=1)  # only the rule's port

    lab.rules.remove(icmp)
    assert revoked(lab.apply()) == swapped  # and the pings' entries, both ways
    assert not pings(a, b.ip)
    assert lab.tcp_connects(a, b.ip, 22)


def test_replies_to_egress_flows_come_back_to_a_stateful_port_only(lab: Lab) -> None:
    net = lab.network()
    client = lab.vm(net, "10.51.0.1", security_groups=["client"])
    server = lab.vm(net, "10.51.0.2", security_groups=["server"])
    lab.rules = [*egress_any("client"), *egress_any("server"), rule("server", protocol="icmp")]
    lab.apply()
    assert pings(client, server.ip, attempts=2)  # the echo reply is established: no ingress rule needed
    assert not pings(server, client.ip)  # the client allows nothing in

    lab.ports[client.namespace]["stateful"] = False  # Neutron's stateless group: only rules allow
    lab.apply()
    assert not pings(client, server.ip)
    lab.rules.append(rule("client", protocol="icmp"))
    lab.apply()
    assert pings(client, server.ip, attempts=2)


def test_a_remote_group_allows_its_members_and_a_membership_change_is_an_element_update(lab: Lab) -> None:
    net = lab.network()
    server = lab.vm(net, "10.52.0.1", security_groups=["server"])
    member = lab.vm(net, "10.52.0.2", security_groups=["clients"])
    other = lab.vm(net, "10.52.0.3", security_groups=["clients"])
    lab.rules = [*egress_any("clients"), rule("server", protocol="icmp", remote_group="clients")]
    lab.members = [{"security_group_id": "clients", "ip": member.ip}]
    lab.apply()
    assert pings(member, server.ip, attempts=2)
    assert not pings(other, server.ip)

    lab.members = [{"security_group_id": "clients", "ip": "10.52.0.0/30"}]  # a CIDR: .0 to .3
    assert lab.apply() == {"firewall_elements_deleted": 1, "firewall_elements_added": 1}
    assert pings(other, server.ip, attempts=2)

    lab.members = [{"security_group_id": "clients", "ip": other.ip}]
    assert revoked(lab.apply()) == {"firewall_elements_deleted": 1, "firewall_elements_added": 1}
    assert pings(other, server.ip, attempts=2)
    assert not pings(member, server.ip)


def test_a_bad_port_row_blocks_all_its_traffic(lab: Lab) -> None:
    net = lab.network()
    a, b = lab.vm(net, "10.53.0.1"), lab.vm(net, "10.53.0.2")
    lab.rules = [*egress_any("default"), rule("default", protocol="icmp")]
    lab.apply()
    assert pings(a, b.ip, attempts=2)
    lab.ports[b.namespace]["allowed_address_pairs"] = [{"ip_address": "10.53.0.300", "mac_address": None}]
    firewall = build({"ports": list(lab.ports.values()), "rules": lab.rules, "members": []})
    assert firewall.blocked == {b.tap} and len(firewall.problems) == 1
    lab.firewall.apply(firewall)
    assert not pings(a, b.ip) and not pings(b, a.ip)


# --- anti-spoofing ------------------------------------------------------------------------------------


def test_spoofed_addresses_and_macs_are_dropped_with_port_security_and_pass_without(lab: Lab) -> None:
    net = lab.network()
    target = lab.vm(net, "10.54.0.1", security_groups=["open"])
    sender = lab.vm(net, "10.54.0.2")
    lab.rules = [*egress_any("default"), rule("open", protocol="udp")]
    lab.apply()
    inbox = lab.udp_listener(target, 9000)

    def knows_target() -> None:
        """The sender knows the target's MAC, so only the packets are judged, not its ARP (a MAC
        change flushes the neighbour table, permanent entries too)."""
        entry = [target.ip, "lladdr", target.mac, "dev", "eth0", "nud", "permanent"]
        sh("ip", "-n", sender.namespace, "neigh", "replace", *entry)

    knows_target()
    sh("ip", "-n", sender.namespace, "addr", "add", "10.54.0.99/32", "dev", "eth0")

    def sends() -> set[str]:
        lab.udp_send(sender, sender.ip, 0, target.ip, 9000, b"real")
        lab.udp_send(sender, "10.54.0.99", 0, target.ip, 9000, b"spoofed address")
        return {data.decode() for data, _ in received(inbox)}

    assert sends() == {"real"}
    sh("ip", "-n", sender.namespace, "link", "set", "eth0", "address", "fa:16:3e:66:66:66")
    knows_target()
    assert sends() == set()  # a MAC not the port's: nothing passes

    lab.ports[sender.namespace]["port_security_enabled"] = False
    lab.apply()
    assert sends() == {"real", "spoofed address"}


def test_allowed_address_pairs_may_send_from_their_addresses(lab: Lab) -> None:
    net = lab.network()
    target = lab.vm(net, "10.55.0.1", security_groups=["open"])
    pairs = [
        {"ip_address": "10.55.0.50", "mac_address": None},
        {"ip_address": "10.55.9.0/24", "mac_address": None},
    ]
    sender = lab.vm(net, "10.55.0.2", allowed_address_pairs=pairs)
    lab.rules = [*egress_any("default"), rule("open", protocol="udp")]
    lab.apply()
    inbox = lab.udp_listener(target, 9000)
    for address in ("10.55.0.50", "10.55.9.7", "10.55.0.51"):
        sh("ip", "-n", sender.namespace, "addr", "add", f"{address}/32", "dev", "eth0")
        lab.udp_send(sender, address, 0, target.ip, 9000, address.encode())
    assert sorted(source for _, source in received(inbox)) == ["10.55.0.50", "10.55.9.7"]


def test_a_dhcp_client_broadcast_passes_and_a_vm_cannot_serve_dhcp(lab: Lab) -> None:
    net = lab.network()
    client = lab.vm(net, "10.56.0.5", address=False, security_groups=[])  # no address yet, no groups
    server = lab.vm(net, "10.56.0.2", port_security_enabled=False)  # as dnsmasq's port: unfiltered
    lab.apply()
    requests = lab.udp_listener(server, 67)
    udhcpc = ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "2", "-T", "1", "-s", "/bin/true"]
    sh("ip", "netns", "exec", client.namespace, *udhcpc, check=False, timeout=20)
    assert {source for _, source in received(requests)} == {"0.0.0.0"}  # its DHCPDISCOVERs got through

    sh("ip", "-n", client.namespace, "addr", "add", f"{client.ip}/24", "dev", "eth0")
    replies = lab.udp_listener(server, 68)
    lab.udp_send(client, client.ip, 67, "255.255.255.255", 68, b"DHCPOFFER from a VM")
    lab.udp_send(client, client.ip, 68, "255.255.255.255", 67, b"DHCPREQUEST")
    assert received(replies) == []
    assert [data for data, _ in received(requests)] == [b"DHCPREQUEST"]


def test_ipv6_neighbour_discovery_passes_and_rules_apply(lab: Lab) -> None:
    net = lab.network()
    a, b = lab.vm(net, "fd00:57::1"), lab.vm(net, "fd00:57::2")
    lab.rules = egress_any("default")
    lab.apply()
    assert not pings(a, b.ip)
    lab.rules.append(
        rule("default", protocol="ipv6-icmp", ports=(128, None), ethertype="IPv6")
    )  # echo request
    lab.apply()
    assert pings(a, b.ip, attempts=3) and pings(b, a.ip, attempts=3)  # after neighbour discovery


# --- conntrack zones ----------------------------------------------------------------------------------


def test_two_networks_with_the_same_addresses_keep_their_own_conntrack(lab: Lab) -> None:
    first, second = lab.network(), lab.network()
    a1, a2 = lab.vm(first, "10.58.0.1"), lab.vm(first, "10.58.0.2")
    b1, b2 = lab.vm(second, "10.58.0.1"), lab.vm(second, "10.58.0.2")
    lab.rules = [*egress_any("default"), rule("default", protocol="udp", ports=(7000, 7000))]
    lab.apply()
    a1_inbox, a2_inbox = lab.udp_listener(a1, 40000), lab.udp_listener(a2, 7000)
    b1_inbox = lab.udp_listener(b1, 40000)

    a1_inbox.sendto(b"request", (a2.ip, 7000))  # 10.58.0.1:40000 -> 10.58.0.2:7000, allowed
    assert received(a2_inbox) == [(b"request", a1.ip)]
    a2_inbox.sendto(b"reply", (a1.ip, 40000))  # its reply: established, though a1 allows no 40000
    assert received(a1_inbox) == [(b"reply", a2.ip)]

    # The same packet on the other network is no reply to anything there: a new flow, dropped.
    lab.udp_send(b2, b2.ip, 7000, b1.ip, 40000, b"reply?")
    assert received(b1_inbox) == []

    table = sh("ip", "netns", "exec", lab.host, "cat", "/proc/net/nf_conntrack").stdout
    flow = [line for line in table.splitlines() if "sport=40000 dport=7000" in line and "udp" in line]
    assert len(flow) == 1 and f"zone={zone(first)} " in flow[0], table


# --- what is not ours ---------------------------------------------------------------------------------


def test_the_hosts_own_traffic_a_foreign_bridge_and_a_foreign_table_are_untouched(lab: Lab) -> None:
    net = lab.network()
    a, b = lab.vm(net, "10.59.0.1"), lab.vm(net, "10.59.0.2")
    lab.rules = egress_any("default")
    lab.bridge("br-foreign")
    f1, f2 = (
        lab.namespace("vethf1", "br-foreign", "02:00:00:00:00:01"),
        lab.namespace("vethf2", "br-foreign", "02:00:00:00:00:02"),
    )
    sh("ip", "-n", f1, "addr", "add", "10.59.1.1/24", "dev", "eth0")
    sh("ip", "-n", f2, "addr", "add", "10.59.1.2/24", "dev", "eth0")
    uplink = lab.namespace("uplink0", None, "02:00:00:00:00:03")  # the host's own link
    sh("ip", "-n", lab.host, "addr", "add", "10.59.2.1/24", "dev", "uplink0")
    sh("ip", "-n", uplink, "addr", "add", "10.59.2.2/24", "dev", "eth0")
    foreign = "table inet hostfw { chain input { type filter hook input priority 0; counter; }; }"
    sh("ip", "netns", "exec", lab.host, "nft", "-f", "-", input=foreign)
    lab.apply()

    assert not pings(a, b.ip)  # ours is filtered
    assert pings(f1, "10.59.1.2", attempts=2) and pings(f2, "10.59.1.1", attempts=2)
    assert pings(lab.host, "10.59.2.2", attempts=2) and pings(uplink, "10.59.2.1", attempts=2)
    assert lab.firewall.remove()
    listed = sh("ip", "netns", "exec", lab.host, "nft", "list", "table", "inet", "hostfw").stdout
    assert "counter packets" in listed and "hook input" in listed


def test_a_table_of_our_name_that_is_not_ours_is_never_touched(lab: Lab) -> None:
    impostor = f'table bridge {table_name(lab.owner)} {{\n\tcomment "someone else"\n}}\n'
    sh("ip", "netns", "exec", lab.host, "nft", "-f", "-", input=impostor)
    with pytest.raises(FirewallError, match="not ours"):
        lab.apply()
    with pytest.raises(FirewallError, match="not ours"):
        lab.firewall.remove()
    listed = sh(
        "ip", "netns", "exec", lab.host, "nft", "list", "table", "bridge", table_name(lab.owner)
    ).stdout
    assert 'comment "someone else"' in listed


# --- replacing, adopting, updating, removing -------------------------------------------------------------


def _echo(server: socket.socket, stop: threading.Event) -> None:
    conn, _ = server.accept()
    with conn:
        conn.settimeout(0.2)
        while not stop.is_set():
            try:
                data = conn.recv(1024)
            except TimeoutError:
                continue
            if not data:
                return
            conn.sendall(data)


def test_replacing_the_ruleset_keeps_an_open_connection_and_never_opens_a_gap(lab: Lab) -> None:
    net = lab.network()
    client, server = lab.vm(net, "10.60.0.1"), lab.vm(net, "10.60.0.2")
    intruder = lab.vm(net, "10.60.0.3")
    lab.rules = [*egress_any("default"), rule("default", protocol="tcp", ports=(7000, 7000))]
    lab.apply()
    stop = threading.Event()
    echo = threading.Thread(target=_echo, args=(lab.tcp_listener(server, 7000), stop), daemon=True)
    echo.start()
    conn = lab.in_namespace(client.namespace, socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(3)
    conn.connect((server.ip, 7000))
    inbox = lab.udp_listener(server, 9999)  # nothing allows it, at any moment

    def flood() -> None:
        sock = lab.in_namespace(intruder.namespace, socket.AF_INET, socket.SOCK_DGRAM)
        while not stop.is_set():
            sock.sendto(b"x", (server.ip, 9999))
            time.sleep(0.0005)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        for round_ in range(12):
            if round_ % 2:
                lab.rules.append(rule("default", protocol="udp", ports=(5353, 5353)))  # another chain
            else:
                lab.rules = lab.rules[:3]
            assert lab.apply(full=True) == {"firewall_replaced": 1}
            if round_ == 6:  # the agent restarts: a new HostFirewall adopts the tables
                lab.firewall = HostFirewall(lab.owner, netns=lab.host)
            message = f"round {round_}".encode()
            conn.sendall(message)
            assert conn.recv(1024) == message
    finally:
        stop.set()
        flooder.join(5)
        echo.join(5)
    assert received(inbox, timeout=0.5) == []
    lab.firewall.remove()  # the control: without the filter, the intruder's packets arrive
    lab.udp_send(intruder, intruder.ip, 0, server.ip, 9999, b"x")
    assert received(inbox) == [(b"x", intruder.ip)]


def test_removing_a_rule_cuts_the_connections_it_admitted_and_only_those(lab: Lab) -> None:
    net = lab.network()
    client, server = lab.vm(net, "10.61.0.1"), lab.vm(net, "10.61.0.2")
    kept, cut = (
        rule("default", protocol="tcp", ports=(7001, 7001)),
        rule("default", protocol="tcp", ports=(7000, 7000)),
    )
    lab.rules = [*egress_any("default"), kept, cut]
    lab.apply()
    stop = threading.Event()
    connections = {}
    echoes = []
    for port in (7000, 7001):
        echo = threading.Thread(target=_echo, args=(lab.tcp_listener(server, port), stop), daemon=True)
        echo.start()
        echoes.append(echo)
        conn = lab.in_namespace(client.namespace, socket.AF_INET, socket.SOCK_STREAM)
        conn.settimeout(3)
        conn.connect((server.ip, port))
        conn.sendall(b"before")
        assert conn.recv(1024) == b"before"
        connections[port] = conn
    try:
        lab.rules.remove(cut)
        counts = lab.apply()
        assert counts.get("conntrack_entries_deleted") == 1, counts
        kept_conn, cut_conn = connections[7001], connections[7000]
        kept_conn.sendall(b"after")
        assert kept_conn.recv(1024) == b"after"  # its rule is still there: untouched
        cut_conn.settimeout(2)
        cut_conn.sendall(b"after")
        with pytest.raises(TimeoutError):
            cut_conn.recv(1024)  # tracked anew, it is a new connection no rule admits
        assert not lab.tcp_connects(client, server.ip, 7000, timeout=1)
    finally:
        stop.set()
        for conn in connections.values():
            conn.close()
        for echo in echoes:
            echo.join(5)


def _same_as_a_replace(lab: Lab) -> None:
    """The tables the lab's firewall made (by updates) are those a full replace makes."""
    made = lab.firewall.state()
    assert set(made) == {"bridge", "inet"}
    lab.firewall = HostFirewall(lab.owner, netns=lab.host)  # it knows nothing: it replaces
    assert lab.apply() == {"firewall_replaced": 1}
    assert lab.firewall.state() == made
    assert lab.apply() == {}  # nothing changed: nothing done


def test_updates_and_a_full_replace_leave_the_same_tables(lab: Lab) -> None:
    net = lab.network()
    vms = [lab.vm(net, f"10.61.0.{i + 1}", security_groups=["default", f"g{i % 2}"]) for i in range(4)]
    lab.rules = [
        *egress_any("default"),
        rule("g0", protocol="tcp", ports=(22, 22), remote_group="g1"),
        rule("g1", ethertype="IPv6", remote_group="g0"),
    ]
    lab.members = [
        {"security_group_id": "g1", "ip": "10.61.0.2"},
        {"security_group_id": "g0", "ip": "fd00::1"},
    ]
    assert lab.apply() == {"firewall_replaced": 1}

    def updated() -> dict[str, int]:
        counts = lab.apply()
        assert counts and "firewall_replaced" not in counts, counts
        return counts

    lab.members = [  # members: elements of the groups' sets
        {"security_group_id": "g1", "ip": "10.61.0.4"},
        {"security_group_id": "g1", "ip": "10.61.1.0/24"},
        {"security_group_id": "g0", "ip": "fd00::3"},
        {"security_group_id": "g0", "ip": "fd00:1::/64"},
    ]
    assert updated() == {"firewall_elements_deleted": 2, "firewall_elements_added": 4}
    _same_as_a_replace(lab)

    lab.rules.append(rule("g1", protocol="udp", ports=(53, 53), remote_group="g2"))  # a new chain and set
    lab.members.append({"security_group_id": "g2", "ip": "10.61.2.0/25"})
    assert updated()["firewall_sets_added"] == 2
    _same_as_a_replace(lab)

    other = lab.network()  # a port on another network (a new zone), one gone, one in other groups
    lab.vm(other, "10.62.0.1", security_groups=["g2"], stateful=False)
    del lab.ports[vms[0].namespace]
    lab.ports[vms[1].namespace]["security_groups"] = ["g0"]
    pair = {"ip_address": "10.61.9.0/24", "mac_address": None}
    lab.ports[vms[2].namespace]["allowed_address_pairs"] = [pair]
    updated()
    _same_as_a_replace(lab)

    lab.rules = lab.rules[:-1]  # g2 is no group's remote group any more: its sets go
    lab.ports[vms[2].namespace]["port_security_enabled"] = False
    assert updated()["firewall_sets_deleted"] == 2
    _same_as_a_replace(lab)


def test_an_update_the_kernel_refuses_falls_back_to_a_replace(lab: Lab) -> None:
    net = lab.network()
    vm = lab.vm(net, "10.63.0.1")
    lab.members = [{"security_group_id": "default", "ip": "10.63.0.1"}]
    lab.rules = [rule("default", protocol="icmp", remote_group="default")]
    lab.apply()
    group_set = ["bridge", table_name(lab.owner), "sg_default_v4"]
    sh("ip", "netns", "exec", lab.host, "nft", "flush", "set", *group_set)  # behind the firewall's back
    lab.members = [{"security_group_id": "default", "ip": "10.63.0.2"}]  # the delete of .1 fails
    assert lab.apply() == {"firewall_update_failed": 1, "firewall_replaced": 1}
    listed = sh("ip", "netns", "exec", lab.host, "nft", "list", "set", *group_set).stdout
    assert "10.63.0.2" in listed and vm.ip not in listed


@pytest.fixture
def two_hosts(sweeper: Sweeper) -> tuple[str, str]:
    """Two empty host namespaces (made once per test: hypothesis runs its examples in them)."""
    names = sweeper.namespace(f"fwhost{next(_names)}"), sweeper.namespace(f"fwhost{next(_names)}")
    for name in names:
        sh("ip", "netns", "add", name)
    return names


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(ANY_ROWS, min_size=2, max_size=5))
def test_any_sequence_of_updates_leaves_the_tables_a_replace_makes(
    two_hosts: tuple[str, str], steps: list[Any]
) -> None:
    """Firewalls one after the other, as passes see them: each is applied as an update of the
    one before (never a replace, never refused) and leaves what a full replace leaves."""
    owner = owner_tag()
    updated, replaced = (HostFirewall(owner, netns=host) for host in two_hosts)
    builder = Builder()
    try:
        for number, data in enumerate(steps):
            firewall = builder.build(data)
            counts = updated.apply(firewall)
            assert ("firewall_replaced" in counts) == (number == 0), counts
            replaced.apply(firewall, full=True)
            assert updated.state() == replaced.state()
    finally:
        updated.remove()
        replaced.remove()


def test_bridge_netfilter_is_turned_on_where_it_is_off(lab: Lab) -> None:
    for name in ("iptables", "ip6tables"):
        sh("ip", "netns", "exec", lab.host, "sysctl", "-qw", f"net.bridge.bridge-nf-call-{name}=0")
    assert lab.apply() == {"firewall_replaced": 1, "bridge_netfilter_enabled": 2}
    for name in ("iptables", "ip6tables"):
        assert (
            sh(
                "ip", "netns", "exec", lab.host, "sysctl", "-n", f"net.bridge.bridge-nf-call-{name}"
            ).stdout.strip()
            == "1"
        )


def test_remove_leaves_no_table(lab: Lab) -> None:
    net = lab.network()
    lab.vm(net, "10.62.0.1")
    lab.apply()
    assert lab.firewall.tables() == ["bridge", "inet"]
    assert lab.firewall.remove()
    assert lab.firewall.tables() == []
    assert table_name(lab.owner) not in sh("ip", "netns", "exec", lab.host, "nft", "list", "tables").stdout
    assert not lab.firewall.remove()  # nothing left to remove
    assert lab.firewall.state() == {}
