"""Commands over AMQP: the REST API's operations for integrations that speak messages.

A command is a JSON message on the topic exchange `actorstack.commands` (routing key: the
operation's name); every API process consumes the one durable queue `actorstack.commands`
bound to it. The reply goes to the message's `reply_to` queue with its `correlation_id`. The
protocol, with examples, is in protocol/README.md; this module is its one implementation.

Each operation is the REST call it names, made to this process's own API over loopback HTTP, so a
command is authenticated, authorised, validated, quota-checked and answered by exactly the code
that answers the API: the reply's `status` and `result` (or OpenStack-shaped `error`) are the
API's response. An `idempotency_key` becomes the API's Idempotency-Key header
(api/idempotency.py): the effect and the key commit in one transaction, so the same command
twice has one effect, also when the first one's consumer died before it could reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import hashlib
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import aio_pika
import aiohttp
import msgspec
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from actors import amqp
from actors.errors import ServiceUnreachable
from protocol.routing import COMMANDS_EXCHANGE, COMMANDS_QUEUE

log = structlog.get_logger("api.commands")

EXCHANGE, QUEUE = COMMANDS_EXCHANGE, COMMANDS_QUEUE
VERSION = "1.0"  # of the command protocol; a command names the major version it speaks
MAX_MESSAGE = 1024 * 1024  # as the API's JSON bodies
HTTP_TIMEOUT = 120.0

Args = Mapping[str, Any]


# --- the operations ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Operation:
    """One REST call. `path` names its ids in braces ({server_id}); `{project_id}` comes from
    the caller's token. `body` builds the request body from the args (None: no body);
    `wrapper` is the one body key a create or update carries (as in the REST API)."""

    method: str
    path: str
    ids: tuple[str, ...] = ()
    wrapper: str | None = None
    optional: tuple[str, ...] = ()  # further args the body builder reads
    body: Callable[[Args], Any] | None = None
    service: str = "compute"
    listing: bool = False  # accepts "query": {name: value} as the query string

    def arg_names(self) -> set[str]:
        names = set(self.ids) | set(self.optional)
        if self.wrapper:
            names.add(self.wrapper)
        if self.listing:
            names.add("query")
        return names


def _wrapped(name: str) -> Callable[[Args], Any]:
    return lambda args: {name: args[name]}


def _attachment(args: Args) -> Any:
    attachment: dict[str, Any] = {"volumeId": args["volume_id"]}
    for arg, field in (
        ("device", "device"),
        ("delete_on_termination", "delete_on_termination"),
        ("tag", "tag"),
    ):
        if arg in args:
            attachment[field] = args[arg]
    return {"volumeAttachment": attachment}


def _crud(kind: str, collection: str, *, service: str, update: str = "PUT") -> dict[str, Operation]:
    """create, show, update, delete and list of one REST collection."""
    one, item = f"{collection}/{{{kind}_id}}", f"{kind}_id"
    return {
        f"{kind}.create": Operation("POST", collection, wrapper=kind, body=_wrapped(kind), service=service),
        f"{kind}.show": Operation("GET", one, ids=(item,), service=service),
        f"{kind}.update": Operation(
            update, one, ids=(item,), wrapper=kind, body=_wrapped(kind), service=service
        ),
        f"{kind}.delete": Operation("DELETE", one, ids=(item,), service=service),
        f"{kind}.list": Operation("GET", collection, service=service, listing=True),
    }


_SERVERS = "/compute/v2.1/servers"
_VOLUMES = "/volume/v3/{project_id}/volumes"
OPERATIONS: dict[str, Operation] = {
    **_crud("server", _SERVERS, service="compute"),
    "server.create": Operation(
        "POST",
        _SERVERS,
        wrapper="server",
        optional=("os:scheduler_hints",),
        body=lambda args: {k: args[k] for k in ("server", "os:scheduler_hints") if k in args},
    ),
    "server.list": Operation("GET", _SERVERS + "/detail", listing=True),
    "server.action": Operation(
        "POST",
        _SERVERS + "/{server_id}/action",
        ids=("server_id",),
        wrapper="action",
        body=lambda args: args["action"],
    ),
    **_crud("volume", _VOLUMES, service="volume"),
    "volume.list": Operation("GET", _VOLUMES + "/detail", service="volume", listing=True),
    "volume.attach": Operation(
        "POST",
        _SERVERS + "/{server_id}/os-volume_attachments",
        ids=("server_id",),
        optional=("volume_id", "device", "delete_on_termination", "tag"),
        body=_attachment,
    ),
    "volume.detach": Operation(
        "DELETE", _SERVERS + "/{server_id}/os-volume_attachments/{volume_id}", ids=("server_id", "volume_id")
    ),
    **_crud("network", "/networking/v2.0/networks", service="network"),
    **_crud("subnet", "/networking/v2.0/subnets", service="network"),
    **_crud("port", "/networking/v2.0/ports", service="network"),
    "keypair.create": Operation(
        "POST", "/compute/v2.1/os-keypairs", wrapper="keypair", body=_wrapped("keypair")
    ),
    "keypair.delete": Operation("DELETE", "/compute/v2.1/os-keypairs/{name}", ids=("name",)),
    "keypair.list": Operation("GET", "/compute/v2.1/os-keypairs", listing=True),
}
_REQUIRED_BODY_ARGS = {"volume.attach": ("volume_id",)}


# --- errors, in the shapes the API uses -------------------------------------------------------------------


class CommandError(Exception):
    """A command refused before (or instead of) its REST call; `error` is its OpenStack body."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(str(error))
        self.status = status
        self.error = error


