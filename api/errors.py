"""API errors: small classes that carry a status and a message, rendered in one place in the
shape each OpenStack service uses (clients parse these bodies to show the message)."""

from __future__ import annotations

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


def render(
    service: str,
    status: int,
    title: str,
    message: str,
    headers: dict[str, str] | None = None,
    kind: str | None = None,
) -> web.Response:
    """The error response in the service's shape; `kind` is only used where the shape has a
    place for it (Neutron's "type")."""
    body: object
    if service in ("compute", "volume"):
        body = {_COMPUTE_FAULTS.get(status, "computeFault"): {"code": status, "message": message}}
    elif service == "network":
        neutron_type = kind or _NEUTRON_TYPES.get(status, "InternalError")
        body = {"NeutronError": {"type": neutron_type, "message": message, "detail": ""}}
    elif service == "image":
        body = {"message": message, "code": f"{status} {title}", "title": title}
    else:
        body = {"error": {"code": status, "title": title, "message": message}}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers or {}
    )
