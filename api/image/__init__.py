"""Image v2 (Glance's API) under /image/v2."""

from aiohttp import web


def setup(app: web.Application) -> None:
    """Routes are added by the image modules as they land."""
