"""The port and network actors' tables, and the server actor's networking step (pure)."""

from __future__ import annotations

import msgspec

from actors import network as net_actor
from actors import port as p
from actors import server as s
from actors.table import CancelTimer, Send, SetTimer
from protocol import Envelope, Message, Target
from protocol import compute as m
from protocol import network as n
from protocol.actor import STATE_TIMER, StateTimeout
from protocol.states import PowerState

SID = "11111111-2222-3333-4444-555555555555"
PORTS = ["aaaaaaaa-0000-0000-0000-000000000001", "aaaaaaaa-0000-0000-0000-000000000002"]
FLAVOR = {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1}
NICS = [
    {
        "port_id": PORTS[0],
        "network_id": "net",
        "mac_address": "fa:16:3e:00:00:01",
        "delete_on_termination": True,
    },
    {
        "port_id": PORTS[1],
        "network_id": "net",
        "mac_address": "fa:16:3e:00:00:02",
        "delete_on_termination": False,
    },
]


def port(**changes: object) -> p.PortRecord:
    record = p.PortRecord(
        id=PORTS[0],
        version=1,
        project_id="proj",
        network_id="net",
        device_id=SID,
        device_owner="compute:nova",
    )
    return msgspec.structs.replace(record, **changes)


def server(**changes: object) -> s.ServerRecord:
    record = s.ServerRecord(
        id=SID,
        version=1,
        project_id="p",
        user_id="u",
        display_name="vm",
        flavor=FLAVOR,
        image_id="img",
        nics=NICS,
    )
    return msgspec.structs.replace(record, **changes)


def apply(table, record, kind: str, body: Message):
    return table.apply(record, Envelope.new(Target(kind, record.id), body), 1000.0)


def sent(outcome, kind: type) -> list[Send]:
    return [e for e in outcome.effects if isinstance(e, Send) and isinstance(e.body, kind)]


def test_a_port_goes_down_build_active_and_tells_its_server() -> None:
    out = apply(p.table, port(), "port", n.BindPort(server_id=SID, host="h1"))
    assert out.record.status == "BUILD" and out.record.binding_host_id == "h1"
    [reply] = sent(out, n.PortBound)
    assert reply.target == Target("server", SID) and reply.body.port_id == PORTS[0]
    out = apply(p.table, out.record, "port", n.ActivatePort(server_id=SID, host="h1"))
    assert out.record.status == "ACTIVE" and out.record.revision_number == 2


def test_a_port_ignores_requests_for_another_server_or_host() -> None:
    other = "99999999-2222-3333-4444-555555555555"
    out = apply(p.table, port(), "port", n.BindPort(server_id=other, host="h1"))
    assert out.record == port() and out.effects == ()
    bound = apply(p.table, port(), "port", n.BindPort(server_id=SID, host="h1")).record
    assert apply(p.table, bound, "port", n.ActivatePort(server_id=SID, host="h2")).record.status == "BUILD"
    assert apply(p.table, bound, "port", n.DeletePort(server_id=other)).delete is False
    assert apply(p.table, bound, "port", n.UnbindPort(server_id=other)).record.device_id == SID


def test_admin_down_shows_down_and_up_again_shows_active() -> None:
    active = port(status="ACTIVE", binding_host_id="h1")
    down = apply(p.table, active, "port", n.SetPortAdminState(admin_state_up=False)).record
    assert (down.status, down.admin_state_up) == ("DOWN", False)
    # a bind while administratively down keeps it DOWN
    assert apply(p.table, down, "port", n.BindPort(server_id=SID, host="h1")).record.status == "DOWN"
    up = apply(p.table, down, "port", n.SetPortAdminState(admin_state_up=True)).record
    assert up.status == "ACTIVE"
    dhcp = port(device_owner="network:dhcp", device_id="dhcp-net", status="ACTIVE")
    assert apply(p.table, dhcp, "port", n.SetPortAdminState(admin_state_up=False)).record.status == "DOWN"


def test_unbind_frees_the_port_and_delete_removes_it() -> None:
    bound = port(status="ACTIVE", binding_host_id="h1", binding_vif_type="tap")
    free = apply(p.table, bound, "port", n.UnbindPort(server_id=SID)).record
    assert (free.status, free.device_id, free.device_owner, free.binding_host_id) == ("DOWN", "", "", "")
    assert apply(p.table, bound, "port", n.DeletePort(server_id=SID)).delete is True


def test_a_network_follows_its_admin_state() -> None:
    record = net_actor.NetworkRecord(id="net", version=1, project_id="proj")
    down = apply(net_actor.table, record, "network", n.SetNetworkAdminState(admin_state_up=False)).record
    assert (down.status, down.admin_state_up) == ("DOWN", False)
    assert (
        apply(net_actor.table, down, "network", n.SetNetworkAdminState(admin_state_up=True)).record.status
        == "ACTIVE"
    )


