"""The desired state from database rows, and dnsmasq's files and command line from it: pure
functions, no kernel, no database. What reaches a name, a path or a dnsmasq file is validated."""

from __future__ import annotations

import os
import pwd
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from hostagent.network import dnsmasq
from hostagent.network.desired import DhcpHost, build, dhcp_interface_name, namespace_name, tap_name

NET = "6b1d3c2e-8f4a-4b1e-9c7d-0a1b2c3d4e5f"
SUBNET = "aaaaaaaa-1111-4222-8333-444444444444"
DHCP_PORT = "dddddddd-0000-4000-8000-000000000001"


def tap_row(
    port: str = "p1", server: str = "s1", mac: str = "fa:16:3e:00:00:01", **extra: Any
) -> dict[str, Any]:
    return {
        "port_id": port,
        "network_id": NET,
        "mac": mac,
        "server_id": server,
        "up": True,
        "mtu": 1450,
    } | extra


def subnet_row(
    subnet: str = SUBNET, cidr: str = "10.1.0.0/24", gateway: str | None = "10.1.0.1", **extra: Any
) -> dict[str, Any]:
    return {
        "id": subnet,
        "network_id": NET,
        "cidr": cidr,
        "gateway_ip": gateway,
        "dns_nameservers": ["192.0.2.53"],
        "host_routes": [],
    } | extra


def address_row(
    port: str,
    ip: str,
    mac: str,
    *,
    hostname: str | None = None,
    owner: str = "compute:nova",
    subnet: str = SUBNET,
    device: str = "",
) -> dict[str, Any]:
    return {
        "network_id": NET,
        "subnet_id": subnet,
        "ip": ip,
        "port_id": port,
        "mac": mac,
        "device_owner": owner,
        "device_id": device,
        "hostname": hostname,
    }


DHCP_ROW = address_row(DHCP_PORT, "10.1.0.2", "fa:16:3e:00:00:02", owner="network:dhcp", device=f"dhcp-{NET}")


def test_a_network_with_a_tap_gets_its_bridge_and_dhcp() -> None:
    desired = build(
        [tap_row()],
        [subnet_row()],
        [
            DHCP_ROW,
            address_row("p1", "10.1.0.10", "fa:16:3e:00:00:01", hostname="vm-1"),
            address_row("p9", "10.1.0.11", "fa:16:3e:00:00:09"),
        ],
    )  # a port bound elsewhere
    net = desired.networks[NET]
    assert (net.bridge, net.mtu, [t.name for t in net.taps]) == ("brq6b1d3c2e-8f", 1450, ["tapp1"])
    assert net.taps[0].host_mac == "fe:16:3e:00:00:01"
    dhcp = net.dhcp
    assert dhcp is not None
    assert (dhcp.namespace, dhcp.interface, dhcp.veth) == (
        namespace_name(NET),
        dhcp_interface_name(DHCP_PORT),
        tap_name(DHCP_PORT),
    )
    assert dhcp.interface == "ns-dddddddd-00" and dhcp.veth == "tapdddddddd-00"
    assert dhcp.addresses == {IPv4Interface("10.1.0.2/24"), IPv4Interface("169.254.169.254/32")}
    assert dhcp.hosts == (
        DhcpHost("fa:16:3e:00:00:01", "vm-1", IPv4Address("10.1.0.10")),
        DhcpHost("fa:16:3e:00:00:09", "host-10-1-0-11", IPv4Address("10.1.0.11")),
    )
    assert desired.problems == frozenset()


def test_without_a_dhcp_port_there_is_no_dhcp() -> None:
    desired = build([tap_row()], [subnet_row()], [address_row("p1", "10.1.0.10", "fa:16:3e:00:00:01")])
    assert desired.networks[NET].dhcp is None
    assert build([tap_row()], [], [DHCP_ROW]).networks[NET].dhcp is None  # no DHCP-enabled subnet


def test_a_subnet_where_the_dhcp_port_has_no_address_is_not_served() -> None:
    other = "bbbbbbbb-1111-4222-8333-444444444444"
    desired = build([tap_row()], [subnet_row(), subnet_row(other, "10.2.0.0/24", "10.2.0.1")], [DHCP_ROW])
    assert [s.id for s in desired.networks[NET].dhcp.subnets] == [SUBNET]  # type: ignore[union-attr]
    assert any(other in p for p in desired.problems)


