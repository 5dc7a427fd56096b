"""HostNetworking on the real kernel against the test database: bridges, taps, the qdhcp
namespace, dnsmasq leasing to guests (client namespaces running busybox udhcpc) and the
metadata service answering each guest with its own data only; unplug, restart (adoption) and
the removal of orphans, never of links that are not ours."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import uuid
from pathlib import Path

import asyncpg
import pytest

from hostagent.network import HostNetworking, NetworkingError, Vif, dnsmasq, kernel
from hostagent.network.desired import bridge_name, dhcp_interface_name, namespace_name, tap_name
from tests.conftest import RUN_PREFIX
from tests.hostagent.network.conftest import (
    HEX,
    OWNER_PREFIX,
    StartNetworking,
    Sweeper,
    Topology,
    add_client,
    add_server,
    configure,
    dhcp_lease,
    http_get,
    json_body,
    make_topology,
    needs_root,
    owner_tag,
    remove_client,
)

pytestmark = needs_root


def _link(name: str) -> kernel.Link | None:
    with kernel.iproute() as ipr:
        return kernel.find(ipr, name)


async def link(name: str) -> kernel.Link | None:
    """The link now (netlink runs in a thread: pyroute2's sync API needs a loop of its own)."""
    return await asyncio.to_thread(_link, name)


def dnsmasq_of(networking: HostNetworking, network_id: str) -> dnsmasq.Running | None:
    return dnsmasq.running(dnsmasq.Paths(networking.settings.state_dir / network_id))


def _addresses_here(name: str) -> set[str]:
    with kernel.iproute() as ipr:
        index = ipr.link_lookup(ifname=name)[0]
        return {
            f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ipr.addr("dump", index=index, family=socket.AF_INET)
        }


def sysctl(path: str) -> str:
    """A setting of the root namespace (this thread is in it)."""
    return Path(f"/proc/sys/net/{path}").read_text().strip()


def _addresses_root(index: int) -> list[object]:
    with kernel.iproute() as ipr:
        return list(ipr.addr("dump", index=index))


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("169.254.169.254", port), timeout=2).close()
        return True
    except OSError:
        return False


def listening(namespace: str, port: int = 80) -> bool:
    """Whether something accepts connections on 169.254.169.254:<port> inside the namespace."""
    if kernel.namespace_inode(namespace) is None:
        return False
    return kernel.run_in_namespace(namespace, _connects, port)


async def assert_network_gone(
    networking: HostNetworking, topo: Topology, dnsmasq_pid: int | None = None
) -> None:
    assert await link(bridge_name(topo.network_id)) is None
    for server in topo.servers:
        assert await link(tap_name(server.port_id)) is None
    assert await link(tap_name(topo.dhcp_port_id)) is None
    assert kernel.namespace_inode(namespace_name(topo.network_id)) is None
    assert not (networking.settings.state_dir / topo.network_id).exists()
    if dnsmasq_pid is not None:
        cmdline = Path(f"/proc/{dnsmasq_pid}/cmdline")
        assert not cmdline.exists() or not cmdline.read_bytes()  # gone (or a zombie of a non-reaping init)
    assert await asyncio.to_thread(_owned, networking.settings.owner) == []


def _owned(owner: str) -> list[kernel.Link]:
    with kernel.iproute() as ipr:
        return kernel.owned_links(ipr, owner)


