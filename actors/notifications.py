"""What each kind's notifications carry: OpenStack's payloads, built from an actor's full row.

Servers send Nova's versioned objects (InstanceActionPayload and its relatives, each with its
Nova name and version); volumes send Cinder's flat usage dictionary; networks, subnets and ports
send Neutron's `{"<resource>": {...}}`. These are pure functions of the row: the turn reads the
row after the change, in the change's transaction (actors/turn.py).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from actors.table import Notify
from protocol.notifications import ERROR, Notification, versioned
from protocol.states import BlockDeviceStatus, PowerState, VmState, VolumeStatus

# Payload class and version per event family, as Nova names them.
_CREATE = ("InstanceCreatePayload", "1.12")
_ACTION = ("InstanceActionPayload", "1.8")
_VOLUME_ACTION = ("InstanceActionVolumePayload", "1.6")


def _power_label(value: Any) -> str:
    """Nova's name for a power_state in notifications (nova/compute/power_state.py STATE_MAP)."""
    try:
        return PowerState(int(value or 0)).label
    except ValueError:
        return PowerState.NOSTATE.label


def _iso(value: Any) -> str | None:
    """Nova's and Cinder's payload times: ISO 8601 in UTC, 'Z'-less with an offset."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = datetime.datetime.fromtimestamp(value, datetime.UTC)
    if isinstance(value, datetime.datetime):
        stamp: datetime.datetime = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
        return stamp.astimezone(datetime.UTC).isoformat()
    return str(value)


def _flavor(flavor: Mapping[str, Any]) -> dict[str, Any]:
    return versioned(
        "FlavorPayload",
        "1.4",
        {
            "flavorid": flavor.get("id"),
            "name": flavor.get("name"),
            "memory_mb": flavor.get("ram"),
            "vcpus": flavor.get("vcpus"),
            "root_gb": flavor.get("disk"),
            "ephemeral_gb": flavor.get("ephemeral", 0),
            "swap": flavor.get("swap", 0),
            "rxtx_factor": 1.0,
            "vcpu_weight": 0,
            "disabled": False,
            "is_public": True,
            "extra_specs": dict(flavor.get("extra_specs") or {}),
            "projects": None,
            "description": None,
        },
    )


def _fault(row: Mapping[str, Any], notice: Notify) -> dict[str, Any] | None:
    """Nova's ExceptionPayload for an error notification (None otherwise)."""
    fault = row.get("fault")
    if notice.priority != ERROR and not notice.extra.get("exception"):
        return None
    message = str(notice.extra.get("reason") or (fault or {}).get("message") or "")
    return versioned(
        "ExceptionPayload",
        "1.1",
        {
            "module_name": "actorstack.actors.server",
            "function_name": notice.event_type.split(".")[1],
            "exception": str(notice.extra.get("exception") or "InstanceFault"),
            "exception_message": message,
            "traceback": "",
        },
    )


def _instance_data(row: Mapping[str, Any], notice: Notify) -> dict[str, Any]:
    host = row.get("host")
    return {
        "uuid": row["id"],
        "user_id": row.get("user_id"),
        "tenant_id": row.get("project_id"),
        "reservation_id": row.get("reservation_id"),
        "display_name": row.get("display_name"),
        "display_description": row.get("description"),
        "host_name": row.get("hostname"),
        "host": host,
        "node": row.get("node"),
        "os_type": None,
        "architecture": None,
        "availability_zone": row.get("availability_zone"),
        "flavor": _flavor(row.get("flavor") or {}),
        "image_uuid": row.get("image_id") or "",
        "key_name": row.get("key_name"),
        "kernel_id": "",
        "ramdisk_id": "",
        "created_at": _iso(row.get("created_at")),
        "launched_at": _iso(row.get("launched_at")),
        "terminated_at": _iso(row.get("terminated_at")),
        "deleted_at": _iso(row.get("terminated_at")) if row.get("vm_state") == VmState.DELETED else None,
        "updated_at": _iso(row.get("updated_at")),
        "state": row.get("vm_state"),
        "power_state": _power_label(row.get("power_state")),
        "task_state": row.get("task_state"),
        "progress": 0,
        "metadata": dict(row.get("metadata") or {}),
        "locked": bool(row.get("locked")),
        "auto_disk_config": "MANUAL",
        "tags": list(row.get("tags") or []),
        "block_devices": [
            versioned(
                "BlockDevicePayload",
                "1.0",
                {
                    "volume_id": bdm.get("volume_id"),
                    "device_name": bdm.get("device"),
                    "boot_index": bdm.get("boot_index"),
                    "delete_on_termination": bool(bdm.get("delete_on_termination")),
                    "tag": None,
                },
            )
            for bdm in (row.get("block_devices") or [])
            if bdm.get("status") == BlockDeviceStatus.ATTACHED
        ],
        "fault": _fault(row, notice),
        "action_initiator_user": row.get("user_id"),
        "action_initiator_project": row.get("project_id"),
    }