def test_bad_rows_are_left_out_and_reported() -> None:
    desired = build(
        [
            tap_row(),
            tap_row("p2", mac="not-a-mac"),
            tap_row("../p3", mac="fa:16:3e:00:00:03"),
            tap_row("p4", mac="01:00:5e:00:00:01"),
        ],  # multicast
        [
            subnet_row(
                dns_nameservers=["192.0.2.53", "2001:db8::1", "x; rm -rf"],
                host_routes=[
                    {"destination": "198.51.100.0/24", "nexthop": "10.1.0.254"},
                    {"destination": "bad", "nexthop": "10.1.0.254"},
                ],
            )
        ],
        [
            DHCP_ROW,
            address_row("p1", "10.1.0.10", "fa:16:3e:00:00:01", hostname="Evil\nname"),
            address_row("p5", "10.1.0.12", "FA:16:3E:00:00:05"),
        ],
    )
    net = desired.networks[NET]
    assert [t.port_id for t in net.taps] == ["p1"]
    subnet = net.dhcp.subnets[0]  # type: ignore[union-attr]
    assert subnet.dns == (IPv4Address("192.0.2.53"),)
    assert subnet.routes == ((IPv4Network("198.51.100.0/24"), IPv4Address("10.1.0.254")),)
    # a bad hostname falls back to the address's name; a bad MAC gets no entry
    assert net.dhcp.hosts == (DhcpHost("fa:16:3e:00:00:01", "host-10-1-0-10", IPv4Address("10.1.0.10")),)  # type: ignore[union-attr]
    assert len(desired.problems) == 8


@pytest.mark.parametrize(
    "mac, hostname",
    [
        ("fa:16:3e:00:00:01", "a,b"),
        ("fa:16:3e:00:00:01", "a\nb"),
        ("fa:16:3e:00:00:01\n", "a"),
        ("fa:16:3e:00:00:01", ""),
    ],
)
def test_a_dhcp_host_refuses_what_dnsmasq_must_never_read(mac: str, hostname: str) -> None:
    with pytest.raises(ValueError):
        DhcpHost(mac, hostname, IPv4Address("10.0.0.1"))


def test_dnsmasq_files_and_command() -> None:
    desired = build(
        [tap_row()],
        [
            subnet_row(host_routes=[{"destination": "198.51.100.0/24", "nexthop": "10.1.0.254"}]),
            subnet_row("cccccccc-1111-4222-8333-444444444444", "10.3.0.0/16", None, dns_nameservers=[]),
        ],
        [
            DHCP_ROW,
            address_row(
                DHCP_PORT,
                "10.3.0.2",
                "fa:16:3e:00:00:02",
                owner="network:dhcp",
                subnet="cccccccc-1111-4222-8333-444444444444",
                device=f"dhcp-{NET}",
            ),
            address_row("p1", "10.1.0.10", "fa:16:3e:00:00:01", hostname="vm-1"),
        ],
    )
    spec = desired.networks[NET].dhcp
    assert spec is not None
    assert dnsmasq.hosts_file(spec) == "fa:16:3e:00:00:01,vm-1,10.1.0.10\n"
    t1, t2 = f"tag:subnet-{SUBNET}", "tag:subnet-cccccccc-1111-4222-8333-444444444444"
    routes1 = "169.254.169.254/32,10.1.0.2,198.51.100.0/24,10.1.0.254,0.0.0.0/0,10.1.0.1"
    assert dnsmasq.opts_file(spec).splitlines() == [
        f"{t1},option:router,10.1.0.1",
        f"{t1},option:dns-server,192.0.2.53",
        f"{t1},option:mtu,1450",
        f"{t1},option:classless-static-route,{routes1}",
        f"{t1},249,{routes1}",
        # no gateway: no router (else dnsmasq offers itself), no default route; no DNS servers
        f"{t2},option:router",
        f"{t2},option:dns-server",
        f"{t2},option:mtu,1450",
        f"{t2},option:classless-static-route,169.254.169.254/32,10.3.0.2",
        f"{t2},249,169.254.169.254/32,10.3.0.2",
    ]
    paths = dnsmasq.Paths(Path("/state/net"))
    argv = dnsmasq.command(spec, paths, "nobody", "nogroup")
    assert os.path.basename(argv[0]) == "dnsmasq"
    assert argv[1:] == [
        "--no-hosts",
        "--no-resolv",
        "--port=0",
        "--bind-interfaces",
        "--interface=ns-dddddddd-00",
        "--except-interface=lo",
        "--pid-file=/state/net/pid",
        "--dhcp-hostsfile=/state/net/host",
        "--dhcp-optsfile=/state/net/opts",
        "--dhcp-leasefile=/state/net/leases",
        f"--dhcp-range=set:subnet-{SUBNET},10.1.0.0,static,255.255.255.0,86400s",
        "--dhcp-range=set:subnet-cccccccc-1111-4222-8333-444444444444,10.3.0.0,static,255.255.0.0,86400s",
        "--dhcp-lease-max=65792",
        "--dhcp-authoritative",
        "--conf-file=/dev/null",
        "--user=nobody",
        "--group=nogroup",
        "--keep-in-foreground",
    ]


