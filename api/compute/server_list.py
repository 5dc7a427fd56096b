"""GET /compute/v2.1/servers and /servers/detail: the list, with Nova's filters, sorting and
paging.

Which query parameters count follows Nova's `_get_servers`: an admin may filter on anything a
server has; anyone else on the filters of their microversion (name, status, image, flavor, ip,
changes-since, reservation_id, ip6 from 2.5, the tag filters from 2.26, changes-before from 2.66,
locked from 2.73, a dozen more from 2.83, hostname from 2.90) while the others are dropped
(refused from 2.75, whose query schema allows no unknown parameter). `all_tenants` is for admins
(403 for anyone else, as Nova's policy answers). Deleted servers are listed only when asked:
with `deleted` (admin), with status DELETED (admin), or with `changes-since`/`changes-before`,
which report recently deleted servers too. Names and the other text filters are regular
expressions (Nova's database regexp match), `ip`/`ip6` regular expressions matched against the
start of a fixed IP of that version.

The page is `limit` long (0: an empty page, as Nova) after `marker`; a full page carries a
`servers_links` next link.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp import web

from api.compute import hosts as compute_hosts
from api.compute import query_params, server_networks
from api.compute.links import MAX_LIMIT, next_links
from api.compute.microversion import Microversion, requested
from api.compute.server_views import brief, view
from api.context import caller, ctx, json_response
from api.errors import BadRequest, Forbidden
from api.query_doc import documented, param, strings
from api.volume import server_attachments
from protocol.states import VmState, states_of_status

TAG_FILTERS = ("tags", "tags-any", "not-tags", "not-tags-any")
_PAGING = ("limit", "marker", "sort_key", "sort_dir")
# Parameters naming joined tables, which Nova refuses as filters
_JOINED = ("block_device_mapping", "services", "metadata", "system_metadata", "info_cache",
           "security_groups", "pci_devices")  # fmt: skip

_TRUE = ("1", "t", "true", "on", "y", "yes")
_FALSE = ("0", "f", "false", "off", "n", "no")


def _user_filters(version: Microversion) -> tuple[str, ...]:
    """The filters a user who is not an admin may use at this microversion (Nova's
    _get_server_search_options)."""
    allowed: tuple[str, ...] = ("reservation_id", "name", "status", "image", "flavor", "ip", "changes-since",
                                "all_tenants")  # fmt: skip
    if version >= (2, 5):
        allowed += ("ip6",)
    if version >= (2, 26):
        allowed += TAG_FILTERS
    if version >= (2, 66):
        allowed += ("changes-before",)
    if version >= (2, 73):
        allowed += ("locked",)
    if version >= (2, 83):
        allowed += ("availability_zone", "config_drive", "key_name", "created_at", "launched_at",
                    "terminated_at", "power_state", "task_state", "vm_state", "progress",
                    "user_id")  # fmt: skip
    if version >= (2, 90):
        allowed += ("hostname",)
    return allowed


def _boolean(raw: str, *, strict: bool = True) -> bool:
    """oslo's bool_from_string: anything but its words is a 400 when strict, else False."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE or not strict:
        return False
    raise BadRequest(
        f"Invalid input received: Unrecognized value '{raw}', acceptable values are: '0', '1', 'f', "
        "'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
    )


def _moment(name: str, raw: str) -> datetime.datetime:
    """An ISO 8601 time of changes-since/changes-before (naive means UTC)."""
    try:
        moment = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"Invalid input for query parameters {name}. Value: {raw}. '{raw}' is not a 'date-time'"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _epoch(moment: datetime.datetime) -> float:
    return moment.timestamp()