def server(row: Mapping[str, Any], notice: Notify) -> Notification:
    family = notice.event_type.split(".")[1]
    name, version = (
        _CREATE if family == "create" else _VOLUME_ACTION if family.startswith("volume_") else _ACTION
    )
    data = _instance_data(row, notice)
    if family.startswith("volume_"):
        data["volume_id"] = notice.extra.get("volume_id")
    host = row.get("host")
    publisher = f"nova-compute:{host}" if host else "nova-conductor:actorstack"
    return Notification(notice.event_type, versioned(name, version, data), publisher, notice.priority)


def volume(row: Mapping[str, Any], notice: Notify) -> Notification:
    """Cinder's `_usage_from_volume`, as cinder-volume sends it."""
    attachment = row.get("attachment")
    payload = {
        "tenant_id": row.get("project_id"),
        "host": row.get("backend"),
        "user_id": row.get("user_id"),
        "availability_zone": row.get("availability_zone"),
        "volume_id": row["id"],
        "volume_type": row.get("volume_type"),
        "display_name": row.get("name"),
        "launched_at": _iso(row.get("created_at"))
        if row.get("status") not in (VolumeStatus.CREATING, VolumeStatus.ERROR)
        else None,
        "created_at": _iso(row.get("created_at")),
        "status": row.get("status"),
        "snapshot_id": row.get("snapshot_id"),
        "size": row.get("size"),
        "replication_status": None,
        "replication_extended_status": None,
        "replication_driver_data": None,
        "metadata": dict(row.get("metadata") or {}),
        "volume_attachment": [attachment] if attachment else [],
        "glance_metadata": dict(row.get("image_metadata") or {}),
    }
    payload.update(notice.extra)
    return Notification(
        notice.event_type, payload, f"volume.{row.get('backend') or 'actorstack'}", notice.priority
    )


def neutron(
    event_type: str, resource: str, view: Mapping[str, Any], *, priority: str = "INFO"
) -> Notification:
    """Neutron's notification of a network, subnet or port: `{resource: view}`; a delete also
    names the id as `<resource>_id`, as neutron-server does."""
    payload: dict[str, Any] = {resource: dict(view)}
    if event_type.endswith(".delete.end"):
        payload[f"{resource}_id"] = view.get("id")
    return Notification(event_type, payload, "network.actorstack", priority)


def port(row: Mapping[str, Any], notice: Notify) -> Notification:
    """A port's notification from the actor (a port its server created and now deletes)."""
    view = {
        "id": row["id"],
        "network_id": row.get("network_id"),
        "tenant_id": row.get("project_id"),
        "project_id": row.get("project_id"),
        "name": row.get("name", ""),
        "mac_address": row.get("mac_address"),
        "status": row.get("status"),
        "admin_state_up": row.get("admin_state_up"),
        "device_id": row.get("device_id"),
        "device_owner": row.get("device_owner"),
        "binding:host_id": row.get("binding_host_id"),
    }
    return neutron(notice.event_type, "port", view, priority=notice.priority)
