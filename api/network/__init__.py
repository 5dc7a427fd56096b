"""Networking v2.0 (Neutron's API) under /networking/v2.0: networks, subnets and ports with
IPAM (`ipam.py`) and the networks' DHCP ports (`dhcp.py`), their tags, quotas, extensions and
availability zones. Neutron's other resources (routers, floating IPs, security groups, …) do
not exist in this cloud and answer 501 as a NeutronError.

Neutron's clients read the NeutronError "type" (NetworkNotFound, IpAddressGenerationFailure…):
errors raised with a `kind` carry it, and the application's error middleware renders it.
"""

from aiohttp import web

from api.errors import NotImplementedYet
from api.network import extensions, networks, ports, quotas, subnets, tags


async def not_yet(request: web.Request) -> web.Response:
    raise NotImplementedYet("This networking resource is not available in this cloud.")


def setup(app: web.Application) -> None:
    # aiohttp tries routes in the order they were added: the catch-all must come last.
    quotas.setup(app)
    extensions.setup(app)
    networks.setup(app)
    subnets.setup(app)
    ports.setup(app)
    tags.setup(app)
    app.router.add_route("*", "/networking/v2.0/{tail:.*}", not_yet)
