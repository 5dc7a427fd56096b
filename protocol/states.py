"""The states of every actor kind, as the wire, the database and the API spell them.

One vocabulary, defined once and imported downwards (`actors`, `api`, `hostagent` and
`actorstack` all use these): Nova's `vm_states`, `task_states` and `power_state`, Cinder's
volume and attach statuses, Neutron's port and network statuses, Glance's image statuses. The
enums are `str` (or, for Nova's power states, `int`) enums, so their values are the same strings
and numbers as before in PostgreSQL, in JSON and on the wire; a record field typed with one
decodes from the plain value.

`server_status` is Nova's derivation of the API status from (vm_state, task_state).
"""

from __future__ import annotations

import enum


class VmState(enum.StrEnum):
    """Nova's vm_state: what the instance is, when no task is in progress."""

    BUILDING = "building"
    ACTIVE = "active"
    STOPPED = "stopped"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    RESCUED = "rescued"
    RESIZED = "resized"
    SOFT_DELETED = "soft-delete"
    DELETED = "deleted"
    ERROR = "error"
    SHELVED = "shelved"
    SHELVED_OFFLOADED = "shelved_offloaded"


class TaskState(enum.StrEnum):
    """Nova's task_state: what is being done to the instance (None when nothing); all of
    Nova's, so that a new task finds its name here."""

    SCHEDULING = "scheduling"
    BLOCK_DEVICE_MAPPING = "block_device_mapping"
    NETWORKING = "networking"
    SPAWNING = "spawning"
    POWERING_OFF = "powering-off"
    POWERING_ON = "powering-on"
    REBOOTING = "rebooting"
    REBOOT_PENDING = "reboot_pending"
    REBOOT_STARTED = "reboot_started"
    REBOOTING_HARD = "rebooting_hard"
    REBOOT_PENDING_HARD = "reboot_pending_hard"
    REBOOT_STARTED_HARD = "reboot_started_hard"
    PAUSING = "pausing"
    UNPAUSING = "unpausing"
    SUSPENDING = "suspending"
    RESUMING = "resuming"
    DELETING = "deleting"
    UPDATING_PASSWORD = "updating_password"
    REBUILDING = "rebuilding"
    REBUILD_BLOCK_DEVICE_MAPPING = "rebuild_block_device_mapping"
    REBUILD_SPAWNING = "rebuild_spawning"
    MIGRATING = "migrating"
    RESIZE_PREP = "resize_prep"
    RESIZE_MIGRATING = "resize_migrating"
    RESIZE_MIGRATED = "resize_migrated"
    RESIZE_FINISH = "resize_finish"
    RESIZE_REVERTING = "resize_reverting"
    RESIZE_CONFIRMING = "resize_confirming"
    IMAGE_SNAPSHOT = "image_snapshot"
    IMAGE_SNAPSHOT_PENDING = "image_snapshot_pending"
    IMAGE_PENDING_UPLOAD = "image_pending_upload"
    IMAGE_UPLOADING = "image_uploading"
    IMAGE_BACKUP = "image_backup"
    RESCUING = "rescuing"
    UNRESCUING = "unrescuing"
    SOFT_DELETING = "soft-deleting"
    RESTORING = "restoring"
    SHELVING = "shelving"
    SHELVING_IMAGE_PENDING_UPLOAD = "shelving_image_pending_upload"
    SHELVING_IMAGE_UPLOADING = "shelving_image_uploading"
    SHELVING_OFFLOADING = "shelving_offloading"
    UNSHELVING = "unshelving"


class PowerState(enum.IntEnum):
    """Nova's power_state numbers: what the hypervisor last said about the instance."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7

    @property
    def label(self) -> str:
        """Nova's name for it in notifications and `power_state` displays (STATE_MAP)."""
        return _POWER_LABELS[self]


_POWER_LABELS = {
    PowerState.NOSTATE: "pending",
    PowerState.RUNNING: "running",
    PowerState.PAUSED: "paused",
    PowerState.SHUTDOWN: "shutdown",
    PowerState.CRASHED: "crashed",
    PowerState.SUSPENDED: "suspended",
}