async def test_plug_serves_dhcp_and_metadata_to_each_guest_only(
    pool: asyncpg.Pool, start_networking: StartNetworking, sweeper: Sweeper, workdir: Path
) -> None:
    topo = await make_topology(pool, octet=77)
    s1, s2 = topo.servers
    net = await start_networking(hosts=frozenset({topo.host}))
    owner = net.settings.owner
    namespace = namespace_name(topo.network_id)

    vifs = await net.plug(s1.id)
    assert vifs == [
        Vif(
            port_id=s1.port_id,
            network_id=topo.network_id,
            mac_address=s1.mac,
            tap=tap_name(s1.port_id),
            bridge=bridge_name(topo.network_id),
            mtu=1450,
        )
    ]
    assert await net.plug(s1.id) == vifs  # idempotent
    await net.plug(s2.id)

    bridge = await link(bridge_name(topo.network_id))
    assert bridge is not None
    assert (bridge.kind, bridge.alias, bridge.up, bridge.mtu) == ("bridge", owner, True, 1450)
    assert (bridge.stp, bridge.forward_delay) == (0, 0)
    assert await asyncio.to_thread(_addresses_root, bridge.index) == []  # the host has no address here
    # Isolated: no IPv6 on the bridge or the taps, no ARP answers for the host's addresses.
    for name in (bridge.name, tap_name(s1.port_id)):
        assert sysctl(f"ipv6/conf/{name}/disable_ipv6") == "1"
    assert sysctl(f"ipv4/conf/{bridge.name}/arp_ignore") == "8"
    assert sysctl(f"ipv4/conf/{bridge.name}/rp_filter") == "1"
    for server in (s1, s2):
        tap = await link(tap_name(server.port_id))
        assert tap is not None
        assert (tap.kind, tap.alias, tap.master, tap.mtu) == ("tun", owner, bridge.index, 1450)
    outer = await link(tap_name(topo.dhcp_port_id))
    assert outer is not None and (outer.kind, outer.alias, outer.master) == ("veth", owner, bridge.index)

    inner = await asyncio.to_thread(
        kernel.run_in_namespace, namespace, kernel._find_here, dhcp_interface_name(topo.dhcp_port_id)
    )
    assert inner is not None and (inner.mac, inner.alias, inner.up) == (topo.dhcp_mac, owner, True)
    assert await asyncio.to_thread(kernel.run_in_namespace, namespace, _addresses_here, inner.name) == {
        f"{topo.dhcp_ip}/24",
        "169.254.169.254/32",
    }
    proc = dnsmasq_of(net, topo.network_id)
    assert proc is not None and proc.namespace_inode == kernel.namespace_inode(namespace)
    assert proc.argv[1:].count(f"--interface={inner.name}") == 1
    assert await asyncio.to_thread(listening, namespace)
    hosts = (net.settings.state_dir / topo.network_id / "host").read_text()
    assert f"{s1.mac},{s1.hostname},{s1.ip}\n" in hosts and f"{s2.mac},{s2.hostname},{s2.ip}\n" in hosts

    # A guest with port 1's MAC gets port 1's address, and the metadata route via the DHCP port.
    guest1 = await add_client(sweeper, bridge.name, s1.mac)
    lease = await dhcp_lease(guest1, workdir)
    assert lease["ip"] == s1.ip and lease["router"] == topo.gateway and lease["mask"] == "24"
    assert (lease["hostname"], lease["dns"].strip(), lease["mtu"]) == (s1.hostname, "192.0.2.53", "1450")
    routes = lease["staticroutes"].split()
    assert list(zip(routes[::2], routes[1::2], strict=True)) == [
        ("169.254.169.254/32", topo.dhcp_ip),
        ("198.51.100.0/24", "10.77.0.254"),
        ("0.0.0.0/0", topo.gateway),
    ]
    await configure(guest1, lease["ip"], 24, topo.dhcp_ip)

    status, ctype, body = await http_get(guest1.namespace, "/openstack/latest/meta_data.json")
    assert status == 200 and ctype.startswith("application/json")
    meta = json_body(body)
    assert (meta["uuid"], meta["hostname"], meta["name"]) == (
        s1.id,
        f"{s1.hostname}.novalocal",
        f"{RUN_PREFIX}-vm-1",
    )
    assert meta["public_keys"] == {s1.key_name: s1.key_data}
    assert meta["keys"] == [{"name": s1.key_name, "type": "ssh", "data": s1.key_data}]
    assert (meta["meta"], meta["launch_index"], meta["availability_zone"], meta["project_id"]) == (
        {"role": "r1"},
        1,
        "nova",
        "proj",
    )
    status, ctype, body = await http_get(guest1.namespace, "/latest/meta-data/public-keys/0/openssh-key")
    assert (status, body.decode()) == (200, s1.key_data) and ctype.startswith("text/plain")
    status, _, body = await http_get(guest1.namespace, "/latest/meta-data/public-keys/")
    assert body.decode() == f"0={s1.key_name}"
    status, _, body = await http_get(guest1.namespace, "/2009-04-04/meta-data/local-ipv4")
    assert body.decode() == s1.ip
    status, _, body = await http_get(guest1.namespace, "/latest/meta-data/instance-id")
    assert body.decode() == "i-" + s1.id.replace("-", "")[:8]
    status, _, _ = await http_get(guest1.namespace, "/latest/user-data")
    assert status == 404  # none given
    status, _, body = await http_get(guest1.namespace, "/openstack/latest/network_data.json")
    assert json_body(body)["links"][0]["ethernet_mac_address"] == s1.mac
    await remove_client(guest1)

    # A second guest, port 2's MAC: port 2's address and its own data.
    guest2 = await add_client(sweeper, bridge.name, s2.mac)
    lease = await dhcp_lease(guest2, workdir)
    assert lease["ip"] == s2.ip
    await configure(guest2, lease["ip"], 24, topo.dhcp_ip)
    status, _, body = await http_get(guest2.namespace, "/openstack/latest/meta_data.json")
    assert status == 200 and json_body(body)["uuid"] == s2.id
    status, _, body = await http_get(guest2.namespace, "/latest/meta-data/hostname")
    assert body.decode() == f"{s2.hostname}.novalocal"
    await remove_client(guest2)

    # Port 2's MAC claiming port 1's address: refused, nothing of server 1 in the answer.
    spoofer = await add_client(sweeper, bridge.name, s2.mac)
    await configure(spoofer, s1.ip, 24, topo.dhcp_ip)
    for path in ("/openstack/latest/meta_data.json", "/latest/meta-data/public-keys/0/openssh-key"):
        status, _, body = await http_get(spoofer.namespace, path)
        assert status == 404 and s1.id.encode() not in body and s1.key_data.encode() not in body
    await remove_client(spoofer)

    await net.unplug(s1.id)
    assert await link(tap_name(s1.port_id)) is None and await link(tap_name(s2.port_id)) is not None
    pid = proc.pid
    await net.unplug(s2.id)
    await net.unplug(s2.id)  # idempotent
    await assert_network_gone(net, topo, dnsmasq_pid=pid)
    assert not await asyncio.to_thread(listening, namespace)
    assert await asyncio.to_thread(sweeper.sweep) == []  # nothing of ours was left for the sweep


