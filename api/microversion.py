"""Microversions, as the services with them (compute, volume) share them: the version type, the
`OpenStack-API-Version` header, and the negotiation rules.

Clients send `OpenStack-API-Version: <service> <major>.<minor>` (several services may share the
header, separated by commas); no entry for the service means its minimum and `latest` its maximum.
A malformed version is a 400, a well-formed one outside the service's range a 406, and every
answer, errors included, carries the version it was given. Each service keeps its own range, key
and middleware (api/compute/microversion.py, api/volume/microversion.py) and builds on these.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from aiohttp import web

from api.context import Handler
from api.errors import ApiError, BadRequest

HEADER = "OpenStack-API-Version"
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
