"""Transition tables are pure: these tests need no broker, no database and no event loop."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.table import (
    ABSENT,
    NO_TIMEOUT,
    CancelTimer,
    Fault,
    IllegalTransition,
    Outcome,
    Send,
    SetTimer,
    TransitionTable,
    UndeclaredTransition,
)
from protocol import Envelope, Message, Target
from protocol.actor import STATE_TIMER, StateTimeout
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
    faulted = probe.table.fault(probe.ProbeRecord(id="p1", count=2), Fault("m", "probe.explode", "boom"), 0.0)
    assert faulted.state == "error" and faulted.count == 2


# --- staying, ignoring, declining and state timeouts ---------------------------------------------


class Job(msgspec.Struct):
    id: str
    version: int
    state: str
    note: str = ""


class Go(Message, frozen=True):
    TYPE = "test.job.go"
    to: str


class Late(Message, frozen=True):
    TYPE = "test.job.late"


class Ask(Message, frozen=True):
    TYPE = "test.job.ask"


class Again(Message, frozen=True):
    TYPE = "test.job.again"


jobs = TransitionTable("job", Job, states={"idle", "running", "waiting", "error"}, error_state="error")


@jobs.on(Go, source={"idle", "running", "waiting"}, to={"running", "waiting", "idle"})
def go(record: Job, msg: Go, ctx: object) -> Outcome[Job]:
    return Outcome(msgspec.structs.replace(record, state=msg.to))


@jobs.on(Again, source={"running", "waiting"})
def again(record: Job, msg: Again, ctx: object) -> Outcome[Job]:
    return Outcome(record, reenter=True)


jobs.ignore(Late, in_={"idle", "error"})


@jobs.decline(Ask, in_={"running", "waiting", "error"})
def ask_declined(record: Job, msg: Ask, ctx: object) -> list[Send]:
    return [Send(Target("asker", "a"), Late())]


@jobs.on(Ask, source="idle")
def ask(record: Job, msg: Ask, ctx: object) -> Outcome[Job]:
    return Outcome(msgspec.structs.replace(record, note="asked"))


@jobs.timeout("running", after=30, to="error")
@jobs.timeout("waiting", after=600, to="error")
def timed_out(record: Job, msg: StateTimeout, ctx: object) -> Outcome[Job]:
    return Outcome(msgspec.structs.replace(record, state="error", note=f"timed out in {msg.state}"))


def job(state: str) -> Job:
    return Job("j1", 1, state)


def run(record: Job, body: Message) -> Outcome[Job]:
    return jobs.apply(record, Envelope.new(Target("job", "j1"), body), 0.0)


def timers_of(outcome: Outcome[Job]) -> list[object]:
    return [e for e in outcome.effects if isinstance(e, (SetTimer, CancelTimer))]


def test_a_handler_may_stay_in_its_state_without_declaring_it() -> None:
    assert run(job("idle"), Go(to="idle")).record == job("idle")


def test_entering_a_state_sets_its_timeout_and_leaving_it_cancels_it() -> None:
    entered = run(job("idle"), Go(to="running"))
    assert timers_of(entered) == [SetTimer(STATE_TIMER, 30, StateTimeout(state="running"))]
    moved = run(entered.record, Go(to="waiting"))  # replaces the timer by name
    assert timers_of(moved) == [SetTimer(STATE_TIMER, 600, StateTimeout(state="waiting"))]
    assert timers_of(run(moved.record, Go(to="idle"))) == [CancelTimer(STATE_TIMER)]
    assert timers_of(run(job("running"), Go(to="running"))) == []  # staying keeps the timer running
    assert timers_of(run(job("running"), Again())) == [
        SetTimer(STATE_TIMER, 30, StateTimeout(state="running"))
    ]


def test_a_state_timeout_runs_its_handler_and_a_stale_one_changes_nothing() -> None:
    out = run(job("running"), StateTimeout(state="running"))
    assert (out.record.state, out.record.note) == ("error", "timed out in running")
    assert run(job("waiting"), StateTimeout(state="running")).record == job("waiting")
    assert run(job("idle"), StateTimeout(state="idle")).record == job("idle")
    with pytest.raises(IllegalTransition):  # an actor that is gone does not take its timer
        jobs.apply(None, Envelope.new(Target("job", "j1"), StateTimeout(state="running")), 0.0)


def test_an_entry_may_override_or_drop_the_declared_timeout() -> None:
    assert jobs._timed("idle", "running", Outcome(job("running"), timeout=5)).effects == (
        SetTimer(STATE_TIMER, 5, StateTimeout(state="running")),
    )
    assert jobs._timed("idle", "running", Outcome(job("running"), timeout=NO_TIMEOUT)).effects == ()
    assert jobs.timeouts() == {"running": 30, "waiting": 600}


def test_ignored_messages_change_nothing_and_others_are_still_illegal() -> None:
    assert run(job("error"), Late()) == Outcome(job("error"))
    with pytest.raises(IllegalTransition):
        run(job("running"), Late())


def test_a_declined_request_answers_by_message_and_is_not_allowed() -> None:
    out = run(job("running"), Ask())
    assert out.record == job("running") and out.effects == (Send(Target("asker", "a"), Late()),)
    assert not jobs.allows(job("running"), Ask) and jobs.allows(job("idle"), Ask)


def test_a_message_cannot_be_both_handled_and_ignored_in_one_state() -> None:
    with pytest.raises(ValueError):
        jobs.ignore(Ask, in_="idle")
    with pytest.raises(ValueError):
        jobs.timeout("running", after=1)(timed_out)


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