async def test_unplug_removes_taps_the_database_still_wants(
    pool: asyncpg.Pool, start_networking: StartNetworking
) -> None:
    """A failed spawn unplugs before the server actor has moved the server off the host: the
    tap goes now and stays gone through periodic passes, until the server is plugged again."""
    topo = await make_topology(pool, octet=78)
    s1, s2 = topo.servers
    net = await start_networking(hosts=frozenset({topo.host}))
    await net.plug(s1.id)
    await net.plug(s2.id)
    await net.unplug(s1.id)
    assert await link(tap_name(s1.port_id)) is None
    counts = await net.converge()
    assert "taps_created" not in counts and await link(tap_name(s1.port_id)) is None
    await net.plug(s1.id)
    assert await link(tap_name(s1.port_id)) is not None

    # Concurrent plugs share passes; each gets its own NICs.
    more = [
        await add_server(
            pool,
            host=topo.host,
            network_id=topo.network_id,
            subnet_id=topo.subnet_id,
            ip=f"10.78.0.{20 + i}",
            index=10 + i,
        )
        for i in range(4)
    ]
    plugged = await asyncio.gather(*(net.plug(server.id) for server in more))
    assert [vifs[0].port_id for vifs in plugged] == [server.port_id for server in more]

    # A server whose ports are already gone from the database: its taps are still known.
    await pool.execute("DELETE FROM ports WHERE id = $1", s2.port_id)
    await net.unplug(s2.id)
    assert await link(tap_name(s2.port_id)) is None
    await net.stop()
    await assert_network_gone(net, topo)


async def test_a_server_that_is_not_here_gets_no_tap(
    pool: asyncpg.Pool, start_networking: StartNetworking
) -> None:
    topo = await make_topology(pool, octet=79, servers=1)
    (s1,) = topo.servers
    net = await start_networking(hosts=frozenset({topo.host}))
    await pool.execute("UPDATE servers SET host = 'elsewhere' WHERE id = $1", s1.id)
    with pytest.raises(NetworkingError, match="not wanted on this host"):
        await net.plug(s1.id)
    assert await link(bridge_name(topo.network_id)) is None
    assert await net.plug(str(uuid.uuid4())) == []  # no ports at all: nothing to plug


