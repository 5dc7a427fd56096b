"""GET /v2/images: Glance's filters, sorting and marker paging, turned into one SQL query.

Paging is by keyset: the page after a marker is the rows that sort after the marker row on the
requested keys, ties broken by created_at then id (descending, as Glance), so a page costs the
same at any depth and an image created meanwhile neither repeats nor hides another. NULLs sort
as PostgreSQL does by default (last ascending, first descending), and the keyset condition
follows that order.

Filters are Glance's: visibility (community images only when asked for, or one's own),
member_status (for images shared with the caller; default accepted), os_hidden (default
false), tag (repeatable, all must match), name/id/status/disk_format/container_format (also
`in:a,b`), owner, checksum, os_hash_algo, os_hash_value, protected, created_at/updated_at
with an operator (`gte:2024-01-01T00:00:00Z`), the integer columns (size, virtual_size,
min_disk, min_ram) on equality and as <column>_min/_max ranges; any other parameter filters on
the extra property of that name. A malformed or out-of-range value is a 400, never a 500.
"""

from __future__ import annotations

import csv
import datetime
from collections.abc import Collection, Mapping
from typing import Any

import asyncpg

from api.auth import AuthContext
from api.errors import BadRequest
from api.image.access import visible_sql
from api.image.schema import MEMBER_STATUSES, VISIBILITIES
from api.sql import Sql

SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at")
DEFAULT_LIMIT, MAX_LIMIT = 25, 1000
_IN_FILTERS = ("id", "name", "status", "container_format", "disk_format")
_EQUAL_FILTERS = ("owner", "checksum", "os_hash_algo", "os_hash_value")
# The image's integer columns, filtered on equality and, as <name>_min and <name>_max, on a range;
# a value must fit the column (bigint or integer), as PostgreSQL would otherwise refuse it.
_INTEGER_FILTERS = {"size": 2**63, "virtual_size": 2**63, "min_disk": 2**31, "min_ram": 2**31}
_RANGE_FILTERS = {
    f"{key}_{end}": (key, ">=" if end == "min" else "<=")
    for key in _INTEGER_FILTERS
    for end in ("min", "max")
}
_TIME_FILTERS = ("created_at", "updated_at")
_TIME_OPERATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "=", "neq": "<>"}
_NOT_PROPERTIES = frozenset(
    {
        "limit",
        "marker",
        "sort",
        "sort_key",
        "sort_dir",
        "member_status",
        "tag",
        "visibility",
        "os_hidden",
        "protected",
        "deleted",  # Glance always lists the images that are not deleted
        *_IN_FILTERS,
        *_EQUAL_FILTERS,
        *_INTEGER_FILTERS,
        *_RANGE_FILTERS,
        *_TIME_FILTERS,
    }
)


def limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("limit param must be an integer") from None
    if value < 0:
        raise BadRequest("limit param must be positive")
    return min(value, MAX_LIMIT)


def sort_and_limit(query: Mapping[str, str], sort_keys: Collection[str]) -> tuple[str, str, int]:
    """The single sort key (one of `sort_keys`, default created_at), its direction (default
    desc) and the limit of a Glance list that is not /images (tasks, metadefs)."""
    sort_key = query.get("sort_key", "created_at")
    if sort_key not in sort_keys:
        raise BadRequest(
            f"Invalid sort key: {sort_key}. It must be one of the following: {', '.join(sort_keys)}."
        )
    sort_dir = query.get("sort_dir", "desc")
    if sort_dir not in ("asc", "desc"):
        raise BadRequest(f"Invalid sort direction: {sort_dir}")
    return sort_key, sort_dir, limit(query)


def sort_order(query: Any) -> list[tuple[str, bool]]:
    """(key, descending) pairs, from `sort=k:dir,…` or repeated sort_key/sort_dir; the
    tie-breakers created_at and id are appended unless already there."""
    keys: list[str] = []
    dirs: list[str] = []
    if "sort" in query:
        if "sort_key" in query or "sort_dir" in query:
            raise BadRequest("Old and new sorting syntax cannot be combined")
        for part in query["sort"].strip().split(","):
            key, _, direction = part.partition(":")
            keys.append(_sort_key(key.strip()))
            dirs.append(_sort_dir(direction.strip() or "desc"))
    else:
        keys = [_sort_key(k.strip()) for k in query.getall("sort_key", [])]
        dirs = [_sort_dir(d.strip()) for d in query.getall("sort_dir", [])]
        if len(dirs) > 1 and len(dirs) != len(keys):
            raise BadRequest("Number of sort dirs does not match the number of sort keys")
    keys = keys or ["created_at"]
    if not dirs:
        dirs = ["desc"] * len(keys)
    elif len(dirs) == 1:
        dirs = dirs * len(keys)
    order = [(key, direction == "desc") for key, direction in zip(keys, dirs, strict=True)]
    for tie_breaker in ("created_at", "id"):
        if tie_breaker not in keys:
            order.append((tie_breaker, True))
    return order


