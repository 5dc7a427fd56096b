"""Checks on compute query strings, with Nova's messages.

Nova validates a list call's query string with JSON Schema too ("Invalid input for query
parameters <name>. ..."), and from microversion 2.75 on refuses the parameters a call does not
know, which is why these checks live with compute's microversion rather than in api/validate.py.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from aiohttp import web

from api.compute.microversion import requested
from api.errors import BadRequest


def only_known(request: web.Request, allowed: Collection[str], *, since: tuple[int, int] = (2, 75)) -> None:
    """From 2.75 (for some calls from an earlier microversion, `since`) Nova refuses query
    parameters a call does not know; before, it ignores them."""
    if requested(request) < since:
        return
    extra = sorted(set(request.query) - set(allowed))
    if extra:
        listed = ", ".join(repr(k) for k in extra)
        verb = "were" if len(extra) > 1 else "was"
        raise BadRequest(
            f"Invalid input for query parameters {', '.join(extra)}. "
            f"Additional properties are not allowed ({listed} {verb} unexpected)"
        )


def integer(request: web.Request, key: str) -> int | None:
    """A non-negative integer query parameter (limit)."""
    raw = request.query.get(key)
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]+", raw):
        raise BadRequest(
            f"Invalid input for query parameters {key}. Value: {raw}. {raw!r} does not match '^[0-9]*$'"
        )
    return int(raw)
