"""Transition tables are pure: these tests need no broker, no database and no event loop."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.table import (
    ABSENT,
    Fault,
    IllegalTransition,
    Outcome,
    Send,
    SetTimer,
    TransitionTable,
    UndeclaredTransition,
)
from protocol import Envelope, Message, Target
from tests.actors import probe


def env(body: Message, actor: str = "p1") -> Envelope:
    return Envelope.new(Target("probe", actor), body)


def test_creation_from_absent() -> None:
    out = probe.table.apply(None, env(probe.Create(project_id="proj")), 0.0)
    assert out.record == probe.ProbeRecord(id="p1", project_id="proj")


def test_message_to_an_absent_actor_is_not_found() -> None:
    with pytest.raises(IllegalTransition) as err:
        probe.table.apply(None, env(probe.Add()), 0.0)
    assert err.value.code == "not_found" and err.value.state == ABSENT


def test_illegal_message_is_rejected_with_reason_and_record_untouched() -> None:
    frozen = probe.ProbeRecord(id="p1", state="frozen", count=4)
    with pytest.raises(IllegalTransition) as err:
        probe.table.apply(frozen, env(probe.Add()), 0.0)
    assert err.value.code == "conflict"
    assert "cannot accept probe.add while in state frozen" in err.value.reason
    assert frozen.count == 4


def test_effects_are_returned_not_performed() -> None:
    idle = probe.ProbeRecord(id="p1")
    out = probe.table.apply(idle, env(probe.Forward(to="p2", amount=2)), 0.0)
    assert out.effects == (Send(Target("probe", "p2"), probe.Add(amount=2)),)
    out = probe.table.apply(idle, env(probe.Arm(after=3)), 0.0)
    assert out.record.state == "armed" and out.effects == (SetTimer("alarm", 3, probe.Alarm()),)


def test_handler_reaching_an_undeclared_state_is_refused() -> None:
    class Rec(msgspec.Struct):
        id: str
        version: int
        state: str

    class Go(Message, frozen=True):
        TYPE = "test.go"

    table = TransitionTable("t", Rec, states={"a", "b", "c", "error"}, error_state="error")

    @table.on(Go, source="a", to="b")
    def go(record: Rec, msg: Go, ctx: object) -> Outcome[Rec]:
        return Outcome(msgspec.structs.replace(record, state="c"))

    with pytest.raises(UndeclaredTransition):
        table.apply(Rec("x", 1, "a"), Envelope.new(Target("t", "x"), Go()), 0.0)


def test_declarations_are_checked() -> None:
    class Rec(msgspec.Struct):
        id: str
        version: int
        state: str

    class Hop(Message, frozen=True):
        TYPE = "test.hop"

    with pytest.raises(ValueError):
        TransitionTable("t", Rec, states={"a"}, error_state="error")
    table = TransitionTable("t", Rec, states={"a", "error"}, error_state="error")
    with pytest.raises(ValueError):
        table.on(Hop, source="a", to="nowhere")
    table.on(Hop, source="a", to="a")(lambda r, m, c: Outcome(r))
    with pytest.raises(ValueError):
        table.on(Hop, source="a", to="a")(lambda r, m, c: Outcome(r))


def test_fault_puts_the_record_in_the_error_state() -> None:
    faulted = probe.table.fault(probe.ProbeRecord(id="p1", count=2), Fault("m", "probe.explode", "boom"))
    assert faulted.state == "error" and faulted.count == 2


messages = st.sampled_from(
    [
        probe.Create(),
        probe.Add(),
        probe.Forward(to="p2"),
        probe.Arm(after=1),
        probe.Alarm(),
        probe.Freeze(),
        probe.Explode(),
        probe.Remove(),
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, max_size=30))
def test_no_sequence_of_messages_reaches_an_undeclared_state(sequence: list[Message]) -> None:
    record = None
    for body in sequence:
        try:
            out = probe.table.apply(record, env(body), 0.0)
        except IllegalTransition:
            continue  # refused: the record stays as it was
        except RuntimeError:
            continue  # probe.explode raises by design
        record = None if out.delete else out.record
        assert probe.table.current_state(record) in probe.table.states | {ABSENT}
