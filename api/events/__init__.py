"""The operator event stream (`/v1/events`, `/v1/events/ws`) and the sequencer that numbers
events in commit order for it. See stream.py and sequencer.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from api.context import CTX
from api.events.sequencer import Sequencer
from api.events.stream import HUB, Hub, sse, websocket


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    await hub.start()
    sequencer = Sequencer(hub.pool, hub.advance)
    sequencer.start()
    try:
        yield
    finally:
        await sequencer.stop()
        await hub.stop()


def setup(app: web.Application) -> None:
    app[HUB] = Hub(app[CTX].pool)
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_get("/v1/events", sse)
    app.router.add_get("/v1/events/ws", websocket)