def test_dnsmasq_drops_to_nobody_only_where_nobody_can_read(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert dnsmasq.privileges(private / "network") == ("root", "root")
    public = Path("/")
    expected = "nobody" if _has_nobody() else "root"
    assert dnsmasq.privileges(public / "nonexistent-dir-for-test")[0] == expected


def _has_nobody() -> bool:
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return False
    return True


def test_files_are_rewritten_only_when_they_change(tmp_path: Path) -> None:
    path = tmp_path / "host"
    assert dnsmasq.write_if_changed(path, "a\n")
    assert not dnsmasq.write_if_changed(path, "a\n")
    assert dnsmasq.write_if_changed(path, "b\n")
    assert path.read_text() == "b\n" and path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["host"]


def remote_row(port: str, mac: str, vtep: str, *ips: str) -> dict[str, Any]:
    return {"port_id": port, "network_id": NET, "mac": mac, "tunnel_ip": vtep, "ips": list(ips)}


def test_a_vxlan_network_floods_to_the_hosts_with_ports_and_knows_their_macs() -> None:
    """l2population: the forwarding entries are each remote port's MAC at its host's VTEP and the
    all-zeroes MAC once per such host (and to no other); ARP entries for the remote addresses."""
    taps = [tap_row(network_type="vxlan", segmentation_id=4242)]
    remotes = [
        remote_row("r1", "fa:16:3e:00:00:11", "198.18.0.12", "10.1.0.11"),
        remote_row("r2", "fa:16:3e:00:00:12", "198.18.0.12", "10.1.0.12"),
        remote_row("r3", "fa:16:3e:00:00:13", "198.18.0.13", "10.1.0.13"),
    ]
    net = build(taps, [], [], remotes).networks[NET]
    assert net.vni == 4242 and net.vxlan == "vxlan-4242"
    assert net.vteps == (IPv4Address("198.18.0.12"), IPv4Address("198.18.0.13"))
    assert net.fdb() == {
        ("00:00:00:00:00:00", "198.18.0.12"),
        ("00:00:00:00:00:00", "198.18.0.13"),
        ("fa:16:3e:00:00:11", "198.18.0.12"),
        ("fa:16:3e:00:00:12", "198.18.0.12"),
        ("fa:16:3e:00:00:13", "198.18.0.13"),
    }
    assert net.neighbours() == {
        ("10.1.0.11", "fa:16:3e:00:00:11"),
        ("10.1.0.12", "fa:16:3e:00:00:12"),
        ("10.1.0.13", "fa:16:3e:00:00:13"),
    }


def test_remote_rows_that_are_not_well_formed_are_left_out() -> None:
    taps = [tap_row(network_type="vxlan", segmentation_id=7)]
    remotes = [
        remote_row("bad-vtep", "fa:16:3e:00:00:11", "not an address", "10.1.0.11"),
        remote_row("bad-mac", "01:00:5e:00:00:01", "198.18.0.12", "10.1.0.12"),  # multicast
        remote_row("bad-ip", "fa:16:3e:00:00:13", "198.18.0.13", "10.1.0.300"),
        remote_row("good", "fa:16:3e:00:00:14", "198.18.0.14", "10.1.0.14"),
    ]
    desired = build(taps, [], [], remotes)
    assert desired.networks[NET].fdb() == {
        ("00:00:00:00:00:00", "198.18.0.14"),
        ("fa:16:3e:00:00:14", "198.18.0.14"),
    }
    assert len(desired.problems) == 3


def test_a_local_network_or_a_bad_vni_has_no_tunnel() -> None:
    remotes = [remote_row("r1", "fa:16:3e:00:00:11", "198.18.0.12", "10.1.0.11")]
    for extra in (
        {"network_type": "local", "segmentation_id": None},
        {"network_type": "vxlan", "segmentation_id": 2**24},
    ):
        net = build([tap_row(**extra)], [], [], remotes).networks[NET]
        assert net.vni is None and net.vxlan is None and net.fdb() == frozenset() and net.remotes == ()
