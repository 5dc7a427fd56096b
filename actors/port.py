"""The port actor: a Neutron port's status and binding as a transition table.

Neutron's statuses: DOWN (created, unbound, or administratively down), BUILD (bound to the host
its server was scheduled to, waiting for the host to plug it), ACTIVE (the host runs the server
with the port's tap on its network's bridge), ERROR (bound, but no guest came up with it within
BUILD_TIMEOUT: Neutron's failed binding; a new bind or an unbind leaves it). The API creates the
row (DOWN; the network's DHCP port ACTIVE) with its fixed IPs, and owns its name, addresses and
device fields; the actor owns the status, `admin_state_up` after creation, and the binding. A port whose row
the API deleted (Neutron lets a user delete a port in use) simply stops receiving messages:
they are refused as addressed to an absent actor, and the host's reconciliation unplugs it.

A request that names a server the port no longer belongs to (a late message after the port
was given to another server, or released) changes nothing.
"""

from __future__ import annotations

import datetime
from typing import Any

import msgspec

from actors.table import ABSENT, Context, Notify, Outcome, Send, TransitionTable
from protocol import Target
from protocol import firewall as f
from protocol import network as n
from protocol.actor import StateTimeout
from protocol.states import PortStatus as P

BUILD, ACTIVE, DOWN, ERROR = P.BUILD, P.ACTIVE, P.DOWN, P.ERROR
STATES = frozenset(P)
DHCP_OWNER = "network:dhcp"
BUILD_TIMEOUT = 1200.0  # longer than a server's networking and spawning tasks together


class PortRecord(msgspec.Struct, kw_only=True):
    """The columns of `ports` the actor reads or owns (the API owns the rest)."""

    id: str
    version: int = 0
    project_id: str
    network_id: str
    status: P = DOWN
    admin_state_up: bool = True
    device_id: str = ""
    device_owner: str = ""
    binding_host_id: str = ""
    binding_vif_type: str = "unbound"
    security_group_ids: tuple[str, ...] = ()  # the API's; read when the port goes
    revision_number: int = 0
    updated_at: datetime.datetime | None = None


def _with(record: PortRecord, ctx: Context, **changes: Any) -> PortRecord:
    return msgspec.structs.replace(
        record,
        revision_number=record.revision_number + 1,
        updated_at=datetime.datetime.fromtimestamp(ctx.now, datetime.UTC),
        **changes,
    )


def _settled_status(record: PortRecord) -> P:
    """The status a port has when nothing is in flight: Neutron shows an administratively down
    port DOWN; the network's DHCP port is served by every host of the network (ACTIVE); a VM
    port is ACTIVE when bound (its host plugs a bound port whatever its admin state)."""
    if not record.admin_state_up:
        return DOWN
    if record.device_owner == DHCP_OWNER:
        return ACTIVE
    return ACTIVE if record.binding_host_id else DOWN


table = TransitionTable("port", PortRecord, states=STATES, error_state=ERROR, state_of=lambda r: r.status)


@table.on(n.SetPortAdminState, source=STATES, to={ACTIVE, DOWN, ERROR})
def set_admin_state(record: PortRecord, msg: n.SetPortAdminState, ctx: Context) -> Outcome[PortRecord]:
    if record.admin_state_up == msg.admin_state_up:
        return Outcome(record)
    new = msgspec.structs.replace(record, admin_state_up=msg.admin_state_up)
    if record.status == BUILD and msg.admin_state_up:
        status = BUILD  # still waiting for its host
    elif record.binding_vif_type == "binding_failed" and msg.admin_state_up:
        status = ERROR  # its binding failed, also if it was set down meanwhile: never ACTIVE for that
    else:
        status = _settled_status(new)
    return Outcome(_with(new, ctx, status=status))


@table.on(n.BindPort, source=STATES, to={BUILD, DOWN})
def bind(record: PortRecord, msg: n.BindPort, ctx: Context) -> Outcome[PortRecord]:
    """Bind to the server's host (again, on a reschedule: BUILD starts over) and tell the
    server it is bound."""
    if record.device_id != msg.server_id:
        return Outcome(record)  # the port was released or given to another server meanwhile
    status = BUILD if record.admin_state_up else DOWN
    new = _with(record, ctx, binding_host_id=msg.host, binding_vif_type="tap", status=status)
    reply = Send(Target("server", msg.server_id), n.PortBound(port_id=record.id, host=msg.host))
    return Outcome(new, effects=(reply,), reenter=True)


@table.timeout(BUILD, after=BUILD_TIMEOUT, to=ERROR)
def build_timed_out(record: PortRecord, msg: StateTimeout, ctx: Context) -> Outcome[PortRecord]:
    """Bound, but no guest came up with it: Neutron's failed binding, until it is bound again."""
    return Outcome(_with(record, ctx, status=ERROR, binding_vif_type="binding_failed"))


@table.on(n.ActivatePort, source=STATES, to={ACTIVE, DOWN})
def activate(record: PortRecord, msg: n.ActivatePort, ctx: Context) -> Outcome[PortRecord]:
    if record.device_id != msg.server_id or record.binding_host_id != msg.host:
        return Outcome(record)
    status = ACTIVE if record.admin_state_up else DOWN
    # A host that reports the port plugged after its build timer gave up on it (binding_failed)
    # has bound it after all: the binding is in effect again, or the port would show ACTIVE
    # with a failed binding (or ERROR at its next admin up).
    vif_type = "tap" if record.binding_vif_type == "binding_failed" else record.binding_vif_type
    if status == record.status and vif_type == record.binding_vif_type:
        return Outcome(record)
    return Outcome(_with(record, ctx, status=status, binding_vif_type=vif_type))


@table.on(n.UnbindPort, source=STATES, to=DOWN)
def unbind(record: PortRecord, msg: n.UnbindPort, ctx: Context) -> Outcome[PortRecord]:
    if record.device_id != msg.server_id:
        return Outcome(record)  # not this server's any more: nothing to release
    return Outcome(
        _with(
            record,
            ctx,
            device_id="",
            device_owner="",
            binding_host_id="",
            binding_vif_type="unbound",
            status=DOWN,
        )
    )


@table.on(n.DeletePort, source=STATES, to=ABSENT)
def delete(record: PortRecord, msg: n.DeletePort, ctx: Context) -> Outcome[PortRecord]:
    if record.device_id != msg.server_id:
        return Outcome(record)  # the port was given to another server meanwhile: keep it
    # Its groups lose a member: the hosts that filter by their addresses must learn it.
    members = tuple(Send(Target("security_group", g), f.MembersChanged()) for g in record.security_group_ids)
    return Outcome(
        None, effects=(Notify("port.delete.start"), Notify("port.delete.end"), *members), delete=True
    )
