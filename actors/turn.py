"""One handler turn = one PostgreSQL transaction.

    1. record the message id in `inbox` (a redelivered message stops here: duplicate),
    2. take the actor's row (from the activation cache, or SELECT … FOR UPDATE),
    3. run the pure transition from the kind's table,
    4. store the new state (guarded by `version`), its outgoing messages (outbox), timers
       and events,
    5. commit. The caller acks the delivery only after this returns.

A cached record is used optimistically: the UPDATE is conditional on the cached version, and if
another process moved the row on meanwhile the turn reloads it under lock and runs the
transition again, inside the same transaction.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import asyncpg
import msgspec

from actors import db, outbox, timers
from actors.kind import ActorKind
from actors.outbox import OutboxRow
from actors.service import ServiceKind
from actors.table import (
    ABSENT,
    CancelTimer,
    Fault,
    IllegalTransition,
    LogEvent,
    Notify,
    Outcome,
    Refused,
    Send,
    SetTimer,
)
from protocol import Envelope, Target
from protocol.actor import STATE_TIMER
from protocol.replies import Reply

_INBOX = """
INSERT INTO inbox (message_id, kind, actor_id, member_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (message_id) DO NOTHING RETURNING true
"""

_EVENTS = """
INSERT INTO events (kind, actor_id, project_id, type, prev_state, new_state,
                    correlation_id, causation_id, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::jsonb[])
"""


class HandlerError(Exception):
    """The transition function itself raised (a bug or a poison message), not the database."""


@dataclasses.dataclass(frozen=True, slots=True)
class TurnResult:
    status: str  # "applied", "duplicate", "rejected"
    record: Any  # the actor's record after the turn (None when absent or deleted)
    rejection: IllegalTransition | None = None
    sent: int = 0  # outbox rows written
    timers_set: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class _Event:
    type: str
    prev_state: str | None
    new_state: str | None
    payload: Any


async def run_turn(
    conn: db.Connection,
    kind: ActorKind,
    envelope: Envelope,
    cached: Any,
    *,
    shards: int,
    member_id: str,
) -> TurnResult:
    actor_id = envelope.target.id
    async with conn.transaction():
        if not await conn.fetchval(_INBOX, envelope.id, kind.name, actor_id, member_id):
            return TurnResult("duplicate", cached)

        locked = cached is None
        record = cached if cached is not None else await kind.store.load(conn, actor_id, lock=True)
        while True:
            try:
                outcome = _apply(kind, record, envelope)
            except IllegalTransition as rejection:
                if not locked:  # the cached record may be stale: decide on the row itself
                    record, locked = await kind.store.load(conn, actor_id, lock=True), True
                    continue
                rows = _reply(envelope, rejection=rejection)
                await outbox.write(conn, rows)
                return TurnResult("rejected", record, rejection, sent=len(rows))
            notices = [e for e in outcome.effects if isinstance(e, Notify)]
            # A deleted actor's notifications describe its last row, read before the delete.
            last_row = await kind.full_row(conn, record) if notices and outcome.delete and record else None
            stored, new_record = await _store(conn, kind, record, outcome)
            if stored:
                break
            record, locked = await kind.store.load(conn, actor_id, lock=True), True

        rows, due, cancelled, events = _effects(kind, envelope, record, new_record, outcome, shards)
        rows += await _notifications(
            conn, kind, new_record if new_record is not None else record, notices, row=last_row
        )
        rows += _reply(envelope, new_state=kind.table.current_state(new_record), result=outcome.result)
        await _write_turn(
            conn,
            kind,
            envelope,
            new_record if new_record is not None else record,
            rows,
            due,
            cancelled,
            events,
        )
    return TurnResult("applied", new_record, sent=len(rows), timers_set=bool(due))


def _apply(kind: ActorKind, record: Any, envelope: Envelope) -> Outcome[Any]:
    try:
        return kind.table.apply(record, envelope, time.time())
    except IllegalTransition:
        raise
    except Exception as exc:
        raise HandlerError(f"{type(exc).__name__}: {exc}") from exc


async def _store(
    conn: db.Connection, kind: ActorKind, record: Any, outcome: Outcome[Any]
) -> tuple[bool, Any]:
    """Write the outcome; (False, None) when the row is not what `record` said it was."""
    store = kind.store
    if outcome.delete:
        if record is None:
            return True, None
        return await store.delete(conn, record.id, record.version), None
    if record is None:
        inserted = await store.insert(conn, outcome.record)
        return inserted is not None, inserted
    updated = await store.update(conn, outcome.record, record.version)
    return updated is not None, updated


def _effects(
    kind: ActorKind, envelope: Envelope, old: Any, new: Any, outcome: Outcome[Any], shards: int
) -> tuple[list[OutboxRow], list[tuple[str, float, OutboxRow]], list[str], list[_Event]]:
    prev_state = None if old is None else kind.table.state_of(old)
    new_state = None if new is None else kind.table.state_of(new)
    events: list[_Event] = []
    if prev_state != new_state:
        events.append(_Event(envelope.type, prev_state, new_state, {}))
    rows, due, cancelled, emitted = _perform(envelope, outcome.effects, prev_state, new_state, shards)
    return rows, due, cancelled, events + emitted


async def _notifications(
    conn: db.Connection,
    kind: ActorKind,
    record: Any,
    notices: list[Notify],
    *,
    row: dict[str, Any] | None = None,
) -> list[OutboxRow]:
    """The turn's notifications, built from the actor's row as this transaction leaves it."""
    if not notices or kind.notifier is None or record is None:
        return []
    if row is None:
        row = await kind.full_row(conn, record)
    now = time.time()
    return [outbox.to_notifications(kind.notifier(row, notice), now) for notice in notices]


def _perform(
    envelope: Envelope, effects: Iterable[Any], prev_state: str | None, new_state: str | None, shards: int
) -> tuple[list[OutboxRow], list[tuple[str, float, OutboxRow]], list[str], list[_Event]]:
    """Effects as rows: outgoing messages, timers to set and cancel, events to log."""
    rows: list[OutboxRow] = []
    due: list[tuple[str, float, OutboxRow]] = []
    cancelled: list[str] = []
    events: list[_Event] = []
    for effect in effects:
        if isinstance(effect, Send):
            out = Envelope.new(effect.target, effect.body, cause=envelope, reply_to=effect.reply_to)
            rows.append(outbox.to_actor(out, shards))
        elif isinstance(effect, SetTimer):
            out = Envelope.new(envelope.target, effect.body, cause=envelope)
            due.append((effect.name, effect.after, outbox.to_actor(out, shards)))
        elif isinstance(effect, CancelTimer):
            cancelled.append(effect.name)
        elif isinstance(effect, LogEvent):
            events.append(_Event(effect.type, prev_state, new_state, dict(effect.payload)))
    return rows, due, cancelled, events


async def run_service_turn(
    conn: db.Connection,
    kind: ServiceKind,
    envelope: Envelope,
    *,
    shards: int,
    member_id: str,
) -> TurnResult:
    """A service kind's turn: the handler's SQL, its effects and the inbox in one transaction."""
    actor_id = envelope.target.id
    async with conn.transaction():
        if not await conn.fetchval(_INBOX, envelope.id, kind.name, actor_id, member_id):
            return TurnResult("duplicate", None)
        handler = kind.handler_for(envelope.body)
        try:
            if handler is None:
                raise Refused(f"{kind.name} does not handle {envelope.type}")
            async with conn.transaction():  # a savepoint: a refusal undoes the handler's writes
                effects = list(await handler(conn, envelope.body, kind.context(envelope)))
        except Refused as refusal:
            rejection = IllegalTransition(kind.name, actor_id, "service", envelope.type, refusal.reason)
            rows = _reply(envelope, rejection=rejection)
            await outbox.write(conn, rows)
            return TurnResult("rejected", None, rejection, sent=len(rows))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            raise
        except Exception as exc:
            raise HandlerError(f"{type(exc).__name__}: {exc}") from exc
        rows, due, cancelled, events = _perform(envelope, effects, None, None, shards)
        rows += _reply(envelope, new_state=None)
        await _write_turn(conn, kind, envelope, None, rows, due, cancelled, events)
    return TurnResult("applied", None, sent=len(rows), timers_set=bool(due))


async def _write_turn(
    conn: db.Connection,
    kind: ActorKind | ServiceKind,
    envelope: Envelope,
    record: Any,
    rows: list[OutboxRow],
    due: list[tuple[str, float, OutboxRow]],
    cancelled: list[str],
    events: list[_Event],
) -> None:
    """A turn's effects, in its transaction: outgoing messages, timers, events."""
    await outbox.write(conn, rows)
    await timers.set_timers(conn, kind.name, envelope.target.id, due)
    await timers.cancel_timers(conn, kind.name, envelope.target.id, cancelled)
    await _write_events(conn, kind, envelope, record, events)


def _reply(
    envelope: Envelope,
    *,
    rejection: IllegalTransition | None = None,
    new_state: str | None = None,
    result: Any = None,
) -> list[OutboxRow]:
    if envelope.reply_to is None:
        return []
    if rejection is not None:
        body = Reply(
            ok=False,
            in_reply_to=envelope.id,
            state=rejection.state,
            error=rejection.code,
            reason=rejection.reason,
        )
    else:
        body = Reply(
            ok=True, in_reply_to=envelope.id, state=new_state, result=dict(result) if result else None
        )
    reply = Envelope.new(Target("reply", envelope.reply_to), body, cause=envelope)
    return [outbox.to_queue(reply, envelope.reply_to)]


async def _write_events(
    conn: db.Connection,
    kind: ActorKind | ServiceKind,
    envelope: Envelope,
    record: Any,
    events: list[_Event],
) -> None:
    if not events:
        return
    project = kind.project_of(record) if isinstance(kind, ActorKind) else None
    n = len(events)
    await conn.execute(
        _EVENTS,
        [kind.name] * n,
        [envelope.target.id] * n,
        [project] * n,
        [e.type for e in events],
        [e.prev_state for e in events],
        [e.new_state for e in events],
        [envelope.correlation_id] * n,
        [envelope.id] * n,
        [e.payload for e in events],
    )


async def record_fault(
    conn: db.Connection,
    kind: ActorKind | ServiceKind | None,
    envelope: Envelope | None,
    *,
    queue: str,
    raw: bytes,
    reason: str,
    details: str,
    member_id: str,
    dead_letter: OutboxRow,
) -> Any:
    """The end of the road for a message: one transaction that marks it handled, puts its actor
    in the error state with a recorded fault, logs the dead letter, and queues the copy for the
    dead-letter queue (and the error reply, when one was asked for). Returns the new record."""
    faulted = None
    async with conn.transaction():
        message_id = envelope.id if envelope is not None else None
        # A message already handled (it crashed its consumer after the commit) faults nothing.
        fresh = (
            envelope is not None
            and kind is not None
            and bool(await conn.fetchval(_INBOX, envelope.id, kind.name, envelope.target.id, member_id))
        )
        if fresh and envelope is not None and isinstance(kind, ActorKind):
            faulted = await _fault_actor(conn, kind, envelope, reason, details)
        if fresh and envelope is not None and envelope.reply_to is not None:
            state = None if not isinstance(kind, ActorKind) else kind.table.error_state if faulted else ABSENT
            body = Reply(ok=False, in_reply_to=envelope.id, error="failed", reason=reason, state=state)
            reply = Envelope.new(Target("reply", envelope.reply_to), body, cause=envelope)
            await outbox.write(conn, [outbox.to_queue(reply, envelope.reply_to)])
        await conn.execute(
            "INSERT INTO dead_letters (message_id, queue, reason, body) VALUES ($1, $2, $3, $4)",
            message_id,
            queue,
            reason,
            raw,
        )
        await outbox.write(conn, [dead_letter])
    return faulted


async def _fault_actor(
    conn: db.Connection, kind: ActorKind, envelope: Envelope, reason: str, details: str
) -> Any:
    """Put the actor in its error state with a recorded fault (Nova's instance fault)."""
    record = await kind.store.load(conn, envelope.target.id, lock=True)
    if record is None:
        return None
    prev = kind.table.state_of(record)
    fault = Fault(envelope.id, envelope.type, reason, details)
    faulted = await kind.store.update(conn, kind.table.fault(record, fault, time.time()), record.version)
    await timers.cancel_timers(conn, kind.name, envelope.target.id, [STATE_TIMER])
    await conn.execute(
        "INSERT INTO actor_faults (kind, actor_id, message_id, message_type, reason, details) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        kind.name,
        envelope.target.id,
        envelope.id,
        envelope.type,
        reason,
        details,
    )
    event = _Event("fault", prev, kind.table.error_state, {"reason": reason, "message_type": envelope.type})
    await _write_events(conn, kind, envelope, faulted, [event])
    notice = kind.fault_notice(record) if kind.fault_notice is not None else None
    if notice is not None and faulted is not None:
        await outbox.write(conn, await _notifications(conn, kind, faulted, [notice]))
    return faulted


def fault_details(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return msgspec.json.encode({"exception": type(cause).__name__, "message": str(cause)}).decode()