class _Query:
    """The request's filters, checked, as Nova's _get_servers leaves them for the database."""

    def __init__(self, request: web.Request, *, detail: bool) -> None:
        me, version = caller(request), requested(request)
        query_params.only_known(request, _KNOWN)
        self.params = {k: v for k, v in request.query.items() if k not in _PAGING}
        if not me.is_admin:
            allowed = set(_user_filters(version))
            self.params = {k: v for k, v in self.params.items() if k in allowed}
        for key in self.params:
            if key in _JOINED or key.startswith("_"):
                raise BadRequest(f"Invalid filter field: {key}.")
        self.all_tenants = self._all_tenants(request, detail=detail)
        self.statuses = request.query.getall("status", [])
        self.since = self._moment("changes-since")
        self.before = self._moment("changes-before")
        if self.since and self.before and self.before < self.since:
            raise BadRequest("The value of changes-since must be less than or equal to changes-before.")
        self.deleted = self._deleted(me.is_admin)
        self.tags = {k: self.params[k].split(",") for k in TAG_FILTERS if k in self.params}
        self.locked = _boolean(self.params["locked"]) if "locked" in self.params else None

    def _moment(self, name: str) -> datetime.datetime | None:
        return _moment(name, self.params[name]) if name in self.params else None

    def _all_tenants(self, request: web.Request, *, detail: bool) -> bool:
        """Nova's is_all_tenants: present and empty means yes; an admin's policy only."""
        if "all_tenants" not in self.params:
            return False
        raw = self.params.pop("all_tenants")
        wanted = _boolean(raw) if raw else True
        if wanted:
            kind = "detail" if detail else "index"
            caller(request).require_admin(f"os_compute_api:servers:{kind}:get_all_tenants")
        return wanted

    def _deleted(self, admin: bool) -> bool | None:
        """True: deleted (and soft-deleted) servers only; False: none of them; None: both (a
        changes-since or changes-before without `deleted`)."""
        if self.statuses and "DELETED" in {s.strip().upper() for s in self.statuses}:
            vm_states, _ = states_of_status(self.statuses)
            if vm_states == {VmState.DELETED}:
                if not admin:
                    raise Forbidden("Only administrators may list deleted instances")
                return True
        if "deleted" in self.params:
            return _boolean(self.params["deleted"], strict=False)
        if self.since is not None or self.before is not None:
            return None
        return False


# Filters only an admin may use, besides any of the users' (host, node, project_id, ...), and every
# query parameter Nova's list knows (what 2.75 on refuses is anything else).
_ADMIN_ONLY = ("deleted", "host", "node", "project_id", "tenant_id", "uuid", "launch_index")
_KNOWN = frozenset(
    {*_user_filters((2, 96)), *_ADMIN_ONLY, *_JOINED, *_PAGING, "access_ip_v4", "access_ip_v6",
     "auto_disk_config", "display_name", "display_description", "image_ref", "instance_type_id",
     "kernel_id", "ramdisk_id", "root_device_name", "locked_by", "updated_at"}
)  # fmt: skip

# Filters matched as a regular expression against the text of a column (Nova's regexp filter),
# and those matched exactly.
_REGEX: dict[str, Callable[[asyncpg.Record], str | None]] = {
    "name": lambda r: r["display_name"],
    "hostname": lambda r: r["hostname"],
    "key_name": lambda r: r["key_name"],
    "availability_zone": lambda r: r["availability_zone"],
    "reservation_id": lambda r: r["reservation_id"],
    "node": lambda r: r["node"],
    "config_drive": lambda r: "True" if r["config_drive"] else "",
    "power_state": lambda r: str(r["power_state"]),
    "progress": lambda r: "0",
    "launch_index": lambda r: str(r["launch_index"]),
}
_EXACT: dict[str, Callable[[asyncpg.Record], Any]] = {
    "image": lambda r: r["image_id"],
    "user_id": lambda r: r["user_id"],
    "vm_state": lambda r: r["vm_state"],
    "task_state": lambda r: r["task_state"],
    "host": lambda r: r["host"],
    "uuid": lambda r: r["id"],
}


