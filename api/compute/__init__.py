"""Compute v2.1 (Nova's API) under /compute/v2.1."""

from aiohttp import web


def setup(app: web.Application) -> None:
    """Routes are added by the compute modules as they land."""
