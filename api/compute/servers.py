"""/compute/v2.1/servers: create, list, show, update, delete, and the power actions.

The API never changes a server's lifecycle itself: it inserts the row (building:scheduling) and
sends the server actor `server.build` in one transaction (quota check included), and turns every
action into a message to the actor. Whether an action is legal is decided by the actor's own
transition table (`actors.server.table`), so the API's 409 and the actor agree; the same check
runs again in the actor when the message arrives.

A create goes in four steps: parse (the body, checked, as a `CreateRequest`), resolve (what it
names: flavor, image, keypair, group, networks), quota (how many of the servers fit), insert (the
rows, their ports and volumes, and the messages), the last three in one transaction. A server's
metadata, its instance actions, its view and the lookup by id live beside this module
(server_metadata.py, instance_actions.py, server_views.py, server_lookup.py).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from actors import kinds, outbox
from actors import server as server_actor
from api import quotas, validate
from api.auth import AuthContext
from api.compute import console, instance_actions, server_metadata, server_networks, server_volumes
from api.compute import flavors as flavor_api
from api.compute import hosts as compute_hosts
from api.compute.links import limit as page_limit
from api.compute.links import resource_links
from api.compute.microversion import Microversion, requested
from api.compute.server_lookup import find
from api.compute.server_views import brief, view
from api.compute.usage import server_usage
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden, NotFound
from api.image.access import visible_image
from api.volume import server_attachments
from protocol import Envelope, Message, Target, power
from protocol import compute as m
from protocol.power import PowerActionRow
from protocol.states import ImageStatus, server_status

_NAME = re.compile(r"^(?!\s)[^\x00-\x1f\x7f]{1,255}(?<!\s)$")


def _text(data: dict[str, Any], key: str, *, required: bool = False, max_len: int = 255) -> str | None:
    value = data.get(key)
    if value is None and required:
        raise BadRequest(
            f"Invalid input for field/attribute server. Value: {data}. '{key}' is a required property"
        )
    return _optional_text(value, key, max_len=max_len)


def _optional_text(value: Any, key: str, *, max_len: int = 255) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise BadRequest(
            f"Invalid input for field/attribute {key}. Value: {value!r}. "
            f"It must be a string of at most {max_len} characters"
        )
    return value


# --- create: parse ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CreateRequest:
    """A create's body, checked: what the caller asks for, before anything it names is looked up."""

    name: str
    flavor_ref: str
    image_ref: str | None  # the image of an image boot; None when booting from a volume
    boots_from_volume: bool
    nics: list[server_networks.RequestedNic] | str  # or server_networks.AUTO
    boot: server_volumes.BootDevices
    metadata: dict[str, str]
    description: str | None
    user_data: str | None
    zone: str | None
    min_count: int
    max_count: int
    group_id: str | None
    # Checked when the keypair is resolved, after the flavor and the image (a request wrong in
    # both ways is told about its flavor or image first).
    key_name: Any
    return_reservation_id: bool
    admin_pass: Any


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


def parse_create(document: Any, version: Microversion) -> CreateRequest:
    """The create body as Nova checks it, in Nova's order: the first problem is the 400."""
    data = _server_body(document)
    name = _name(data)
    flavor_ref = _text(data, "flavorRef", required=True) or ""
    image_ref = _text(data, "imageRef") or None
    nics = server_networks.parse(data.get("networks"), version)
    boot = server_volumes.parse_mappings(data.get("block_device_mapping_v2"))
    metadata = server_metadata.checked_metadata(data.get("metadata", {}))
    description = validate.printable_or_none(_text(data, "description", max_len=255), "description")
    user_data = validate.base64_or_none(_text(data, "user_data", max_len=65535), "user_data")
    zone = _text(data, "availability_zone")
    min_count, max_count = _counts(data)
    image_ref, boots_from_volume = _boot_source(image_ref, boot)
    return CreateRequest(
        name=name,
        flavor_ref=flavor_ref,
        image_ref=image_ref,
        boots_from_volume=boots_from_volume,
        nics=nics,
        boot=boot,
        metadata=metadata,
        description=description,
        user_data=user_data,
        zone=zone,
        min_count=min_count,
        max_count=max_count,
        group_id=_group_hint(document),
        key_name=data.get("key_name"),
        return_reservation_id=bool(data.get("return_reservation_id")),
        admin_pass=data.get("adminPass"),
    )


def _server_body(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("server"), dict):
        raise BadRequest("Invalid input for field/attribute server. 'server' is a required property")
    data: dict[str, Any] = document["server"]
    unknown = set(data) - _ALLOWED
    if unknown:
        raise BadRequest(
            f"Invalid input for field/attribute server. Additional properties are not allowed "
            f"({', '.join(sorted(unknown))} were unexpected)"
        )
    return data


