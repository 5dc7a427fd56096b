"""The power actions: their wire names, their requests and one named row each.

A row says, for one action, what the API accepts (`POST /servers/{id}/action` body key and
Nova's action name), which message it sends the server actor, the task the server runs it as
and how long that may last, the vm_states it may start from and the one it ends in, Nova's
instance-action event and notification family, and, for the virt driver, the power states in
which the action is already in effect (done without touching the domain) and those it may
start from. The server actor's rules (actors/server.py), the API's action map and its OpenAPI
bodies (api/compute/servers.py, api/openapi.py), the instance-action events, the notifications
and the driver's checks (hostagent/virt/base.py) are all built from ROWS.

Adding a power action: its name in PowerAction, its request message and its row here, and one
driver method (the `_ACTIONS` map of hostagent/virt/libvirt.py). Nothing else names it.
"""

from __future__ import annotations

import dataclasses
import enum

from protocol.message import Message
from protocol.states import PowerState, TaskState, VmState


class PowerAction(enum.StrEnum):
    """The power actions a host agent performs (`agent.power`, `server.action_done`)."""

    STOP = "stop"
    START = "start"
    REBOOT = "reboot"
    REBOOT_HARD = "reboot_hard"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    SUSPEND = "suspend"
    RESUME = "resume"


# --- the requests, to the server actor from the API ------------------------------------------------


class Stop(Message, frozen=True):
    TYPE = "server.stop"


class Start(Message, frozen=True):
    TYPE = "server.start"


class Reboot(Message, frozen=True):
    TYPE = "server.reboot"


class RebootHard(Message, frozen=True):
    TYPE = "server.reboot_hard"


class Pause(Message, frozen=True):
    TYPE = "server.pause"


class Unpause(Message, frozen=True):
    TYPE = "server.unpause"


class Suspend(Message, frozen=True):
    TYPE = "server.suspend"


class Resume(Message, frozen=True):
    TYPE = "server.resume"


# --- the rows -------------------------------------------------------------------------------------

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
    timeout: float  # how long the task may last before the server goes to ERROR (seconds)
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
    timeout: float,
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
        timeout=timeout,
        from_states=frozenset(from_states),
        done=done,
        in_effect=frozenset(in_effect),
        power_from=frozenset(power_from),
        api_type=api_type,
    )


V, P, T, A = VmState, PowerState, TaskState, PowerAction

ROWS: tuple[PowerActionRow, ...] = (
    _row(A.STOP, Stop, "os-stop", "stop", "power_off", T.POWERING_OFF, 180, {V.ACTIVE, V.ERROR}, V.STOPPED,
         in_effect={P.SHUTDOWN}),
    _row(A.START, Start, "os-start", "start", "power_on", T.POWERING_ON, 180, {V.STOPPED}, V.ACTIVE,
         in_effect={P.RUNNING}, power_from={P.SHUTDOWN, P.CRASHED, P.NOSTATE}),
    _row(A.REBOOT, Reboot, "reboot", "reboot", "reboot", T.REBOOTING, 300, {V.ACTIVE}, V.ACTIVE,
         power_from={P.RUNNING}, api_type="SOFT"),
    _row(A.REBOOT_HARD, RebootHard, "reboot", "reboot", "reboot", T.REBOOTING_HARD, 300,
         {V.ACTIVE, V.STOPPED, V.PAUSED, V.SUSPENDED, V.ERROR}, V.ACTIVE, api_type="HARD"),
    _row(A.PAUSE, Pause, "pause", "pause", "pause", T.PAUSING, 120, {V.ACTIVE}, V.PAUSED,
         in_effect={P.PAUSED}, power_from={P.RUNNING}),
    _row(A.UNPAUSE, Unpause, "unpause", "unpause", "unpause", T.UNPAUSING, 120, {V.PAUSED}, V.ACTIVE,
         in_effect={P.RUNNING}, power_from={P.PAUSED}),
    _row(A.SUSPEND, Suspend, "suspend", "suspend", "suspend", T.SUSPENDING, 180, {V.ACTIVE}, V.SUSPENDED,
         in_effect={P.SUSPENDED}, power_from={P.RUNNING, P.PAUSED}),
    _row(A.RESUME, Resume, "resume", "resume", "resume", T.RESUMING, 180, {V.SUSPENDED}, V.ACTIVE,
         in_effect={P.RUNNING}, power_from={P.SUSPENDED}),
)  # fmt: skip

BY_ACTION: dict[PowerAction, PowerActionRow] = {row.action: row for row in ROWS}
BY_TASK: dict[TaskState, PowerActionRow] = {row.task: row for row in ROWS}
BY_REQUEST: dict[type[Message], PowerActionRow] = {row.request: row for row in ROWS}
