"""IPAM under concurrency, and the entry points the compute API uses (api.network.ports):
many port creates at once fill a subnet exactly, with unique addresses and clean refusals."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import time
from typing import Any

import aiohttp
import asyncpg
import pytest

from api.auth import AuthContext, TokenPayload
from api.errors import ApiError, NotFound
from api.network import ports as port_api
from tests.api.conftest import Cloud, Credentials
from tests.api.test_network import N, assert_neutron_error, call, networks_removed, unique


async def test_150_concurrent_port_creates_fill_a_slash_25_exactly(cloud: Cloud, pool: asyncpg.Pool) -> None:
    """150 creates at once on a shared /25 by four projects (a project's creates queue on its
    port quota lock; different projects' allocations race on the subnet itself)."""
    admin = await cloud.token()
    members = await asyncio.gather(*(cloud.new_member("ipam") for _ in range(3)))
    tokens = [admin, *await asyncio.gather(*(cloud.token(m) for m in members))]
    async with networks_removed(cloud) as created:
        status, body = await call(
            cloud, "POST", "/networks", admin, {"network": {"name": unique("ipam"), "shared": True}}
        )
        net = body["network"]
        created.append(net["id"])
        # No DHCP: all 125 addresses after the gateway (.2 to .126) are for the ports.
        status, body = await call(
            cloud,
            "POST",
            "/subnets",
            admin,
            {
                "subnet": {
                    "network_id": net["id"],
                    "ip_version": 4,
                    "cidr": "10.100.0.0/25",
                    "enable_dhcp": False,
                }
            },
        )
        assert status == 201, body
        subnet = body["subnet"]
        assert subnet["allocation_pools"] == [{"start": "10.100.0.2", "end": "10.100.0.126"}]

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def create(i: int) -> tuple[int, Any]:
                async with session.post(
                    f"{cloud.url}{N}/ports",
                    headers={"X-Auth-Token": tokens[i % len(tokens)]},
                    json={"port": {"network_id": net["id"], "name": f"c{i}"}},
                ) as response:
                    return response.status, await response.json()

            started = time.monotonic()
            results = await asyncio.gather(*(create(i) for i in range(150)))
            elapsed = time.monotonic() - started

        outcomes = collections.Counter(status for status, _ in results)
        assert outcomes == {201: 125, 409: 25}, outcomes
        for status, body in results:
            if status == 409:
                assert_neutron_error(
                    body,
                    "IpAddressGenerationFailure",
                    f"No more IP addresses available on network {net['id']}.",
                )
        addresses = [body["port"]["fixed_ips"][0]["ip_address"] for status, body in results if status == 201]
        expected = {str(ipaddress.ip_address("10.100.0.2") + i) for i in range(125)}
        assert set(addresses) == expected and len(addresses) == 125
        assert len({body["port"]["project_id"] for status, body in results if status == 201}) == 4

        rows = await pool.fetch(
            "SELECT host(ip_address) AS ip, count(*) AS n FROM ip_allocations "
            "WHERE subnet_id = $1 GROUP BY 1",
            subnet["id"],
        )
        assert len(rows) == 125 and all(r["n"] == 1 for r in rows)
        assert {r["ip"] for r in rows} == expected
        assert await pool.fetchval("SELECT count(*) FROM ports WHERE network_id = $1", net["id"]) == 125
        assert elapsed < 30


def _context(who: Credentials, role: str = "member") -> AuthContext:
    payload = TokenPayload(
        user_id=who.user_id,
        user_name=who.user,
        user_domain_id="default",
        project_id=who.project_id,
        project_name=who.project,
        project_domain_id="default",
        roles=((role, role),),
        methods=("password",),
        issued_at=time.time(),
        expires_at=time.time() + 60,
        audit_id="test",
    )
    return AuthContext("unused", payload)


async def test_entry_points_for_the_compute_api(
    cloud: Cloud, pool: asyncpg.Pool, member: Credentials
) -> None:
    token = await cloud.token(member)
    me = _context(member)
    stranger = _context(await cloud.new_member("stranger"))
    async with networks_removed(cloud) as created:
        status, body = await call(cloud, "POST", "/networks", token, {"network": {"name": unique("compute")}})
        net = body["network"]
        created.append(net["id"])
        for cidr, version in (("10.110.0.0/29", 4), ("fd00:110::/64", 6)):
            status, body = await call(
                cloud,
                "POST",
                "/subnets",
                token,
                {
                    "subnet": {
                        "network_id": net["id"],
                        "ip_version": version,
                        "cidr": cidr,
                        "enable_dhcp": False,
                    }
                },
            )
            assert status == 201, body

        async with pool.acquire() as conn:
            with pytest.raises(NotFound) as caught:
                await port_api.visible_network(conn, stranger, net["id"])
            assert caught.value.kind == "NetworkNotFound"
            network = await port_api.visible_network(conn, me, net["id"])
            async with conn.transaction():
                first = await port_api.create_port(
                    conn,
                    me,
                    network,
                    project_id=member.project_id,
                    device_id="server-1",
                    device_owner="compute:nova",
                )
                second = await port_api.create_port(
                    conn,
                    me,
                    network,
                    project_id=member.project_id,
                    device_id="server-1",
                    device_owner="compute:nova",
                    fixed_ips=[{"ip_address": "10.110.0.6"}],
                )
            assert (first["device_id"], first["status"], first["version"]) == ("server-1", "DOWN", 1)
            found = await port_api.port_addresses(conn, [first["id"], second["id"]])
            assert found == {
                first["id"]: [("10.110.0.2", 4), ("fd00:110::2", 6)],
                second["id"]: [("10.110.0.6", 4)],
            }

            # The refusals are the API's own errors, and leave nothing behind.
            with pytest.raises(ApiError) as caught:
                async with conn.transaction():
                    await port_api.create_port(
                        conn,
                        me,
                        network,
                        project_id=member.project_id,
                        fixed_ips=[{"ip_address": "10.110.0.6"}],
                    )
            assert (caught.value.status, caught.value.kind) == (409, "IpAddressAlreadyAllocated")
            for _ in range(3):  # .3 .4 .5 are left of the /29 (.1 is the gateway, .7 the broadcast)
                async with conn.transaction():
                    await port_api.create_port(
                        conn,
                        me,
                        network,
                        project_id=member.project_id,
                        fixed_ips=[{"subnet_id": network["subnet_ids"][0]}],
                    )
            with pytest.raises(ApiError) as caught:
                async with conn.transaction():
                    await port_api.create_port(conn, me, network, project_id=member.project_id)
            assert (caught.value.status, caught.value.kind) == (409, "IpAddressGenerationFailure")
            with pytest.raises(ApiError) as caught:
                async with conn.transaction():
                    await port_api.create_port(conn, me, network, project_id="someone-else")
            assert caught.value.status == 400
            count = await conn.fetchval("SELECT count(*) FROM ports WHERE network_id = $1", net["id"])
            assert count == 5
        status, body = await call(cloud, "GET", f"/ports?device_id=server-1&network_id={net['id']}", token)
        assert {p["id"] for p in body["ports"]} == {first["id"], second["id"]}
