"""Cutting one process's AMQP connection in the middle of a storm of boots (issue 10).

The roles run as separate processes (tests/faults/cluster.py); one of them — a runtime, or a
host agent — reaches RabbitMQ through a TCP proxy on loopback (tests/faults/proxy.py). Once ten
servers are ACTIVE the proxy aborts that process's connections at once and refuses new ones
for two seconds, while the other half of the storm is booted. The broker itself is never
touched. The process must reconnect by itself (it is never restarted), and every boot must end
as it would have without the cut: final, each domain created once, no allocation leaked.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from actorstack.scratch import ScratchProcess
from tests.faults.cluster import (
    Api,
    Cluster,
    assert_storm_outcome,
    delete_and_assert_clean,
    poll,
    storm_with_fault,
)
from tests.faults.proxy import TcpProxy

pytestmark = pytest.mark.faults

REFUSE_FOR = 2.0  # seconds the proxy refuses new connections after the cut


def through(proxy: TcpProxy, amqp_url: str) -> str:
    """The AMQP URL with the proxy's address in place of the broker's."""
    parts = urlsplit(amqp_url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))


async def start_roles(cluster: Cluster, proxied: str, url: str) -> ScratchProcess:
    """The API, two runtimes and two host agents; the first runtime or host agent (`proxied`)
    on `url`. Returns the proxied process."""
    await cluster.start_api()
    runtimes = [
        await cluster.start_runtime(amqp_url=url if proxied == "runtime" else None),
        await cluster.start_runtime(),
    ]
    agents = [
        await cluster.start_hostagent(amqp_url=url if proxied == "hostagent" else None),
        await cluster.start_hostagent(),
    ]
    return runtimes[0] if proxied == "runtime" else agents[0]


@pytest.mark.parametrize("proxied", ["runtime", "hostagent"])
async def test_cut_amqp_connection_reconnects_and_loses_no_boot(fault_cluster: Cluster, proxied: str) -> None:
    cluster = fault_cluster
    broker = urlsplit(cluster.amqp_url)
    async with TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672) as proxy:
        try:
            victim = await start_roles(cluster, proxied, through(proxy, cluster.amqp_url))
            cut: list[int] = []

            async def cut_connections() -> None:
                cut.append(await proxy.cut(REFUSE_FOR))

            async with Api(cluster.api_url, cluster.password) as api:
                await api.unlimited_quota()
                image = await api.create_image(f"{cluster.name}-img")
                accepted_before = proxy.accepted
                ids = await storm_with_fault(api, image, cut_connections, prefix=f"cut-{proxied}")
                assert cut and cut[0] > 0, "the cut found no connection of the proxied process"

                async def reconnected() -> bool:
                    return proxy.accepted > accepted_before and proxy.open_connections > 0

                await poll(reconnected, timeout=60, what=f"the {proxied} to reconnect through the proxy")
                await assert_storm_outcome(cluster, api, ids)
                await delete_and_assert_clean(cluster, api, ids)
            assert victim.alive, victim.tail(3000)
        finally:
            # Stopped while the proxy still runs: the proxied process can then stop gracefully.
            await cluster.stop()
