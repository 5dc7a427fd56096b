"""/compute/v2.1/servers: create, list, show, update, delete, and the power actions.

The API never changes a server's lifecycle itself: it inserts the row (building:scheduling) and
sends the server actor `server.build` in one transaction (quota check included), and turns every
action into a message to the actor. Whether an action is legal is decided by the actor's own
transition table (`actors.server.table`), so the API's 409 and the actor agree; the same check
runs again in the actor when the message arrives.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from actors import outbox
from actors import server as server_actor
from api import quotas, validate
from api.auth import AuthContext
from api.compute import console, server_networks, server_volumes
from api.compute import flavors as flavor_api
from api.compute import hosts as compute_hosts
from api.compute.links import limit as page_limit
from api.compute.links import resource_links
from api.compute.microversion import requested
from api.compute.usage import server_usage
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden, NotFound
from api.image.access import visible_image
from api.times import iso_micro, iso_seconds
from protocol import Envelope, Message, Target
from protocol import compute as m

_NAME = re.compile(r"^(?!\s)[^\x00-\x1f\x7f]{1,255}(?<!\s)$")


def not_found(server_id: str) -> NotFound:
    return NotFound(f"Instance {server_id} could not be found.")


async def find(conn: Any, me: AuthContext, server_id: str) -> asyncpg.Record:
    """The server if the caller may see it (own project, or any for an admin); deleted ones are gone."""
    row = await conn.fetchrow("SELECT * FROM servers WHERE id = $1 AND vm_state <> 'deleted'", server_id)
    if row is None or (not me.is_admin and row["project_id"] != me.project_id):
        raise not_found(server_id)
    return row


# --- views ------------------------------------------------------------------------------------------


def host_id(project_id: str, host: str) -> str:
    """Nova's hostId: the host as a project sees it (equal for its servers on one host, and
    telling nothing of the host's name)."""
    return hashlib.sha224((project_id + host).encode()).hexdigest()


