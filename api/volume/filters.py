"""Which volumes a list request asks for: Cinder's filters, sort and paging over `volumes`.

Filters: name (exact; `name~` for a substring, Cinder's LIKE filter), status, availability_zone,
bootable, size, metadata (a dict, given as Python or JSON text, as the CLI sends it: every pair
must match), glance_metadata (the same, on the image properties the volume was made with),
created_at/updated_at (`gt:`, `gte:`, `lt:`, `lte:`, `eq:`, `neq:` and a time, Cinder's 3.60),
migration_status and group_id (no volume here has one: they match nothing); admins also user_id,
attach_status, multiattach, snapshot_id, source_volid and the `display_` names. Members see their
project's volumes; admins their own project's, any one project's with ?project_id=, or all with
?all_tenants.

A filter Cinder does not take is handled as Cinder handles it, never as if it matched everything:
from 3.33 (Cinder's resource filters) a member's is refused with 400 "Invalid filters ... are
found in query options." (`all_tenants` excepted: clients always send it); before 3.33 Cinder
drops it, and so does this; an admin's matches no volume (Cinder filters on any column of its
volumes table, and a name that is none of them finds nothing).

Sort: `sort=key[:dir],…` or the older `sort_key`/`sort_dir` (default created_at desc), with
created_at and id added as tie-breakers. Paging: `marker` (a volume id), `limit` (at most
MAX_LIMIT, Cinder's osapi_max_limit) and `offset`.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import json
from typing import Any

import asyncpg
from aiohttp import web

from api.auth import AuthContext
from api.errors import BadRequest, NotFound
from api.sql import Sql
from api.volume.validate import invalid_input, query_bool, query_int

MAX_LIMIT = 1000

# A volume row with its backend's driver (for Cinder's host@backend#pool).
SELECT = (
    "SELECT v.*, b.driver AS backend_driver FROM volumes v LEFT JOIN volume_backends b ON b.name = v.backend"
)

# sort key -> column (names only from here ever reach the SQL text)
_SORT_COLUMNS = {
    "id": "id",
    "name": "name",
    "display_name": "name",
    "description": "description",
    "display_description": "description",
    "status": "status",
    "size": "size",
    "availability_zone": "availability_zone",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "bootable": "bootable",
    "project_id": "project_id",
    "user_id": "user_id",
    "volume_type": "volume_type",
}


def _metadata_filter(raw: str) -> dict[str, str]:
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, RecursionError, MemoryError):  # deep nesting: bad input too
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise invalid_input(
            f"Invalid metadata filter {raw!r}: it must be a dict of strings, e.g. {{'key': 'value'}}"
        )
    return {k: str(item) for k, item in value.items()}


_RESOURCE_FILTERS = (3, 33)  # from here a member's filter outside Cinder's list is refused
# Not filters: paging, sorting and whose volumes (handled where they are read).
_CONTROL = frozenset(
    {"limit", "offset", "marker", "sort", "sort_key", "sort_dir", "with_count", "all_tenants"}
)
# Cinder's default resource filters for volumes (etc/cinder/resource_filters.json), `name~` its
# LIKE form; what a member may filter on.
_MEMBER_FILTERS = frozenset(
    {
        "name",
        "name~",
        "status",
        "metadata",
        "bootable",
        "migration_status",
        "availability_zone",
        "group_id",
        "size",
        "created_at",
        "updated_at",
        "glance_metadata",
    }
)
_EQUAL_FILTERS = {  # query key -> column, equality (admins: any; members: those in _MEMBER_FILTERS)
    "name": "name",
    "display_name": "name",
    "display_description": "description",
    "status": "status",
    "availability_zone": "availability_zone",
    "user_id": "user_id",
    "attach_status": "attach_status",
    "snapshot_id": "snapshot_id",
    "source_volid": "source_volid",
}
_NEVER_SET = ("migration_status", "group_id", "consistencygroup_id")
_OTHER_FILTERS = frozenset({"name~", "bootable", "size", "metadata", "multiattach"})
_TIME_OPERATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "=", "neq": "<>"}


def _unknown_filters(query: Any, me: AuthContext, version: tuple[int, int]) -> list[str]:
    """The query's filters this list does not take: refused for a member from 3.33, dropped for
    one before; returned for an admin (whose result they empty)."""
    keys = [k for k in query if k not in _CONTROL]
    if version >= _RESOURCE_FILTERS:
        if not all(k.isascii() for k in keys):
            raise invalid_input("Filter keys can only contain ASCII characters.")
    if me.is_admin:
        known = _MEMBER_FILTERS | set(_EQUAL_FILTERS) | set(_NEVER_SET) | _OTHER_FILTERS | {"project_id"}
        return [k for k in keys if k not in known]
    if version < _RESOURCE_FILTERS:
        return []
    refused = [k for k in keys if k not in _MEMBER_FILTERS]
    if refused:
        raise BadRequest(f"Invalid filters {','.join(refused)} are found in query options.")
    return []


def _time_filter(key: str, raw: str) -> tuple[str, datetime.datetime]:
    """`gt:2024-01-01T00:00:00Z` (or a bare time: eq) as an SQL operator and a time."""
    op, sep, text = raw.partition(":")
    if not sep or op not in _TIME_OPERATORS:
        op, text = "eq", raw
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise invalid_input(
            f"Invalid {key} filter {raw!r}: a time, after gt:, gte:, lt:, lte:, eq: or neq:"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return _TIME_OPERATORS[op], moment


def _add_time_filters(where: Sql, q: Any) -> None:
    for key in ("created_at", "updated_at"):
        if key in q:
            op, moment = _time_filter(key, q[key])
            where.where(f"v.{key} {op} {where.arg(moment)}")


def _add_filters(where: Sql, q: Any, me: AuthContext) -> None:
    for key, column in _EQUAL_FILTERS.items():
        if key in q and (me.is_admin or key in _MEMBER_FILTERS):
            where.where(f"v.{column} = {where.arg(q[key])}")
    for key in _NEVER_SET:
        if key in q:
            where.where("false")  # no volume here has one
    _add_time_filters(where, q)
    if me.is_admin and query_bool(q, "multiattach"):
        where.where("false")  # no volume here is multiattach
    if "glance_metadata" in q:
        pairs = _metadata_filter(q["glance_metadata"])
        where.where(f"v.image_metadata @> {where.arg(pairs)}::jsonb")
    if "name~" in q:
        escaped = q["name~"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.where(f"v.name ILIKE {where.arg('%' + escaped + '%')}")
    bootable = query_bool(q, "bootable")
    if bootable is not None:
        where.where(f"v.bootable = {where.arg(bootable)}")
    size = query_int(q, "size")
    if size is not None:
        where.where(f"v.size = {where.arg(size)}::numeric")  # any size compares, past int4 too
    if "metadata" in q:
        where.where(f"v.metadata @> {where.arg(_metadata_filter(q['metadata']))}::jsonb")


def _sort(query: Any) -> list[tuple[str, bool]]:
    """[(column, descending)], tie-breakers included."""
    if "sort" in query:
        if "sort_key" in query or "sort_dir" in query:
            raise invalid_input(
                "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used "
                "with the 'sort' parameter."
            )
        pairs = []
        for part in query["sort"].split(","):
            key, _, direction = part.strip().partition(":")
            pairs.append((key.strip(), direction.strip() or "desc"))
    else:
        pairs = [(query.get("sort_key", "created_at"), query.get("sort_dir", "desc"))]
    order = []
    for key, direction in pairs:
        if key not in _SORT_COLUMNS:
            known = ", ".join(sorted(_SORT_COLUMNS))
            raise invalid_input(f"Invalid sort key {key!r}: it must be one of {known}.")
        if direction.lower() not in ("asc", "desc"):
            raise invalid_input('Unknown sort direction, must be "desc" or "asc"')
        order.append((_SORT_COLUMNS[key], direction.lower() == "desc"))
    columns = {column for column, _ in order}
    for tie_breaker in ("created_at", "id"):
        if tie_breaker not in columns:
            order.append((tie_breaker, order[0][1]))
    return order


def _after(row: asyncpg.Record, marker: asyncpg.Record, order: list[tuple[str, bool]]) -> bool:
    """Whether `row` sorts after `marker` (NULL is the greatest value, as in PostgreSQL)."""
    for column, descending in order:
        a, b = row[column], marker[column]
        if a == b:
            continue
        if a is None:
            return not descending
        if b is None:
            return descending
        return a < b if descending else a > b
    return False


@dataclasses.dataclass
class VolumeQuery:
    where: Sql
    order: list[tuple[str, bool]]
    limit: int
    offset: int
    marker: str | None

    @classmethod
    def parse(cls, request: web.Request, me: AuthContext, version: tuple[int, int]) -> VolumeQuery:
        q = request.query
        where = Sql()
        project = q.get("project_id") if me.is_admin else None
        if project:
            where.where(f"v.project_id = {where.arg(project)}")
        elif not (me.is_admin and query_bool(q, "all_tenants")):
            where.where(f"v.project_id = {where.arg(me.project_id)}")
        if _unknown_filters(q, me, version):
            where.where("false")  # an admin's filter on no column of Cinder's finds nothing
        _add_filters(where, q, me)
        limit = query_int(q, "limit")
        return cls(
            where=where,
            order=_sort(q),
            limit=MAX_LIMIT if limit is None else min(limit, MAX_LIMIT),
            offset=query_int(q, "offset") or 0,
            marker=q.get("marker"),
        )

    async def fetch(self, conn: Any) -> list[asyncpg.Record]:
        """Every matching volume, in order (before paging)."""
        order = ", ".join(
            f"v.{column} {'DESC' if descending else 'ASC'}" for column, descending in self.order
        )
        return await conn.fetch(f"{SELECT} WHERE {self.where.clause()} ORDER BY {order}", *self.where.args)

    async def page(self, conn: Any, me: AuthContext, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
        """The page of `rows` after the marker, from the offset, at most `limit` long."""
        if self.marker is not None:
            ids = [r["id"] for r in rows]
            if self.marker in ids:
                rows = rows[ids.index(self.marker) + 1 :]
            else:  # a visible volume the filters leave out still marks a place in the order
                marker = await conn.fetchrow("SELECT * FROM volumes WHERE id = $1", self.marker)
                if marker is None or (not me.is_admin and marker["project_id"] != me.project_id):
                    raise NotFound(f"Marker {self.marker} could not be found.")
                rows = [r for r in rows if _after(r, marker, self.order)]
        return rows[self.offset : self.offset + self.limit]


# --- the parameters as /openapi.json describes them -----------------------------------------------


def query_parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_BOOLEAN = {"type": "string", "enum": ["true", "false", "True", "False", "1", "0", "yes", "no"]}
PAGING = [
    query_parameter("limit", {"type": "integer", "minimum": 0}, f"At most this many (at most {MAX_LIMIT})"),
    query_parameter("offset", {"type": "integer", "minimum": 0}, "Skip this many"),
    query_parameter("marker", {"type": "string"}, "The id of the last item of the previous page"),
]
ALL_TENANTS = query_parameter("all_tenants", _BOOLEAN, "Every project's (admin)")
PARAMETERS = [
    ALL_TENANTS,
    query_parameter("project_id", {"type": "string"}, "This project's (admin)"),
    *(
        query_parameter(key, {"type": "string"}, f"Filter on {key}")
        for key in ("name", "status", "availability_zone", "user_id")
    ),
    query_parameter("name~", {"type": "string"}, "Names containing this"),
    query_parameter("bootable", _BOOLEAN, "Bootable or not"),
    query_parameter("size", {"type": "integer", "minimum": 0}, "Of this size (GiB)"),
    query_parameter("metadata", {"type": "string"}, "Metadata pairs, as a dict's text: {'key': 'value'}"),
    query_parameter("glance_metadata", {"type": "string"}, "Image properties, as a dict's text"),
    *(
        query_parameter(key, {"type": "string"}, "gt:|gte:|lt:|lte:|eq:|neq: and a time (3.60)")
        for key in ("created_at", "updated_at")
    ),
    *(query_parameter(key, {"type": "string"}, "No volume here has one: matches none") for key in _NEVER_SET),
    *(
        query_parameter(key, {"type": "string"}, f"Filter on {key} (admin)")
        for key in ("display_name", "display_description", "attach_status", "snapshot_id", "source_volid")
    ),
    query_parameter("multiattach", _BOOLEAN, "Multiattach volumes (none here; admin)"),
    *PAGING,
    query_parameter("sort", {"type": "string"}, "key[:asc|desc],... (not with sort_key/sort_dir)"),
    query_parameter("sort_key", {"type": "string", "enum": sorted(_SORT_COLUMNS)}, "Sort by"),
    query_parameter("sort_dir", {"type": "string", "enum": ["asc", "desc"]}, "The direction"),
    query_parameter("with_count", _BOOLEAN, "With the count of all matches (3.45)"),
]


def described(handler: Any, query_parameters: list[dict[str, Any]]) -> Any:
    """The handler, with the query parameters /openapi.json lists for its route."""
    handler.query_parameters = query_parameters
    return handler
