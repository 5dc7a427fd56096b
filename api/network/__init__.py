"""Networking v2.0 (Neutron's API) under /networking/v2.0. Networks, subnets and ports arrive
with the networking issue; until then everything but quotas answers 501 as a NeutronError."""

from aiohttp import web

from api.errors import NotImplementedYet
from api.network import quotas


async def not_yet(request: web.Request) -> web.Response:
    raise NotImplementedYet("Networking is not available yet in this cloud.")


def setup(app: web.Application) -> None:
    # aiohttp tries routes in the order they were added: the catch-all must come last.
    quotas.setup(app)
    app.router.add_route("*", "/networking/v2.0/{tail:.*}", not_yet)
