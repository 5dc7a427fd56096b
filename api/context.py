"""What every handler can reach: the application context, the caller, request bodies."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from actors.client import ActorClient
from api.auth import AuthContext, TokenCodec
from api.errors import BadRequest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass
class ApiContext:
    pool: asyncpg.Pool
    tokens: TokenCodec
    base_url: str  # the public URL clients reach this API at, no trailing slash
    state_dir: Path
    shards: int
    host_key: str = ""  # signs host tokens (api/internal/credentials.py)
    # Questions to host agents over the broker (a console log); None: this API asks none.
    agents: ActorClient | None = None


CTX = web.AppKey("actorstack", ApiContext)
AUTH_KEY = "actorstack.auth"
# A request with an Idempotency-Key runs in one transaction: its context's pool is bound to it
# (api/idempotency.py).
BOUND_CTX = "actorstack.bound_context"


def public(handler: Handler) -> Handler:
    """Mark a handler that needs no token (discovery documents, token issue)."""
    handler.public = True  # type: ignore[attr-defined]
    return handler


def host_only(handler: Handler) -> Handler:
    """Mark a handler of the internal API: no Keystone token, a host token it checks itself."""
    handler.public = True  # type: ignore[attr-defined]
    handler.host_token = True  # type: ignore[attr-defined]
    return handler


def ctx(request: web.Request) -> ApiContext:
    bound: ApiContext | None = request.get(BOUND_CTX)
    return bound if bound is not None else request.app[CTX]


def caller(request: web.Request) -> AuthContext:
    return request[AUTH_KEY]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json", headers=headers
    )


async def json_body(request: web.Request) -> Any:
    """The request's JSON document (any shape); a clear 400 when it is not JSON."""
    raw = await request.read()
    if not raw:
        raise BadRequest("The request body is empty; a JSON object was expected.")
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # msgspec raises the last two for bytes that are not UTF-8 inside a string and for
        # nesting past its recursion limit: malformed input like any other, not a 500.
        raise BadRequest(f"Malformed request body: {exc}") from None