def _name(data: dict[str, Any]) -> str:
    name = _text(data, "name", required=True) or ""
    if not _NAME.match(name):
        raise BadRequest(
            f"Invalid input for field/attribute name. Value: {name!r}. It must be 1 to 255 printable "
            "characters with no leading or trailing whitespace"
        )
    return name


def _count(data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(
            f"Invalid input for field/attribute {key}. Value: {value!r}. It must be an integer >= 1"
        )
    return value


def _counts(data: dict[str, Any]) -> tuple[int, int]:
    """Nova's min_count (default 1) and max_count (default: min_count)."""
    min_count = _count(data, "min_count", 1)
    max_count = _count(data, "max_count", min_count)
    if min_count > max_count:
        raise BadRequest("min_count must be <= max_count")
    return min_count, max_count


def _boot_source(image_ref: str | None, boot: server_volumes.BootDevices) -> tuple[str | None, bool]:
    """The image to boot (None for a volume) and whether the root is a volume: one of the two."""
    boots_from_volume = any(mapping.boot_index == 0 for mapping in boot.volumes)
    if image_ref is None:
        image_ref = boot.image_id
    if (
        boots_from_volume
        and image_ref
        and boot.image_id is None
        and any(mapping.source == "image" and mapping.uuid == image_ref for mapping in boot.volumes)
    ):
        image_ref = None  # the CLI repeats a boot volume's image as imageRef: the volume is the root
    if boots_from_volume and image_ref:
        raise BadRequest(
            "Block Device Mapping is Invalid: Boot sequence for the instance and image/block device "
            "mapping combination is not valid."
        )
    return image_ref, boots_from_volume


def _group_hint(document: dict[str, Any]) -> str | None:
    """The server group of the scheduler hints, if any."""
    # Nova accepts the hints under either name (the SDK sends OS-SCH-HNT:scheduler_hints).
    hints = document.get("os:scheduler_hints") or document.get("OS-SCH-HNT:scheduler_hints") or {}
    if not isinstance(hints, dict):
        raise BadRequest("Invalid input for field/attribute os:scheduler_hints.")
    group_id = hints.get("group")
    if isinstance(group_id, list) and len(group_id) == 1:
        group_id = group_id[0]
    if group_id is not None and not isinstance(group_id, str):
        raise BadRequest(f"Invalid input for field/attribute group. Value: {group_id!r}.")
    return group_id


# --- create: resolve -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What a create's names stand for, looked up in its transaction."""

    flavor: asyncpg.Record
    key_name: str | None
    key_data: str | None
    nics: list[server_networks.RequestedNic]


async def _resolve(
    conn: asyncpg.Connection, me: AuthContext, project_id: str, asked: CreateRequest
) -> Resolved:
    """The flavor, the image (checked against the flavor), the keypair, the group and the
    networks; a 400 (409 for an ambiguous network) for any that will not do."""
    try:
        flavor = await flavor_api.find(conn, me, asked.flavor_ref)
    except NotFound:
        raise BadRequest(f"Flavor {asked.flavor_ref} could not be found.") from None
    if asked.image_ref:
        await _check_image(conn, me, asked.image_ref, flavor)
    elif not asked.boots_from_volume:
        raise BadRequest(
            "Block Device Mapping is Invalid: Boot sequence for the instance and image/block "
            "device mapping combination is not valid (no image and no boot volume)."
        )
    key_name = _optional_text(asked.key_name, "key_name")
    key_data = await _key_data(conn, me, key_name)
    if asked.group_id is not None:
        await _check_group(conn, me, project_id, asked.group_id)
    nics = await server_networks.resolve(conn, me, asked.nics, asked.max_count)
    return Resolved(flavor=flavor, key_name=key_name, key_data=key_data, nics=nics)


async def _check_image(
    conn: asyncpg.Connection, me: AuthContext, image_ref: str, flavor: asyncpg.Record
) -> None:
    try:
        image = await visible_image(conn, me, image_ref)
    except NotFound:
        raise BadRequest(f"Image {image_ref} could not be found.") from None
    if image["status"] != ImageStatus.ACTIVE:
        raise BadRequest(f"Image {image_ref} is not active.")
    if flavor["ram"] < image["min_ram"]:
        raise BadRequest("Flavor's memory is too small for requested image.")
    if flavor["disk"] and flavor["disk"] < image["min_disk"]:
        raise BadRequest("Flavor's disk is too small for requested image.")


async def _key_data(conn: asyncpg.Connection, me: AuthContext, key_name: str | None) -> str | None:
    """The public key of the caller's keypair `key_name`."""
    if key_name is None:
        return None
    key_data = await conn.fetchval(
        "SELECT public_key FROM keypairs WHERE user_id = $1 AND name = $2", me.user_id, key_name
    )
    if key_data is None:
        raise BadRequest("Invalid key_name provided.")
    return key_data


async def _check_group(conn: asyncpg.Connection, me: AuthContext, project_id: str, group_id: str) -> None:
    group = await conn.fetchrow("SELECT * FROM server_groups WHERE id = $1", str(group_id))
    if group is None or (group["project_id"] != project_id and not me.is_admin):
        raise BadRequest(f"Invalid input for field/attribute group. Value: {group_id}.")


# --- create: quota -------------------------------------------------------------------------------------


async def _fitting_count(
    conn: asyncpg.Connection, project_id: str, asked: CreateRequest, flavor: asyncpg.Record
) -> int:
    """Nova's multi-create: as many as fit, if at least min_count do (under the quota lock, held
    to the end of the transaction)."""
    metadata_limit = (await quotas.limits(conn, project_id, ("metadata_items",)))["metadata_items"]
    if (
        metadata_limit != quotas.UNLIMITED and len(asked.metadata) > metadata_limit
    ):  # as Nova checks at create
        raise Forbidden(f"Quota exceeded for metadata_items: the limit is {metadata_limit} items")
    await quotas.lock(conn, project_id, ("cores", "instances", "ram"))
    hard = await quotas.limits(conn, project_id, ("instances", "cores", "ram"))
    used = await server_usage(conn, project_id)
    per = {"instances": 1, "cores": flavor["vcpus"], "ram": flavor["ram"]}
    fits = asked.max_count
    for resource, each in per.items():
        if hard[resource] != quotas.UNLIMITED:
            fits = min(fits, (hard[resource] - used[resource]) // each)
    if fits < asked.min_count:
        over = next(
            r
            for r, each in per.items()
            if hard[r] != quotas.UNLIMITED and used[r] + each * asked.min_count > hard[r]
        )
        raise Forbidden(
            f"Quota exceeded for {over}: Requested {per[over] * asked.min_count}, but already used "
            f"{used[over]} of {hard[over]} {over}"
        )
    return fits


# --- create: insert ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Batch:
    """What every server of one create shares."""

    asked: CreateRequest
    resolved: Resolved
    project_id: str
    reservation: str
    request_id: str

    @property
    def flavor_spec(self) -> dict[str, Any]:
        """The flavor as the server row keeps it (a later change of the flavor does not touch it)."""
        flavor = self.resolved.flavor
        return {
            "id": flavor["id"],
            "name": flavor["name"],
            "ram": flavor["ram"],
            "vcpus": flavor["vcpus"],
            "disk": flavor["disk"],
            "ephemeral": flavor["ephemeral"],
            "swap": flavor["swap"],
            "extra_specs": dict(flavor["extra_specs"]),
        }


async def _insert(
    conn: asyncpg.Connection, me: AuthContext, batch: _Batch, count: int, shards: int
) -> list[str]:
    """Insert the `count` servers with their actions, ports and boot volumes, and send their
    volumes' and servers' messages; the new servers' ids."""
    created = []
    later: list[tuple[Target, Message]] = []  # messages for the volumes of the boots
    spec = batch.flavor_spec
    for index in range(count):
        server_id = str(uuid.uuid4())
        display = batch.asked.name if count == 1 else f"{batch.asked.name}-{index + 1}"
        later.extend(await _insert_server(conn, me, batch, server_id, index, display, spec))
        created.append(server_id)
    await outbox.send(
        conn,
        [
            *(Envelope.new(target, body, correlation_id=batch.request_id) for target, body in later),
            *(
                Envelope.new(Target("server", sid), m.BuildServer(), correlation_id=batch.request_id)
                for sid in created
            ),
        ],
        shards,
    )
    return created


async def _insert_server(
    conn: asyncpg.Connection,
    me: AuthContext,
    batch: _Batch,
    server_id: str,
    index: int,
    display: str,
    spec: dict[str, Any],
) -> list[tuple[Target, Message]]:
    """One server's row, its create action, its ports and its boot volumes; the messages for
    its volumes."""
    asked, project_id = batch.asked, batch.project_id
    await conn.execute(
        "INSERT INTO servers (id, version, project_id, user_id, display_name, vm_state, task_state, "
        "flavor, image_id, requested_availability_zone, group_id, description, hostname, metadata, "
        "key_name, key_data, user_data, reservation_id, launch_index) "
        "VALUES ($1, 1, $2, $3, $4, 'building', 'scheduling', $5, $6, $7, $8, $9, $10, $11, $12, "
        "$13, $14, $15, $16)",
        server_id,
        project_id,
        me.user_id,
        display,
        spec,
        asked.image_ref,
        asked.zone,
        asked.group_id,
        asked.description,
        re.sub(r"[^a-z0-9-]", "-", display.lower())[:63].strip("-") or "server",
        asked.metadata,
        batch.resolved.key_name,
        batch.resolved.key_data,
        asked.user_data,
        batch.reservation,
        index,
    )
    await instance_actions.record(
        conn,
        server_id=server_id,
        request_id=batch.request_id,
        action="create",
        project_id=project_id,
        user_id=me.user_id,
    )
    server_nics = await server_networks.allocate(
        conn, me, project_id=project_id, server_id=server_id, zone=asked.zone, nics=batch.resolved.nics
    )
    devices, volume_messages = await server_volumes.prepare_boot_volumes(
        conn,
        me,
        project_id=project_id,
        server_id=server_id,
        server_name=display,
        zone=asked.zone,
        flavor=batch.resolved.flavor,
        boot=asked.boot,
    )
    if server_nics or devices:
        await conn.execute(
            "UPDATE servers SET nics = $2, block_devices = $3 WHERE id = $1",
            server_id,
            server_nics,
            devices,
        )
    return volume_messages


# --- create --------------------------------------------------------------------------------------------


async def create(request: web.Request) -> web.Response:
    me = caller(request)
    me.require_writer("os_compute_api:servers:create")
    project_id = me.require_project()
    context = ctx(request)
    asked = parse_create(await json_body(request), requested(request))
    async with context.pool.acquire() as conn, conn.transaction():
        resolved = await _resolve(conn, me, project_id, asked)
        count = await _fitting_count(conn, project_id, asked, resolved.flavor)
        batch = _Batch(
            asked=asked,
            resolved=resolved,
            project_id=project_id,
            reservation=f"r-{secrets.token_hex(4)}",
            request_id=request["request_id"],
        )
        created = await _insert(conn, me, batch, count, context.shards)
    if asked.return_reservation_id:
        return json_response({"reservation_id": batch.reservation}, status=202)
    body = {
        "id": created[0],
        "links": resource_links(request, "servers", created[0]),
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": [{"name": "default"}],
        "adminPass": asked.admin_pass or secrets.token_urlsafe(9),
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
        rows = [r for r in rows if server_status(r["vm_state"], r["task_state"]) == status.upper()]
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
        volumes = await server_attachments.attached_volumes(conn, ids)
        hosts = await compute_hosts.host_statuses(conn, (r["host"] for r in rows))
    return json_response({"servers": [view(request, r, found, volumes, hosts) for r in rows]})


async def show(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        row = await find(conn, caller(request), request.match_info["server_id"])
        found = await server_networks.addresses(conn, [row["id"]])
        volumes = await server_attachments.attached_volumes(conn, [row["id"]])
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
            "UPDATE servers SET display_name = coalesce($2, display_name), "
            "description = coalesce($3, description), version = version + 1 WHERE id = $1 RETURNING *",
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


# --- delete and actions -------------------------------------------------------------------------------------

# The power actions by the key of their action body, then by the `type` that selects one of
# several (a reboot's SOFT or HARD; None for the others): the rows of protocol/power.py.
_POWER_ACTIONS: dict[str, dict[str | None, PowerActionRow]] = {}
for _row in power.ROWS:
    _POWER_ACTIONS.setdefault(_row.api_action, {})[_row.api_type] = _row


def _power_row(name: str, args: Any) -> PowerActionRow:
    """The power action the body asks for (400 as Nova for an unknown action or reboot type)."""
    rows = _POWER_ACTIONS.get(name)
    if rows is None:
        raise BadRequest(f"There is no such action: {name}")
    if None in rows:
        return rows[None]
    kind = args.get("type") if isinstance(args, dict) else None
    if not isinstance(kind, str) or kind.upper() not in rows:
        expected = " or ".join(f"'{t}'" for t in rows)
        raise BadRequest(f"Invalid input for field/attribute type. Value: {kind!r}. {expected} expected")
    return rows[kind.upper()]


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
        record = kinds.SERVER.store.decode(row)
        if not server_actor.table.allows(record, type(body)):
            raise _conflict(row, action)
        if row["host"] is None and not isinstance(body, m.DeleteServer):
            raise Conflict(f"Instance {server_id} is not ready")
        await instance_actions.record(
            conn,
            server_id=server_id,
            request_id=request["request_id"],
            action=nova_action,
            project_id=row["project_id"],
            user_id=me.user_id,
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
    row = _power_row(name, args)
    await _send(request, row.request(), row.nova_action, nova_action=row.nova_action)
    return web.Response(status=202)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/servers", list_servers)
    r.add_post("/compute/v2.1/servers", create)
    r.add_get("/compute/v2.1/servers/detail", list_servers_detail)
    r.add_get("/compute/v2.1/servers/{server_id}", show)
    r.add_put("/compute/v2.1/servers/{server_id}", update)
    r.add_delete("/compute/v2.1/servers/{server_id}", delete)
    r.add_post("/compute/v2.1/servers/{server_id}/action", action)
