"""Block Storage v3 (Cinder's API) under /volume/v3/{project_id}. Volumes arrive with the block
storage issue; until then everything but quotas answers 501 in Cinder's error shape."""

from aiohttp import web

from api.errors import NotImplementedYet


async def not_yet(request: web.Request) -> web.Response:
    raise NotImplementedYet("Block Storage is not available yet in this cloud.")


def setup(app: web.Application) -> None:
    app.router.add_route("*", "/volume/v3/{project_id}/{tail:.*}", not_yet)
