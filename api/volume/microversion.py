"""Block Storage microversions: which version of Cinder's v3 API a request asked for.

Clients send `OpenStack-API-Version: volume 3.63`; no header means 3.0 and `latest` the newest
we serve (the range the discovery document advertises). The `negotiate` middleware parses it once
per request under /volume/v3, stores it where `requested(request)` finds it, and stamps the
version headers on every response, errors included, as Cinder does. A well-formed version outside
the range is refused with 406, a malformed one with 400 (Cinder's InvalidGlobalAPIVersion and
its format check). The version type and the rules are the API's (api/microversion.py): the two
services' differ only in the service name and the range.
"""

from __future__ import annotations

from aiohttp import web

from api.context import Handler
from api.discovery import VOLUME_MAX, VOLUME_MIN
from api.microversion import HEADER, Microversion, header_value, select, stamped

PREFIX = "/volume/v3"
_KEY = "volume.microversion"

MIN = Microversion.parse(VOLUME_MIN)
MAX = Microversion.parse(VOLUME_MAX)


def negotiated(request: web.Request) -> Microversion:
    return select(header_value(request, "volume"), MIN, MAX, version_headers)


def requested(request: web.Request) -> Microversion:
    """The microversion the negotiate middleware settled for this request."""
    return request[_KEY]


def version_headers(version: Microversion) -> dict[str, str]:
    return {HEADER: f"volume {version}", "Vary": HEADER}


@web.middleware
async def negotiate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(PREFIX + "/"):
        return await handler(request)
    version = negotiated(request)
    request[_KEY] = version
    return await stamped(request, handler, version_headers(version))


def setup(app: web.Application) -> None:
    """Innermost, after authentication, like compute's."""
    app.middlewares.append(negotiate)