async def test_network_without_dhcp_gets_bridge_and_taps_only(
    pool: asyncpg.Pool, start_networking: StartNetworking
) -> None:
    topo = await make_topology(pool, octet=80, servers=1, dhcp=False)
    net = await start_networking(hosts=frozenset({topo.host}))
    (vif,) = await net.plug(topo.servers[0].id)
    assert await link(vif.bridge) is not None and await link(vif.tap) is not None
    assert kernel.namespace_inode(namespace_name(topo.network_id)) is None
    assert not (net.settings.state_dir / topo.network_id).exists()


async def test_restart_adopts_links_namespace_and_dnsmasq(
    pool: asyncpg.Pool, start_networking: StartNetworking
) -> None:
    topo = await make_topology(pool, octet=81, servers=1)
    (s1,) = topo.servers
    first = await start_networking(hosts=frozenset({topo.host}), remove_on_stop=False)
    vifs = await first.plug(s1.id)
    before = {name: await link(name) for name in (vifs[0].bridge, vifs[0].tap, tap_name(topo.dhcp_port_id))}
    namespace = namespace_name(topo.network_id)
    inode = kernel.namespace_inode(namespace)
    proc = dnsmasq_of(first, topo.network_id)
    assert proc is not None
    await first.stop()
    assert not await asyncio.to_thread(listening, namespace)  # the listener went with its process

    second = await start_networking(dataclasses.replace(first.settings, remove_on_stop=True))
    counts = await second.converge()
    assert counts == {}  # the start's pass adopted everything: nothing left to do
    assert {name: await link(name) for name in before} == before  # the same links (same indexes), unchanged
    assert kernel.namespace_inode(namespace) == inode
    again = dnsmasq_of(second, topo.network_id)
    assert again is not None and again.pid == proc.pid
    assert await asyncio.to_thread(listening, namespace)
    assert await second.plug(s1.id) == vifs
    await second.stop()
    await assert_network_gone(second, topo, dnsmasq_pid=proc.pid)


async def test_converge_repairs_drift(pool: asyncpg.Pool, start_networking: StartNetworking) -> None:
    topo = await make_topology(pool, octet=82, servers=1)
    (s1,) = topo.servers
    net = await start_networking(hosts=frozenset({topo.host}))
    (vif,) = await net.plug(s1.id)
    proc = dnsmasq_of(net, topo.network_id)
    assert proc is not None

    # A new port on the network: new host entry, dnsmasq re-reads its files (same process).
    s2 = await add_server(
        pool,
        host="not-this-host",
        network_id=topo.network_id,
        subnet_id=topo.subnet_id,
        ip="10.82.0.50",
        index=2,
    )
    counts = await net.converge()
    assert counts == {"dnsmasq_reloaded": 1}
    assert s2.mac in (net.settings.state_dir / topo.network_id / "host").read_text()
    assert dnsmasq_of(net, topo.network_id).pid == proc.pid  # type: ignore[union-attr]

    # Someone removes the tap and kills dnsmasq: the next pass puts them back.
    await asyncio.to_thread(_delete, vif.tap)
    os.kill(proc.pid, signal.SIGKILL)
    counts = await net.converge()
    assert counts["taps_created"] == 1 and counts["dnsmasq_started"] == 1
    again = dnsmasq_of(net, topo.network_id)
    assert again is not None and again.pid != proc.pid
    assert (await link(vif.tap)).master == (await link(vif.bridge)).index  # type: ignore[union-attr]


