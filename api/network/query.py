"""GET on a Neutron collection: filters, sorting, marker paging and `fields`, in one SQL query.

Neutron's rules: a query parameter named after an attribute filters on it, a repeated parameter
means any of its values (`?name=a&name=b`), values are converted as the attribute is (booleans
as true/false/1/0 in any case), and a parameter naming no filterable attribute is refused (400
"... is invalid attribute for filtering", Neutron's filter-validation extension), so that a
filter for a feature this cloud lacks never answers as if it matched everything. An admin-only
attribute filters for admins and is ignored for others (policy hides it). `tags`, `tags-any`,
`not-tags`, `not-tags-any` take comma-separated tags; `changed_since` (standard-attr-timestamp)
keeps what changed at or after a time. `sort_key`/`sort_dir` pairs
order the result, `id` breaking ties. `limit` and `marker` page it by keyset — the page after
the marker is the rows that sort after the marker row — and `<collection>_links` carries the
next and previous pages as Neutron builds them.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from api.context import ctx
from api.errors import ApiError, BadRequest
from api.network import attributes as attrs
from api.network.faults import bad_request
from api.sql import Sql


@dataclasses.dataclass(frozen=True)
class Field:
    """A filterable and sortable attribute: its SQL expression (never NULL), the SQL type of its
    values, and how a query-string value becomes one."""

    sql: str
    type: str = "text"
    parse: Callable[[str, str], Any] = lambda name, value: value
    sortable: bool = True
    filterable: bool = True
    admin_only: bool = False


def text(sql: str, **kw: Any) -> Field:
    return Field(sql, "text", **kw)


def flag(sql: str) -> Field:
    return Field(sql, "boolean", attrs.boolean)


def moment(sql: str) -> Field:
    """A timestamp: sorts, does not filter (Neutron filters times with `changed_since` only)."""
    return Field(sql, "timestamptz", filterable=False)


def number(sql: str, **kw: Any) -> Field:
    """An integer attribute; a filter value of any size compares (as `numeric`), so one past
    the column's range matches nothing rather than failing."""

    def parse(name: str, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise bad_request(f"Invalid input for {name}. Reason: '{value}' is not an integer.") from None

    return Field(sql, "numeric", parse, **kw)


_CONTROL = frozenset({"fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir"})
_TAG_FILTERS = {
    "tags": "{col} @> {arr}",
    "tags-any": "{col} && {arr}",
    "not-tags": "NOT ({col} @> {arr})",
    "not-tags-any": "NOT ({col} && {arr})",
}


@dataclasses.dataclass(frozen=True)
class Collection:
    """What a list needs to know of a resource: its name, the SELECT (from its table under
    `alias`), its filterable attributes, and how the rows become views."""

    name: str  # "networks"
    alias: str  # "n"
    select: str  # "SELECT n.*, ... FROM networks n JOIN ..."
    fields: dict[str, Field]
    not_found: Callable[[str], ApiError]
    extra_filters: Callable[[Sql, Any], None] | None = None
    extra_filter_names: frozenset[str] = frozenset()  # the query parameters extra_filters reads
    taggable: bool = True  # has `tags` (standard-attr-tag): the tag filters apply


def add_filters(sql: Sql, query: Any, collection: Collection, *, is_admin: bool) -> None:
    for name in set(query.keys()) - _CONTROL:
        values = query.getall(name)
        if name in _TAG_FILTERS and collection.taggable:
            wanted = [t.strip() for v in values for t in v.split(",") if t.strip()]
            if wanted:
                sql.where(
                    _TAG_FILTERS[name].format(
                        col=f"{collection.alias}.tags", arr=sql.arg(wanted) + "::text[]"
                    )
                )
            continue
        if name == "changed_since":
            since = [_moment(name, v) for v in values]
            sql.where(f"{collection.alias}.updated_at >= {sql.arg(max(since))}")
            continue
        if name in collection.extra_filter_names:
            continue
        field = collection.fields.get(name)
        if field is None or not field.filterable:
            raise bad_request(f"{name} is invalid attribute for filtering")
        if field.admin_only and not is_admin:
            continue  # hidden by policy from non-admins: as if not asked
        parsed = [field.parse(name, v) for v in values]
        sql.where(f"{field.sql} = ANY({sql.arg(parsed)}::{field.type}[])")
    if collection.extra_filters is not None:
        collection.extra_filters(sql, query)


def _moment(name: str, value: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"The input {name} must be in the following format: YYYY-MM-DDTHH:MM:SS") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def sort_order(query: Any, collection: Collection) -> list[tuple[str, bool]]:
    """(SQL expression, descending) pairs; `id` last (ascending unless it was asked for).
    Neutron's get_sorts: empty values are dropped, keys and directions pair up, every key is an
    attribute and every direction asc or desc."""
    keys = [k for k in query.getall("sort_key", []) if k]
    dirs = [d for d in query.getall("sort_dir", []) if d]
    if len(keys) != len(dirs):
        raise bad_request("The number of sort_keys and sort_dirs must be same")
    unknown = [key for key in keys if key not in collection.fields]
    if unknown:
        raise bad_request(f"{unknown} is invalid attribute for sort_keys")
    invalid_dirs = [d for d in dirs if d not in ("asc", "desc")]
    if invalid_dirs:
        raise bad_request(f"{invalid_dirs} is invalid value for sort_dirs, valid value is 'asc' and 'desc'")
    order: list[tuple[str, bool]] = []
    for key, direction in zip(keys, dirs, strict=True):
        field = collection.fields[key]
        if not field.sortable:
            raise BadRequest(
                f"Bad {collection.name} request: {key} is invalid attribute for sort_key.", kind="BadRequest"
            )
        order.append((field.sql, direction == "desc"))
    id_sql = f"{collection.alias}.id"
    if not order:
        order = [(f"{collection.alias}.created_at", False)]
    if id_sql not in (expr for expr, _ in order):
        order.append((id_sql, order[-1][1] if keys else False))
    return order


_MAX_LIMIT = 2**63 - 1  # PostgreSQL's LIMIT is a bigint


def _limit(query: Any) -> int | None:
    """Neutron's `limit`: an integer, 0 (or none) for no paging; anything else is its 400, and
    so is a number past what the database can take (where Neutron's own database would fail)."""
    raw = query.get("limit", "0")
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise BadRequest(
            f"Bad limit request: Limit must be an integer 0 or greater and not '{raw}'.", kind="BadRequest"
        )
    if value > _MAX_LIMIT:
        raise BadRequest(
            f"Bad limit request: Limit must be an integer from 0 to {_MAX_LIMIT} and not '{raw}'.",
            kind="BadRequest",
        )
    return value or None


def _page_reverse(query: Any) -> bool:
    """Neutron's get_page_reverse: "true" in any case reverses, any other value does not."""
    return str(query.get("page_reverse", "False")).lower() == "true"


def _after(sql: Sql, order: list[tuple[str, bool]], marker: asyncpg.Record) -> None:
    """Rows strictly after the marker row in `order` (every expression is non-NULL)."""
    values = [sql.arg(marker[f"_sort{i}"]) for i in range(len(order))]
    alternatives = []
    for position, (expr, desc) in enumerate(order):
        same = [f"{order[i][0]} = {values[i]}" for i in range(position)]
        alternatives.append(
            "(" + " AND ".join([*same, f"{expr} {'<' if desc else '>'} {values[position]}"]) + ")"
        )
    sql.where("(" + " OR ".join(alternatives) + ")")


async def fetch(
    conn: Any, request: web.Request, collection: Collection, visible: Callable[[Sql], None], *, is_admin: bool
) -> tuple[list[asyncpg.Record], list[dict[str, str]]]:
    """The rows of one page, in order, and the page links (none without a limit)."""
    query = request.query
    order = sort_order(query, collection)
    limit = _limit(query)
    marker_id = query.get("marker") if limit else None
    reverse = _page_reverse(query) if limit else False
    if reverse:
        order = [(expr, not desc) for expr, desc in order]

    sql = Sql()
    visible(sql)
    add_filters(sql, query, collection, is_admin=is_admin)
    if marker_id:
        marker_sql = Sql()
        visible(marker_sql)
        marker_sql.where(f"{collection.alias}.id = {marker_sql.arg(marker_id)}")
        sort_columns = ", ".join(f"{expr} AS _sort{i}" for i, (expr, _) in enumerate(order))
        marker = await conn.fetchrow(
            f"SELECT {sort_columns} FROM ({collection.select}) AS {collection.alias} "
            f"WHERE {marker_sql.clause()}",
            *marker_sql.args,
        )
        if marker is None:
            raise collection.not_found(marker_id)
        _after(sql, order, marker)
    ordering = ", ".join(f"{expr} {'DESC' if desc else 'ASC'}" for expr, desc in order)
    paging = f" LIMIT {limit}" if limit else ""
    rows = await conn.fetch(
        f"SELECT * FROM ({collection.select}) AS {collection.alias} WHERE {sql.clause()} "
        f"ORDER BY {ordering}{paging}",
        *sql.args,
    )
    if reverse:
        rows = list(reversed(rows))
    return rows, _links(request, collection, rows, limit, reverse)


def _links(
    request: web.Request, collection: Collection, rows: list[asyncpg.Record], limit: int | None, reverse: bool
) -> list[dict[str, str]]:
    """Neutron's get_pagination_links: `next` unless a forward page came back short, `previous`
    unless a backward one did."""
    if not limit:
        return []
    base = f"{ctx(request).base_url}/networking/v2.0/{collection.name}"
    params = [(k, v) for k, v in request.query.items() if k not in ("marker", "page_reverse")]
    links = []
    if not (len(rows) < limit and not reverse) and rows:
        links.append({"rel": "next", "href": f"{base}?{urlencode([*params, ('marker', rows[-1]['id'])])}"})
    if not (len(rows) < limit and reverse):
        previous = [*params, *([("marker", rows[0]["id"])] if rows else []), ("page_reverse", "True")]
        links.append({"rel": "previous", "href": f"{base}?{urlencode(previous)}"})
    return links


def select_fields(view: dict[str, Any], query: Any) -> dict[str, Any]:
    """Only the attributes named by `fields=` (all when none is)."""
    wanted = [f for f in query.getall("fields", []) if f]
    if not wanted:
        return view
    return {k: v for k, v in view.items() if k in wanted}


# --- the parameters as /openapi.json describes them -----------------------------------------------

_SCHEMAS = {"boolean": {"type": "boolean"}, "numeric": {"type": "integer"}}


def _query(name: str, schema: dict[str, Any], description: str, *, repeated: bool = True) -> dict[str, Any]:
    if repeated:
        schema = {"type": "array", "items": schema}
    parameter = {"name": name, "in": "query", "required": False, "description": description, "schema": schema}
    if repeated:
        parameter.update(style="form", explode=True)
    return parameter


def fields_parameter() -> dict[str, Any]:
    return _query("fields", {"type": "string"}, "Only these attributes in each resource (repeatable)")


FIXED_IPS_PARAMETER = _query(
    "fixed_ips",
    {"type": "string", "pattern": "^(ip_address|subnet_id|ip_address_substr)=.*$"},
    "Ports with a fixed IP matching ip_address=X, subnet_id=Y or ip_address_substr=Z",
)


def parameters(collection: Collection, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The OpenAPI query parameters of the collection's GET: a filter per filterable attribute
    (repeatable: any of the values), the tag filters, `fields`, paging and sorting."""
    found = [
        _query(name, _SCHEMAS.get(field.type, {"type": "string"}), f"Filter on {name} (any of the values)")
        for name, field in collection.fields.items()
        if field.filterable
    ]
    found += [_query(name, {"type": "string"}, "Comma-separated tags") for name in _TAG_FILTERS]
    found.append(
        _query(
            "changed_since",
            {"type": "string", "format": "date-time"},
            "Changed at or after this time",
            repeated=False,
        )
    )
    sortable = sorted(name for name, field in collection.fields.items() if field.sortable)
    found += [
        *extra,
        fields_parameter(),
        _query("limit", {"type": "integer", "minimum": 0}, "At most this many (0: all)", repeated=False),
        _query("marker", {"type": "string"}, "The last id of the previous page", repeated=False),
        _query("page_reverse", {"type": "boolean"}, "The page before the marker", repeated=False),
        _query("sort_key", {"type": "string", "enum": sortable}, "Sort by (paired with sort_dir)"),
        _query("sort_dir", {"type": "string", "enum": ["asc", "desc"]}, "Each sort_key's direction"),
    ]
    return found


def described(handler: Any, query_parameters: list[dict[str, Any]]) -> Any:
    """The handler, with the query parameters /openapi.json lists for its route."""
    handler.query_parameters = query_parameters
    return handler
