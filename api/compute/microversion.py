"""Compute microversions: which version of Nova's API a request asked for.

Clients send `OpenStack-API-Version: compute 2.61` (or the legacy `X-OpenStack-Nova-API-Version:
2.61`); no header means 2.1 and `latest` means the newest we serve. The `negotiate` middleware
parses it once per request under /compute/v2.1, stores it where `requested(request)` finds it, and
stamps the version headers on every response, errors included, as Nova does. Handlers compare it
with tuples: `if requested(request) >= (2, 55): ...`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from aiohttp import web

from api.context import Handler
from api.discovery import COMPUTE_MAX, COMPUTE_MIN
from api.errors import ApiError, BadRequest

PREFIX = "/compute/v2.1"
HEADER = "OpenStack-API-Version"
LEGACY_HEADER = "X-OpenStack-Nova-API-Version"
_KEY = "compute.microversion"
_FORMAT = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


class NotAcceptable(ApiError):
    """406: a well-formed microversion outside the range this cloud serves."""

    status, title = 406, "Not Acceptable"


class Microversion(NamedTuple):
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @classmethod
    def parse(cls, text: str) -> Microversion:
        match = _FORMAT.match(text)
        if match is None:
            raise BadRequest(
                f"API Version String {text} is of invalid format. Must be of format MajorNum.MinorNum."
            )
        return cls(int(match.group(1)), int(match.group(2)))


MIN = Microversion.parse(COMPUTE_MIN)
MAX = Microversion.parse(COMPUTE_MAX)


def _header_value(request: web.Request) -> str | None:
    """The compute entry of OpenStack-API-Version, else the legacy header (microversion-parse's
    rules: the standard header wins; it may list several services separated by commas)."""
    for raw in request.headers.getall(HEADER, []):
        for entry in raw.split(","):
            parts = entry.strip().split(None, 1)
            if parts and parts[0].lower() == "compute":
                return parts[1].strip() if len(parts) == 2 else ""
    legacy = request.headers.getall(LEGACY_HEADER, [])
    return legacy[0].strip() if legacy else None


def negotiated(request: web.Request) -> Microversion:
    """Parse the request's microversion; 400 when malformed, 406 when outside MIN..MAX."""
    value = _header_value(request)
    if value is None:
        return MIN
    if value == "latest":
        return MAX
    version = Microversion.parse(value)
    if not MIN <= version <= MAX:
        raise NotAcceptable(
            f"Version {version} is not supported by the API. Minimum is {MIN} and maximum is {MAX}.",
            headers=version_headers(version),
        )
    return version


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
    headers = version_headers(version)
    try:
        response = await handler(request)
    except ApiError as exc:
        exc.headers.update(headers)
        raise
    except web.HTTPException as exc:
        exc.headers.update(headers)
        raise
    response.headers.update(headers)
    return response


def setup(app: web.Application) -> None:
    """Run `negotiate` innermost, after authentication: an unauthenticated request is refused
    before any version is considered (keystonemiddleware sits in front of Nova the same way)."""
    app.middlewares.append(negotiate)
