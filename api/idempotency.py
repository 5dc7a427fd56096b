"""Idempotency keys: the same request twice has one effect.

A POST, PUT, PATCH or DELETE with an `Idempotency-Key` header (every AMQP command with an
`idempotency_key` is one, api/commands.py) runs in ONE database transaction that also records the
key and, at the end, the response. Its handler's database work goes through that transaction: the
request's context gets a pool bound to the one connection (`BoundPool`), each of whose statements
and `acquire()` blocks is a savepoint, so a handler that catches an error rolls back only its own
part, exactly as with the real pool. So:

- the effect and the key commit together: there is no moment at which one exists without the
  other, whatever crashes;
- a repeat of a completed request gets the recorded response (with `Idempotent-Replayed: true`)
  and changes nothing;
- a repeat that arrives while the first is still running waits on the key's row (PostgreSQL's
  unique index makes the second INSERT wait for the first transaction), then gets its response;
- a request that failed (any 4xx or 5xx, or an exception) rolled back whole, so a retry with the
  same key runs afresh: nothing of the failure stays;
- the same key with a different request (method, path, query or body) is refused with 422, as
  the IETF Idempotency-Key draft and Stripe do.

Keys are per user and project and kept for a day (`purge_expired`). What a response shows only
once (a server's `adminPass`, a generated keypair's `private_key`, an application credential's
`secret`) is not stored: a replay shows it as null, so no secret lies in the table for a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import structlog
from aiohttp import web

from api.context import AUTH_KEY, BOUND_CTX, CTX, Handler
from api.errors import ApiError, BadRequest

log = structlog.get_logger("api.idempotency")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY = 255
RETENTION = "24 hours"
_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SHOWN_ONCE = frozenset({"adminPass", "private_key", "secret"})

_CLAIM = """
INSERT INTO idempotency_keys (user_id, project_id, key, fingerprint, status, body)
VALUES ($1, $2, $3, $4, 0, ''::bytea)
ON CONFLICT DO NOTHING RETURNING true
"""
_RECORDED = "SELECT * FROM idempotency_keys WHERE user_id = $1 AND project_id = $2 AND key = $3"
_RECORD = """
UPDATE idempotency_keys SET status = $4, content_type = $5, location = $6, body = $7
WHERE user_id = $1 AND project_id = $2 AND key = $3
"""


class KeyReused(ApiError):
    status, title = 422, "Unprocessable Entity"


class BoundPool:
    """Looks like the asyncpg pool to a handler, but every call runs on one connection inside
    the request's transaction, each as a savepoint (so a caught error undoes only its part)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._conn.transaction():
            yield self._conn

    async def execute(self, query: str, *args: Any) -> str:
        async with self._conn.transaction():
            return await self._conn.execute(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self._conn.transaction():
            return await self._conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self._conn.transaction():
            return await self._conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self._conn.transaction():
            return await self._conn.fetchval(query, *args)


def _key(request: web.Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise BadRequest(f"{HEADER} must be 1 to {MAX_KEY} printable characters.")
    return key


async def _fingerprint(request: web.Request) -> str:
    digest = hashlib.sha256()
    for part in (
        request.method.encode(),
        request.rel_url.path.encode(),
        request.rel_url.query_string.encode(),
    ):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(await request.read())
    return digest.hexdigest()


def _replay(row: asyncpg.Record) -> web.Response:
    headers = {REPLAYED: "true"}
    if row["location"]:
        headers["Location"] = row["location"]
    body = bytes(row["body"])
    return web.Response(
        status=row["status"],
        body=body or None,
        headers=headers,
        content_type=row["content_type"] if body else None,
    )


@web.middleware
async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After `authenticate`: requests without the header (and reads) pass straight through."""
    if request.method not in _METHODS or AUTH_KEY not in request:
        return await handler(request)
    key = _key(request)
    if key is None:
        return await handler(request)
    me = request[AUTH_KEY]
    scope = (me.user_id, me.project_id or "", key)
    fingerprint = await _fingerprint(request)
    context = request.app[CTX]
    async with context.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        done = False
        try:
            if not await conn.fetchval(_CLAIM, *scope, fingerprint):
                await transaction.rollback()
                done = True
                return _answer_repeat(await conn.fetchrow(_RECORDED, *scope), fingerprint)
            request[BOUND_CTX] = dataclasses.replace(context, pool=BoundPool(conn))  # type: ignore[arg-type]
            response = await handler(request)
            if response.status >= 400:  # refused or failed: nothing of it stays, the key is free
                return response
            body = response.body if isinstance(response, web.Response) else b""
            await conn.execute(
                _RECORD,
                *scope,
                response.status,
                response.content_type if body else None,
                response.headers.get("Location"),
                _without_secrets(bytes(body or b"")),
            )
            await transaction.commit()
            done = True
            return response
        finally:
            if not done:
                await transaction.rollback()


def _without_secrets(body: bytes) -> bytes:
    """The response body to keep: secrets shown once are nulled (the body is JSON, or kept as is)."""
    if not body:
        return body
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: None if k in _SHOWN_ONCE else scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return msgspec.json.encode(scrub(doc))


def _answer_repeat(row: asyncpg.Record | None, fingerprint: str) -> web.Response:
    if row is None:  # cannot happen: the conflicting row committed (else our INSERT would have won)
        raise ApiError("The request could not be completed; retry it.")
    if row["fingerprint"] != fingerprint:
        raise KeyReused(
            f"{HEADER} was already used with a different request; use a new key for a new request."
        )
    return _replay(row)


async def purge_expired(pool: asyncpg.Pool) -> int:
    status = await pool.execute(
        f"DELETE FROM idempotency_keys WHERE created_at < now() - interval '{RETENTION}'"
    )
    return int(status.split()[-1])


PURGE_EVERY = 600.0  # seconds


async def _purge_loop(app: web.Application) -> AsyncIterator[None]:
    """Forget keys older than RETENTION, every PURGE_EVERY seconds, while the app runs."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(PURGE_EVERY)
            try:
                await purge_expired(app[CTX].pool)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("idempotency keys: purge failed; will retry", error=repr(exc))

    task = asyncio.create_task(loop(), name="idempotency purge")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_purge_loop)
