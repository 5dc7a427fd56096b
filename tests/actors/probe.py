"""`probe`: an actor kind that exists only to test the runtime's guarantees.

It counts what it is sent, notices when a sender's messages arrive out of order, forwards,
sets timers, freezes (so later messages are illegal) and explodes on request (a poison
message). Loaded into runtime processes with `actorstack runtime --load tests.actors.probe`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from actors.kind import ActorKind
from actors.service import ServiceKind
from actors.table import ABSENT, Context, LogEvent, Outcome, Refused, Send, SetTimer, TransitionTable
from protocol import Message, Target

DDL = """
CREATE TABLE IF NOT EXISTS probes (
    id            text PRIMARY KEY,
    version       integer NOT NULL,
    state         text NOT NULL,
    count         integer NOT NULL DEFAULT 0,
    last_seq      jsonb NOT NULL DEFAULT '{}',
    out_of_order  integer NOT NULL DEFAULT 0,
    project_id    text
);
CREATE TABLE IF NOT EXISTS ledger (
    message_id  text PRIMARY KEY,
    account     text NOT NULL,
    amount      integer NOT NULL
)
"""


class ProbeRecord(msgspec.Struct, kw_only=True):
    id: str
    version: int = 0
    state: str = "idle"
    count: int = 0
    last_seq: dict[str, int] = msgspec.field(default_factory=dict)
    out_of_order: int = 0
    project_id: str | None = None


class Create(Message, frozen=True):
    TYPE = "probe.create"
    project_id: str | None = None


class Add(Message, frozen=True):
    TYPE = "probe.add"
    amount: int = 1
    sender: str = ""
    seq: int = 0


class Forward(Message, frozen=True):
    TYPE = "probe.forward"
    to: str
    amount: int = 1


class Arm(Message, frozen=True):
    TYPE = "probe.arm"
    after: float


class Alarm(Message, frozen=True):
    TYPE = "probe.alarm"


class Freeze(Message, frozen=True):
    TYPE = "probe.freeze"


class Explode(Message, frozen=True):
    TYPE = "probe.explode"


class Remove(Message, frozen=True):
    TYPE = "probe.remove"


STATES = {"idle", "armed", "rung", "frozen", "error"}
table = TransitionTable("probe", ProbeRecord, states=STATES, error_state="error")


@table.on(Create, source=ABSENT, to="idle")
def create(record: None, msg: Create, ctx: Context) -> Outcome[ProbeRecord]:
    return Outcome(ProbeRecord(id=ctx.envelope.target.id, project_id=msg.project_id))


@table.on(Add, source={"idle", "armed", "rung"}, to={"idle", "armed", "rung"})
def add(record: ProbeRecord, msg: Add, ctx: Context) -> Outcome[ProbeRecord]:
    last_seq, out_of_order = record.last_seq, record.out_of_order
    if msg.sender:
        if msg.seq != last_seq.get(msg.sender, 0) + 1:
            out_of_order += 1
        last_seq = {**last_seq, msg.sender: msg.seq}
    new = msgspec.structs.replace(
        record, count=record.count + msg.amount, last_seq=last_seq, out_of_order=out_of_order
    )
    return Outcome(new, result={"count": new.count})


@table.on(Forward, source="idle", to="idle")
def forward(record: ProbeRecord, msg: Forward, ctx: Context) -> Outcome[ProbeRecord]:
    return Outcome(record, effects=(Send(Target("probe", msg.to), Add(amount=msg.amount)),))


@table.on(Arm, source="idle", to="armed")
def arm(record: ProbeRecord, msg: Arm, ctx: Context) -> Outcome[ProbeRecord]:
    return Outcome(
        msgspec.structs.replace(record, state="armed"), effects=(SetTimer("alarm", msg.after, Alarm()),)
    )


@table.on(Alarm, source="armed", to="rung")
def alarm(record: ProbeRecord, msg: Alarm, ctx: Context) -> Outcome[ProbeRecord]:
    return Outcome(msgspec.structs.replace(record, state="rung"))


@table.on(Freeze, source="idle", to="frozen")
def freeze(record: ProbeRecord, msg: Freeze, ctx: Context) -> Outcome[ProbeRecord]:
    return Outcome(msgspec.structs.replace(record, state="frozen"))


@table.on(Explode, source="idle", to="idle")
def explode(record: ProbeRecord, msg: Explode, ctx: Context) -> Outcome[ProbeRecord]:
    raise RuntimeError("probe exploded as asked")


@table.on(Remove, source=STATES - {"error"}, to=ABSENT)
def remove(record: ProbeRecord, msg: Remove, ctx: Context) -> Outcome[ProbeRecord]:
    return Outcome(None, delete=True)


# --- `ledger`: a service kind (its handler writes SQL inside the turn) -------------------------


class Deposit(Message, frozen=True):
    TYPE = "ledger.deposit"
    account: str
    amount: int
    notify: str | None = None  # a probe to send an add to


async def deposit(conn: Any, msg: Deposit, ctx: Context) -> list[Any]:
    await conn.execute(
        "INSERT INTO ledger (message_id, account, amount) VALUES ($1, $2, $3)",
        ctx.envelope.id,
        msg.account,
        msg.amount,
    )
    balance = await conn.fetchval("SELECT sum(amount) FROM ledger WHERE account = $1", msg.account)
    if balance < 0:
        raise Refused(f"account {msg.account} would be overdrawn")
    effects: list[Any] = [LogEvent("ledger.deposited", {"balance": int(balance)})]
    if msg.notify:
        effects.append(Send(Target("probe", msg.notify), Add(amount=msg.amount)))
    return effects


LEDGER = ServiceKind("ledger", {Deposit: deposit})

KINDS = [ActorKind(table, "probes", project_field="project_id"), LEDGER]
