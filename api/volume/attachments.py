"""/volume/v3/{project_id}/attachments (microversion 3.27): Cinder's attachment records, read
from the volumes' rows (a volume has at most one attachment here: a server's, made by the
compute service, or a client's os-attach).

GET lists them (`volume_id`, `instance_id`, `status` filters; an admin's `all_tenants`;
`limit`/`offset`/`marker` paging, in the attachments' order of creation), /detail and one by id
show them in Cinder's detail view. Cinder's new attach flow (POST, PUT, DELETE and
`/action` os-complete on attachments) is not offered: the compute API attaches volumes here, and
a client that attaches volumes itself uses the volume actions (os-reserve, os-attach, os-detach);
such a request is refused with that reason (400, InvalidInput).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.auth import AuthContext
from api.context import caller, ctx, json_response
from api.errors import NotFound
from api.sql import Sql
from api.volume import filters, volumes
from api.volume import validate as check
from api.volume.microversion import requested

SINCE = (3, 27)
_STATUS_OF_VOLUME = {  # the attachment's status, where the volume's status says it
    "reserved": "reserved",
    "attaching": "attaching",
    "in-use": "attached",
    "detaching": "detaching",
}


def _status(row: asyncpg.Record) -> str:
    return _STATUS_OF_VOLUME.get(row["status"], row["attach_status"])


def _summary(row: asyncpg.Record) -> dict[str, Any]:
    attachment = row["attachment"]
    return {
        "id": attachment["id"],
        "status": _status(row),
        "instance": attachment.get("server_id"),
        "volume_id": row["id"],
    }


def _detail(row: asyncpg.Record) -> dict[str, Any]:
    attachment = row["attachment"]
    return {
        **_summary(row),
        "attached_at": volumes.attachment_moment(attachment.get("attached_at")),
        "detached_at": None,
        "attach_mode": attachment.get("mode", "rw"),
        # set by Cinder's attachment_update, which this cloud does not offer
        "connection_info": None,
    }


def _checked(request: web.Request) -> AuthContext:
    volumes.url_project(request)
    if requested(request) < SINCE:
        raise NotFound("The resource could not be found.")
    return caller(request)


def _where(request: web.Request, me: AuthContext) -> Sql:
    q = request.query
    sql = Sql()
    sql.where("attachment IS NOT NULL")
    if not (me.is_admin and check.query_bool(q, "all_tenants")):
        sql.where(f"project_id = {sql.arg(me.project_id)}")
    if "volume_id" in q:
        sql.where(f"id = {sql.arg(q['volume_id'])}")
    if "instance_id" in q:
        sql.where(f"attachment->>'server_id' = {sql.arg(q['instance_id'])}")
    return sql


async def _list(request: web.Request, *, detail: bool) -> web.Response:
    me = _checked(request)
    sql = _where(request, me)
    rows = await ctx(request).pool.fetch(
        f"SELECT * FROM volumes WHERE {sql.clause()} ORDER BY attachment->>'attached_at', id", *sql.args
    )
    if "status" in request.query:
        rows = [r for r in rows if _status(r) == request.query["status"]]
    marker = request.query.get("marker")
    if marker is not None:
        ids = [r["attachment"]["id"] for r in rows]
        if marker not in ids:
            raise NotFound(f"Marker {marker} could not be found.")
        rows = rows[ids.index(marker) + 1 :]
    offset = check.query_int(request.query, "offset") or 0
    limit = check.query_int(request.query, "limit")
    rows = rows[offset:] if limit is None else rows[offset : offset + limit]
    render = _detail if detail else _summary
    return json_response({"attachments": [render(r) for r in rows]})


async def list_attachments(request: web.Request) -> web.Response:
    return await _list(request, detail=False)


async def list_attachments_detail(request: web.Request) -> web.Response:
    return await _list(request, detail=True)


async def show(request: web.Request) -> web.Response:
    me = _checked(request)
    attachment_id = request.match_info["attachment_id"]
    row = await ctx(request).pool.fetchrow(
        "SELECT * FROM volumes WHERE attachment->>'id' = $1", attachment_id
    )
    if row is None or (not me.is_admin and row["project_id"] != me.project_id):
        raise NotFound(f"Volume attachment could not be found with filter: attachment_id = {attachment_id}.")
    return json_response({"attachment": _detail(row)})


async def refuse(request: web.Request) -> web.Response:
    _checked(request).require_writer("volume:attachment_create")
    raise check.invalid_input(
        "The attachments API (attachment create, update, complete and delete) is not offered by "
        "this cloud: attach volumes through the compute API, or with the volume actions "
        "os-reserve, os-attach and os-detach."
    )


_PARAMETERS = [
    *(
        filters.query_parameter(name, {"type": "string"}, f"Filter on {name}")
        for name in ("volume_id", "instance_id", "status")
    ),
    filters.ALL_TENANTS,
    *filters.PAGING,
]


def setup(app: web.Application) -> None:
    r = app.router
    base = "/volume/v3/{project_id}/attachments"
    r.add_get(base, filters.described(list_attachments, _PARAMETERS))
    r.add_post(base, refuse)
    r.add_get(base + "/detail", filters.described(list_attachments_detail, _PARAMETERS))
    r.add_get(base + "/{attachment_id}", show)
    r.add_route("*", base + "/{attachment_id}", refuse)
    r.add_route("*", base + "/{attachment_id}/action", refuse)