# Nova's map from (vm_state, task_state) to the API status (nova/api/openstack/common.py).
_STATUS: dict[VmState, dict[TaskState | None, str]] = {
    VmState.ACTIVE: {
        None: "ACTIVE",
        TaskState.REBOOTING: "REBOOT",
        TaskState.REBOOT_PENDING: "REBOOT",
        TaskState.REBOOT_STARTED: "REBOOT",
        TaskState.REBOOTING_HARD: "HARD_REBOOT",
        TaskState.REBOOT_PENDING_HARD: "HARD_REBOOT",
        TaskState.REBOOT_STARTED_HARD: "HARD_REBOOT",
        TaskState.UPDATING_PASSWORD: "PASSWORD",
        TaskState.REBUILDING: "REBUILD",
        TaskState.REBUILD_BLOCK_DEVICE_MAPPING: "REBUILD",
        TaskState.REBUILD_SPAWNING: "REBUILD",
        TaskState.MIGRATING: "MIGRATING",
        TaskState.RESIZE_PREP: "RESIZE",
        TaskState.RESIZE_MIGRATING: "RESIZE",
        TaskState.RESIZE_MIGRATED: "RESIZE",
        TaskState.RESIZE_FINISH: "RESIZE",
    },
    VmState.BUILDING: {None: "BUILD"},
    VmState.STOPPED: {
        None: "SHUTOFF",
        TaskState.RESIZE_PREP: "RESIZE",
        TaskState.RESIZE_MIGRATING: "RESIZE",
        TaskState.RESIZE_MIGRATED: "RESIZE",
        TaskState.RESIZE_FINISH: "RESIZE",
        TaskState.REBUILDING: "REBUILD",
        TaskState.REBUILD_BLOCK_DEVICE_MAPPING: "REBUILD",
        TaskState.REBUILD_SPAWNING: "REBUILD",
    },
    VmState.RESIZED: {None: "VERIFY_RESIZE", TaskState.RESIZE_REVERTING: "REVERT_RESIZE"},
    VmState.PAUSED: {None: "PAUSED", TaskState.MIGRATING: "MIGRATING"},
    VmState.SUSPENDED: {None: "SUSPENDED"},
    VmState.RESCUED: {None: "RESCUE"},
    VmState.ERROR: {
        None: "ERROR",
        TaskState.REBUILDING: "REBUILD",
        TaskState.REBUILD_BLOCK_DEVICE_MAPPING: "REBUILD",
        TaskState.REBUILD_SPAWNING: "REBUILD",
    },
    VmState.DELETED: {None: "DELETED"},
    VmState.SOFT_DELETED: {None: "SOFT_DELETED"},
    VmState.SHELVED: {None: "SHELVED"},
    VmState.SHELVED_OFFLOADED: {None: "SHELVED_OFFLOADED"},
}


def server_status(vm_state: str, task_state: str | None) -> str:
    """The API status, as Nova's status_from_state computes it (UNKNOWN for a vm_state it
    does not know)."""
    try:
        tasks = _STATUS[VmState(vm_state)]
    except ValueError:
        return "UNKNOWN"
    try:
        task = None if task_state is None else TaskState(task_state)
    except ValueError:
        task = None
    return tasks.get(task, tasks[None])


def states_of_status(statuses: list[str]) -> tuple[set[VmState], set[TaskState | None]]:
    """The vm_states and task_states a status filter names (Nova's task_and_vm_state_from_status,
    case-insensitive); a task of None (Nova's "default") means any task of those vm_states."""
    wanted = {status.strip().upper() for status in statuses}
    vm_states: set[VmState] = set()
    task_states: set[TaskState | None] = set()
    for vm_state, tasks in _STATUS.items():
        for task_state, status in tasks.items():
            if status in wanted:
                vm_states.add(vm_state)
                task_states.add(task_state)
    return vm_states, task_states


class VolumeStatus(enum.StrEnum):
    """Cinder's volume status."""

    CREATING = "creating"
    AVAILABLE = "available"
    RESERVED = "reserved"
    ATTACHING = "attaching"
    IN_USE = "in-use"
    DETACHING = "detaching"
    DELETING = "deleting"
    EXTENDING = "extending"
    ERROR = "error"
    ERROR_DELETING = "error_deleting"
    ERROR_EXTENDING = "error_extending"


class AttachStatus(enum.StrEnum):
    """Cinder's attach_status of a volume."""

    DETACHED = "detached"
    ATTACHING = "attaching"
    ATTACHED = "attached"
    DETACHING = "detaching"
    ERROR_ATTACHING = "error_attaching"
    ERROR_DETACHING = "error_detaching"


class PortStatus(enum.StrEnum):
    """Neutron's port status."""

    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    DOWN = "DOWN"
    ERROR = "ERROR"


class NetworkStatus(enum.StrEnum):
    """Neutron's network status."""

    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    DOWN = "DOWN"
    ERROR = "ERROR"


class ImageStatus(enum.StrEnum):
    """Glance's image status."""

    QUEUED = "queued"
    SAVING = "saving"
    ACTIVE = "active"
    KILLED = "killed"
    DELETED = "deleted"
    UPLOADING = "uploading"
    IMPORTING = "importing"
    PENDING_DELETE = "pending_delete"
    DEACTIVATED = "deactivated"


class BlockDeviceStatus(enum.StrEnum):
    """Where a volume of a server's block device mappings is (the server actor's, kept in its
    row's `block_devices`; the API writes the first one of a boot's volumes)."""

    WAITING = "waiting"  # its volume is being created for this boot
    READY = "ready"  # to attach at spawn
    ATTACHING = "attaching"  # hot-plug asked of the host
    ATTACHED = "attached"
    DETACHING = "detaching"
    FAILED = "failed"  # its volume could not be created
