"""API errors: small classes that carry a status and a message, rendered in one place in the
shape each OpenStack service uses (clients parse these bodies to show the message)."""

from __future__ import annotations

import html
import json

import asyncpg
from aiohttp import web

from actors import db

# The database is away for now (down, restarting, recovering from a crash): the request is
# answered 503, which clients retry, rather than 500; nothing was committed by it.
DATABASE_AWAY: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
UNAVAILABLE_MESSAGE = "The service is temporarily unavailable. Please try again later."


def database_away(exc: BaseException) -> bool:
    """Whether `exc` means the database went away under the request. asyncpg reports a
    connection lost inside a transaction twice: the query's ConnectionDoesNotExistError, then,
    while leaving the transaction, an InterfaceError ("the underlying connection is closed").
    And a server shutting down sends its FATAL to idle connections, which puts asyncpg's protocol
    in a state where the next query on that connection, before the socket is seen closed, fails
    with an InternalClientError ("cannot switch to state …; another operation … is in progress")."""
    if isinstance(exc, DATABASE_AWAY):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        cause = exc.__cause__ or exc.__context__
        return "connection is closed" in str(exc) or (cause is not None and isinstance(cause, DATABASE_AWAY))
    if isinstance(exc, db.PROTOCOL_LOST):
        return "another operation" in str(exc)
    return False


class ApiError(Exception):
    status = 500
    title = "Internal Server Error"

    def __init__(
        self, message: str, *, headers: dict[str, str] | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        # The service's own name for this error where its clients read one (Neutron's exception
        # class, e.g. "NetworkNotFound", the NeutronError's "type"); None: the status's generic one.
        self.kind = kind


class BadRequest(ApiError):
    status, title = 400, "Bad Request"


class Unauthorized(ApiError):
    status, title = 401, "Unauthorized"


class Forbidden(ApiError):
    status, title = 403, "Forbidden"


class OverQuota(Forbidden):
    """Nova and Cinder answer an exceeded quota with 403 (Cinder: 413); the message says which."""


class NotFound(ApiError):
    status, title = 404, "Not Found"


class MethodNotAllowed(ApiError):
    status, title = 405, "Method Not Allowed"


class Conflict(ApiError):
    status, title = 409, "Conflict"


class Gone(ApiError):
    """Glance answers an upload whose image was deleted meanwhile with 410."""

    status, title = 410, "Gone"


class PayloadTooLarge(ApiError):
    status, title = 413, "Request Entity Too Large"


class UnsupportedMediaType(ApiError):
    status, title = 415, "Unsupported Media Type"


class ServiceUnavailable(ApiError):
    status, title = 503, "Service Unavailable"


# Nova (and Cinder) wrap the error in an object named after the fault.
_COMPUTE_FAULTS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    501: "notImplemented",
    503: "serviceUnavailable",
}

_NEUTRON_TYPES = {
    400: "BadRequest",
    401: "NotAuthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "OverQuota",
    501: "NotImplemented",
    503: "ServiceUnavailable",
}


def service_of(path: str) -> str:
    for prefix, service in (
        ("/identity", "identity"),
        ("/compute", "compute"),
        ("/image", "image"),
        ("/volume", "volume"),
        ("/networking", "network"),
    ):
        if path == prefix or path.startswith(prefix + "/"):
            return service
    return "identity"


def webob_media_type(accept: str | None) -> str:
    """The type webob's error pages (Glance's errors) take for this Accept header: the first of
    text/html and application/json by quality (the most specific matching range decides an
    offer's), text/plain when neither is acceptable (an empty or absent header). An invalid
    header accepts both, as webob reads it."""
    if accept is None:
        return "application/json"  # not asked through HTTP: the JSON shape
    ranges: list[tuple[str, str, float]] = []
    try:
        for part in accept.split(","):
            media, *params = (p.strip() for p in part.split(";"))
            if not media:
                continue
            kind, slash, subtype = media.lower().partition("/")
            quality = 1.0
            for param in params:
                name, _, value = param.partition("=")
                if name.strip().lower() == "q":
                    quality = float(value)
            if not slash or not kind or not subtype or not 0 <= quality <= 1:
                raise ValueError(media)
            ranges.append((kind, subtype, quality))
    except ValueError:
        return "text/html"
    best, best_quality = "text/plain", 0.0
    for offer in ("text/html", "application/json"):
        kind, _, subtype = offer.partition("/")
        matching = [
            (2 if (k, s) == (kind, subtype) else 1 if k == kind and s == "*" else 0, q)
            for k, s, q in ranges
            if (k, s) in ((kind, subtype), (kind, "*"), ("*", "*"))
        ]
        quality = max(matching)[1] if matching else 0.0
        if quality > best_quality:
            best, best_quality = offer, quality
    return best


def _image_error(status: int, title: str, message: str, accept: str | None) -> tuple[str, str]:
    """(body, media type) of Glance's error: webob's page for the Accept header. The HTML page
    is what python-glanceclient reads the message from when it asks with Accept: */*."""
    media = webob_media_type(accept)
    if media == "text/html":
        body = (
            f"<html>\n <head>\n  <title>{status} {title}</title>\n </head>\n <body>\n"
            f"  <h1>{status} {title}</h1>\n  {html.escape(message, quote=False)}<br /><br />\n\n\n\n"
            " </body>\n</html>"
        )
    elif media == "text/plain":
        body = f"{status} {title}\n\n{message}\n\n\n\n\n"
    else:
        body = json.dumps({"message": message, "code": f"{status} {title}", "title": title})
    return body, media


def render(
    service: str,
    status: int,
    title: str,
    message: str,
    headers: dict[str, str] | None = None,
    kind: str | None = None,
    accept: str | None = None,
) -> web.Response:
    """The error response in the service's shape; `kind` is only used where the shape has a
    place for it (Neutron's "type"), `accept` (the request's Accept header, "" when it has
    none) where the service negotiates its error's type (Glance)."""
    body: object
    if service == "image":
        text, media = _image_error(status, title, message, accept)
        return web.Response(status=status, text=text, content_type=media, headers=headers or {})
    if service in ("compute", "volume"):
        body = {_COMPUTE_FAULTS.get(status, "computeFault"): {"code": status, "message": message}}
    elif service == "network":
        neutron_type = kind or _NEUTRON_TYPES.get(status, "InternalError")
        body = {"NeutronError": {"type": neutron_type, "message": message, "detail": ""}}
    else:
        body = {"error": {"code": status, "title": title, "message": message}}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers or {}
    )
