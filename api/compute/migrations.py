"""/compute/v2.1/os-migrations: the cloud's migrations (admin only), with Nova's filters.

This cloud has no cold or live migration, resize or evacuation yet, so it has made no migration
and the list is empty; the query is checked as Nova checks it (the migration type, the times of
changes-since/changes-before and their order, limit, a marker that must name a migration, the
user and project filters from 2.80, no unknown parameter from 2.59), so that a client's mistakes
show now rather than when migrations exist.
"""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from api.compute import query_params
from api.compute.microversion import Microversion, requested
from api.context import caller, json_response
from api.errors import BadRequest
from api.query_doc import documented, param, strings

MIGRATION_TYPES = ("evacuation", "live-migration", "migration", "resize")


def _known(version: Microversion) -> tuple[str, ...]:
    known: tuple[str, ...] = ("status", "host", "instance_uuid", "source_compute", "migration_type", "hidden")
    if version >= (2, 59):
        known += ("changes-since", "limit", "marker")
    if version >= (2, 66):
        known += ("changes-before",)
    if version >= (2, 80):
        known += ("user_id", "project_id")
    return known


def _moment(request: web.Request, name: str) -> datetime.datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"Invalid input for query parameters {name}. Value: {raw}. '{raw}' is not a 'date-time'"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _check(request: web.Request) -> None:
    version = requested(request)
    query_params.only_known(request, _known(version), since=(2, 59))
    kind = request.query.get("migration_type")
    if kind is not None and kind not in MIGRATION_TYPES:
        raise BadRequest(
            f"Invalid input for query parameters migration_type. Value: {kind}. '{kind}' is not one of "
            f"{list(MIGRATION_TYPES)}"
        )
    if version >= (2, 59):
        query_params.integer(request, "limit")
        since, before = _moment(request, "changes-since"), _moment(request, "changes-before")
        if since and before and before < since:
            raise BadRequest("The value of changes-since must be less than or equal to changes-before.")
        marker = request.query.get("marker")
        if marker is not None:
            raise BadRequest(f"Marker {marker} could not be found.")  # there is no migration to name


async def list_migrations(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-migrations:index")
    _check(request)
    body: dict[str, Any] = {"migrations": []}
    return json_response(body)


documented(
    list_migrations,
    parameters=[
        *strings("status", "host", "instance_uuid", "source_compute", "hidden", "user_id", "project_id"),
        param("migration_type", enum=["migration", "resize", "live-migration", "evacuation"]),
        param("changes-since", "date-time"),
        param("changes-before", "date-time"),
        param("limit", "integer"),
        param("marker"),
    ],
)


def setup(app: web.Application) -> None:
    app.router.add_get("/compute/v2.1/os-migrations", list_migrations)
