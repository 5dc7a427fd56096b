"""Service kinds: message handlers that do their own SQL inside the turn's transaction.

An actor kind's transition is pure; some work is not a state machine over one row but a
decision over many rows — the scheduler's claim ranks hosts and updates one of them. A service
kind keeps every runtime guarantee (inbox dedupe, one transaction, outbox after commit, retries
and dead-lettering, per-id ordering through the shards) and lets the handler use the
connection:

    async def select_host(conn, envelope, ctx) -> Iterable[Effect]: ...
    SCHEDULER = ServiceKind("scheduler", {SelectHost: select_host})

The handler must do all its writes on `conn` (they commit or roll back with the turn) and
return its outgoing messages as effects (`Send`, `SetTimer`, `LogEvent`), never publish directly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from actors import db
from actors.table import Context, Effect
from protocol import Message

# (Any: each handler takes the one message type it is registered for.)
ServiceHandler = Callable[[db.Connection, Any, Context], Awaitable[Iterable[Effect]]]


@dataclasses.dataclass(frozen=True)
class ServiceKind:
    name: str
    handlers: Mapping[type[Message], ServiceHandler]

    def handler_for(self, message: Message) -> ServiceHandler | None:
        return self.handlers.get(type(message))

    def context(self, envelope: Any) -> Context:
        return Context(envelope, time.time())
