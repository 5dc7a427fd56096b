"""The server actor's transition table: Nova's lifecycle, pure (no services)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import server as s
from actors.table import CancelTimer, IllegalTransition, Send, SetTimer
from protocol import Envelope, Message, Target
from protocol import compute as m
from protocol import power as pa
from protocol.actor import STATE_TIMER, StateTimeout
from protocol.states import PowerState, server_status

SID = "11111111-2222-3333-4444-555555555555"
FLAVOR = {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1}


def fresh(**changes: object) -> s.ServerRecord:
    record = s.ServerRecord(
        id=SID, version=1, project_id="p", user_id="u", display_name="vm", flavor=FLAVOR, image_id="img"
    )
    return msgspec.structs.replace(record, **changes) if changes else record


def apply(record: s.ServerRecord, body: Message):
    return s.table.apply(record, Envelope.new(Target("server", SID), body), 1000.0)


def sends(outcome, kind: type) -> list:
    return [e.body for e in outcome.effects if isinstance(e, Send) and isinstance(e.body, kind)]


@pytest.mark.parametrize(
    ("vm", "task", "status"),
    [
        ("building", "scheduling", "BUILD"),
        ("active", None, "ACTIVE"),
        ("active", "rebooting", "REBOOT"),
        ("active", "rebooting_hard", "HARD_REBOOT"),
        ("active", "powering-off", "ACTIVE"),
        ("stopped", None, "SHUTOFF"),
        ("paused", None, "PAUSED"),
        ("suspended", None, "SUSPENDED"),
        ("error", None, "ERROR"),
        ("deleted", None, "DELETED"),
        ("active", "deleting", "ACTIVE"),
        ("resized", None, "VERIFY_RESIZE"),
        ("nonsense", None, "UNKNOWN"),
    ],
)
def test_status_is_derived_as_nova_derives_it(vm: str, task: str | None, status: str) -> None:
    assert server_status(vm, task) == status


def test_a_boot_goes_scheduling_spawning_active() -> None:
    out = apply(fresh(), m.BuildServer())
    assert sends(out, m.SelectHost)[0].excluded_hosts == []
    out = apply(out.record, m.Scheduled(host="h1", node="h1", availability_zone="nova"))
    assert s.state_name(out.record) == "building:spawning" and out.record.host == "h1"
    assert sends(out, m.Spawn)[0].flavor.ram == 512
    assert any(isinstance(e, SetTimer) and e.name == STATE_TIMER for e in out.effects)
    out = apply(out.record, m.Spawned(host="h1", power_state=PowerState.RUNNING))
    assert s.state_name(out.record) == "active" and out.record.power_state == PowerState.RUNNING
    assert CancelTimer(STATE_TIMER) in out.effects and out.record.launched_at == 1000.0


def test_a_failed_spawn_retries_elsewhere_then_gives_up_with_nova_fault() -> None:
    record = apply(fresh(max_attempts=2), m.Scheduled(host="h1", node="h1", availability_zone="nova")).record
    out = apply(record, m.SpawnFailed(host="h1", reason="libvirt said no"))
    assert s.state_name(out.record) == "building:scheduling" and out.record.host is None
    assert sends(out, m.SelectHost)[0].excluded_hosts == ["h1"]
    assert sends(out, m.ReleaseClaim)[0].host == "h1"
    record = apply(out.record, m.Scheduled(host="h2", node="h2", availability_zone="nova")).record
    out = apply(record, m.SpawnFailed(host="h2", reason="again"))
    assert out.record.vm_state == "error" and out.record.fault["message"].startswith(
        "No valid host was found."
    )
    assert sends(out, m.ReleaseClaim)[0].host == "h2"


def test_no_valid_host_ends_in_error_with_the_fault() -> None:
    out = apply(fresh(), m.NoValidHost(reason="There are not enough hosts available."))
    assert server_status(out.record.vm_state, out.record.task_state) == "ERROR"
    assert out.record.fault["message"] == "No valid host was found. There are not enough hosts available."


def test_an_action_illegal_in_the_state_is_a_conflict() -> None:
    with pytest.raises(IllegalTransition) as err:
        apply(fresh(), pa.Stop())
    assert err.value.code == "conflict" and err.value.state == "building:scheduling"
    with pytest.raises(IllegalTransition):
        apply(fresh(vm_state="stopped", task_state=None, host="h1"), pa.Pause())


@pytest.mark.parametrize(
    ("start", "request_", "action", "power", "end"),
    [
        ("active", pa.Stop(), "stop", PowerState.SHUTDOWN, "stopped"),
        ("stopped", pa.Start(), "start", PowerState.RUNNING, "active"),
        ("active", pa.Reboot(), "reboot", PowerState.RUNNING, "active"),
        ("stopped", pa.RebootHard(), "reboot_hard", PowerState.RUNNING, "active"),
        ("active", pa.Pause(), "pause", PowerState.PAUSED, "paused"),
        ("paused", pa.Unpause(), "unpause", PowerState.RUNNING, "active"),
        ("active", pa.Suspend(), "suspend", PowerState.SUSPENDED, "suspended"),
        ("suspended", pa.Resume(), "resume", PowerState.RUNNING, "active"),
    ],
)
def test_power_actions_go_through_their_task(start, request_, action, power, end) -> None:
    out = apply(fresh(vm_state=start, task_state=None, host="h1"), request_)
    assert out.record.task_state is not None
    assert sends(out, m.PowerActionOnHost)[0].action == action
    stale = apply(
        out.record, m.ActionDone(action="suspend" if action != "suspend" else "stop", power_state=0)
    )
    assert stale.record == out.record  # a report of another action changes nothing
    done = apply(out.record, m.ActionDone(action=action, power_state=power))
    assert (done.record.vm_state, done.record.task_state, done.record.power_state) == (end, None, power)


@pytest.mark.parametrize("vm_state", ["active", "stopped", "paused", "suspended", "error"])
def test_delete_works_from_every_state_and_frees_the_claim(vm_state: str) -> None:
    out = apply(fresh(vm_state=vm_state, task_state=None, host="h1"), m.DeleteServer())
    assert out.record.task_state == "deleting" and sends(out, m.Destroy)
    assert apply(out.record, m.DeleteServer()).record == out.record  # a second delete is harmless
    done = apply(out.record, m.Destroyed(host="h1"))
    assert done.record.vm_state == "deleted" and sends(done, m.ReleaseClaim)[0].host == "h1"


def _timer(outcome) -> float | None:
    return next((e.after for e in outcome.effects if isinstance(e, SetTimer) and e.name == STATE_TIMER), None)


@pytest.mark.parametrize("vm_state", ["active", "stopped", "paused", "suspended", "error"])
def test_soft_delete_powers_off_and_reclaims_when_the_interval_is_over(vm_state: str) -> None:
    launched = fresh(vm_state=vm_state, task_state=None, host="h1", launched_at=900.0)
    out = apply(launched, m.SoftDeleteServer(reclaim_after=60.0))
    assert (out.record.task_state, out.record.reclaim_at) == ("soft-deleting", 1060.0)
    assert sends(out, m.PowerActionOnHost)[0].action == "stop"
    done = apply(out.record, m.ActionDone(action="stop", power_state=PowerState.SHUTDOWN))
    assert (done.record.vm_state, done.record.task_state) == ("soft-delete", None)
    assert server_status(done.record.vm_state, done.record.task_state) == "SOFT_DELETED"
    assert _timer(done) == 60.0  # reclaim_at is 60 s after the request, the turn's clock is 1000
    reclaimed = apply(done.record, StateTimeout(state="soft-delete"))
    assert reclaimed.record.task_state == "deleting" and sends(reclaimed, m.Destroy)


def test_a_server_never_launched_is_not_soft_deleted() -> None:
    with pytest.raises(IllegalTransition):
        apply(fresh(vm_state="error", task_state=None, host="h1"), m.SoftDeleteServer(reclaim_after=60.0))
    assert not s.table.allows(fresh(), m.SoftDeleteServer)  # building: the API deletes it instead


def test_restore_powers_a_soft_deleted_server_on_and_a_failure_keeps_it_soft_deleted() -> None:
    soft = fresh(vm_state="soft-delete", task_state=None, host="h1", launched_at=1.0, reclaim_at=1030.0)
    assert not s.table.allows(fresh(vm_state="active", task_state=None, host="h1"), m.RestoreServer)
    out = apply(soft, m.RestoreServer())
    assert out.record.task_state == "restoring" and sends(out, m.PowerActionOnHost)[0].action == "start"
    failed = apply(out.record, m.ActionFailed(action="start", reason="no"))
    assert (failed.record.vm_state, failed.record.task_state) == ("soft-delete", None)
    assert _timer(failed) == 30.0  # the reclaim time stays
    done = apply(out.record, m.ActionDone(action="start", power_state=PowerState.RUNNING))
    assert (done.record.vm_state, done.record.reclaim_at) == ("active", None)


def test_delete_of_a_soft_deleted_server_deletes_it_at_once() -> None:
    soft = fresh(vm_state="soft-delete", task_state=None, host="h1", launched_at=1.0, reclaim_at=5000.0)
    out = apply(soft, m.DeleteServer())
    assert out.record.task_state == "deleting" and sends(out, m.Destroy)
    assert apply(out.record, m.Destroyed(host="h1")).record.vm_state == "deleted"


def test_delete_of_an_unplaced_server_needs_no_host() -> None:
    out = apply(fresh(), m.DeleteServer())
    assert out.record.vm_state == "deleted" and not [e for e in out.effects if isinstance(e, Send)]


def test_a_task_that_overruns_its_timer_ends_in_error_and_a_stale_timer_is_ignored() -> None:
    spawning = apply(fresh(), m.Scheduled(host="h1", node="h1", availability_zone="nova")).record
    out = apply(spawning, StateTimeout(state="building:spawning"))
    assert out.record.vm_state == "error" and "Timed out during spawning" in out.record.fault["message"]
    stale = apply(spawning, StateTimeout(state="building:scheduling"))
    assert stale.record == spawning


def test_power_sync_reflects_a_domain_stopped_behind_our_back() -> None:
    active = fresh(vm_state="active", task_state=None, host="h1", power_state=PowerState.RUNNING)
    out = apply(active, m.PowerStateReport(host="h1", power_state=PowerState.SHUTDOWN))
    assert (out.record.vm_state, out.record.power_state) == ("stopped", PowerState.SHUTDOWN)
    gone = apply(active, m.PowerStateReport(host="h1", power_state=PowerState.NOSTATE))
    assert gone.record.vm_state == "stopped"
    mid_task = fresh(vm_state="active", task_state="rebooting", host="h1", power_state=PowerState.RUNNING)
    assert apply(mid_task, m.PowerStateReport(host="h1", power_state=PowerState.SHUTDOWN)).record == mid_task


def test_legal_actions_tell_the_api_what_is_allowed() -> None:
    allowed = set(s.legal_actions(fresh(vm_state="active", task_state=None, host="h1")))
    assert {pa.Stop, pa.Reboot, pa.Pause, pa.Suspend, m.DeleteServer} <= allowed and pa.Start not in allowed


bodies = st.sampled_from(
    [
        m.BuildServer(),
        m.Scheduled(host="h1", node="h1", availability_zone="nova"),
        m.NoValidHost(reason=""),
        m.Spawned(host="h1", power_state=1),
        m.SpawnFailed(host="h1", reason="x"),
        pa.Stop(),
        pa.Start(),
        pa.Reboot(),
        pa.RebootHard(),
        pa.Pause(),
        pa.Unpause(),
        pa.Suspend(),
        pa.Resume(),
        m.DeleteServer(),
        m.Destroyed(host="h1"),
        m.ActionDone(action="stop", power_state=4),
        m.ActionDone(action="start", power_state=1),
        m.ActionFailed(action="stop", reason="x"),
        StateTimeout(state="building:spawning"),
        m.PowerStateReport(host="h1", power_state=4),
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(bodies, max_size=40))
def test_no_sequence_of_messages_reaches_an_undeclared_state(sequence: list[Message]) -> None:
    record = fresh()
    for body in sequence:
        try:
            record = apply(record, body).record
        except IllegalTransition:
            continue
        assert s.state_name(record) in s.STATES
        assert server_status(record.vm_state, record.task_state) != "UNKNOWN"


def test_an_action_on_a_server_never_placed_is_refused_as_not_ready() -> None:
    failed = apply(fresh(), m.NoValidHost(reason="")).record
    with pytest.raises(IllegalTransition) as err:
        apply(failed, pa.RebootHard())
    assert err.value.reason == f"Instance {SID} is not ready" and err.value.code == "conflict"
