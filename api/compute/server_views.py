"""A server as Nova shows it: the full view (show, the detailed list, update's answer), the brief
one (the plain list), and Nova's hostId.

What the view shows grows with the request's microversion, in the order Nova's view builder adds
it; the host's liveness (api/compute/hosts.py) decides the power state shown while a host is silent.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import asyncpg
from aiohttp import web

from api.auth import AuthContext
from api.compute import hosts as compute_hosts
from api.compute.links import resource_links
from api.compute.microversion import Microversion, requested
from api.context import caller, ctx
from api.times import iso_micro, iso_seconds
from protocol.states import PowerState, VmState, server_status

# Nova's `addresses` of a server: network name -> its fixed IPs
Addresses = dict[str, list[dict[str, Any]]]


def host_id(project_id: str, host: str) -> str:
    """Nova's hostId: the host as a project sees it (equal for its servers on one host, and
    telling nothing of the host's name)."""
    return hashlib.sha224((project_id + host).encode()).hexdigest()


# Nova's statuses that show `progress`, and those that show a `fault`
_PROGRESS_STATUSES = frozenset({"ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"})
_FAULT_STATUSES = frozenset({"ERROR", "DELETED"})


def view(
    request: web.Request,
    row: asyncpg.Record,
    addresses: dict[str, Addresses] | None = None,
    volumes: dict[str, list[asyncpg.Record]] | None = None,
    hosts: dict[str, compute_hosts.HostState] | None = None,
    *,
    full: bool = True,
    server_groups: bool = False,
    security_groups: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The server as Nova shows it at the request's microversion (`addresses` and `volumes`: by
    server id; `hosts`: by host name, from `compute_hosts.host_statuses`).

    `full`: show and the detailed list show every attribute; an update's answer (Nova's update
    view, before 2.75) leaves out the availability zone, config drive, key name, usage times,
    security groups, extended status, volumes, the admin's OS-EXT-SRV-ATTR attributes and the
    host status, and shows addresses without their type and MAC. `server_groups`: show and
    update show the server's groups from 2.71 on; the list does not. `security_groups`: by server
    id, the names of its ports' security groups (shown only when it has some, as Nova).

    While the server's host is silent (its agent's heartbeat older than the down window) the
    power state shows NOSTATE, Nova's "unknown": what the host last reported may no longer hold.
    The stored state is untouched, so it shows again once the host is back (whose agent reports
    every state again at its start). The status stays what the server's states say, as Nova's."""
    me = caller(request)
    version = requested(request)
    server = _base_view(request, row, (addresses or {}).get(row["id"], {}), full=full)
    server["flavor"] = _flavor_view(request, row["flavor"], version)
    if full:
        host_state = (hosts or {}).get(row["host"]) if row["host"] else None
        server.update(_full_attributes(row, version, host_state, (volumes or {}).get(row["id"], [])))
        groups = (security_groups or {}).get(row["id"])
        if groups:
            server["security_groups"] = [{"name": name} for name in groups]
        if me.is_admin:
            server.update(_admin_attributes(row, version))
        if version >= (2, 16) and me.is_admin and hosts is not None:
            server["host_status"] = host_state.status if host_state is not None else compute_hosts.HOST_NONE
    server.update(_later_attributes(row, version, admin_attributes=full and me.is_admin))
    if server_groups and version >= (2, 71):
        server["server_groups"] = [row["group_id"]] if row["group_id"] else []
    if version >= (2, 96):
        server["pinned_availability_zone"] = row["requested_availability_zone"]
    fault = _fault_view(row, me) if server["status"] in _FAULT_STATUSES else None
    if fault is not None:
        server["fault"] = fault
    return server


def _base_view(
    request: web.Request, row: asyncpg.Record, addresses: Addresses, *, full: bool
) -> dict[str, Any]:
    """What every view shows at every microversion, in Nova's order."""
    status = server_status(row["vm_state"], row["task_state"])
    server = {
        "id": row["id"],
        "name": row["display_name"],
        "status": status,
        "tenant_id": row["project_id"],
        "user_id": row["user_id"],
        "metadata": row["metadata"],
        "hostId": host_id(row["project_id"], row["host"] or "") if row["host"] else "",
        "image": _image_ref(request, row["image_id"]),
        "created": iso_seconds(row["created_at"]),
        "updated": iso_seconds(row["updated_at"] or row["created_at"]),
        "addresses": addresses if full else _plain_addresses(addresses),
        "accessIPv4": row["access_ip_v4"] or "",
        "accessIPv6": row["access_ip_v6"] or "",
        "links": resource_links(request, "servers", row["id"]),
        "OS-DCF:diskConfig": "AUTO" if row["auto_disk_config"] else "MANUAL",
    }
    if status in _PROGRESS_STATUSES:
        server["progress"] = 0
    return server


def _plain_addresses(addresses: Addresses) -> Addresses:
    """Addresses without Nova's extended keys (the OS-EXT-IPS type and MAC)."""
    return {
        network: [{"version": ip["version"], "addr": ip["addr"]} for ip in ips]
        for network, ips in addresses.items()
    }


