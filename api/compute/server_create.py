"""POST /compute/v2.1/servers: a create, in four steps, as Nova checks and does it.

Parse (the body, checked, as a `CreateRequest`), resolve (what it names: flavor, image,
keypair, group, networks), quota (how many of the servers fit), insert (the rows, their ports
and volumes, and the messages), the last three in one transaction. The API never changes a
server's lifecycle itself: it inserts the rows in building:scheduling and sends each server
actor `server.build` in that transaction.

The body checks that an update shares (the name, the access IPs) live here too.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import secrets
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from actors import outbox
from api import quotas, validate
from api.auth import AuthContext
from api.compute import flavors as flavor_api
from api.compute import instance_actions, server_metadata, server_networks, server_tags, server_volumes
from api.compute import quotas as compute_quotas
from api.compute.links import resource_links
from api.compute.microversion import Microversion, requested
from api.compute.usage import server_usage, user_server_usage
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Forbidden, NotFound
from api.image.access import visible_image
from protocol import Envelope, Message, Target
from protocol import compute as m
from protocol.states import ImageStatus

NAME = re.compile(r"^(?!\s)[^\x00-\x1f\x7f]{1,255}(?<!\s)$")


def text(data: dict[str, Any], key: str, *, required: bool = False, max_len: int = 255) -> str | None:
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
    access_ip_v4: str | None = None
    access_ip_v6: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    hostname: str | None = None  # the one asked for (2.90); else derived from the name
    auto_disk_config: bool = False
    security_groups: list[str] | None = None  # names or ids; None: the project's default group


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
# The members a microversion adds to the create body (refused before it, as Nova's schemas).
_ADDED_IN = {"description": (2, 19), "tags": (2, 52), "hostname": (2, 90)}


def parse_create(document: Any, version: Microversion) -> CreateRequest:
    """The create body as Nova checks it, in Nova's order: the first problem is the 400."""
    data = _server_body(document, version)
    name = _name(data)
    flavor_ref = text(data, "flavorRef", required=True) or ""
    image_ref = text(data, "imageRef") or None
    nics = server_networks.parse(data.get("networks"), version)
    boot = server_volumes.parse_mappings(data.get("block_device_mapping_v2"))
    metadata = server_metadata.checked_metadata(data.get("metadata", {}))
    # Before 2.19 Nova gives a server its name as description (shown from 2.19 on).
    description = validate.printable_or_none(text(data, "description", max_len=255), "description")
    if version < (2, 19):
        description = name
    user_data = validate.base64_or_none(text(data, "user_data", max_len=65535), "user_data")
    zone = text(data, "availability_zone")
    min_count, max_count = _counts(data)
    image_ref, boots_from_volume = _boot_source(image_ref, boot)
    access_v4, access_v6 = access_ips(data)
    groups = _security_groups(data.get("security_groups"))
    hostname = hostname_asked(data, max_count, version)
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
        access_ip_v4=access_v4,
        access_ip_v6=access_v6,
        tags=server_tags.checked(data["tags"]) if "tags" in data else [],
        hostname=hostname,
        auto_disk_config=disk_config(data),
        security_groups=groups,
    )


def access_ips(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """accessIPv4 and accessIPv6 as Nova's schema checks them (formats ipv4 and ipv6)."""
    found: list[str | None] = []
    for key, kind in (("accessIPv4", ipaddress.IPv4Address), ("accessIPv6", ipaddress.IPv6Address)):
        value = data.get(key)
        if value is None:
            found.append(None)
            continue
        try:
            found.append(str(kind(value)) if isinstance(value, str) else None)
        except ValueError:
            found.append(None)
        if found[-1] is None:
            fmt = "ipv4" if kind is ipaddress.IPv4Address else "ipv6"
            raise BadRequest(
                f"Invalid input for field/attribute {key}. Value: {value}. '{value}' is not a '{fmt}'"
            )
    return found[0], found[1]


def disk_config(data: dict[str, Any]) -> bool:
    """OS-DCF:diskConfig: AUTO (True) or MANUAL (False, the default)."""
    value = data.get("OS-DCF:diskConfig", "MANUAL")
    if value not in ("AUTO", "MANUAL"):
        raise BadRequest(
            f"Invalid input for field/attribute OS-DCF:diskConfig. Value: {value}. "
            f"'{value}' is not one of ['AUTO', 'MANUAL']"
        )
    return value == "AUTO"


def _security_groups(groups: Any) -> list[str] | None:
    """The names (or ids) of the security groups asked for, each once; None when none are
    named (the server's new ports get the project's default group). Nova's schema: a list of
    {"name": ...} objects."""
    if groups is None:
        return None
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and set(g) <= {"name"} and isinstance(g.get("name", ""), str) for g in groups
    ):
        raise BadRequest(f"Invalid input for field/attribute security_groups. Value: {groups!r}.")
    names = list(dict.fromkeys(g["name"] for g in groups if g.get("name")))
    return names or None


_HOSTNAME = re.compile(r"^[a-zA-Z0-9-._]*$")


