"""The request pipeline: request id and logging, error rendering, authentication."""

from __future__ import annotations

import functools
import re
import time
import uuid

import asyncpg
import structlog
from aiohttp import web

from api.auth import authorize
from api.context import AUTH_KEY, CTX, Handler
from api.errors import UNAVAILABLE_MESSAGE, ApiError, Unauthorized, database_away, render, service_of

# What PostgreSQL answers to text it cannot store (a NUL in a text or jsonb value).
UNSTORABLE_TEXT = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)

log = structlog.get_logger("api")

_REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HTTP_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
}


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every response carries x-openstack-request-id; every log line of the request, its id."""
    rid = f"req-{uuid.uuid4()}"
    global_rid = request.headers.get("X-OpenStack-Request-ID", "")
    started = time.monotonic()
    with structlog.contextvars.bound_contextvars(
        request_id=rid, global_request_id=global_rid if _REQUEST_ID.match(global_rid) else None
    ):
        request["request_id"] = rid
        response = await handler(request)
        response.headers["x-openstack-request-id"] = rid
        if service_of(request.path) == "compute":
            response.headers["x-compute-request-id"] = rid
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error in its service's shape; never a traceback in a response."""
    service = service_of(request.path)
    # Glance's errors take the type the client accepts (webob's pages); "" when none is said.
    answer = functools.partial(render, service, accept=request.headers.get("Accept", ""))
    try:
        return await handler(request)
    except ApiError as exc:
        return answer(exc.status, exc.title, exc.message, exc.headers, kind=exc.kind)
    except UNSTORABLE_TEXT:
        # A NUL (or a byte sequence PostgreSQL cannot hold) in a path, query or body string
        # reached a query: the caller's input, not our fault, and nothing was stored.
        return answer(
            400,
            "Bad Request",
            "Invalid input: a string holds a character that cannot be stored (NUL, \\u0000).",
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        status = exc.status
        if status == 404:
            message = "The resource could not be found."
        elif status == 405:
            message = f"The method {request.method} is not allowed for this resource."
        elif status == 413:
            message = "Request is too large."
        else:
            message = exc.text or exc.reason
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")
        }
        return answer(status, _HTTP_TITLES.get(status, exc.reason), message, headers)
    except Exception as exc:
        if database_away(exc):
            log.warning("database unavailable", method=request.method, path=request.path, error=repr(exc))
            return answer(503, "Service Unavailable", UNAVAILABLE_MESSAGE, {"Retry-After": "1"})
        log.exception("unhandled error", method=request.method, path=request.path)
        return answer(
            500,
            "Internal Server Error",
            "The server has either erred or is incapable of performing the requested operation.",
        )


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    route_handler = request.match_info.handler
    if getattr(route_handler, "public", False):
        return await handler(request)
    token = request.headers.get("X-Auth-Token")
    context = request.app[CTX]
    try:
        if not token:
            raise Unauthorized("The request you have made requires authentication.")
        payload = context.tokens.verify(token)
        async with context.pool.acquire() as conn:
            me = await authorize(conn, token, payload, request.method, request.path)
    except Unauthorized as exc:
        # keystonemiddleware's refusal, the same in every service: Keystone's error shape and
        # where to sign in (not the service's own fault shape, which a handler's errors use).
        return render(
            "identity",
            401,
            exc.title,
            exc.message,
            {"WWW-Authenticate": f'Keystone uri="{context.base_url}/identity"'},
        )
    request[AUTH_KEY] = me
    structlog.contextvars.bind_contextvars(user_id=payload.user_id, project_id=payload.project_id)
    return await handler(request)
