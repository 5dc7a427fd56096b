"""The API application: one aiohttp app on one port, a path prefix per OpenStack service."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from aiohttp import web

from actors import db
from api import compute, discovery, events, idempotency, identity, image, internal, network, openapi, volume
from api.auth import TokenCodec
from api.context import CTX, ApiContext
from api.middleware import authenticate, errors, request_id

MAX_BODY = 1024 * 1024  # JSON bodies; image data is streamed and not bound by this


async def create_app(
    pool: asyncpg.Pool, *, base_url: str, state_dir: Path, token_ttl: float = 3600.0
) -> web.Application:
    key = str(await db.cluster_setting(pool, "token_key"))
    shards = int(await db.cluster_setting(pool, "shards"))  # type: ignore[call-overload]
    host_key = str(await db.cluster_setting(pool, "host_key"))
    app = web.Application(
        middlewares=[request_id, errors, authenticate, idempotency.idempotency], client_max_size=MAX_BODY
    )
    app[CTX] = ApiContext(
        pool=pool,
        tokens=TokenCodec(key, token_ttl),
        base_url=base_url.rstrip("/"),
        state_dir=state_dir,
        shards=shards,
        host_key=host_key,
    )
    discovery.setup(app)
    openapi.setup(app)
    identity.setup(app)
    compute.setup(app)
    image.setup(app)
    volume.setup(app)
    network.setup(app)
    events.setup(app)
    internal.setup(app)
    idempotency.setup(app)
    return app
