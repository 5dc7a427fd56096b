"""The metadata service gives a guest its own data only, whatever the guest writes in its request.

The service's real listeners (`MetadataService.ensure`) and handlers, over real sockets, on rows
in the test database; only the kernel is replaced: the listening socket is bound on loopback
instead of inside a qdhcp namespace, and the neighbour table is a dict. So the source address
of every request is 127.0.0.1, and each test says whose address that is on which network.
(The same checks on the real kernel, with guests in namespaces: test_linuxbridge.py.)
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import asyncpg
import pytest

from hostagent.network import kernel
from hostagent.network.metadata import MetadataService
from tests.hostagent.local_control import LocalControl
from tests.hostagent.network.conftest import Server, Topology, add_server, make_topology

GUEST = "127.0.0.1"  # every request's source address here: whose it is, is what a test decides
PATHS = (
    "/openstack/latest/meta_data.json",
    "/openstack/2018-08-27/network_data.json",
    "/latest/meta-data/instance-id",
    "/latest/meta-data/public-keys/0/openssh-key",
    "/latest/meta-data/hostname",
    "/latest/meta-data/local-ipv4",
    "/latest/user-data",
    "/openstack/latest/user_data",
)
# Headers a guest controls that must never choose the instance (Nova's proxy trusts some of
# these from its own neutron-metadata-agent only; here nothing sits in between).
SPOOFS = (
    "X-Forwarded-For",
    "X-Real-IP",
    "X-Instance-ID",
    "X-Tenant-ID",
    "X-Instance-ID-Signature",
    "X-Neutron-Network-ID",
    "X-Neutron-Router-ID",
    "Forwarded",
    "Host",
    "X-Client-IP",
)


class FakeKernel:
    """Loopback listeners for namespaces and a neighbour table the test fills in."""

    def __init__(self) -> None:
        self.neighbours: dict[tuple[str, str], str] = {}
        self.ports: dict[str, int] = {}

    def listen(self, namespace: str, address: str, port: int) -> socket.socket:
        sock = socket.socket()
        sock.bind((GUEST, 0))
        sock.listen(16)
        sock.setblocking(False)
        self.ports[namespace] = sock.getsockname()[1]
        return sock

    def neighbour_mac(self, namespace: str, ip: str) -> str | None:
        return self.neighbours.get((namespace, ip))


@pytest.fixture
def fake_kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKernel]:
    fake = FakeKernel()
    monkeypatch.setattr(kernel, "listen_in_namespace", fake.listen)
    monkeypatch.setattr(kernel, "neighbour_mac", fake.neighbour_mac)
    monkeypatch.setattr(kernel, "namespace_inode", lambda name: 1)
    yield fake


@pytest.fixture
async def service(pool: asyncpg.Pool, fake_kernel: FakeKernel) -> AsyncIterator[MetadataService]:
    metadata = MetadataService(LocalControl(pool), port=80)
    try:
        yield metadata
    finally:
        await metadata.close()


@pytest.fixture
async def networks(pool: asyncpg.Pool) -> AsyncIterator[list[Topology]]:
    """Two networks with the same addresses (10.203.0.10, .11 on each), and a guest on each at
    the loopback address too; their rows are removed afterwards."""
    made: list[Topology] = []
    try:
        for n in range(2):
            topo = await make_topology(pool, servers=2, octet=203)
            guest = await add_server(
                pool,
                host=topo.host,
                network_id=topo.network_id,
                subnet_id=topo.subnet_id,
                ip=GUEST,
                index=8 + n,
                user_data="I2Nsb3VkLWNvbmZpZwo=",
            )
            made.append(Topology(**{**topo.__dict__, "servers": (*topo.servers, guest)}))
        yield made
    finally:
        await _remove(pool, made)


async def _remove(pool: asyncpg.Pool, made: list[Topology]) -> None:
    networks = [t.network_id for t in made]
    servers = [s.id for t in made for s in t.servers]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM ip_allocations WHERE network_id = ANY($1::text[])", networks)
        await conn.execute("DELETE FROM ports WHERE network_id = ANY($1::text[])", networks)
        await conn.execute("DELETE FROM servers WHERE id = ANY($1::text[])", servers)
        await conn.execute("DELETE FROM subnets WHERE network_id = ANY($1::text[])", networks)
        await conn.execute("DELETE FROM networks WHERE id = ANY($1::text[])", networks)


async def _listen(service: MetadataService, fake: FakeKernel, topo: Topology) -> str:
    """The network's listener; its base URL."""
    namespace = f"qdhcp-{topo.network_id}"
    assert await service.ensure(topo.network_id, namespace)
    return f"http://{GUEST}:{fake.ports[namespace]}"


