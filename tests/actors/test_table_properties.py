"""Properties of the transition tables (issue 10), per actor kind: from the initial state, any
sequence of the kind's messages (requests, replies, late reports and its own timers firing) only
reaches declared states, through declared rows; a message without a row is refused with
IllegalTransition and changes nothing; no handler raises anything else; and the kind's
invariants hold after every step (a deleted server stays deleted, ERROR carries a fault, a
transitional server always has its timer, …). Pure: no broker, no database, no event loop.

Message fields are drawn from small pools of the values that matter (the actor's own ids and
others, hosts, actions and states, plus nonsense), so that sequences hit matching and stale
cases alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import network as net
from actors import port as prt
from actors import server as srv
from actors import volume as vol
from actors.table import ABSENT, CancelTimer, IllegalTransition, SetTimer, TransitionTable
from protocol import Envelope, Message, Target
from protocol import compute as m
from protocol import network as n
from protocol import volume as v
from protocol.actor import STATE_TIMER, StateTimeout
from protocol.power import PowerAction
from protocol.states import PowerState, server_status

SID, SID2 = "11111111-2222-3333-4444-555555555555", "99999999-2222-3333-4444-555555555555"
VID = "bbbbbbbb-0000-0000-0000-000000000001"
AID, AID2 = "cccccccc-0000-0000-0000-000000000001", "cccccccc-0000-0000-0000-000000000002"
PID, PID2 = "dddddddd-0000-0000-0000-000000000001", "dddddddd-0000-0000-0000-000000000002"
NID = "eeeeeeee-0000-0000-0000-000000000001"
FLAVOR = {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1}
CONN = {"volume_id": VID, "driver": "file", "path": f"/v/volume-{VID}", "format": "qcow2"}
RUNS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The values a field of that name takes in the sequences (anything else: a few plain strings).
POOLS: dict[str, list[Any]] = {
    "host": ["h1", "h2"],
    "node": ["h1"],
    "availability_zone": ["nova"],
    "backend": ["node@file"],
    "server_id": [SID, SID2],
    "attachment_id": [AID, AID2],
    "volume_id": [VID, "other-volume"],
    "port_id": [PID, PID2, "other-port"],
    "device": ["/dev/vdb", "/dev/vdc"],
    "action": list(PowerAction),
    "power_state": list(PowerState),
    "state": [*sorted(srv.STATES | vol.STATES | prt.STATES), "bogus"],  # of a StateTimeout
    "status": sorted(vol.STATES),
    "attach_status": [None, "attached", "detached"],
    "size": [1, 2, 5],
    "new_size": [0, 1, 2, 5],
    "reclaim_after": [0.5, 60.0],
    "reason": ["", "it failed <&>\n"],
    "provider_location": [f"/v/volume-{VID}"],
    "connection": [msgspec.convert(CONN, v.VolumeConnection)],
}


def _field_values(name: str, info: mi.Type) -> st.SearchStrategy[Any]:
    if name in POOLS:
        return st.sampled_from(POOLS[name])
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.IntType):
        return st.integers(min_value=-1, max_value=3)
    if isinstance(info, (mi.StrType, mi.UnionType)):
        return st.sampled_from(["", "x"])
    raise AssertionError(f"no pool for field {name!r} ({info!r}): add one to POOLS")


def bodies(table: TransitionTable[Any]) -> st.SearchStrategy[Message]:
    """Any message the kind's table knows, with pooled field values."""
    options = []
    for cls in sorted(table.messages, key=lambda c: c.TYPE):
        fields = {f.name: _field_values(f.name, f.type) for f in mi.type_info(cls).fields}
        options.append(st.fixed_dictionaries(fields).map(lambda values, cls=cls: cls(**values)))
    return st.one_of(options)


# A step is a message, or the firing of the timer of that name the actor has pending.
FIRE = "fire"