def _full_attributes(
    row: asyncpg.Record,
    version: Microversion,
    host_state: compute_hosts.HostState | None,
    volumes: list[asyncpg.Record],
) -> dict[str, Any]:
    """What show and the detailed list add (and an update's answer from 2.75)."""
    power_state = row["power_state"]
    if host_state is not None and not host_state.up:
        power_state = PowerState.NOSTATE
    return {
        "OS-EXT-AZ:availability_zone": row["availability_zone"] or "",
        "config_drive": "True" if row["config_drive"] else "",
        "key_name": row["key_name"],
        "OS-SRV-USG:launched_at": _micro_or_none(row["launched_at"]),
        "OS-SRV-USG:terminated_at": _micro_or_none(row["terminated_at"]),
        "OS-EXT-STS:task_state": row["task_state"],
        "OS-EXT-STS:vm_state": row["vm_state"],
        "OS-EXT-STS:power_state": power_state,
        "os-extended-volumes:volumes_attached": [_volume_attached(vol, version) for vol in volumes],
    }


def _micro_or_none(moment: datetime.datetime | None) -> str | None:
    return iso_micro(moment) if moment else None


def _image_ref(request: web.Request, image_id: str | None) -> dict[str, Any] | str:
    """The image a server booted from, or "" for a boot from volume (as Nova shows it)."""
    if not image_id:
        return ""
    base = ctx(request).base_url
    return {
        "id": image_id,
        "links": [{"rel": "bookmark", "href": f"{base}/compute/images/{image_id}"}],
    }


def _volume_attached(volume: asyncpg.Record, version: Microversion) -> dict[str, Any]:
    if version < (2, 3):
        return {"id": volume["id"]}
    return {
        "id": volume["id"],
        "delete_on_termination": bool(volume["attachment"].get("delete_on_termination")),
    }


def _flavor_view(request: web.Request, flavor: dict[str, Any], version: Microversion) -> dict[str, Any]:
    """The flavor as it was at the boot (2.47 on), or a link to it (before)."""
    if version >= (2, 47):
        return {
            "vcpus": flavor["vcpus"],
            "ram": flavor["ram"],
            "disk": flavor["disk"],
            "ephemeral": flavor.get("ephemeral", 0),
            "swap": flavor.get("swap", 0),
            "original_name": flavor["name"],
            "extra_specs": flavor.get("extra_specs", {}),
        }
    base = ctx(request).base_url
    return {
        "id": flavor["id"],
        "links": [{"rel": "bookmark", "href": f"{base}/compute/flavors/{flavor['id']}"}],
    }


def _admin_attributes(row: asyncpg.Record, version: Microversion) -> dict[str, Any]:
    """Nova's OS-EXT-SRV-ATTR attributes, for an admin only."""
    attributes = {
        "OS-EXT-SRV-ATTR:host": row["host"],
        "OS-EXT-SRV-ATTR:hypervisor_hostname": row["node"],
        "OS-EXT-SRV-ATTR:instance_name": f"instance-{row['id']}",
    }
    if version >= (2, 3):
        attributes.update(
            {
                "OS-EXT-SRV-ATTR:reservation_id": row["reservation_id"],
                "OS-EXT-SRV-ATTR:launch_index": row["launch_index"],
                "OS-EXT-SRV-ATTR:hostname": row["hostname"],
                "OS-EXT-SRV-ATTR:kernel_id": "",
                "OS-EXT-SRV-ATTR:ramdisk_id": "",
                "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                "OS-EXT-SRV-ATTR:user_data": row["user_data"],
            }
        )
    return attributes


def _later_attributes(
    row: asyncpg.Record, version: Microversion, *, admin_attributes: bool
) -> dict[str, Any]:
    """What microversions 2.9 to 2.90 add, in that order."""
    attributes: dict[str, Any] = {}
    if version >= (2, 9):
        attributes["locked"] = row["locked"]
    if version >= (2, 73):
        attributes["locked_reason"] = row["locked_reason"] if row["locked"] else None
    if version >= (2, 19):
        attributes["description"] = row["description"]
    if version >= (2, 26):
        attributes["tags"] = list(row["tags"])
    if version >= (2, 63):
        attributes["trusted_image_certificates"] = None
    if version >= (2, 90) and not admin_attributes:
        attributes["OS-EXT-SRV-ATTR:hostname"] = row["hostname"]  # visible to everyone from 2.90
    return attributes


def _fault_view(row: asyncpg.Record, me: AuthContext) -> dict[str, Any] | None:
    """The fault of a server in error (or deleted after one); its details are for an admin, or
    for anyone when the fault is not the cloud's own (500)."""
    fault = row["fault"]
    if not (fault and row["vm_state"] in (VmState.ERROR, VmState.DELETED)):
        return None
    shown = {"code": fault["code"], "created": iso_seconds(fault["created"]), "message": fault["message"]}
    if me.is_admin or fault["code"] != 500:
        shown["details"] = fault.get("details", "")
    return shown


def brief(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["display_name"],
        "links": resource_links(request, "servers", row["id"]),
    }