def _sort_key(key: str) -> str:
    if key not in SORT_KEYS:
        raise BadRequest(f"Invalid sort key: {key}. It must be one of the following: {', '.join(SORT_KEYS)}.")
    return key


def _sort_dir(direction: str) -> str:
    if direction not in ("asc", "desc"):
        raise BadRequest(f"Invalid sort direction: {direction}")
    return direction


def order_by(order: list[tuple[str, bool]]) -> str:
    return ", ".join(f"i.{key} {'DESC' if desc else 'ASC'}" for key, desc in order)


def add_filters(sql: Sql, query: Any, me: AuthContext) -> None:
    """What the caller may see, narrowed by the query's filters (in this order: the placeholders
    are numbered as the conditions are added)."""
    member_status = query.get("member_status", "accepted")
    if member_status not in (*MEMBER_STATUSES, "all"):
        raise BadRequest(f"Invalid status: {member_status}")
    visibility = query.get("visibility")
    if visibility and visibility not in (*VISIBILITIES, "all"):
        raise BadRequest(f"Invalid visibility value: {visibility}")
    if "changes-since" in query:
        raise BadRequest('The "changes-since" filter is no longer available on v2.')
    _add_visibility(sql, me, member_status, visibility)
    _add_flag_and_tag_filters(sql, query)
    _add_column_filters(sql, query)
    _add_range_filters(sql, query)
    for key, value in query.items():
        if key not in _NOT_PROPERTIES:
            sql.where(f"i.properties ->> {sql.arg(key)} = {sql.arg(value)}")


def _add_visibility(sql: Sql, me: AuthContext, member_status: str, visibility: str | None) -> None:
    """The images the caller may see (shared ones by their membership's status), of the
    visibility asked for; community images only when asked for or owned. (Each placeholder is
    made only where its condition uses it: PostgreSQL cannot type an unused parameter.)"""
    if not me.is_admin:
        project = sql.arg(me.project_id)
        status = None if member_status == "all" else sql.arg(member_status)
        sql.where(visible_sql(project, status))
    if visibility is None:
        sql.where(f"(i.visibility <> 'community' OR i.owner IS NOT DISTINCT FROM {sql.arg(me.project_id)})")
    elif visibility != "all":
        sql.where(f"i.visibility = {sql.arg(visibility)}")


def _add_flag_and_tag_filters(sql: Sql, query: Any) -> None:
    sql.where(f"i.os_hidden = {sql.arg(_flag(query, 'os_hidden', default=False))}")
    if "protected" in query:
        sql.where(f"i.protected = {sql.arg(_flag(query, 'protected', default=False))}")
    for tag in query.getall("tag", []):
        sql.where(f"{sql.arg(tag.strip())} = ANY(i.tags)")


def _add_column_filters(sql: Sql, query: Any) -> None:
    """Equality on a column, or membership for Glance's `in:a,b` lists (`eq:` and `in:` are the
    operators these take; a value with another `word:` in front is refused, as Glance does)."""
    for key in _IN_FILTERS:
        if key in query:
            op, value = _split_op(query[key])
            if op == "in":
                sql.where(f"i.{key} = ANY({sql.arg(_split_list(value))}::text[])")
            elif op == "eq":
                sql.where(f"i.{key} = {sql.arg(value)}")
            else:
                raise BadRequest(f"Unable to filter by unknown operator '{op}'.")
    for key in _EQUAL_FILTERS:
        if key in query:
            sql.where(f"i.{key} = {sql.arg(query[key])}")
    for key, bound in _INTEGER_FILTERS.items():
        if key in query:
            sql.where(f"i.{key} = {sql.arg(_integer(query, key, bound))}")


def _add_range_filters(sql: Sql, query: Any) -> None:
    """<integer column>_min/_max, and the time filters with their operators (gt:, lte:, ...)."""
    for key, (column, op) in _RANGE_FILTERS.items():
        if key in query:
            sql.where(
                f"i.{column} {op} {sql.arg(_integer(query, key, _INTEGER_FILTERS[column], ranged=True))}"
            )
    for key in _TIME_FILTERS:
        if key in query:
            op, moment = _time_filter(key, query[key])
            sql.where(f"i.{key} {op} {sql.arg(moment)}")


def add_after(sql: Sql, order: list[tuple[str, bool]], marker: asyncpg.Record) -> None:
    """Rows that sort strictly after the marker row in `order`."""
    args = {key: sql.arg(marker[key]) for key, _ in order}
    alternatives = []
    for position, (key, desc) in enumerate(order):
        if marker[key] is None:  # NULLs come first descending, last ascending
            after = f"i.{key} IS NOT NULL" if desc else None
        elif desc:
            after = f"i.{key} < {args[key]}"
        else:
            after = f"(i.{key} > {args[key]} OR i.{key} IS NULL)"
        if after is not None:
            same_before = [f"i.{k} IS NOT DISTINCT FROM {args[k]}" for k, _ in order[:position]]
            alternatives.append("(" + " AND ".join([*same_before, after]) + ")")
    sql.where("(" + (" OR ".join(alternatives) or "FALSE") + ")")