@dataclasses.dataclass
class Actor:
    """One actor driven purely: its record (None: no row) and its pending timers."""

    table: TransitionTable[Any]
    kind: str
    record: Any
    timers: dict[str, Message] = dataclasses.field(default_factory=dict)
    now: float = 1000.0

    @property
    def state(self) -> str:
        return self.table.current_state(self.record)

    def deliver(self, body: Message) -> bool:
        """Apply one message; True if it was accepted. Checks the table's contract on the way."""
        before = self.record
        allowed, handled = self.table.allows(before, type(body)), self.table.handles(before, type(body))
        self.now += 1.0
        envelope = Envelope.new(Target(self.kind, getattr(before, "id", "gone")), body)
        try:
            outcome = self.table.apply(before, envelope, self.now)
        except IllegalTransition as refusal:
            assert refusal.reason and refusal.code == ("not_found" if before is None else "conflict")
            assert self.record is before  # nothing changed
            return False
        assert handled, f"{body.TYPE} ran in {self.state}, which has no row for it"
        if not allowed and not isinstance(body, StateTimeout):  # ignored or declined
            assert outcome.record is before and not outcome.delete, f"{body.TYPE} changed {self.state}"
        self.record = None if outcome.delete else outcome.record
        assert self.state in self.table.states | {ABSENT}
        for effect in outcome.effects:
            if isinstance(effect, SetTimer):
                assert effect.after > 0
                self.timers[effect.name] = effect.body
            elif isinstance(effect, CancelTimer):
                self.timers.pop(effect.name, None)
        if outcome.delete:
            self.timers.clear()
        return True

    def fire(self, name: str) -> None:
        body = self.timers.pop(name, None)
        if body is not None:
            self.deliver(body)


def steps(table: TransitionTable[Any]) -> st.SearchStrategy[list[Message | str]]:
    return st.lists(bodies(table) | st.just(FIRE), max_size=30)


def run(actor: Actor, sequence: list[Message | str], check: Any) -> None:
    check(actor)
    for step in sequence:
        if step == FIRE:
            for name in sorted(actor.timers):
                actor.fire(name)
        else:
            actor.deliver(step)
        check(actor)


# --- server -------------------------------------------------------------------------------------------


def _server(**changes: Any) -> srv.ServerRecord:
    fields: dict[str, Any] = {"image_id": "img", **changes}
    return srv.ServerRecord(
        id=SID, version=1, project_id="p", user_id="u", display_name="vm", flavor=FLAVOR, **fields
    )


SERVERS = [
    _server(),
    _server(
        nics=[
            {
                "port_id": PID,
                "network_id": NID,
                "mac_address": "fa:16:3e:00:00:01",
                "delete_on_termination": True,
            },
            {
                "port_id": PID2,
                "network_id": NID,
                "mac_address": "fa:16:3e:00:00:02",
                "delete_on_termination": False,
            },
        ]
    ),
    _server(
        image_id=None,
        block_devices=[
            {
                "attachment_id": AID,
                "volume_id": VID,
                "device": "/dev/vda",
                "boot_index": 0,
                "delete_on_termination": True,
                "connection": None,
                "status": "waiting",
            }
        ],
    ),
    _server(max_attempts=1),
]


def _server_invariants(actor: Actor) -> None:
    record: srv.ServerRecord = actor.record
    assert record is not None  # servers are never removed, only marked deleted
    assert server_status(record.vm_state, record.task_state) != "UNKNOWN"
    if record.vm_state == "error":
        assert record.fault is not None, "ERROR without a fault"
    if record.task_state is not None:  # nothing stays transitional forever: its timer is pending
        assert actor.timers.get(STATE_TIMER) == StateTimeout(state=srv.state_name(record)), (
            f"{srv.state_name(record)} without its timer ({actor.timers.get(STATE_TIMER)})"
        )
    if record.task_state in ("networking", "spawning") or record.vm_state in (
        "active",
        "paused",
        "suspended",
    ):
        assert record.host is not None, f"{srv.state_name(record)} without a host"
    assert len(record.attempted_hosts) <= record.max_attempts