def test_a_server_binds_every_port_before_it_spawns() -> None:
    out = apply(s.table, server(), "server", m.Scheduled(host="h1", node="h1", availability_zone="nova"))
    assert s.state_name(out.record) == "building:networking"
    assert sorted(e.target.id for e in sent(out, n.BindPort)) == sorted(PORTS)
    assert not sent(out, m.Spawn)
    out = apply(s.table, out.record, "server", n.PortBound(port_id=PORTS[0], host="h1"))
    assert s.state_name(out.record) == "building:networking" and not sent(out, m.Spawn)
    # a binding confirmed for an earlier host does not count
    stale = apply(s.table, out.record, "server", n.PortBound(port_id=PORTS[1], host="h0"))
    assert s.state_name(stale.record) == "building:networking"
    out = apply(s.table, out.record, "server", n.PortBound(port_id=PORTS[1], host="h1"))
    assert s.state_name(out.record) == "building:spawning"
    [spawn] = sent(out, m.Spawn)
    assert spawn.body.ports == PORTS and spawn.target == Target("agent", "h1")
    out = apply(s.table, out.record, "server", m.Spawned(host="h1", power_state=PowerState.RUNNING))
    assert sorted(e.target.id for e in sent(out, n.ActivatePort)) == sorted(PORTS)


def test_a_reschedule_binds_again_on_the_new_host() -> None:
    record = server(vm_state="building", task_state="spawning", host="h1", bound_ports=PORTS)
    out = apply(s.table, record, "server", m.SpawnFailed(host="h1", reason="no"))
    assert out.record.bound_ports == [] and s.state_name(out.record) == "building:scheduling"
    out = apply(s.table, out.record, "server", m.Scheduled(host="h2", node="h2", availability_zone="nova"))
    assert {e.body.host for e in sent(out, n.BindPort)} == {"h2"}


def test_a_deleted_server_deletes_its_own_ports_and_releases_the_others() -> None:
    record = server(vm_state="active", task_state="deleting", host="h1")
    out = apply(s.table, record, "server", m.Destroyed(host="h1"))
    assert [e.target.id for e in sent(out, n.DeletePort)] == [PORTS[0]]
    assert [e.target.id for e in sent(out, n.UnbindPort)] == [PORTS[1]]
    never_placed = apply(s.table, server(), "server", m.DeleteServer())
    assert len(sent(never_placed, n.DeletePort)) == 1 and len(sent(never_placed, n.UnbindPort)) == 1


def test_networking_that_never_completes_times_out_to_error() -> None:
    out = apply(s.table, server(), "server", m.Scheduled(host="h1", node="h1", availability_zone="nova"))
    out = apply(s.table, out.record, "server", StateTimeout(state="building:networking"))
    assert s.state_name(out.record) == "error"


def test_a_port_bound_but_never_activated_ends_in_error_and_can_be_bound_again() -> None:
    out = apply(p.table, port(), "port", n.BindPort(server_id=SID, host="h1"))
    [timer] = [e for e in out.effects if isinstance(e, SetTimer)]
    assert timer.name == STATE_TIMER and timer.body == StateTimeout(state="BUILD")
    failed = apply(p.table, out.record, "port", timer.body).record
    assert (failed.status, failed.binding_vif_type) == ("ERROR", "binding_failed")
    assert apply(p.table, failed, "port", n.BindPort(server_id=SID, host="h2")).record.status == "BUILD"
    active = apply(p.table, out.record, "port", n.ActivatePort(server_id=SID, host="h1"))
    assert CancelTimer(STATE_TIMER) in active.effects
    assert apply(p.table, active.record, "port", timer.body).record.status == "ACTIVE"  # a stale timer


def test_a_host_that_plugs_the_port_after_its_build_timer_gave_up_binds_it_after_all() -> None:
    bound = apply(p.table, port(), "port", n.BindPort(server_id=SID, host="h1")).record
    failed = apply(p.table, bound, "port", StateTimeout(state="BUILD")).record
    assert (failed.status, failed.binding_vif_type) == ("ERROR", "binding_failed")
    late = apply(p.table, failed, "port", n.ActivatePort(server_id=SID, host="h1")).record
    assert (late.status, late.binding_vif_type) == ("ACTIVE", "tap")
    # Also when it was set down meanwhile: the next admin up shows it ACTIVE, not ERROR.
    down = apply(p.table, failed, "port", n.SetPortAdminState(admin_state_up=False)).record
    plugged = apply(p.table, down, "port", n.ActivatePort(server_id=SID, host="h1")).record
    assert (plugged.status, plugged.binding_vif_type) == ("DOWN", "tap")
    assert apply(p.table, plugged, "port", n.SetPortAdminState(admin_state_up=True)).record.status == "ACTIVE"
