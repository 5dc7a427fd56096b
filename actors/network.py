"""The network actor: a Neutron network's status.

A network is ACTIVE when it is administratively up and DOWN when it is not (Neutron's ML2
networks have no other settled status; BUILD and ERROR exist for the state machine's
completeness and for faults). The API creates the row and owns its attributes; the actor owns
`status` and `admin_state_up` after creation, so that the status change and its event are one
turn. Subnets have no lifecycle of their own in Neutron (no status): they are plain rows of
their network, written by the API; the host agents read them when they configure DHCP.
"""

from __future__ import annotations

import datetime

import msgspec

from actors.table import Context, Outcome, TransitionTable
from protocol import network as n
from protocol.states import NetworkStatus

BUILD, ACTIVE, DOWN, ERROR = (
    NetworkStatus.BUILD,
    NetworkStatus.ACTIVE,
    NetworkStatus.DOWN,
    NetworkStatus.ERROR,
)
STATES = frozenset(NetworkStatus)


class NetworkRecord(msgspec.Struct, kw_only=True):
    id: str
    version: int = 0
    project_id: str
    status: NetworkStatus = ACTIVE
    admin_state_up: bool = True
    revision_number: int = 0
    updated_at: datetime.datetime | None = None


table = TransitionTable(
    "network", NetworkRecord, states=STATES, error_state=ERROR, state_of=lambda r: r.status
)


@table.on(n.SetNetworkAdminState, source=STATES, to={ACTIVE, DOWN})
def set_admin_state(
    record: NetworkRecord, msg: n.SetNetworkAdminState, ctx: Context
) -> Outcome[NetworkRecord]:
    status = ACTIVE if msg.admin_state_up else DOWN
    if record.admin_state_up == msg.admin_state_up and record.status == status:
        return Outcome(record)
    return Outcome(
        msgspec.structs.replace(
            record,
            admin_state_up=msg.admin_state_up,
            status=status,
            revision_number=record.revision_number + 1,
            updated_at=datetime.datetime.fromtimestamp(ctx.now, datetime.UTC),
        )
    )