def bad_request(message: str) -> CommandError:
    return CommandError(400, {"badRequest": {"code": 400, "message": message}})


def unauthorized(message: str) -> CommandError:
    return CommandError(401, {"error": {"code": 401, "title": "Unauthorized", "message": message}})


# --- parsing -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Command:
    op: str
    operation: Operation
    args: Args
    auth: Mapping[str, Any]
    idempotency_key: str | None
    microversion: str | None


def _major(version: Any) -> str:
    if not isinstance(version, str) or not version:
        raise bad_request(f"'version' must be a string such as {VERSION!r}.")
    return version.split(".", 1)[0]


def parse(raw: bytes, routing_key: str) -> Command:
    """The command in a message, or CommandError saying what is wrong with it."""
    doc = _decode(raw)
    unknown = set(doc) - {"version", "op", "auth", "args", "idempotency_key", "microversion"}
    if unknown:
        raise bad_request(f"Unknown command fields: {', '.join(sorted(unknown))}.")
    if _major(doc.get("version", VERSION)) != _major(VERSION):
        raise bad_request(
            f"Command protocol version {doc['version']!r} is not supported; this cloud speaks {VERSION}."
        )
    op = doc.get("op", routing_key or None)
    if not isinstance(op, str) or not op:
        raise bad_request("The command names no operation ('op').")
    if routing_key and routing_key != op:
        raise bad_request(f"The routing key {routing_key!r} and the operation {op!r} differ.")
    operation = OPERATIONS.get(op)
    if operation is None:
        raise bad_request(f"Unknown operation {op!r}. Known operations: {', '.join(sorted(OPERATIONS))}.")
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise bad_request("'args' must be a JSON object.")
    _check_args(op, operation, args)
    auth = doc.get("auth")
    if not isinstance(auth, dict) or not auth:
        raise unauthorized(
            "The command carries no credentials ('auth': a token or an application credential)."
        )
    key = doc.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 255 or not key.isprintable()):
        raise bad_request("'idempotency_key' must be a string of 1 to 255 printable characters.")
    microversion = doc.get("microversion")
    if microversion is not None and not isinstance(microversion, str):
        raise bad_request("'microversion' must be a string such as '2.96'.")
    return Command(op, operation, args, auth, key, microversion)


def _decode(raw: bytes) -> dict[str, Any]:
    """The message's JSON object, not too large."""
    if len(raw) > MAX_MESSAGE:
        raise CommandError(413, {"overLimit": {"code": 413, "message": "Request is too large."}})
    try:
        doc = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:  # as api/context.json_body
        raise bad_request(f"Malformed command: {exc}") from None
    if not isinstance(doc, dict):
        raise bad_request("A command is a JSON object.")
    return doc


