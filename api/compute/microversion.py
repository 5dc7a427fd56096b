"""Compute microversions: which version of Nova's API a request asked for.

Clients send `OpenStack-API-Version: compute 2.61` (or the legacy `X-OpenStack-Nova-API-Version:
2.61`); no header means 2.1 and `latest` means the newest we serve. The `negotiate` middleware
parses it once per request under /compute/v2.1, stores it where `requested(request)` finds it, and
stamps the version headers on every response, errors included, as Nova does. Handlers compare it
with tuples: `if requested(request) >= (2, 55): ...`. The version type and the negotiation rules
are the API's (api/microversion.py); the range and the legacy header are Nova's.
"""

from __future__ import annotations

from aiohttp import web

from api.context import Handler
from api.discovery import COMPUTE_MAX, COMPUTE_MIN
from api.microversion import HEADER, Microversion, header_value, select, stamped

PREFIX = "/compute/v2.1"
LEGACY_HEADER = "X-OpenStack-Nova-API-Version"
_KEY = "compute.microversion"

MIN = Microversion.parse(COMPUTE_MIN)
MAX = Microversion.parse(COMPUTE_MAX)


def negotiated(request: web.Request) -> Microversion:
    """Parse the request's microversion; 400 when malformed, 406 when outside MIN..MAX."""
    return select(header_value(request, "compute", LEGACY_HEADER), MIN, MAX, version_headers)


def requested(request: web.Request) -> Microversion:
    """The microversion the negotiate middleware settled for this request."""
    return request[_KEY]


def version_headers(version: Microversion) -> dict[str, str]:
    return {
        HEADER: f"compute {version}",
        LEGACY_HEADER: str(version),
        "Vary": f"{HEADER}, {LEGACY_HEADER}",
    }


@web.middleware
async def negotiate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not (request.path == PREFIX or request.path.startswith(PREFIX + "/")):
        return await handler(request)
    version = negotiated(request)
    request[_KEY] = version
    return await stamped(request, handler, version_headers(version))


def setup(app: web.Application) -> None:
    """Run `negotiate` innermost, after authentication: an unauthenticated request is refused
    before any version is considered (keystonemiddleware sits in front of Nova the same way)."""
    app.middlewares.append(negotiate)
