"""Compute microversions: which version of Nova's API a request asked for.

Clients send `OpenStack-API-Version: compute 2.61` (or the legacy `X-OpenStack-Nova-API-Version:
2.61`); no header means 2.1 and `latest` means the newest we serve. The `negotiate` middleware
parses it once per request under /compute/v2.1, stores it where `requested(request)` finds it, and
stamps the version headers on every response, errors included, as Nova does. Handlers compare it
with tuples: `if requested(request) >= (2, 55): ...`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


def header_value(request: web.Request, service: str, legacy_header: str | None = None) -> str | None:
    """The service's entry of OpenStack-API-Version, else the legacy header (microversion-parse's
    rules: the standard header wins; it may list several services separated by commas)."""
    for raw in request.headers.getall(HEADER, []):
        for entry in raw.split(","):
            parts = entry.strip().split(None, 1)
            if parts and parts[0].lower() == service:
                return parts[1].strip() if len(parts) == 2 else ""
    legacy = request.headers.getall(legacy_header, []) if legacy_header else []
    return legacy[0].strip() if legacy else None


def select(
    value: str | None,
    low: Microversion,
    high: Microversion,
    headers_of: Callable[[Microversion], dict[str, str]],
) -> Microversion:
    """The version a header value asks for; 400 when malformed, 406 when outside low..high."""
    if value is None:
        return low
    if value == "latest":
        return high
    version = Microversion.parse(value)
    if not low <= version <= high:
        raise NotAcceptable(
            f"Version {version} is not supported by the API. Minimum is {low} and maximum is {high}.",
            headers=headers_of(version),
        )
    return version


async def stamped(request: web.Request, handler: Handler, headers: dict[str, str]) -> web.StreamResponse:
    """Run the handler and put the version headers on its response, errors included."""
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
