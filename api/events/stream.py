"""The operator event stream: `GET /v1/events` (Server-Sent Events) and `GET /v1/events/ws`
(WebSocket), authenticated with a Keystone token (`X-Auth-Token`).

Every event a turn commits is here, in commit order (`seq`, see sequencer.py): its number, time,
project, actor kind and id, the message type that caused it, the state before and after, the
request id and a small payload. Members see their project's events; admins see all, or one
project's with `?project_id=`. Filters: `kind`, `id` (actor id), `type`, each repeatable or
comma-separated.

Where to start: `Last-Event-ID` (what EventSource sends when it reconnects) or `?after=N` replays
exactly the events numbered after N from PostgreSQL and then continues live; without either the
stream starts at the present. A connection never holds more than one page of events: it reads
the next page only once the previous one was written, so a slow client costs no memory; one
whose socket accepts nothing for WRITE_TIMEOUT seconds is cut off (WebSocket close 1008 with the
reason; SSE ends). Heartbeats (an SSE comment, a WebSocket ping) keep idle connections alive, and
at each one the token is checked again: an expired or revoked token ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
import structlog
from aiohttp import WSCloseCode, web

from api.auth import check_not_revoked
from api.context import caller, ctx
from api.errors import ApiError, BadRequest, Forbidden

log = structlog.get_logger("api.events")

PAGE = 500
WRITE_TIMEOUT = 30.0  # a client that accepts no bytes for this long is cut off
HEARTBEAT = 15.0
POLL = 0.25  # how often a process looks for events numbered by another process's sequencer
MAX_FILTER_VALUES = 100


class Hub:
    """The highest event number this process knows of, and a wake-up for streams waiting on it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.latest = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.latest = int(await self.pool.fetchval("SELECT last FROM event_sequence"))
        self._task = asyncio.create_task(self._poll(), name="event hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def advance(self, seq: int) -> None:
        if seq > self.latest:
            self.latest = seq
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def wait_beyond(self, seq: int, timeout: float) -> None:
        """Until an event after `seq` is numbered, or `timeout` seconds."""
        if self.latest > seq:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            try:
                self.advance(int(await self.pool.fetchval("SELECT last FROM event_sequence")))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("event hub cannot read the sequence; will retry", error=repr(exc))


HUB = web.AppKey("actorstack.events.hub", Hub)


@dataclasses.dataclass(frozen=True)
class Filters:
    project_id: str | None  # None: every project (admins only)
    kinds: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    types: tuple[str, ...] = ()

    def where(self, args: list[Any]) -> str:
        clauses = []
        for column, values in (
            ("project_id", (self.project_id,) if self.project_id else ()),
            ("kind", self.kinds),
            ("actor_id", self.ids),
            ("type", self.types),
        ):
            if values:
                args.append(list(values))
                clauses.append(f"{column} = ANY(${len(args)}::text[])")
        return "".join(f" AND {c}" for c in clauses)


def _values(request: web.Request, name: str) -> tuple[str, ...]:
    values = tuple(v.strip() for raw in request.query.getall(name, []) for v in raw.split(",") if v.strip())
    if len(values) > MAX_FILTER_VALUES:
        raise BadRequest(f"At most {MAX_FILTER_VALUES} values of {name} are allowed.")
    return values


def filters_of(request: web.Request) -> Filters:
    me = caller(request)
    wanted = request.query.get("project_id")
    if me.is_admin:
        project = wanted or None
    else:
        project = me.require_project()
        if wanted and wanted != project:
            raise Forbidden("Policy doesn't allow events:stream to be performed for another project.")
    return Filters(project, _values(request, "kind"), _values(request, "id"), _values(request, "type"))


def start_of(request: web.Request, hub: Hub) -> int:
    """The number to start after: Last-Event-ID, else ?after=, else the present."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("after")
    if not raw:
        return hub.latest
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise BadRequest(f"Invalid event id {raw!r}: expected a non-negative integer.")
    return value


def heartbeat_of(request: web.Request) -> float:
    raw = request.query.get("heartbeat")
    if raw is None:
        return HEARTBEAT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan  # fails the range check below
    if not 0.5 <= value <= 300:
        raise BadRequest(f"Invalid heartbeat {raw!r}: expected seconds between 0.5 and 300.")
    return value


def event_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["seq"],
        "time": row["at"].isoformat(),
        "project_id": row["project_id"],
        "kind": row["kind"],
        "actor_id": row["actor_id"],
        "type": row["type"],
        "prev_state": row["prev_state"],
        "new_state": row["new_state"],
        "request_id": row["correlation_id"],
        "payload": row["payload"],
    }


async def page(pool: asyncpg.Pool, filters: Filters, after: int, upto: int) -> list[asyncpg.Record]:
    args: list[Any] = [after, upto, PAGE]
    sql = (
        "SELECT seq, at, project_id, kind, actor_id, type, prev_state, new_state, correlation_id, payload "
        "FROM events WHERE seq > $1 AND seq <= $2" + filters.where(args) + " ORDER BY seq LIMIT $3"
    )
    return list(await pool.fetch(sql, *args))


class StreamEnded(Exception):
    """The stream must end: the reason goes to the client where the protocol can carry it."""


async def follow(
    request: web.Request,
    after: int,
    filters: Filters,
    heartbeat: float,
    send: Callable[[dict[str, Any]], Awaitable[None]],
    beat: Callable[[], Awaitable[None]],
) -> None:
    """Send every matching event numbered after `after`, in order, forever (until StreamEnded)."""
    context, hub = ctx(request), request.app[HUB]
    me = caller(request)
    scanned = after  # every event up to here was read (the filters may have skipped some)
    next_beat = asyncio.get_running_loop().time() + heartbeat
    while True:
        upto = hub.latest
        if upto > scanned:
            rows = await page(context.pool, filters, scanned, upto)
            for row in rows:
                await send(event_view(row))
            scanned = rows[-1]["seq"] if len(rows) == PAGE else upto
            if len(rows) == PAGE:
                continue
        now = asyncio.get_running_loop().time()
        if now >= next_beat:
            try:
                context.tokens.verify(me.token)
                await check_not_revoked(context.pool, me.payload)
            except ApiError as exc:
                raise StreamEnded(f"token no longer valid: {exc.message}") from None
            await beat()
            next_beat = now + heartbeat
            continue
        await hub.wait_beyond(scanned, next_beat - now)


async def _write(write: Awaitable[Any]) -> None:
    try:
        await asyncio.wait_for(write, WRITE_TIMEOUT)
    except TimeoutError:
        raise StreamEnded(f"client too slow: nothing accepted for {WRITE_TIMEOUT:.0f} s") from None


async def sse(request: web.Request) -> web.StreamResponse:
    """GET /v1/events: text/event-stream; each event `id: <seq>` and `data: <JSON>`."""
    hub = request.app[HUB]
    filters, after, heartbeat = filters_of(request), start_of(request, hub), heartbeat_of(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    await response.write(b"retry: 2000\n: actorstack events after %d\n\n" % after)

    async def send(event: dict[str, Any]) -> None:
        await _write(response.write(b"id: %d\ndata: %s\n\n" % (event["id"], msgspec.json.encode(event))))

    async def beat() -> None:
        await _write(response.write(b": heartbeat\n\n"))

    try:
        await follow(request, after, filters, heartbeat, send, beat)
    except StreamEnded as exc:
        log.info("event stream ended", reason=str(exc))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                response.write(b"event: error\ndata: %s\n\n" % msgspec.json.encode({"reason": str(exc)})), 1.0
            )
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the client went away
    return response


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /v1/events/ws: one JSON text message per event; pings keep it alive."""
    hub = request.app[HUB]
    filters, after, heartbeat = filters_of(request), start_of(request, hub), heartbeat_of(request)
    ws = web.WebSocketResponse(heartbeat=heartbeat, max_msg_size=4096)
    await ws.prepare(request)

    async def send(event: dict[str, Any]) -> None:
        if ws.closed:
            raise ConnectionResetError()
        await _write(ws.send_str(msgspec.json.encode(event).decode()))

    async def beat() -> None:
        if ws.closed:
            raise ConnectionResetError()

    async def drain_incoming() -> None:
        async for _ in ws:  # the client says nothing we need; reading lets closes and pongs through
            pass

    reader = asyncio.create_task(drain_incoming())
    try:
        await follow(request, after, filters, heartbeat, send, beat)
    except StreamEnded as exc:
        log.info("event stream ended", reason=str(exc))
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=str(exc)[:120].encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        if not ws.closed:
            await ws.close()
    return ws