def _flag(query: Mapping[str, str], key: str, *, default: bool) -> bool:
    raw = query.get(key)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false"):
        raise BadRequest(f"Invalid value '{raw}' for '{key}' filter. Valid values are 'true' or 'false'.")
    return raw.lower() == "true"


def _integer(query: Mapping[str, str], key: str, bound: int, *, ranged: bool = False) -> int:
    """The filter's integer, within the column's range (-bound, bound); 400 otherwise."""
    raw = query[key]
    try:
        value = int(raw)
    except ValueError:
        if ranged:
            raise BadRequest("Unable to filter on a range with a non-numeric value.") from None
        raise BadRequest(f"Invalid value '{raw}' for parameter '{key}': an integer is expected.") from None
    if not -bound <= value < bound:
        raise BadRequest(f"Invalid value '{raw}' for parameter '{key}': out of range.")
    return value


def _split_op(raw: str) -> tuple[str, str]:
    """Glance's split_filter_op: `op:value`, or eq for a plain value or an ISO 8601 time."""
    op, sep, value = raw.partition(":")
    if not sep or _iso_time(raw) is not None:
        return "eq", raw
    return op, value


def _iso_time(raw: str) -> datetime.datetime | None:
    """The time, in UTC (None when it is no ISO 8601 time, or falls outside the years 1-9999 once
    in UTC, as 0001-01-01T00:00:00+14:00 does)."""
    try:
        moment = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
        return moment.astimezone(datetime.UTC) if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
    except (ValueError, OverflowError):
        return None


def _split_list(raw: str) -> list[str]:
    """`a,b,"c,d"` → [a, b, c,d]: Glance's `in:` lists, quotes keeping commas in a value."""
    return [item.strip() for item in next(csv.reader([raw], skipinitialspace=True), [])]


def _time_filter(key: str, raw: str) -> tuple[str, datetime.datetime]:
    op, value = _split_op(raw)
    if op not in _TIME_OPERATORS:
        raise BadRequest("Unable to filter using the specified operator.")
    moment = _iso_time(value)
    if moment is None:
        raise BadRequest(f'Bad "{key}" query filter format. Use ISO 8601 DateTime notation.')
    return _TIME_OPERATORS[op], moment


def param(name: str, schema: dict[str, Any], description: str, *, repeated: bool = False) -> dict[str, Any]:
    """One query parameter as /openapi.json describes it (api/openapi.py reads `query_parameters`)."""
    if repeated:
        schema = {"type": "array", "items": schema}
    parameter = {"name": name, "in": "query", "required": False, "description": description, "schema": schema}
    if repeated:
        parameter.update(style="form", explode=True)
    return parameter


def paging_parameters(sort_keys: tuple[str, ...] | list[str], marker: str) -> list[dict[str, Any]]:
    """limit, marker, sort_key and sort_dir, as Glance's lists take them."""
    return [
        param("limit", {"type": "integer", "minimum": 0}, f"At most this many (up to {MAX_LIMIT})"),
        param("marker", {"type": "string"}, marker),
        param("sort_key", {"type": "string", "enum": list(sort_keys)}, "Sort by this attribute"),
        param("sort_dir", {"type": "string", "enum": ["asc", "desc"]}, "Sort direction (default desc)"),
    ]


def _integer_schema(bound: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": -bound, "maximum": bound - 1}


PARAMETERS: list[dict[str, Any]] = [
    *(
        p
        if p["name"] not in ("sort_key", "sort_dir")
        else {**p, "schema": {"type": "array", "items": p["schema"]}}
        for p in paging_parameters(SORT_KEYS, "The id of the last image of the previous page")
    ),
    param("sort", {"type": "string"}, "key[:asc|desc],... (instead of sort_key and sort_dir)"),
    param(
        "member_status", {"type": "string", "enum": [*MEMBER_STATUSES, "all"]}, "Shared images by membership"
    ),
    param("visibility", {"type": "string", "enum": [*VISIBILITIES, "all"]}, "Only images of this visibility"),
    param("os_hidden", {"type": "boolean"}, "Hidden images instead of the others"),
    param("protected", {"type": "boolean"}, "Only (un)protected images"),
    param("tag", {"type": "string"}, "Images with every one of these tags", repeated=True),
    *(param(key, {"type": "string"}, f"{key}, or in:a,b,... for any of several") for key in _IN_FILTERS),
    *(param(key, {"type": "string"}, f"Images whose {key} is this") for key in _EQUAL_FILTERS),
    *(
        param(key, _integer_schema(bound), f"Images whose {key} is this")
        for key, bound in _INTEGER_FILTERS.items()
    ),
    *(
        param(key, _integer_schema(_INTEGER_FILTERS[column]), f"{column} {op} this")
        for key, (column, op) in _RANGE_FILTERS.items()
    ),
    *(
        param(key, {"type": "string"}, f"[gt|gte|lt|lte|eq|neq:]ISO 8601 time: compare the {key}")
        for key in _TIME_FILTERS
    ),
]