@RUNS
@given(st.sampled_from(SERVERS), steps(srv.table))
def test_server_sequences_stay_in_declared_states_and_keep_invariants(
    initial: srv.ServerRecord, sequence: list[Message | str]
) -> None:
    actor = Actor(srv.table, "server", initial)
    assert actor.deliver(m.BuildServer())  # what the API sends with the row
    deleted = False

    def check(actor: Actor) -> None:
        nonlocal deleted
        _server_invariants(actor)
        deleted = deleted or actor.record.vm_state == "deleted"
        if deleted:  # a deleted server stays deleted, whatever arrives later
            assert srv.state_name(actor.record) == "deleted"

    run(actor, sequence, check)


@RUNS
@given(st.sampled_from(SERVERS), steps(srv.table))
def test_a_server_always_reaches_deleted_after_a_delete_and_the_hosts_answer(
    initial: srv.ServerRecord, sequence: list[Message | str]
) -> None:
    """Whatever happened before, delete then the host's (or the timer's) answer ends it."""
    actor = Actor(srv.table, "server", initial)
    actor.deliver(m.BuildServer())
    run(actor, sequence, _server_invariants)
    actor.deliver(m.DeleteServer())
    actor.deliver(m.Destroyed(host=actor.record.host))
    actor.fire(STATE_TIMER)
    assert srv.state_name(actor.record) == "deleted"
    assert STATE_TIMER not in actor.timers


# --- volume -------------------------------------------------------------------------------------------


def _volume(**changes: Any) -> vol.VolumeRecord:
    fields: dict[str, Any] = {"backend": "node@file", **changes}
    return vol.VolumeRecord(id=VID, version=1, project_id="p", size=1, **fields)


VOLUMES = [
    _volume(),
    _volume(backend=None),
    _volume(
        status="creating",
        attachment={"id": AID, "server_id": SID, "mode": "rw", "delete_on_termination": True},
    ),
]


def _volume_invariants(actor: Actor, reset: bool) -> None:
    record: vol.VolumeRecord | None = actor.record
    if record is None:
        return
    assert record.status in vol.STATES
    if reset:
        return  # an admin's reset sets whatever it is told (Cinder's os-reset_status)
    if record.status == "in-use":
        assert record.attachment is not None and record.attach_status == "attached"
    if record.status in ("error", "error_deleting", "error_extending"):
        assert record.fault is not None, f"{record.status} without a reason"
    if record.status in vol.TIMEOUTS and record.status not in ("reserved", "detaching"):
        # (the API enters those two itself and then tells the actor, which starts their timer)
        assert actor.timers.get(STATE_TIMER) == StateTimeout(state=record.status)


@RUNS
@given(st.sampled_from(VOLUMES), steps(vol.table))
def test_volume_sequences_stay_in_declared_states_and_keep_invariants(
    initial: vol.VolumeRecord, sequence: list[Message | str]
) -> None:
    actor = Actor(vol.table, "volume", initial)
    actor.deliver(v.CreateVolume())
    reset = gone = False

    def check(actor: Actor) -> None:
        nonlocal gone
        _volume_invariants(actor, reset)
        gone = gone or actor.record is None
        if gone:  # a deleted volume's row stays gone: everything later is refused as not found
            assert actor.record is None

    check(actor)
    for step in sequence:
        if step == FIRE:
            for name in sorted(actor.timers):
                actor.fire(name)
        else:
            reset = reset or isinstance(step, v.ResetVolumeState)
            actor.deliver(step)
        check(actor)


# --- port and network ------------------------------------------------------------------------------------


def _port(**changes: Any) -> prt.PortRecord:
    return prt.PortRecord(id=PID, version=1, project_id="p", network_id=NID, **changes)


PORTS = [
    _port(device_id=SID, device_owner="compute:nova"),
    _port(),
    _port(device_id="dhcp-" + NID, device_owner=prt.DHCP_OWNER, status=prt.ACTIVE),
]