def _check_args(op: str, operation: Operation, args: Args) -> None:
    unexpected = set(args) - operation.arg_names()
    if unexpected:
        raise bad_request(f"Unexpected arguments for {op}: {', '.join(sorted(unexpected))}.")
    for name in (*operation.ids, *_REQUIRED_BODY_ARGS.get(op, ())):
        value = args.get(name)
        if not isinstance(value, str) or not value:
            raise bad_request(f"{op} needs '{name}', a non-empty string.")
    if operation.wrapper is not None and operation.wrapper not in args:
        raise bad_request(f"{op} needs '{operation.wrapper}'.")
    if operation.listing and "query" in args:
        query = args["query"]
        if not isinstance(query, dict) or not all(isinstance(v, (str, int, bool)) for v in query.values()):
            raise bad_request("'query' must be an object of strings, numbers or booleans.")


# --- credentials -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Token:
    token: str
    project_id: str | None
    expires_at: float


class Credentials:
    """Tokens for commands: a token is validated by the identity API (and remembered until it
    expires); an application credential is exchanged for a token there, remembered likewise."""

    def __init__(self) -> None:
        self._known: dict[str, _Token] = {}

    def forget(self, auth: Mapping[str, Any]) -> None:
        self._known.pop(self._cache_key(auth), None)

    @staticmethod
    def _cache_key(auth: Mapping[str, Any]) -> str:
        return hashlib.sha256(msgspec.json.encode(auth, order="sorted")).hexdigest()

    async def token(self, http: aiohttp.ClientSession, base: str, auth: Mapping[str, Any]) -> _Token:
        key = self._cache_key(auth)
        known = self._known.get(key)
        if known is not None and known.expires_at > time.time() + 30:
            return known
        if set(auth) == {"token"} and isinstance(auth["token"], str) and auth["token"]:
            found = await self._validate(http, base, auth["token"])
        elif set(auth) == {"application_credential"} and isinstance(auth["application_credential"], dict):
            found = await self._exchange(http, base, auth["application_credential"])
        else:
            raise unauthorized(
                '\'auth\' must be {"token": …} or {"application_credential": {"id": …, "secret": …}}.'
            )
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[key] = found
        return found

    async def _validate(self, http: aiohttp.ClientSession, base: str, token: str) -> _Token:
        headers = {"X-Auth-Token": token, "X-Subject-Token": token}
        async with http.get(f"{base}/identity/v3/auth/tokens", headers=headers) as response:
            body = await _json(response)
            if response.status != 200:
                raise CommandError(response.status, body)
        return _Token(token, _project(body), _expiry(body))

    async def _exchange(
        self, http: aiohttp.ClientSession, base: str, credential: Mapping[str, Any]
    ) -> _Token:
        request = {
            "auth": {
                "identity": {"methods": ["application_credential"], "application_credential": credential}
            }
        }
        async with http.post(f"{base}/identity/v3/auth/tokens?nocatalog", json=request) as response:
            body = await _json(response)
            if response.status != 201:
                raise CommandError(response.status, body)
            token = response.headers["X-Subject-Token"]
        return _Token(token, _project(body), _expiry(body))


def _project(body: Any) -> str | None:
    project = body.get("token", {}).get("project") if isinstance(body, dict) else None
    return project.get("id") if isinstance(project, dict) else None


def _expiry(body: Any) -> float:
    try:
        text = body["token"]["expires_at"]
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (KeyError, TypeError, ValueError):
        return time.time() + 60


async def _json(response: aiohttp.ClientResponse) -> Any:
    raw = await response.read()
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {"error": {"code": response.status, "message": raw.decode(errors="replace")[:500]}}


# --- running one command -------------------------------------------------------------------------------