def view(
    request: web.Request,
    row: asyncpg.Record,
    addresses: dict[str, dict[str, list[dict[str, Any]]]] | None = None,
    volumes: dict[str, list[asyncpg.Record]] | None = None,
    hosts: dict[str, compute_hosts.HostState] | None = None,
    *,
    show_host_status: bool = True,
) -> dict[str, Any]:
    """The server as Nova shows it at the request's microversion (`addresses` and `volumes`: by
    server id; `hosts`: by host name, from `compute_hosts.host_statuses`).

    While the server's host is silent (its agent's heartbeat older than the down window) the
    power state shows NOSTATE, Nova's "unknown": what the host last reported may no longer hold.
    The stored state is untouched, so it shows again once the host is back (whose agent reports
    every state again at its start). The status stays what the server's states say, as Nova's."""
    me = caller(request)
    version = requested(request)
    base = ctx(request).base_url
    status = server_actor.status_of(row["vm_state"], row["task_state"])
    flavor = row["flavor"]
    host_state = (hosts or {}).get(row["host"]) if row["host"] else None
    power_state = row["power_state"]
    if host_state is not None and not host_state.up:
        power_state = server_actor.NOSTATE
    server: dict[str, Any] = {
        "id": row["id"],
        "name": row["display_name"],
        "status": status,
        "tenant_id": row["project_id"],
        "user_id": row["user_id"],
        "metadata": row["metadata"],
        "hostId": host_id(row["project_id"], row["host"] or "") if row["host"] else "",
        "image": {
            "id": row["image_id"],
            "links": [{"rel": "bookmark", "href": f"{base}/compute/images/{row['image_id']}"}],
        }
        if row["image_id"]
        else "",
        "created": iso_seconds(row["created_at"]),
        "updated": iso_seconds(row["updated_at"] or row["created_at"]),
        "addresses": (addresses or {}).get(row["id"], {}),
        "accessIPv4": "",
        "accessIPv6": "",
        "links": resource_links(request, "servers", row["id"]),
        "OS-DCF:diskConfig": "MANUAL",
        "progress": 0,
        "OS-EXT-AZ:availability_zone": row["availability_zone"] or "",
        "config_drive": "True" if row["config_drive"] else "",
        "key_name": row["key_name"],
        "OS-SRV-USG:launched_at": iso_micro(row["launched_at"]) if row["launched_at"] else None,
        "OS-SRV-USG:terminated_at": iso_micro(row["terminated_at"]) if row["terminated_at"] else None,
        "OS-EXT-STS:task_state": row["task_state"],
        "OS-EXT-STS:vm_state": row["vm_state"],
        "OS-EXT-STS:power_state": power_state,
        "os-extended-volumes:volumes_attached": [
            {
                "id": vol["id"],
                **(
                    {"delete_on_termination": bool(vol["attachment"].get("delete_on_termination"))}
                    if version >= (2, 3)
                    else {}
                ),
            }
            for vol in (volumes or {}).get(row["id"], [])
        ],
        "security_groups": [{"name": "default"}],
    }
    if version >= (2, 47):
        server["flavor"] = {
            "vcpus": flavor["vcpus"],
            "ram": flavor["ram"],
            "disk": flavor["disk"],
            "ephemeral": flavor.get("ephemeral", 0),
            "swap": flavor.get("swap", 0),
            "original_name": flavor["name"],
            "extra_specs": flavor.get("extra_specs", {}),
        }
    else:
        server["flavor"] = {
            "id": flavor["id"],
            "links": [{"rel": "bookmark", "href": f"{base}/compute/flavors/{flavor['id']}"}],
        }
    if me.is_admin:
        server["OS-EXT-SRV-ATTR:host"] = row["host"]
        server["OS-EXT-SRV-ATTR:hypervisor_hostname"] = row["node"]
        server["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{row['id']}"
        if version >= (2, 3):
            server.update(
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
    if version >= (2, 9):
        server["locked"] = row["locked"]
    if version >= (2, 16) and me.is_admin and hosts is not None and show_host_status:
        server["host_status"] = host_state.status if host_state is not None else compute_hosts.HOST_NONE
    if version >= (2, 19):
        server["description"] = row["description"]
    if version >= (2, 26):
        server["tags"] = list(row["tags"])
    if version >= (2, 63):
        server["trusted_image_certificates"] = None
    if version >= (2, 71):
        server["server_groups"] = [row["group_id"]] if row["group_id"] else []
    if version >= (2, 73):
        server["locked_reason"] = None
    if version >= (2, 96):
        server["pinned_availability_zone"] = row["requested_availability_zone"]
    fault = row["fault"]
    if fault and row["vm_state"] in ("error", "deleted"):
        shown = {"code": fault["code"], "created": iso_seconds(fault["created"]), "message": fault["message"]}
        if me.is_admin or fault["code"] != 500:
            shown["details"] = fault.get("details", "")
        server["fault"] = shown
    return server


def brief(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["display_name"],
        "links": resource_links(request, "servers", row["id"]),
    }


# --- create -------------------------------------------------------------------------------------------


def _text(data: dict[str, Any], key: str, *, required: bool = False, max_len: int = 255) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise BadRequest(
                f"Invalid input for field/attribute server. Value: {data}. '{key}' is a required property"
            )
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise BadRequest(
            f"Invalid input for field/attribute {key}. Value: {value!r}. "
            f"It must be a string of at most {max_len} characters"
        )
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key, 1)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(
            f"Invalid input for field/attribute {key}. Value: {value!r}. It must be an integer >= 1"
        )
    return value


_ALLOWED = {
    "name",
    "imageRef",
    "flavorRef",
    "networks",
    "availability_zone",
    "key_name",
    "metadata",
    "user_data",
    "min_count",
    "max_count",
    "return_reservation_id",
    "description",
    "hostname",
    "security_groups",
    "config_drive",
    "adminPass",
    "OS-DCF:diskConfig",
    "block_device_mapping_v2",
    "tags",
    "accessIPv4",
    "accessIPv6",
}


async def create(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_writer("os_compute_api:servers:create")
    project_id = me.require_project()
    context = ctx(request)
    document = await json_body(request)
    if not isinstance(document, dict) or not isinstance(document.get("server"), dict):
        raise BadRequest("Invalid input for field/attribute server. 'server' is a required property")
    data: dict[str, Any] = document["server"]
    unknown = set(data) - _ALLOWED
    if unknown:
        raise BadRequest(
            f"Invalid input for field/attribute server. Additional properties are not allowed "
            f"({', '.join(sorted(unknown))} were unexpected)"
        )
    name = _text(data, "name", required=True) or ""
    if not _NAME.match(name):
        raise BadRequest(
            "Invalid input for field/attribute name. Value: %r. It must be 1 to 255 printable "
            "characters with no leading or trailing whitespace" % name
        )
    flavor_ref = _text(data, "flavorRef", required=True) or ""
    image_ref = _text(data, "imageRef") or None
    requested_nics = server_networks.parse(data.get("networks"), requested(request))
    boot = server_volumes.parse_mappings(data.get("block_device_mapping_v2"))
    metadata = _checked_metadata(data.get("metadata", {}))
    description = validate.printable_or_none(_text(data, "description", max_len=255), "description")
    user_data = validate.base64_or_none(_text(data, "user_data", max_len=65535), "user_data")
    zone = _text(data, "availability_zone")
    min_count, max_count = _count(data, "min_count"), _count(data, "max_count")
    if min_count > max_count:
        raise BadRequest("min_count must be <= max_count")
    boots_from_volume = any(m.boot_index == 0 for m in boot.volumes)
    if image_ref is None:
        image_ref = boot.image_id
    if (
        boots_from_volume
        and image_ref
        and boot.image_id is None
        and any(m.source == "image" and m.uuid == image_ref for m in boot.volumes)
    ):
        image_ref = None  # the CLI repeats a boot volume's image as imageRef: the volume is the root
    if boots_from_volume and image_ref:
        raise BadRequest(
            "Block Device Mapping is Invalid: Boot sequence for the instance and image/block device "
            "mapping combination is not valid."
        )
    # Nova accepts the hints under either name (the SDK sends OS-SCH-HNT:scheduler_hints).
    hints = document.get("os:scheduler_hints") or document.get("OS-SCH-HNT:scheduler_hints") or {}
    if not isinstance(hints, dict):
        raise BadRequest("Invalid input for field/attribute os:scheduler_hints.")
    group_id = hints.get("group")
    if isinstance(group_id, list) and len(group_id) == 1:
        group_id = group_id[0]
    if group_id is not None and not isinstance(group_id, str):
        raise BadRequest(f"Invalid input for field/attribute group. Value: {group_id!r}.")

    async with context.pool.acquire() as conn, conn.transaction():
        try:
            flavor = await flavor_api.find(conn, me, flavor_ref)
        except NotFound:
            raise BadRequest(f"Flavor {flavor_ref} could not be found.") from None
        if image_ref:
            try:
                image = await visible_image(conn, me, image_ref)
            except NotFound:
                raise BadRequest(f"Image {image_ref} could not be found.") from None
            if image["status"] != "active":
                raise BadRequest(f"Image {image_ref} is not active.")
            if flavor["ram"] < image["min_ram"]:
                raise BadRequest("Flavor's memory is too small for requested image.")
            if flavor["disk"] and flavor["disk"] < image["min_disk"]:
                raise BadRequest("Flavor's disk is too small for requested image.")
        elif not boots_from_volume:
            raise BadRequest(
                "Block Device Mapping is Invalid: Boot sequence for the instance and image/block "
                "device mapping combination is not valid (no image and no boot volume)."
            )
        key_name = _text(data, "key_name")
        key_data = None
        if key_name is not None:
            key_data = await conn.fetchval(
                "SELECT public_key FROM keypairs WHERE user_id = $1 AND name = $2", me.user_id, key_name
            )
            if key_data is None:
                raise BadRequest("Invalid key_name provided.")
        if group_id is not None:
            group = await conn.fetchrow("SELECT * FROM server_groups WHERE id = $1", str(group_id))
            if group is None or (group["project_id"] != project_id and not me.is_admin):
                raise BadRequest(f"Invalid input for field/attribute group. Value: {group_id}.")
        count = max_count
        nics = await server_networks.resolve(conn, me, requested_nics, count)

        # Nova's multi-create: as many as fit, if at least min_count do (under the quota lock).
        metadata_limit = (await quotas.limits(conn, project_id, ("metadata_items",)))["metadata_items"]
        if metadata_limit != quotas.UNLIMITED and len(metadata) > metadata_limit:  # as Nova checks at create
            raise Forbidden(f"Quota exceeded for metadata_items: the limit is {metadata_limit} items")
        await quotas.lock(conn, project_id, ("cores", "instances", "ram"))
        hard = await quotas.limits(conn, project_id, ("instances", "cores", "ram"))
        used = await server_usage(conn, project_id)
        per = {"instances": 1, "cores": flavor["vcpus"], "ram": flavor["ram"]}
        fits = count
        for resource, each in per.items():
            if hard[resource] != quotas.UNLIMITED:
                fits = min(fits, (hard[resource] - used[resource]) // each)
        if fits < min_count:
            over = next(
                r
                for r, each in per.items()
                if hard[r] != quotas.UNLIMITED and used[r] + each * min_count > hard[r]
            )
            raise Forbidden(
                f"Quota exceeded for {over}: Requested {per[over] * min_count}, but already used "
                f"{used[over]} of {hard[over]} {over}"
            )
        count = fits

        reservation = f"r-{secrets.token_hex(4)}"
        spec = {
            "id": flavor["id"],
            "name": flavor["name"],
            "ram": flavor["ram"],
            "vcpus": flavor["vcpus"],
            "disk": flavor["disk"],
            "ephemeral": flavor["ephemeral"],
            "swap": flavor["swap"],
            "extra_specs": dict(flavor["extra_specs"]),
        }
        created = []
        later: list[tuple[Target, Message]] = []  # messages for the volumes of the boots
        for index in range(count):
            server_id = str(uuid.uuid4())
            display = name if count == 1 else f"{name}-{index + 1}"
            await conn.execute(
                "INSERT INTO servers (id, version, project_id, user_id, display_name, vm_state, task_state, "
                "flavor, image_id, requested_availability_zone, group_id, description, hostname, metadata, "
                "key_name, key_data, user_data, reservation_id, launch_index) "
                "VALUES ($1, 1, $2, $3, $4, 'building', 'scheduling', $5, $6, $7, $8, $9, $10, $11, $12, $13, "
                "$14, $15, $16)",
                server_id,
                project_id,
                me.user_id,
                display,
                spec,
                image_ref,
                zone,
                group_id,
                description,
                re.sub(r"[^a-z0-9-]", "-", display.lower())[:63].strip("-") or "server",
                metadata,
                key_name,
                key_data,
                user_data,
                reservation,
                index,
            )
            await conn.execute(
                "INSERT INTO instance_actions (server_id, request_id, action, project_id, user_id) "
                "VALUES ($1, $2, 'create', $3, $4)",
                server_id,
                request["request_id"],
                project_id,
                me.user_id,
            )
            server_nics = await server_networks.allocate(
                conn, me, project_id=project_id, server_id=server_id, zone=zone, nics=nics
            )
            devices, volume_messages = await server_volumes.prepare_boot_volumes(
                conn,
                me,
                project_id=project_id,
                server_id=server_id,
                server_name=display,
                zone=zone,
                flavor=flavor,
                boot=boot,
            )
            if server_nics or devices:
                await conn.execute(
                    "UPDATE servers SET nics = $2, block_devices = $3 WHERE id = $1",
                    server_id,
                    server_nics,
                    devices,
                )
            later.extend(volume_messages)
            created.append(server_id)
        await outbox.send(
            conn,
            [
                *(Envelope.new(target, body, correlation_id=request["request_id"]) for target, body in later),
                *(
                    Envelope.new(Target("server", sid), m.BuildServer(), correlation_id=request["request_id"])
                    for sid in created
                ),
            ],
            context.shards,
        )
    if data.get("return_reservation_id"):
        return json_response({"reservation_id": reservation}, status=202)
    body = {
        "id": created[0],
        "links": resource_links(request, "servers", created[0]),
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": [{"name": "default"}],
        "adminPass": data.get("adminPass") or secrets.token_urlsafe(9),
    }
    return json_response({"server": body}, status=202)


# --- list, show, update -----------------------------------------------------------------------------------


async def _list(request: web.Request) -> list[asyncpg.Record]:
    me = caller(request)
    q = request.query
    all_projects = me.is_admin and q.get("all_tenants", "").lower() not in ("", "0", "false")
    project = q.get("project_id") or q.get("tenant_id") if me.is_admin else None
    status = q.get("status")
    marker = q.get("marker")
    rows = await ctx(request).pool.fetch(
        "SELECT * FROM servers WHERE vm_state <> 'deleted' "
        "AND ($1::boolean OR project_id = coalesce($2, $3)) "
        "ORDER BY created_at DESC, id DESC",
        all_projects,
        project,
        me.project_id,
    )
    name = q.get("name")
    if name:
        try:
            pattern = re.compile(name)
        except re.error:
            raise BadRequest(f"Invalid regular expression for name: {name!r}") from None
        rows = [r for r in rows if pattern.search(r["display_name"])]
    if status:
        rows = [r for r in rows if server_actor.status_of(r["vm_state"], r["task_state"]) == status.upper()]
    for key, column in (("host", "host"), ("flavor", None), ("image", "image_id")):
        value = q.get(key)
        if value and column:
            if key == "host" and not me.is_admin:
                continue
            rows = [r for r in rows if r[column] == value]
        elif value and key == "flavor":
            rows = [r for r in rows if r["flavor"]["id"] == value]
    if marker:
        ids = [r["id"] for r in rows]
        if marker not in ids:
            raise BadRequest(f"marker [{marker}] not found")
        rows = rows[ids.index(marker) + 1 :]
    return rows[: page_limit(request)]


async def list_servers(request: web.Request) -> web.Response:
    rows = await _list(request)
    return json_response({"servers": [brief(request, r) for r in rows]})


async def list_servers_detail(request: web.Request) -> web.Response:
    rows = await _list(request)
    ids = [r["id"] for r in rows]
    async with ctx(request).pool.acquire() as conn:
        found = await server_networks.addresses(conn, ids)
        volumes = await server_volumes.attached_volumes(conn, ids)
        hosts = await compute_hosts.host_statuses(conn, (r["host"] for r in rows))
    return json_response({"servers": [view(request, r, found, volumes, hosts) for r in rows]})


async def show(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        row = await find(conn, caller(request), request.match_info["server_id"])
        found = await server_networks.addresses(conn, [row["id"]])
        volumes = await server_volumes.attached_volumes(conn, [row["id"]])
        hosts = await compute_hosts.host_statuses(conn, [row["host"]])
    return json_response({"server": view(request, row, found, volumes, hosts)})


async def update(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_writer("os_compute_api:servers:update")
    document = await json_body(request)
    if not isinstance(document, dict) or not isinstance(document.get("server"), dict):
        raise BadRequest("Invalid input for field/attribute server. 'server' is a required property")
    data = document["server"]
    unknown = set(data) - {"name", "description", "hostname", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"}
    if unknown:
        raise BadRequest(
            f"Additional properties are not allowed ({', '.join(sorted(unknown))} were unexpected)"
        )
    name = _text(data, "name")
    if name is not None and not _NAME.match(name):
        raise BadRequest(f"Invalid input for field/attribute name. Value: {name!r}.")
    description = validate.printable_or_none(_text(data, "description"), "description")
    async with ctx(request).pool.acquire() as conn:
        await find(conn, me, request.match_info["server_id"])
        row = await conn.fetchrow(
            "UPDATE servers SET display_name = coalesce($2, display_name), description = coalesce($3, description), "
            "version = version + 1 WHERE id = $1 RETURNING *",
            request.match_info["server_id"],
            name,
            description,
        )
        found = await server_networks.addresses(conn, [row["id"]])
        hosts = await compute_hosts.host_statuses(conn, [row["host"]])
    # Nova shows host_status in an update's answer from microversion 2.75 on.
    return json_response(
        {"server": view(request, row, found, hosts=hosts, show_host_status=requested(request) >= (2, 75))}
    )


# --- metadata (Nova's /servers/{id}/metadata) ---------------------------------------------------------


def _checked_metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 255 and len(v) <= 255
        for k, v in value.items()
    ):
        raise BadRequest(
            "Invalid input for field/attribute metadata. Keys and values must be strings of 1-255 "
            "(keys) and 0-255 (values) characters"
        )
    return value


async def _write_metadata(request: web.Request, change: Any) -> dict[str, str]:
    """Apply `change(old) -> new` to the server's metadata under the metadata_items quota."""
    me = caller(request)
    me.require_writer("os_compute_api:server-metadata:update")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, request.match_info["server_id"])
        if row["locked"] and not me.is_admin:
            raise Conflict(f"Instance {row['id']} is locked")
        new = change(dict(row["metadata"]))
        limit = (await quotas.limits(conn, row["project_id"], ("metadata_items",)))["metadata_items"]
        if limit != quotas.UNLIMITED and len(new) > limit:
            raise Forbidden(f"Quota exceeded for metadata_items: the limit is {limit} items")
        await conn.execute(
            "UPDATE servers SET metadata = $2, version = version + 1 WHERE id = $1", row["id"], new
        )
    return new


async def show_metadata(request: web.Request) -> web.Response:
    row = await find(ctx(request).pool, caller(request), request.match_info["server_id"])
    return json_response({"metadata": row["metadata"]})


async def merge_metadata(request: web.Request) -> web.Response:
    document = await json_body(request)
    items = _checked_metadata(document.get("metadata") if isinstance(document, dict) else None)
    return json_response({"metadata": await _write_metadata(request, lambda old: {**old, **items})})


async def replace_metadata(request: web.Request) -> web.Response:
    document = await json_body(request)
    items = _checked_metadata(document.get("metadata") if isinstance(document, dict) else None)
    return json_response({"metadata": await _write_metadata(request, lambda old: dict(items))})


async def show_metadata_item(request: web.Request) -> web.Response:
    row = await find(ctx(request).pool, caller(request), request.match_info["server_id"])
    key = request.match_info["key"]
    if key not in row["metadata"]:
        raise NotFound("Metadata item was not found")
    return json_response({"meta": {key: row["metadata"][key]}})


async def set_metadata_item(request: web.Request) -> web.Response:
    document = await json_body(request)
    item = _checked_metadata(document.get("meta") if isinstance(document, dict) else None)
    key = request.match_info["key"]
    if list(item) != [key]:
        raise BadRequest("Request body and URI mismatch")
    await _write_metadata(request, lambda old: {**old, **item})
    return json_response({"meta": item})


async def delete_metadata_item(request: web.Request) -> web.Response:
    key = request.match_info["key"]

    def without(old: dict[str, str]) -> dict[str, str]:
        if key not in old:
            raise NotFound("Metadata item was not found")
        return {k: v for k, v in old.items() if k != key}

    await _write_metadata(request, without)
    return web.Response(status=204)


# --- delete and actions -------------------------------------------------------------------------------------

# The action body key -> (the message for the actor, Nova's name for it in a 409)
_ACTIONS: dict[str, tuple[type[Message], str]] = {
    "os-stop": (m.Stop, "stop"),
    "os-start": (m.Start, "start"),
    "pause": (m.Pause, "pause"),
    "unpause": (m.Unpause, "unpause"),
    "suspend": (m.Suspend, "suspend"),
    "resume": (m.Resume, "resume"),
}


def _conflict(row: asyncpg.Record, action: str) -> Conflict:
    if row["task_state"] is not None:
        attr, state = "task_state", row["task_state"]
    else:
        attr, state = "vm_state", row["vm_state"]
    return Conflict(f"Cannot '{action}' instance {row['id']} while it is in {attr} {state}")


async def _send(request: web.Request, body: Message, action: str, *, nova_action: str) -> None:
    """Check the action against the actor's table, record it, and send it, in one transaction."""
    me = caller(request)
    me.require_writer(f"os_compute_api:servers:{nova_action}")
    context = ctx(request)
    server_id = request.match_info["server_id"]
    async with context.pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, server_id)
        if row["locked"] and not me.is_admin:
            raise Conflict(f"Instance {server_id} is locked")
        record = server_actor.KIND.store.decode(row)
        if not server_actor.table.allows(record, type(body)):
            raise _conflict(row, action)
        if row["host"] is None and not isinstance(body, m.DeleteServer):
            raise Conflict(f"Instance {server_id} is not ready")
        await conn.execute(
            "INSERT INTO instance_actions (server_id, request_id, action, project_id, user_id) "
            "VALUES ($1, $2, $3, $4, $5)",
            server_id,
            request["request_id"],
            nova_action,
            row["project_id"],
            me.user_id,
        )
        await outbox.send(
            conn,
            [Envelope.new(Target("server", server_id), body, correlation_id=request["request_id"])],
            context.shards,
        )


async def delete(request: web.Request) -> web.Response:
    await _send(request, m.DeleteServer(), "delete", nova_action="delete")
    return web.Response(status=204)


async def action(request: web.Request) -> web.Response:
    document = await json_body(request)
    if not isinstance(document, dict) or len(document) != 1:
        raise BadRequest("There is no such action: the body must name exactly one action.")
    ((name, args),) = document.items()
    if name == console.ACTION:
        return await console.get_output(request, document)
    if name == "reboot":
        kind = (args or {}).get("type") if isinstance(args, dict) else None
        if not isinstance(kind, str) or kind.upper() not in ("SOFT", "HARD"):
            raise BadRequest(
                "Invalid input for field/attribute type. Value: %r. 'SOFT' or 'HARD' expected" % kind
            )
        body: Message = m.RebootHard() if kind.upper() == "HARD" else m.Reboot()
        await _send(request, body, "reboot", nova_action="reboot")
    elif name in _ACTIONS:
        message, nova = _ACTIONS[name]
        await _send(request, message(), nova, nova_action=nova)
    else:
        raise BadRequest(f"There is no such action: {name}")
    return web.Response(status=202)


# --- instance actions -----------------------------------------------------------------------------------


def _action_view(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    action = {
        "action": row["action"],
        "instance_uuid": row["server_id"],
        "message": row["message"],
        "project_id": row["project_id"],
        "request_id": row["request_id"],
        "start_time": iso_seconds(row["start_time"]),
        "user_id": row["user_id"],
    }
    if requested(request) >= (2, 58):
        action["updated_at"] = iso_seconds(row["start_time"])
    return action


async def _actions_server(request: web.Request, conn: Any) -> str:
    """Instance actions stay readable after the server is deleted, as in Nova."""
    me = caller(request)
    server_id = request.match_info["server_id"]
    owner = await conn.fetchval("SELECT project_id FROM servers WHERE id = $1", server_id)
    if owner is None or (owner != me.project_id and not me.is_admin):
        raise not_found(server_id)
    return server_id


async def list_actions(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        server_id = await _actions_server(request, conn)
        rows = await conn.fetch(
            "SELECT * FROM instance_actions WHERE server_id = $1 ORDER BY id DESC", server_id
        )
    return json_response({"instanceActions": [_action_view(request, r) for r in rows]})


# Nova's name for the event of each action (what `openstack server event show` lists).
_EVENT_NAMES = {
    "create": "compute__do_build_and_run_instance",
    "delete": "compute_terminate_instance",
    "stop": "compute_stop_instance",
    "start": "compute_start_instance",
    "reboot": "compute_reboot_instance",
    "pause": "compute_pause_instance",
    "unpause": "compute_unpause_instance",
    "suspend": "compute_suspend_instance",
    "resume": "compute_resume_instance",
    "attach_volume": "compute_attach_volume",
    "detach_volume": "compute_detach_volume",
}
_VOLUME_ACTIONS = ("attach_volume", "detach_volume")
_VOLUME_TRANSITIONAL = ("creating", "reserved", "attaching", "detaching", "deleting", "extending")


def _settled(kind: str, state: str | None) -> bool:
    if state is None:
        return False
    if kind == "volume":
        return state not in _VOLUME_TRANSITIONAL
    return ":" not in state  # a server with no task in progress (or deleted)


async def _action_event(request: web.Request, conn: Any, action: asyncpg.Record) -> dict[str, Any] | None:
    """The action's Nova event, derived from the actor events its request caused (every turn
    records the request id it carries as its correlation id): started with the request,
    finished at the first settled state, Error when that state is an error."""
    name = _EVENT_NAMES.get(action["action"])
    if name is None:
        return None
    kind = "volume" if action["action"] in _VOLUME_ACTIONS else "server"
    where = "kind = 'volume'" if kind == "volume" else "kind = 'server' AND actor_id = $2"
    args = [action["request_id"]] if kind == "volume" else [action["request_id"], action["server_id"]]
    rows = await conn.fetch(
        f"SELECT at, new_state FROM events WHERE correlation_id = $1 AND {where} ORDER BY id", *args
    )
    done = next((r for r in rows if _settled(kind, r["new_state"])), None)
    failed = done is not None and (done["new_state"] or "").startswith("error")
    event: dict[str, Any] = {
        "event": name,
        "start_time": iso_seconds(action["start_time"]),
        "finish_time": iso_seconds(done["at"]) if done else None,
        "result": None if done is None else ("Error" if failed else "Success"),
    }
    me = caller(request)
    if me.is_admin:
        event["traceback"] = None
    version = requested(request)
    if version < (2, 62):
        return event
    server = await conn.fetchrow("SELECT host, fault FROM servers WHERE id = $1", action["server_id"])
    host = (server["host"] if server else None) or ""
    event["hostId"] = host_id(action["project_id"], host) if host else ""
    if me.is_admin:
        event["host"] = host
    if version >= (2, 84):
        fault = server["fault"] if server and failed else None
        event["details"] = fault.get("message") if isinstance(fault, dict) else None
    return event


async def show_action(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        server_id = await _actions_server(request, conn)
        row = await conn.fetchrow(
            "SELECT * FROM instance_actions WHERE server_id = $1 AND request_id = $2",
            server_id,
            request.match_info["request_id"],
        )
        if row is None:
            raise NotFound(
                f"Action for request_id {request.match_info['request_id']} on instance {server_id} not found"
            )
        event = await _action_event(request, conn, row)
    view = _action_view(request, row)
    if event is not None and event["result"] == "Error":
        view["message"] = "Error"  # as Nova marks an action whose event failed
    return json_response({"instanceAction": {**view, "events": [event] if event else []}})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/servers/{server_id}/os-instance-actions", list_actions)
    r.add_get("/compute/v2.1/servers/{server_id}/os-instance-actions/{request_id}", show_action)
    r.add_get("/compute/v2.1/servers", list_servers)
    r.add_post("/compute/v2.1/servers", create)
    r.add_get("/compute/v2.1/servers/detail", list_servers_detail)
    r.add_get("/compute/v2.1/servers/{server_id}", show)
    r.add_put("/compute/v2.1/servers/{server_id}", update)
    r.add_delete("/compute/v2.1/servers/{server_id}", delete)
    r.add_post("/compute/v2.1/servers/{server_id}/action", action)
    r.add_get("/compute/v2.1/servers/{server_id}/metadata", show_metadata)
    r.add_post("/compute/v2.1/servers/{server_id}/metadata", merge_metadata)
    r.add_put("/compute/v2.1/servers/{server_id}/metadata", replace_metadata)
    r.add_get("/compute/v2.1/servers/{server_id}/metadata/{key}", show_metadata_item)
    r.add_put("/compute/v2.1/servers/{server_id}/metadata/{key}", set_metadata_item)
    r.add_delete("/compute/v2.1/servers/{server_id}/metadata/{key}", delete_metadata_item)