async def test_converge_removes_orphans_and_nothing_else(
    pool: asyncpg.Pool, start_networking: StartNetworking, sweeper: Sweeper, workdir: Path
) -> None:
    owner = owner_tag()
    other_owner = owner_tag()  # another cloud on the same machine
    orphan_net, foreign_net = str(uuid.uuid4()), str(uuid.uuid4())
    orphan_bridge, orphan_tap = bridge_name(orphan_net), tap_name(str(uuid.uuid4()))
    foreign_tap = tap_name(str(uuid.uuid4()))
    untagged = RUN_PREFIX[:15]
    sweeper.links.append(untagged)
    orphan_ns, foreign_ns = namespace_name(orphan_net), namespace_name(foreign_net)
    sweeper.namespaces.append(foreign_ns)

    def make() -> None:
        with kernel.iproute() as ipr:
            bridge, _ = kernel.ensure_bridge(ipr, orphan_bridge, 1500, owner)
            kernel.ensure_tap(ipr, orphan_tap, "fe:16:3e:00:00:01", bridge, 1500, True, owner)
            other, _ = kernel.ensure_bridge(ipr, bridge_name(foreign_net), 1500, other_owner)
            kernel.ensure_tap(ipr, foreign_tap, "fe:16:3e:00:00:02", other, 1500, True, other_owner)
            ipr.link("add", ifname=untagged, kind="bridge")
            # An orphan qdhcp namespace not recorded anywhere: ours by the tagged link inside.
            kernel.create_namespace(orphan_ns)
            ipr.link(
                "add", ifname=f"o{HEX}", kind="veth", peer={"ifname": "ns-orphan", "net_ns_fd": orphan_ns}
            )
            kernel._tag(ipr, f"o{HEX}", owner)
            # Another cloud's namespace (its links tagged by it).
            kernel.create_namespace(foreign_ns)
            ipr.link(
                "add", ifname=f"f{HEX}", kind="veth", peer={"ifname": "ns-foreign", "net_ns_fd": foreign_ns}
            )
            kernel._tag(ipr, f"f{HEX}", other_owner)
        kernel.run_in_namespace(orphan_ns, _tag_here, "ns-orphan", owner)

    await asyncio.to_thread(make)
    net = await start_networking(owner=owner, hosts=frozenset({f"nohost-{HEX}"}))  # its start removes them
    for name in (orphan_bridge, orphan_tap, f"o{HEX}"):
        assert await link(name) is None, name
    assert kernel.namespace_inode(orphan_ns) is None
    for name in (untagged, foreign_tap, bridge_name(foreign_net), f"f{HEX}"):
        assert await link(name) is not None, name
    assert kernel.namespace_inode(foreign_ns) is not None
    assert await net.converge() == {}
    # the other cloud's links are the sweeper's to remove (its tag has the run prefix)


def _delete(name: str) -> None:
    with kernel.iproute() as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname=name)[0])


def _tag_here(name: str, owner: str) -> None:
    with kernel.iproute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], ifalias=owner)


def _host_address() -> str | None:
    """An IPv4 address of the host's own (not loopback, not on a link of a test), if it has one."""
    with kernel.iproute() as ipr:
        ours = {link.index for link in kernel.links(ipr) if (link.alias or "").startswith(OWNER_PREFIX)}
        for addr in ipr.addr("dump", family=socket.AF_INET):
            ip = addr.get("IFA_ADDRESS")
            if ip and not ip.startswith("127.") and addr["index"] not in ours:
                return str(ip)
    return None


def _send_from_guest(host_ip: str, port: int, gateway: str, bridge_mac: str) -> None:
    """What a hostile guest would do: route to the host's address via the bridge's own MAC."""
    with kernel.iproute() as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.neigh("add", dst=gateway, lladdr=bridge_mac, ifindex=index, state=0x80)  # NUD_PERMANENT
        ipr.route("add", dst=f"{host_ip}/32", gateway=gateway)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(3):
            sock.sendto(b"hello host", (host_ip, port))


async def test_guests_cannot_reach_the_host_through_the_bridge(
    pool: asyncpg.Pool, start_networking: StartNetworking, sweeper: Sweeper
) -> None:
    """The bridge has no address, but the host's IP stack sits behind it: a guest that sends
    to the bridge's MAC must not reach the host's addresses (rp_filter on our bridge)."""
    host_ip = await asyncio.to_thread(_host_address)
    if host_ip is None:
        pytest.skip("the host has no IPv4 address of its own to aim at")
    topo = await make_topology(pool, octet=83, servers=1)
    (s1,) = topo.servers
    net = await start_networking(hosts=frozenset({topo.host}))
    (vif,) = await net.plug(s1.id)
    guest = await add_client(sweeper, vif.bridge, s1.mac)
    await configure(guest, s1.ip, 24, topo.dhcp_ip)
    bridge = await link(vif.bridge)  # its MAC now that the guest's port is on it
    assert bridge is not None and bridge.mac is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("0.0.0.0", 0))
        listener.settimeout(1.5)
        await asyncio.to_thread(
            kernel.run_in_namespace,
            guest.namespace,
            _send_from_guest,
            host_ip,
            listener.getsockname()[1],
            topo.gateway,
            bridge.mac,
        )
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(listener.recvfrom, 100)