async def _get(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(base + path, headers=headers or {}) as r:
        return r.status, await r.text()


def _owned(server: Server) -> list[str]:
    """What of a server's own data must never reach another guest."""
    return [server.id, server.hostname, server.key_data, server.port_id, server.mac, "i-" + server.id[:8]]


def _assert_only(server: Server, others: list[Server], answers: dict[str, tuple[int, str]]) -> None:
    body = "\n".join(text for _, text in answers.values())
    assert all(status == 200 for status, _ in answers.values()), answers
    assert server.id in body and server.key_data in body
    for other in others:
        leaked = [item for item in _owned(other) if item in body]
        assert not leaked, f"{other.id}'s data served to {server.id}: {leaked}"


async def test_a_guest_gets_its_own_data_on_each_network_by_the_socket_it_asked(
    service: MetadataService, fake_kernel: FakeKernel, networks: list[Topology]
) -> None:
    """The same source address on two networks is two different guests: each listener answers
    for the guest on its own network."""
    everyone = [s for t in networks for s in t.servers]
    for topo in networks:
        base = await _listen(service, fake_kernel, topo)
        me = topo.servers[-1]
        fake_kernel.neighbours[(f"qdhcp-{topo.network_id}", GUEST)] = me.mac
        answers = {path: await _get(base, path) for path in PATHS}
        _assert_only(me, [s for s in everyone if s is not me], answers)
        assert answers["/latest/meta-data/local-ipv4"][1] == GUEST


@pytest.mark.parametrize("header", SPOOFS)
async def test_headers_a_guest_sends_never_choose_another_instance(
    service: MetadataService, fake_kernel: FakeKernel, networks: list[Topology], header: str
) -> None:
    topo = networks[0]
    me, victim = topo.servers[-1], topo.servers[0]
    base = await _listen(service, fake_kernel, topo)
    fake_kernel.neighbours[(f"qdhcp-{topo.network_id}", GUEST)] = me.mac
    value = {
        "X-Instance-ID": victim.id,
        "X-Tenant-ID": "proj",
        "Host": f"{victim.ip}:80",
        "Forwarded": f"for={victim.ip}",
        "X-Neutron-Network-ID": topo.network_id,
        "X-Instance-ID-Signature": "0" * 64,
    }.get(header, victim.ip)
    answers = {path: await _get(base, path, {header: value}) for path in PATHS}
    _assert_only(me, [s for t in networks for s in t.servers if s is not me], answers)


async def test_an_address_that_is_nobodys_or_claimed_from_another_mac_gets_nothing(
    service: MetadataService, fake_kernel: FakeKernel, networks: list[Topology], pool: asyncpg.Pool
) -> None:
    topo, other = networks
    base = await _listen(service, fake_kernel, topo)
    namespace = f"qdhcp-{topo.network_id}"
    victim = topo.servers[0]
    everything = [s for t in networks for s in t.servers]

    async def refused(headers: dict[str, str] | None = None) -> None:
        for path in PATHS:
            status, text = await _get(base, path, headers)
            assert status == 404, (path, status, text)
            leaked = [item for s in everything for item in _owned(s) if item in text]
            assert not leaked, (path, leaked)

    # The address is the guest's, but the neighbour entry says another port's MAC sent it
    # (a guest that took over the address), or there is no entry at all.
    for mac in (victim.mac, other.servers[-1].mac, None):
        if mac is None:
            fake_kernel.neighbours.pop((namespace, GUEST), None)
        else:
            fake_kernel.neighbours[(namespace, GUEST)] = mac
        await refused({"X-Forwarded-For": victim.ip, "X-Instance-ID": victim.id})
    # No port owns the address on this network (its guest is deleted), whatever MAC is there.
    guest = topo.servers[-1]
    fake_kernel.neighbours[(namespace, GUEST)] = guest.mac
    await pool.execute("UPDATE servers SET vm_state = 'deleted' WHERE id = $1", guest.id)
    await refused({"X-Forwarded-For": victim.ip})
    await pool.execute("DELETE FROM ip_allocations WHERE port_id = $1", guest.port_id)
    await refused({"X-Instance-ID": victim.id})
    # The versions list names no one: it is all an unknown address gets.
    status, text = await _get(base, "/")
    assert status == 200 and "latest" in text