def hostname_asked(data: dict[str, Any], max_count: int, version: Microversion) -> str | None:
    """The hostname asked for: from 2.90 up to 63 letters, digits, '-', '.' and '_', from 2.94 a
    fully qualified name of up to 255; for one server only (Nova's
    AmbiguousHostnameForMultipleInstances)."""
    value = data.get("hostname")
    if value is None:
        return None
    low, high = (1, 255) if version >= (2, 94) else (2, 63)
    if not isinstance(value, str) or not low <= len(value) <= high or not _HOSTNAME.match(value):
        raise BadRequest(
            f"Invalid input for field/attribute hostname. Value: {value!r}. It must be {low} to {high} "
            "letters, digits, '-', '.' or '_'"
        )
    if max_count > 1:
        raise BadRequest("Unable to allocate a single hostname to multiple instances")
    return value


def _server_body(document: Any, version: Microversion) -> dict[str, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("server"), dict):
        raise BadRequest("Invalid input for field/attribute server. 'server' is a required property")
    data: dict[str, Any] = document["server"]
    unknown = set(data) - _ALLOWED | {
        key for key, since in _ADDED_IN.items() if key in data and version < since
    }
    if unknown:
        raise BadRequest(
            f"Invalid input for field/attribute server. Additional properties are not allowed "
            f"({', '.join(sorted(unknown))} were unexpected)"
        )
    return data


def _name(data: dict[str, Any]) -> str:
    name = text(data, "name", required=True) or ""
    if not NAME.match(name):
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
    security_groups: list[str] | None  # ids


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
    if asked.zone:
        await _check_zone(conn, asked.zone)
    nics = await server_networks.resolve(conn, me, asked.nics, asked.max_count)
    groups = await server_networks.security_group_ids(conn, project_id, asked.security_groups)
    return Resolved(flavor=flavor, key_name=key_name, key_data=key_data, nics=nics, security_groups=groups)


async def _check_zone(conn: asyncpg.Connection, zone: str) -> None:
    """Nova's check: the zone asked for is one of an enabled host (its agent's, or an
    aggregate's)."""
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM compute_hosts "
        "WHERE enabled AND host_zone(name, availability_zone) = $1)",
        zone,
    ):
        raise BadRequest("The requested availability zone is not available")


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
    conn: asyncpg.Connection, user_id: str, project_id: str, asked: CreateRequest, flavor: asyncpg.Record
) -> int:
    """Nova's multi-create: as many as fit, if at least min_count do, within the project's limits
    and the user's own (under the quota lock, held to the end of the transaction)."""
    metadata_limit = (await quotas.limits(conn, project_id, ("metadata_items",)))["metadata_items"]
    if (
        metadata_limit != quotas.UNLIMITED and len(asked.metadata) > metadata_limit
    ):  # as Nova checks at create
        raise Forbidden(f"Quota exceeded for metadata_items: the limit is {metadata_limit} items")
    await quotas.lock(conn, project_id, ("cores", "instances", "ram"))
    per = {"instances": 1, "cores": flavor["vcpus"], "ram": flavor["ram"]}
    hard = await quotas.limits(conn, project_id, tuple(per))
    fits = _fits(asked, per, hard, await server_usage(conn, project_id))
    own = await compute_quotas.user_limits(conn, project_id, user_id, tuple(per))
    if own != hard:
        fits = min(fits, _fits(asked, per, own, await user_server_usage(conn, project_id, user_id)))
    return fits


def _fits(asked: CreateRequest, per: dict[str, int], hard: dict[str, int], used: dict[str, int]) -> int:
    """How many of the servers fit these limits; 403 when fewer than min_count do."""
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
        later.extend(await _insert_server(conn, me, batch, server_id, index, display, spec, shards))
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
    shards: int,
) -> list[tuple[Target, Message]]:
    """One server's row, its create action, its ports and its boot volumes; the messages for
    its volumes."""
    asked, project_id = batch.asked, batch.project_id
    await conn.execute(
        "INSERT INTO servers (id, version, project_id, user_id, display_name, vm_state, task_state, "
        "flavor, image_id, requested_availability_zone, group_id, description, hostname, metadata, "
        "key_name, key_data, user_data, reservation_id, launch_index, access_ip_v4, access_ip_v6, "
        "tags, auto_disk_config) "
        "VALUES ($1, 1, $2, $3, $4, 'building', 'scheduling', $5, $6, $7, $8, $9, $10, $11, $12, "
        "$13, $14, $15, $16, $17, $18, $19, $20)",
        server_id,
        project_id,
        me.user_id,
        display,
        spec,
        asked.image_ref,
        asked.zone,
        asked.group_id,
        asked.description,
        asked.hostname or re.sub(r"[^a-z0-9-]", "-", display.lower())[:63].strip("-") or "server",
        asked.metadata,
        batch.resolved.key_name,
        batch.resolved.key_data,
        asked.user_data,
        batch.reservation,
        index,
        asked.access_ip_v4,
        asked.access_ip_v6,
        asked.tags,
        asked.auto_disk_config,
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
        conn,
        me,
        project_id=project_id,
        server_id=server_id,
        zone=asked.zone,
        nics=batch.resolved.nics,
        security_groups=batch.resolved.security_groups,
        shards=shards,
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
        count = await _fitting_count(conn, me.user_id, project_id, asked, resolved.flavor)
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
    links = resource_links(request, "servers", created[0])
    body = {
        "id": created[0],
        "links": links,
        "OS-DCF:diskConfig": "AUTO" if asked.auto_disk_config else "MANUAL",
        "security_groups": [{"name": name} for name in asked.security_groups or ["default"]],
        "adminPass": asked.admin_pass or secrets.token_urlsafe(9),
    }
    return json_response({"server": body}, status=202, headers={"Location": links[0]["href"]})