def _regex(name: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error:
        raise BadRequest(f"Invalid regular expression for {name}: {pattern!r}") from None


def _keep(rows: list[asyncpg.Record], test: Callable[[asyncpg.Record], bool]) -> list[asyncpg.Record]:
    return [r for r in rows if test(r)]


def _filter_states(
    rows: list[asyncpg.Record], statuses: list[str], version: Microversion
) -> list[asyncpg.Record]:
    vm_states, tasks = states_of_status(statuses)
    if not vm_states:
        if version >= (2, 38):
            raise BadRequest("Invalid status value")
        return []
    rows = _keep(rows, lambda r: r["vm_state"] in vm_states)
    if None not in tasks:  # Nova's "default" task: any task of those vm_states
        rows = _keep(rows, lambda r: r["task_state"] in tasks)
    return rows


def _filter_tags(rows: list[asyncpg.Record], tags: dict[str, list[str]]) -> list[asyncpg.Record]:
    if "tags" in tags:
        rows = _keep(rows, lambda r: set(tags["tags"]) <= set(r["tags"]))
    if "tags-any" in tags:
        rows = _keep(rows, lambda r: bool(set(tags["tags-any"]) & set(r["tags"])))
    if "not-tags" in tags:
        rows = _keep(rows, lambda r: not set(tags["not-tags"]) <= set(r["tags"]))
    if "not-tags-any" in tags:
        rows = _keep(rows, lambda r: not set(tags["not-tags-any"]) & set(r["tags"]))
    return rows


def _filter_columns(rows: list[asyncpg.Record], params: dict[str, str]) -> list[asyncpg.Record]:
    for key, value in params.items():
        if key in _EXACT:
            rows = _keep(rows, lambda r, get=_EXACT[key], value=value: get(r) == value)  # type: ignore[misc]
        elif key in _REGEX:
            pattern, get = _regex(key, value), _REGEX[key]
            rows = _keep(rows, lambda r, p=pattern, g=get: bool(p.search(g(r) or "")))  # type: ignore[misc]
    if "flavor" in params:
        rows = _keep(rows, lambda r: r["flavor"]["id"] == params["flavor"])
    return rows


def _filter_times(rows: list[asyncpg.Record], query: _Query) -> list[asyncpg.Record]:
    def changed(row: asyncpg.Record) -> float:
        return row["updated_at"] or row["created_at"].timestamp()

    if query.since is not None:
        rows = _keep(rows, lambda r: changed(r) >= _epoch(query.since))  # type: ignore[arg-type]
    if query.before is not None:
        rows = _keep(rows, lambda r: changed(r) <= _epoch(query.before))  # type: ignore[arg-type]
    return rows


async def _filter_ips(conn: Any, rows: list[asyncpg.Record], params: dict[str, str]) -> list[asyncpg.Record]:
    """Keep the servers with a fixed IP whose start matches `ip` (IPv4) or `ip6` (IPv6)."""
    wanted = {4: params.get("ip"), 6: params.get("ip6")}
    if not any(wanted.values()):
        return rows
    patterns = {v: _regex("ip" if v == 4 else "ip6", p) for v, p in wanted.items() if p}
    found = await server_networks.addresses(conn, [r["id"] for r in rows])

    def matches(row: asyncpg.Record) -> bool:
        for ips in found.get(row["id"], {}).values():
            for ip in ips:
                pattern = patterns.get(ip["version"])
                if pattern is not None and pattern.match(ip["addr"]):
                    return True
        return False

    return _keep(rows, matches)


# --- sorting and paging -------------------------------------------------------------------------

_SORT_KEYS: dict[str, Callable[[asyncpg.Record], Any]] = {
    "created_at": lambda r: r["created_at"].timestamp(),
    "updated_at": lambda r: r["updated_at"] or r["created_at"].timestamp(),
    "uuid": lambda r: r["id"],
    "id": lambda r: r["id"],
    "display_name": lambda r: r["display_name"],
    "display_description": lambda r: r["description"] or "",
    "hostname": lambda r: r["hostname"] or "",
    "vm_state": lambda r: r["vm_state"],
    "task_state": lambda r: r["task_state"] or "",
    "power_state": lambda r: r["power_state"],
    "image_ref": lambda r: r["image_id"] or "",
    "instance_type_id": lambda r: r["flavor"]["id"],
    "key_name": lambda r: r["key_name"] or "",
    "launch_index": lambda r: r["launch_index"],
    "launched_at": lambda r: r["launched_at"] or 0.0,
    "terminated_at": lambda r: r["terminated_at"] or 0.0,
    "availability_zone": lambda r: r["availability_zone"] or "",
    "project_id": lambda r: r["project_id"],
    "user_id": lambda r: r["user_id"],
    "config_drive": lambda r: r["config_drive"],
    "host": lambda r: r["host"] or "",
    "node": lambda r: r["node"] or "",
    "progress": lambda r: 0,
}


class _Reversed:
    """Wraps a sort value so that a descending key sorts before an ascending one in one pass."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and bool(self.value == other.value)


def _sorted(request: web.Request, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
    """Nova's sort: the keys and directions asked for, then created_at and id (descending, or
    the first direction given)."""
    keys = request.query.getall("sort_key", [])
    dirs = request.query.getall("sort_dir", [])
    me = caller(request)
    for key in keys:
        if key not in _SORT_KEYS or (key in ("host", "node") and not me.is_admin):
            raise BadRequest(f"Invalid input for query parameters sort_key. Value: {key}.")
    for direction in dirs:
        if direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid input for query parameters sort_dir. Value: {direction}.")
    default_dir = dirs[0] if dirs else "desc"
    order = list(zip(keys, dirs + [default_dir] * (len(keys) - len(dirs)), strict=True))
    for default in ("created_at", "id"):
        if default not in keys:
            order.append((default, default_dir))

    def sort_key(row: asyncpg.Record) -> tuple[Any, ...]:
        return tuple(
            _SORT_KEYS[key](row) if direction == "asc" else _Reversed(_SORT_KEYS[key](row))
            for key, direction in order
        )

    return sorted(rows, key=sort_key)


def _page(request: web.Request, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
    """The page after `marker`, `limit` long (0 is an empty page, as Nova's)."""
    limit = query_params.integer(request, "limit")
    size = MAX_LIMIT if limit is None else min(limit, MAX_LIMIT)
    marker = request.query.get("marker")
    if marker is not None:
        ids = [r["id"] for r in rows]
        if marker not in ids:
            raise BadRequest(f"marker [{marker}] not found")
        rows = rows[ids.index(marker) + 1 :]
    return rows[:size]


async def _candidates(conn: Any, request: web.Request, query: _Query) -> list[asyncpg.Record]:
    me = caller(request)
    project = None
    if not query.all_tenants:
        project = me.project_id
    elif "project_id" in query.params or "tenant_id" in query.params:
        project = query.params.get("project_id") or query.params.get("tenant_id")
    deleted_clause = {
        True: "(vm_state IN ('deleted', 'soft-delete'))",
        False: "(vm_state NOT IN ('deleted', 'soft-delete'))",
        None: "true",
    }[query.deleted]
    return list(
        await conn.fetch(
            f"SELECT * FROM servers WHERE {deleted_clause} AND ($1::text IS NULL OR project_id = $1)",
            project,
        )
    )


async def _listed(request: web.Request, *, detail: bool) -> list[asyncpg.Record]:
    query = _Query(request, detail=detail)
    version = requested(request)
    async with ctx(request).pool.acquire() as conn:
        rows = await _candidates(conn, request, query)
        if query.statuses:
            rows = _filter_states(rows, query.statuses, version)
        rows = _filter_columns(rows, query.params)
        rows = _filter_times(rows, query)
        rows = _filter_tags(rows, query.tags)
        if query.locked is not None:
            rows = _keep(rows, lambda r: r["locked"] == query.locked)
        rows = await _filter_ips(conn, rows, query.params)
    return _page(request, _sorted(request, rows))


def _with_links(
    request: web.Request, body: dict[str, Any], rows: list[asyncpg.Record], collection: str
) -> dict[str, Any]:
    """The next link of a full page (none for an empty one, so none for limit=0)."""
    links = next_links(request, collection, len(rows), rows[-1]["id"] if rows else None)
    if links:
        body["servers_links"] = links
    return body


async def list_servers(request: web.Request) -> web.Response:
    rows = await _listed(request, detail=False)
    body = {"servers": [brief(request, r) for r in rows]}
    return json_response(_with_links(request, body, rows, "servers"))


async def list_servers_detail(request: web.Request) -> web.Response:
    rows = await _listed(request, detail=True)
    ids = [r["id"] for r in rows]
    async with ctx(request).pool.acquire() as conn:
        found = await server_networks.addresses(conn, ids)
        volumes = await server_attachments.attached_volumes(conn, ids)
        hosts = await compute_hosts.host_statuses(conn, (r["host"] for r in rows))
        groups = await server_networks.security_group_names(conn, ids)
    body = {"servers": [view(request, r, found, volumes, hosts, security_groups=groups) for r in rows]}
    return json_response(_with_links(request, body, rows, "servers/detail"))


documented(
    list_servers,
    list_servers_detail,
    parameters=[
        *strings(*sorted(_KNOWN - set(_PAGING) - {"changes-since", "changes-before"})),
        param("changes-since", "date-time"),
        param("changes-before", "date-time"),
        param("limit", "integer"),
        param("marker"),
        param("sort_key"),
        param("sort_dir", enum=["asc", "desc"]),
    ],
)
