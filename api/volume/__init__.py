"""Block Storage v3 (Cinder's API) under /volume/v3/{project_id}. Volumes arrive with the block
storage issue; until then everything but quotas and limits answers 501 in Cinder's error shape."""

from aiohttp import web

from api.errors import NotImplementedYet
from api.volume import limits, quotas


async def not_yet(request: web.Request) -> web.Response:
    raise NotImplementedYet("Block Storage is not available yet in this cloud.")


def setup(app: web.Application) -> None:
    # aiohttp tries routes in the order they were added: the catch-all must come last.
    quotas.setup(app)
    limits.setup(app)
    app.router.add_route("*", "/volume/v3/{project_id}/{tail:.*}", not_yet)
