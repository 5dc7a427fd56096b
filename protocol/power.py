"""The power actions, one named row each: everything the cloud derives from one.

A row says, for one action, what the API accepts (`POST /servers/{id}/action` body key and
Nova's action name), which message it sends the server actor, the task the server runs it as,
the vm_states it may start from and the one it ends in, Nova's instance-action event and
notification family, and, for the virt driver, the power states in which the action is already
in effect (done without touching the domain) and those it may start from. The server actor's
rules (actors/server.py), the API's action map (api/compute/servers.py), the instance-action
events, the notifications and the driver's checks (hostagent/virt) are all built from ROWS.

Adding a power action is one message type (protocol/compute.py), one row here and one driver
method (hostagent/virt/libvirt.py); see ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses

from protocol import compute as m
from protocol.message import Message
from protocol.states import PowerAction, PowerState, TaskState, VmState

_ANY_POWER = frozenset(PowerState)


@dataclasses.dataclass(frozen=True)
class PowerActionRow:
    action: PowerAction  # the wire value of agent.power and server.action_done
    request: type[Message]  # what the API sends the server actor
    api_action: str  # the key of the action body (`{"os-stop": null}`)
    nova_action: str  # Nova's instance-action name, also its policy name (os_compute_api:servers:…)
    event: str  # Nova's instance-action event name (`openstack server event show`)
    notification: str  # instance.<notification>.start/.end/.error
    task: TaskState  # the task_state while it runs
    from_states: frozenset[VmState]  # the vm_states (with no task) it may start from
    done: VmState  # the vm_state once the host reports it done
    in_effect: frozenset[PowerState]  # the driver reports success without acting in these
    power_from: frozenset[PowerState]  # the driver may act from these (checked after in_effect)
    api_type: str | None = None  # the reboot `type` (SOFT/HARD) that selects this row


def _row(
    action: PowerAction,
    request: type[Message],
    api_action: str,
    nova_action: str,
    notification: str,
    task: TaskState,
    from_states: set[VmState],
    done: VmState,
    *,
    in_effect: frozenset[PowerState] | set[PowerState] = frozenset(),
    power_from: frozenset[PowerState] | set[PowerState] = _ANY_POWER,
    api_type: str | None = None,
) -> PowerActionRow:
    return PowerActionRow(
        action=action,
        request=request,
        api_action=api_action,
        nova_action=nova_action,
        event=f"compute_{nova_action}_instance",
        notification=notification,
        task=task,
        from_states=frozenset(from_states),
        done=done,
        in_effect=frozenset(in_effect),
        power_from=frozenset(power_from),
        api_type=api_type,
    )


V, P, T, A = VmState, PowerState, TaskState, PowerAction

ROWS: tuple[PowerActionRow, ...] = (
    _row(A.STOP, m.Stop, "os-stop", "stop", "power_off", T.POWERING_OFF, {V.ACTIVE, V.ERROR}, V.STOPPED,
         in_effect={P.SHUTDOWN}),
    _row(A.START, m.Start, "os-start", "start", "power_on", T.POWERING_ON, {V.STOPPED}, V.ACTIVE,
         in_effect={P.RUNNING}, power_from={P.SHUTDOWN, P.CRASHED, P.NOSTATE}),
    _row(A.REBOOT, m.Reboot, "reboot", "reboot", "reboot", T.REBOOTING, {V.ACTIVE}, V.ACTIVE,
         power_from={P.RUNNING}, api_type="SOFT"),
    _row(A.REBOOT_HARD, m.RebootHard, "reboot", "reboot", "reboot", T.REBOOTING_HARD,
         {V.ACTIVE, V.STOPPED, V.PAUSED, V.SUSPENDED, V.ERROR}, V.ACTIVE, api_type="HARD"),
    _row(A.PAUSE, m.Pause, "pause", "pause", "pause", T.PAUSING, {V.ACTIVE}, V.PAUSED,
         in_effect={P.PAUSED}, power_from={P.RUNNING}),
    _row(A.UNPAUSE, m.Unpause, "unpause", "unpause", "unpause", T.UNPAUSING, {V.PAUSED}, V.ACTIVE,
         in_effect={P.RUNNING}, power_from={P.PAUSED}),
    _row(A.SUSPEND, m.Suspend, "suspend", "suspend", "suspend", T.SUSPENDING, {V.ACTIVE}, V.SUSPENDED,
         in_effect={P.SUSPENDED}, power_from={P.RUNNING, P.PAUSED}),
    _row(A.RESUME, m.Resume, "resume", "resume", "resume", T.RESUMING, {V.SUSPENDED}, V.ACTIVE,
         in_effect={P.RUNNING}, power_from={P.SUSPENDED}),
)  # fmt: skip

BY_ACTION: dict[PowerAction, PowerActionRow] = {row.action: row for row in ROWS}
BY_TASK: dict[TaskState, PowerActionRow] = {row.task: row for row in ROWS}
BY_REQUEST: dict[type[Message], PowerActionRow] = {row.request: row for row in ROWS}