def _port_invariants(actor: Actor) -> None:
    record: prt.PortRecord | None = actor.record
    if record is None:
        return
    if not record.admin_state_up:
        assert record.status == prt.DOWN, "an administratively down port shows DOWN"
    if record.status == prt.BUILD:
        assert record.binding_host_id and actor.timers.get(STATE_TIMER) == StateTimeout(state=prt.BUILD)
    if record.status == prt.ERROR:
        assert record.binding_vif_type == "binding_failed"
    if record.status == prt.ACTIVE and record.device_owner != prt.DHCP_OWNER:
        assert record.binding_host_id and record.binding_vif_type != "binding_failed", (
            "ACTIVE while its binding failed"
        )


@settings(RUNS, max_examples=400)
@given(st.sampled_from(PORTS), steps(prt.table))
def test_port_sequences_stay_in_declared_states_and_keep_invariants(
    initial: prt.PortRecord, sequence: list[Message | str]
) -> None:
    actor = Actor(prt.table, "port", initial)
    gone = False

    def check(actor: Actor) -> None:
        nonlocal gone
        _port_invariants(actor)
        gone = gone or actor.record is None
        if gone:
            assert actor.record is None

    run(actor, sequence, check)


def test_a_port_whose_binding_failed_stays_error_through_admin_down_and_up() -> None:
    """Found by the sequence test above: ERROR, admin down (DOWN), admin up showed ACTIVE."""
    actor = Actor(prt.table, "port", PORTS[0])
    assert actor.deliver(n.BindPort(server_id=SID, host="h1")) and actor.record.status == prt.BUILD
    actor.fire(STATE_TIMER)
    assert actor.record.status == prt.ERROR
    actor.deliver(n.SetPortAdminState(admin_state_up=False))
    assert actor.record.status == prt.DOWN
    actor.deliver(n.SetPortAdminState(admin_state_up=True))
    assert actor.record.status == prt.ERROR
    actor.deliver(n.BindPort(server_id=SID, host="h2"))  # a new binding leaves ERROR
    assert actor.record.status == prt.BUILD


def test_a_boot_volume_keeps_its_create_timer_when_its_server_goes_away() -> None:
    """Found by the sequence test above: the detach of a volume still being created cancelled
    its create timer, so a lost backend reply left it `creating` for ever."""
    actor = Actor(vol.table, "volume", VOLUMES[2])
    actor.deliver(v.CreateVolume())
    actor.deliver(v.VolumeDetached(attachment_id=AID, delete=True))
    assert actor.record.status == "creating" and actor.timers[STATE_TIMER] == StateTimeout(state="creating")
    actor.fire(STATE_TIMER)
    assert actor.record.status == "error" and actor.record.fault


def test_extending_a_volume_that_was_never_created_is_refused() -> None:
    """Found by the sequence test above: an errored create reset to available, then extended,
    failed an assertion inside the handler (a failed turn) instead of a clean refusal."""
    actor = Actor(vol.table, "volume", VOLUMES[1])
    actor.deliver(v.CreateVolume())
    assert actor.record.status == "error"
    actor.deliver(v.ResetVolumeState(status="available"))
    with pytest.raises(IllegalTransition, match="cannot be extended"):
        vol.table.apply(actor.record, Envelope.new(Target("volume", VID), v.ExtendVolume(new_size=5)), 0.0)


@RUNS
@given(st.booleans(), steps(net.table))
def test_a_network_shows_its_admin_state_after_any_sequence(
    admin_up: bool, sequence: list[Message | str]
) -> None:
    initial = net.NetworkRecord(
        id=NID,
        version=1,
        project_id="p",
        admin_state_up=admin_up,
        status=net.ACTIVE if admin_up else net.DOWN,
    )

    def check(actor: Actor) -> None:
        assert actor.record.status == (net.ACTIVE if actor.record.admin_state_up else net.DOWN)

    run(Actor(net.table, "network", initial), sequence, check)


# --- the tables themselves ------------------------------------------------------------------------------


@pytest.mark.parametrize("table", [srv.table, vol.table, prt.table, net.table], ids=lambda t: t.kind)
def test_every_row_names_declared_states_and_the_error_state_is_declared(table: TransitionTable[Any]) -> None:
    assert table.error_state in table.states
    for row in table.transitions():
        assert row.sources <= table.states | {ABSENT} and row.targets <= table.states | {ABSENT}, row
