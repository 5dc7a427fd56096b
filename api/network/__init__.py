"""Networking v2.0 (Neutron's API) under /networking/v2.0: networks, subnets and ports with
IPAM (`ipam.py`) and the networks' DHCP ports (`dhcp.py`), security groups and their rules
(`security_groups.py`), tags, quotas, extensions and availability zones. Neutron's other
resources (routers, floating IPs, …) do
not exist in this cloud yet and answer as Neutron answers a resource it does not have: 404,
so that clients' cleanup (which tolerates 404) works.

Neutron's clients read the NeutronError "type" (NetworkNotFound, IpAddressGenerationFailure…):
errors raised with a `kind` carry it, and the application's error middleware renders it.
"""

from aiohttp import web

from api.errors import NotFound
from api.network import agents, extensions, networks, ports, quotas, security_groups, subnets, tags


async def unknown(request: web.Request) -> web.Response:
    raise NotFound("The resource could not be found.", kind="HTTPNotFound")


def setup(app: web.Application) -> None:
    # aiohttp tries routes in the order they were added: the catch-all must come last.
    quotas.setup(app)
    extensions.setup(app)
    networks.setup(app)
    subnets.setup(app)
    ports.setup(app)
    security_groups.setup(app)
    tags.setup(app)
    agents.setup(app)
    app.router.add_route("*", "/networking/v2.0/{tail:.*}", unknown)
