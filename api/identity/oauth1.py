"""/identity/v3/OS-OAUTH1/consumers: Keystone's OAuth1 consumers (the applications that may ask
for delegated access). The secret is shown once, at creation; only its hash is kept. The
request-token and access-token flow is not offered (its routes answer 404, as a resource this
cloud does not have)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from api.auth import hash_password
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, NotFound
from api.identity import policy
from api.identity import validate as v
from api.identity.views import links

_KNOWN = {"id", "description", "secret"}


def _view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    view = {
        "id": row["id"],
        "description": row["description"],
        "links": {"self": f"{base}/identity/v3/OS-OAUTH1/consumers/{row['id']}"},
    }
    return {**{k: val for k, val in row["extra"].items() if k not in view}, **view}


async def _consumer(conn: Any, consumer_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM oauth_consumers WHERE id = $1", consumer_id)
    if row is None:
        raise NotFound(f"Could not find consumer: {consumer_id}.")
    return row


async def list_consumers(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "list_consumers")
    context = ctx(request)
    rows = await context.pool.fetch("SELECT * FROM oauth_consumers ORDER BY id")
    base = context.base_url
    return json_response(
        {"consumers": [_view(r, base) for r in rows], "links": links(base, "OS-OAUTH1/consumers")}
    )


async def create_consumer(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "create_consumer")
    context = ctx(request)
    data = v.member(await json_body(request), "consumer")
    description = v.text(data, "description", max_len=65535)
    secret = secrets.token_hex(16)
    row = await context.pool.fetchrow(
        "INSERT INTO oauth_consumers (id, description, secret_hash, extra) VALUES ($1, $2, $3, $4) "
        "RETURNING *",
        uuid.uuid4().hex,
        description,
        await hash_password(secret),
        v.extra(data, _KNOWN),
    )
    return json_response({"consumer": {**_view(row, context.base_url), "secret": secret}}, status=201)


async def get_consumer(request: web.Request) -> web.Response:
    policy.require_reader(caller(request), "get_consumer")
    context = ctx(request)
    row = await _consumer(context.pool, request.match_info["consumer_id"])
    return json_response({"consumer": _view(row, context.base_url)})


async def update_consumer(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "update_consumer")
    context = ctx(request)
    data = v.member(await json_body(request), "consumer")
    if "secret" in data:
        raise BadRequest("Cannot change consumer secret")
    description = v.text(data, "description", max_len=65535)
    async with context.pool.acquire() as conn, conn.transaction():
        old = await _consumer(conn, request.match_info["consumer_id"])
        row = await conn.fetchrow(
            "UPDATE oauth_consumers SET description = coalesce($2, description), extra = extra || $3 "
            "WHERE id = $1 RETURNING *",
            old["id"],
            description,
            v.extra(data, _KNOWN),
        )
    return json_response({"consumer": _view(row, context.base_url)})


async def delete_consumer(request: web.Request) -> web.Response:
    policy.require_admin(caller(request), "delete_consumer")
    consumer_id = request.match_info["consumer_id"]
    status = await ctx(request).pool.execute("DELETE FROM oauth_consumers WHERE id = $1", consumer_id)
    if status == "DELETE 0":
        raise NotFound(f"Could not find consumer: {consumer_id}.")
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/OS-OAUTH1/consumers", list_consumers)
    r.add_post("/identity/v3/OS-OAUTH1/consumers", create_consumer)
    r.add_get("/identity/v3/OS-OAUTH1/consumers/{consumer_id}", get_consumer)
    r.add_patch("/identity/v3/OS-OAUTH1/consumers/{consumer_id}", update_consumer)
    r.add_delete("/identity/v3/OS-OAUTH1/consumers/{consumer_id}", delete_consumer)