class Executor:
    """Runs parsed commands against the API at `base` (this process's own, over loopback)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.credentials = Credentials()
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))
        return self._http

    async def run(self, command: Command) -> dict[str, Any]:
        """The reply body (without the envelope fields the consumer adds)."""
        http = self._session()
        token = await self.credentials.token(http, self.base, command.auth)
        op = command.operation
        ids = {name: urllib.parse.quote(str(command.args[name]), safe="") for name in op.ids}
        if "{project_id}" in op.path:
            if token.project_id is None:
                raise CommandError(
                    403,
                    {"forbidden": {"code": 403, "message": "This operation needs a project-scoped token."}},
                )
            ids["project_id"] = urllib.parse.quote(token.project_id, safe="")
        url = self.base + op.path.format(**ids)
        # JSON errors: Glance's take the type a client accepts (webob's pages).
        headers = {"X-Auth-Token": token.token, "Accept": "application/json"}
        if command.idempotency_key is not None:
            headers["Idempotency-Key"] = command.idempotency_key
        if command.microversion is not None and op.service == "compute":
            headers["OpenStack-API-Version"] = f"compute {command.microversion}"
        elif command.microversion is not None and op.service == "volume":
            headers["OpenStack-API-Version"] = f"volume {command.microversion}"
        params = {
            k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in (command.args.get("query") or {}).items()
        }
        body = op.body(command.args) if op.body is not None else None
        async with http.request(
            op.method,
            url,
            headers=headers,
            params=params or None,
            data=None if body is None else msgspec.json.encode(body),
        ) as response:
            result = await _json(response)
            if response.status == 401:
                self.credentials.forget(command.auth)
            reply: dict[str, Any] = {
                "ok": response.status < 400,
                "status": response.status,
                "request_id": response.headers.get("x-openstack-request-id"),
            }
            if response.status < 400:
                reply["result"] = result
                reply["replayed"] = response.headers.get("Idempotent-Replayed") == "true"
                if "Location" in response.headers:
                    reply["location"] = response.headers["Location"]
            else:
                reply["error"] = result
            return reply


# --- the consumer ----------------------------------------------------------------------------------------


class CommandService:
    """Consumes `actorstack.commands` in this API process and replies to each command."""

    def __init__(self, amqp_url: str, api_base: str, *, prefetch: int = 32) -> None:
        self._url = amqp_url
        self._prefetch = prefetch
        self.executor = Executor(api_base)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.handled = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="commands consumer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        await self.executor.close()

    async def _run(self) -> None:
        backoff = 0.5
        while self._connection is None:
            try:
                self._connection = await amqp.connect(self._url)
            except ServiceUnreachable as exc:
                log.warning("commands: broker unreachable; will retry", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self._prefetch)
        queue = await amqp.declare_commands(channel)
        await queue.consume(self._on_message)
        self._channel = channel
        self.ready.set()
        log.info("commands: consuming", queue=QUEUE)
        await asyncio.Event().wait()  # the robust connection restores the consumer after a reconnect

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        reply = await self.handle(message.body, message.routing_key or "")
        if message.reply_to:
            assert self._channel is not None
            await self._channel.default_exchange.publish(
                aio_pika.Message(
                    msgspec.json.encode(reply),
                    content_type="application/json",
                    correlation_id=message.correlation_id,
                ),
                routing_key=message.reply_to,
            )
        # Acked only once the reply is out: a consumer that dies before runs the command again
        # elsewhere (one effect with an idempotency key, api/idempotency.py).
        await message.ack()
        self.handled += 1

    async def handle(self, raw: bytes, routing_key: str) -> dict[str, Any]:
        op = None
        try:
            command = parse(raw, routing_key)
            op = command.op
            reply = await self.executor.run(command)
        except CommandError as exc:
            reply = {"ok": False, "status": exc.status, "error": exc.error}
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("commands: the API did not answer", op=op, error=repr(exc))
            reply = {
                "ok": False,
                "status": 503,
                "error": {
                    "serviceUnavailable": {
                        "code": 503,
                        "message": "The API did not answer the command; retry it (with the same "
                        "idempotency_key).",
                    }
                },
            }
        except Exception:
            log.exception("commands: unexpected failure", op=op)
            reply = {
                "ok": False,
                "status": 500,
                "error": {
                    "computeFault": {
                        "code": 500,
                        "message": "The server has either erred or is incapable of performing the requested "
                        "operation.",
                    }
                },
            }
        log.info("command", op=op, status=reply["status"])
        return {"version": VERSION, "op": op, **reply}
