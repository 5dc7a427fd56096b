"""Declarative transition tables: the pure core of every actor kind.

A table lists, for one kind, which message types are legal in which states, the handler that
computes the next state, and the states that handler may lead to:

    probes = TransitionTable("probe", ProbeRecord, states={"idle", "frozen", "error"},
                             error_state="error")

    @probes.on(Add, source={"idle"}, to={"idle"})
    def add(record, msg, ctx):
        return Outcome(replace(record, count=record.count + msg.amount))

Handlers are pure: `(record, message, context) -> Outcome`. They perform no I/O; the runtime
performs the effects they return (outgoing messages, timers, events) in the same transaction
that stores the new state. The table is checked at both ends: a message with no row for the
current state raises IllegalTransition (nothing changes), and a handler whose new state is not
among the row's declared targets raises UndeclaredTransition (a bug, treated as a failed turn).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import msgspec

from protocol import Envelope, Message, Target

# The pseudo-state of an actor that has no row yet. A row with source ABSENT creates the actor.
ABSENT = "absent"

R = TypeVar("R", bound=msgspec.Struct)


class IllegalTransition(Exception):
    """The message is not legal for the actor in its current state; nothing changed."""

    def __init__(
        self, kind: str, actor_id: str, state: str, message_type: str, reason: str | None = None
    ) -> None:
        self.kind, self.actor_id, self.state, self.message_type = kind, actor_id, state, message_type
        if reason is None and state == ABSENT:
            reason = f"{kind} {actor_id} does not exist"
        elif reason is None:
            reason = f"{kind} {actor_id} cannot accept {message_type} while in state {state}"
        super().__init__(reason)
        self.reason = reason

    @property
    def code(self) -> str:
        return "not_found" if self.state == ABSENT else "conflict"


class Refused(Exception):
    """Raised by a handler whose table row matches but whose guard does not hold (Nova's
    "Instance is not ready"): the message is refused like an illegal one, with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UndeclaredTransition(Exception):
    """A handler produced a state its table row does not declare: a programming error."""


# --- effects a handler may return -----------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    """Send `body` to another actor (or to this one) after the turn commits."""

    target: Target
    body: Message
    reply_to: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SetTimer:
    """Deliver `body` to this actor after `after` seconds; replaces a timer of the same name."""

    name: str
    after: float
    body: Message


@dataclasses.dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Emit:
    """An event for the public event log, beside the automatic state-change event."""

    type: str
    payload: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Notify:
    """A notification for integrations (protocol/notifications.py), e.g. instance.create.end.
    The turn builds its payload from the actor's full row after the change, with the kind's
    `notifier`, and writes it to the outbox with the change; `extra` adds to the payload."""

    event_type: str
    priority: str = "INFO"
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


Effect = Send | SetTimer | CancelTimer | Emit | Notify


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome(Generic[R]):
    """What a handler decided. `record=None` with `delete=True` removes the actor's row."""

    record: R | None
    effects: tuple[Effect, ...] = ()
    result: Mapping[str, Any] | None = None  # returned in the reply when the sender asked
    delete: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """What a handler may know besides state and message: the envelope, and the clock."""

    envelope: Envelope
    now: float

    @property
    def self_target(self) -> Target:
        return self.envelope.target


Handler = Callable[[Any, Any, Context], Outcome[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    sources: frozenset[str]
    message: type[Message]
    targets: frozenset[str]
    handler: Handler


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """Why an actor was put in its error state (Nova's instance fault)."""

    message_id: str
    message_type: str
    reason: str
    details: str = ""


class TransitionTable(Generic[R]):
    """The state machine of one actor kind; pure data plus pure functions."""

    def __init__(
        self,
        kind: str,
        record: type[R],
        *,
        states: Iterable[str],
        error_state: str,
        state_of: Callable[[R], str] = lambda record: record.state,  # type: ignore[attr-defined]
        on_fault: Callable[[R, Fault], R] | None = None,
    ) -> None:
        self.kind = kind
        self.record = record
        self.states = frozenset(states)
        if error_state not in self.states:
            raise ValueError(f"{kind}: error state {error_state!r} is not among its states")
        self.error_state = error_state
        self.state_of = state_of
        self._on_fault = on_fault
        self._rows: dict[tuple[str, type[Message]], Transition] = {}

    # --- declaration ----------------------------------------------------------------------

    def on(
        self, message: type[Message], *, source: Iterable[str] | str, to: Iterable[str] | str
    ) -> Callable[[Handler], Handler]:
        sources = frozenset([source] if isinstance(source, str) else source)
        targets = frozenset([to] if isinstance(to, str) else to)
        unknown = (sources - {ABSENT} - self.states) | (targets - self.states)
        if unknown:
            raise ValueError(f"{self.kind}: {message.TYPE} names undeclared states {sorted(unknown)}")

        def register(handler: Handler) -> Handler:
            row = Transition(sources, message, targets, handler)
            for state in sources:
                key = (state, message)
                if key in self._rows:
                    raise ValueError(f"{self.kind}: {message.TYPE} in {state} is declared twice")
                self._rows[key] = row
            return handler

        return register

    # --- queries --------------------------------------------------------------------------

    @property
    def messages(self) -> frozenset[type[Message]]:
        return frozenset(message for _, message in self._rows)

    def transitions(self) -> list[Transition]:
        return list(dict.fromkeys(self._rows.values()))

    def current_state(self, record: R | None) -> str:
        return ABSENT if record is None else self.state_of(record)

    def allows(self, record: R | None, message: type[Message]) -> bool:
        return (self.current_state(record), message) in self._rows

    # --- evaluation -----------------------------------------------------------------------

    def apply(self, record: R | None, envelope: Envelope, now: float) -> Outcome[R]:
        """Run the transition for this message; raises IllegalTransition or UndeclaredTransition."""
        state = self.current_state(record)
        row = self._rows.get((state, type(envelope.body)))
        if row is None:
            raise IllegalTransition(self.kind, envelope.target.id, state, envelope.type)
        try:
            outcome = row.handler(record, envelope.body, Context(envelope, now))
        except Refused as refusal:
            raise IllegalTransition(
                self.kind, envelope.target.id, state, envelope.type, refusal.reason
            ) from None
        if outcome.delete:
            return outcome
        if outcome.record is None:
            raise UndeclaredTransition(f"{self.kind}: {envelope.type} returned no record")
        new_state = self.state_of(outcome.record)
        if new_state not in row.targets:
            raise UndeclaredTransition(
                f"{self.kind}: {envelope.type} in {state} led to {new_state!r}, "
                f"declared targets are {sorted(row.targets)}"
            )
        return outcome

    def fault(self, record: R, fault: Fault) -> R:
        """The record put in the kind's error state; kinds may record more (Nova's vm_state)."""
        if self._on_fault is not None:
            faulted = self._on_fault(record, fault)
        else:
            faulted = msgspec.structs.replace(record, state=self.error_state)  # type: ignore[call-arg]
        if self.state_of(faulted) != self.error_state:
            raise UndeclaredTransition(f"{self.kind}: on_fault did not lead to {self.error_state}")
        return faulted
