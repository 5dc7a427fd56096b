"""Declarative transition tables: the pure core of every actor kind.

A table lists, for one kind, which message types are legal in which states, the handler that
computes the next state, and the states that handler may lead to:

    probes = TransitionTable("probe", ProbeRecord, states={"idle", "frozen", "error"},
                             error_state="error")

    @probes.on(Add, source="idle")             # stays in idle: staying needs no declaration
    def add(record, msg, ctx):
        return Outcome(replace(record, count=record.count + msg.amount))

    @probes.on(Freeze, source="idle", to="frozen")
    def freeze(record, msg, ctx): ...

    probes.ignore(Late, in_={"frozen", "error"})   # a late report: accepted, changes nothing

    @probes.timeout("thawing", after=60, to="error")  # gen_statem's state timeout
    def thaw_timed_out(record, msg, ctx): ...

Handlers are pure: `(record, message, context) -> Outcome`. They perform no I/O and read the
clock only from `ctx.now`; the runtime performs the effects they return (outgoing messages,
timers, events) in the same transaction that stores the new state.

The table is checked at both ends: a message with no row for the current state raises
IllegalTransition (nothing changes; an `ignore`d one changes nothing silently), and a handler
whose new state is neither its current one nor among the row's declared targets raises
UndeclaredTransition (a bug, treated as a failed turn).

State timeouts are declared with the state (`timeout`): entering a state that has one sets its
timer (a durable `timers` row named STATE_TIMER), leaving it cancels the timer, and a timer
that fires after the actor left its state is dropped, so handlers never set, cancel or guard
their own timeouts. A handler that stays in its state but starts over (gen_statem's
`repeat_state`) says `Outcome(..., reenter=True)`; one entry may get another timeout than the
declared one with `Outcome(..., timeout=seconds)` (NO_TIMEOUT: none this time, and say why).

actors/statedoc.py renders each table as Markdown (docs/states/<kind>.md, kept equal by a test).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import msgspec

from protocol import Envelope, Message, Target
from protocol.actor import STATE_TIMER, StateTimeout

# The pseudo-state of an actor that has no row yet. A row with source ABSENT creates the actor.
ABSENT = "absent"

# `Outcome(timeout=NO_TIMEOUT)`: enter the state without its declared timer.
NO_TIMEOUT = math.inf

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
    """Deliver `body` to this actor after `after` seconds; replaces a timer of the same name.
    (State timeouts are the table's: handlers declare them with `timeout`, not with this.)"""

    name: str
    after: float
    body: Message


@dataclasses.dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class LogEvent:
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


Effect = Send | SetTimer | CancelTimer | LogEvent | Notify


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome(Generic[R]):
    """What a handler decided. `record=None` with `delete=True` removes the actor's row.

    `reenter`: the handler stays in its state but starts it over, so the state's timeout starts
    again. `timeout`: this entry's timeout in seconds instead of the state's declared one
    (NO_TIMEOUT for none)."""

    record: R | None
    effects: tuple[Effect, ...] = ()
    result: Mapping[str, Any] | None = None  # returned in the reply when the sender asked
    delete: bool = False
    reenter: bool = False
    timeout: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """What a handler may know besides state and message: the envelope, and the clock."""

    envelope: Envelope
    now: float

    @property
    def self_target(self) -> Target:
        return self.envelope.target


Handler = Callable[[Any, Any, Context], Outcome[Any]]
Decliner = Callable[[Any, Any, Context], Iterable[Effect]]


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """One row: in any of `sources`, `message` runs `handler`, which stays or leads to `targets`."""

    sources: frozenset[str]
    message: type[Message]
    targets: frozenset[str]
    handler: Handler


@dataclasses.dataclass(frozen=True, slots=True)
class Ignored:
    """A message accepted and dropped in these states (a late report of something finished)."""

    states: frozenset[str]
    message: type[Message]


@dataclasses.dataclass(frozen=True, slots=True)
class Declined:
    """A request refused in these states whose sender must still be answered by message (the
    API reserved something for it): the handler returns only effects; allows() is False."""

    states: frozenset[str]
    message: type[Message]
    handler: Decliner


@dataclasses.dataclass(frozen=True, slots=True)
class Timeout:
    """A state's timeout: how long the actor may stay in it, and the row that runs when it did."""

    after: float
    row: Transition


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """Why an actor was put in its error state (Nova's instance fault)."""

    message_id: str
    message_type: str
    reason: str
    details: str = ""


def _names(value: Iterable[str] | str) -> frozenset[str]:
    return frozenset([value] if isinstance(value, str) else value)


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
        on_fault: Callable[[R, Fault, float], R] | None = None,
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
        self._ignored: dict[tuple[str, type[Message]], Ignored] = {}
        self._declined: dict[tuple[str, type[Message]], Declined] = {}
        self._timeouts: dict[str, Timeout] = {}

    # --- declaration ----------------------------------------------------------------------

    def _check(
        self, message: type[Message], sources: frozenset[str], targets: frozenset[str] = frozenset()
    ) -> None:
        unknown = (sources - {ABSENT} - self.states) | (targets - {ABSENT} - self.states)
        if unknown:
            raise ValueError(f"{self.kind}: {message.TYPE} names undeclared states {sorted(unknown)}")
        for state in sources:
            key = (state, message)
            if key in self._rows or key in self._ignored or key in self._declined:
                raise ValueError(f"{self.kind}: {message.TYPE} in {state} is declared twice")

    def on(
        self, message: type[Message], *, source: Iterable[str] | str, to: Iterable[str] | str = ()
    ) -> Callable[[Handler], Handler]:
        """A row: `message` is legal in `source`; the handler stays or leads to one of `to`
        (ABSENT among them: it may delete the actor's row)."""
        sources, targets = _names(source), _names(to)
        self._check(message, sources, targets)

        def register(handler: Handler) -> Handler:
            row = Transition(sources, message, targets, handler)
            for state in sources:
                self._rows[(state, message)] = row
            return handler

        return register

    def ignore(self, message: type[Message], *, in_: Iterable[str] | str) -> None:
        """`message` is accepted in these states and changes nothing: a late report."""
        states = _names(in_)
        if ABSENT in states:
            raise ValueError(f"{self.kind}: an absent actor cannot ignore {message.TYPE}")
        self._check(message, states)
        entry = Ignored(states, message)
        for state in states:
            self._ignored[(state, message)] = entry

    def decline(self, message: type[Message], *, in_: Iterable[str] | str) -> Callable[[Decliner], Decliner]:
        """`message` is not legal in these states, but its sender needs an answer by message."""
        states = _names(in_)
        self._check(message, states)

        def register(handler: Decliner) -> Decliner:
            entry = Declined(states, message, handler)
            for state in states:
                self._declined[(state, message)] = entry
            return handler

        return register

    def timeout(
        self, states: Iterable[str] | str, *, after: float, to: Iterable[str] | str = ()
    ) -> Callable[[Handler], Handler]:
        """Each of `states` lasts at most `after` seconds; then the handler runs (with the
        StateTimeout) and stays or leads to one of `to`."""
        sources, targets = _names(states), _names(to)
        unknown = (sources | targets) - self.states
        if unknown:
            raise ValueError(f"{self.kind}: a timeout names undeclared states {sorted(unknown)}")
        if not after > 0:
            raise ValueError(f"{self.kind}: a state timeout must be positive, not {after}")

        def register(handler: Handler) -> Handler:
            row = Transition(sources, StateTimeout, targets, handler)
            for state in sources:
                if state in self._timeouts:
                    raise ValueError(f"{self.kind}: the timeout of {state} is declared twice")
                self._timeouts[state] = Timeout(after, row)
            return handler

        return register

    # --- queries --------------------------------------------------------------------------

    @property
    def messages(self) -> frozenset[type[Message]]:
        return frozenset(message for _, message in self._rows)

    def transitions(self, *, timeouts: bool = True) -> list[Transition]:
        """Every row (with the timeouts' rows unless told not to), each once."""
        rows = dict.fromkeys(self._rows.values())
        if timeouts:
            rows.update(dict.fromkeys(t.row for t in self._timeouts.values()))
        return list(rows)

    def ignored(self) -> list[Ignored]:
        return list(dict.fromkeys(self._ignored.values()))

    def declined(self) -> list[Declined]:
        return list(dict.fromkeys(self._declined.values()))

    def timeouts(self) -> dict[str, float]:
        """The states that have a timeout (the transitional ones), with its length."""
        return {state: t.after for state, t in sorted(self._timeouts.items())}

    def timeout_of(self, state: str) -> Timeout | None:
        return self._timeouts.get(state)

    def current_state(self, record: R | None) -> str:
        return ABSENT if record is None else self.state_of(record)

    def allows(self, record: R | None, message: type[Message]) -> bool:
        """Whether a request is legal now (what the API may send without a 409)."""
        return (self.current_state(record), message) in self._rows

    def handles(self, record: R | None, message: type[Message]) -> bool:
        """Whether the message is taken now rather than refused: a row, an ignore, a decline,
        or a state timeout (which an existing actor always takes, stale or not)."""
        key = (self.current_state(record), message)
        if message is StateTimeout:
            return record is not None
        return key in self._rows or key in self._ignored or key in self._declined

    # --- evaluation -----------------------------------------------------------------------

    def apply(self, record: R | None, envelope: Envelope, now: float) -> Outcome[R]:
        """Run the transition for this message; raises IllegalTransition or UndeclaredTransition."""
        state = self.current_state(record)
        body, key = envelope.body, (state, type(envelope.body))
        ctx = Context(envelope, now)
        if isinstance(body, StateTimeout) and record is not None:
            timeout = self._timeouts.get(state)
            if timeout is None or body.state != state:
                return Outcome(record)  # the actor left that state before its timer fired
            row = timeout.row
        elif key in self._rows:
            row = self._rows[key]
        elif key in self._ignored:
            return Outcome(record)
        elif key in self._declined:
            effects = tuple(self._declined[key].handler(record, body, ctx))
            return Outcome(record, effects=effects)
        else:
            raise IllegalTransition(self.kind, envelope.target.id, state, envelope.type)
        try:
            outcome = row.handler(record, body, ctx)
        except Refused as refusal:
            raise IllegalTransition(
                self.kind, envelope.target.id, state, envelope.type, refusal.reason
            ) from None
        if outcome.delete:
            if ABSENT not in row.targets:
                raise UndeclaredTransition(
                    f"{self.kind}: {envelope.type} in {state} deleted the row undeclared"
                )
            return self._timed(state, None, outcome)
        if outcome.record is None:
            raise UndeclaredTransition(f"{self.kind}: {envelope.type} returned no record")
        new_state = self.state_of(outcome.record)
        if new_state != state and new_state not in row.targets:
            raise UndeclaredTransition(
                f"{self.kind}: {envelope.type} in {state} led to {new_state!r}, "
                f"declared targets are {sorted(row.targets)}"
            )
        return self._timed(state, new_state, outcome)

    def _timed(self, old: str, new: str | None, outcome: Outcome[R]) -> Outcome[R]:
        """The outcome with the state timer set (entering a state that has a timeout) or
        cancelled (leaving one for a state that has none, or for deletion)."""
        if new == old and not outcome.reenter:
            return outcome
        declared = self._timeouts.get(new) if new is not None else None
        after = outcome.timeout if outcome.timeout is not None else (declared.after if declared else None)
        if new is not None and after is not None and after != NO_TIMEOUT:
            timer: Effect = SetTimer(STATE_TIMER, after, StateTimeout(state=new))
        elif old in self._timeouts or outcome.reenter:
            timer = CancelTimer(STATE_TIMER)
        else:
            return outcome
        return dataclasses.replace(outcome, effects=(*outcome.effects, timer))

    def fault(self, record: R, fault: Fault, now: float) -> R:
        """The record put in the kind's error state; kinds may record more (Nova's vm_state).
        (The runtime cancels the state timer with it.)"""
        if self._on_fault is not None:
            faulted = self._on_fault(record, fault, now)
        else:
            faulted = msgspec.structs.replace(record, state=self.error_state)
        if self.state_of(faulted) != self.error_state:
            raise UndeclaredTransition(f"{self.kind}: on_fault did not lead to {self.error_state}")
        return faulted
