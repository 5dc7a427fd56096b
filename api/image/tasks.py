"""/v2/tasks: Glance's task API (deprecated by Glance in favour of interoperable import, still
served): create an `import` task (fetch `import_from` into a new image made of
`image_properties`), list and show tasks; /v2/schemas/task(s). Admins only, as Glance's default
`tasks_api_access` policy. A task is never deleted through the API (405), as in Glance.

The URL is checked when the task is created (scheme, filtering: newer Glance refuses a bad one
at once, 400); whether it can be fetched is the task's to find out (api/image/importer.py).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from api.auth import AuthContext
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Forbidden, MethodNotAllowed, NotFound
from api.image import images, query, task_records, validation
from api.image.importer import IMPORTER
from api.image.query import sort_and_limit
from api.sql import Sql

SORT_KEYS = ("created_at", "updated_at", "status", "type", "id")
_CREATE_SCHEMA = {**task_records.task_schema(), "required": ["type", "input"]}
# An import task's request, as /openapi.json describes it (api/openapi.py).
CREATE_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["import"]},
        "input": {
            "type": "object",
            "properties": {
                "import_from": {"type": "string"},
                "import_from_format": {"type": "string"},
                "image_properties": {"type": "object"},
            },
            "required": ["import_from", "import_from_format", "image_properties"],
        },
    },
    "required": ["type", "input"],
    "additionalProperties": False,
}


def _require_access(me: AuthContext) -> None:
    if not me.is_admin:
        raise Forbidden("You are not authorized to complete tasks_api_access action.")


def _not_found(task_id: str) -> NotFound:
    return NotFound(f"Task with the given id {task_id} was not found")


def _check_input(given: Any, import_from: Any, rules: Any) -> None:
    """The `import` task's input, as Glance's import script reads it."""
    for key in ("import_from", "import_from_format", "image_properties"):
        if key not in given:
            raise BadRequest(f"Input does not contain '{key}' field")
    if not isinstance(import_from, str) or not import_from.startswith(("http://", "https://")):
        if isinstance(import_from, str) and import_from.startswith(("file:///", "filesystem:///")):
            raise BadRequest(
                "File based imports are not allowed. Please use a non-local source of image data."
            )
        raise BadRequest(
            "The given uri is not valid. Please specify a valid uri from the following list of "
            "supported uri ['http']"
        )
    if not rules.passes(import_from):
        raise BadRequest(f"URI for import does not pass filtering: {import_from}")
    images.split_create_body(given["image_properties"])


async def create_task(request: web.Request) -> web.Response:
    me = caller(request)
    _require_access(me)
    body = await json_body(request)
    if isinstance(body, dict):
        for key in ("type", "input"):
            if key not in body:
                raise BadRequest(f"Task '{key}' is required")
    validation.check("task", _CREATE_SCHEMA, body)
    if body["type"] != "import":
        raise BadRequest(f"Invalid type value: {body['type']}; the tasks API creates 'import' tasks only.")
    given = body["input"] or {}
    runner = request.app[IMPORTER]
    _check_input(given, given.get("import_from"), runner.rules)
    context = ctx(request)
    async with context.pool.acquire() as conn:
        row = await task_records.create(
            conn,
            type="import",
            owner=me.require_project(),
            input=given,
            image_id=None,
            request_id=request.get("request_id"),
            user_id=me.user_id,
        )
    runner.start(row["id"])
    headers = {"Location": f"{context.base_url}/image/v2/tasks/{row['id']}"}
    return json_response(task_records.task_view(row), status=201, headers=headers)


def _list_query(query: Any, sql: Sql) -> tuple[str, str, int]:
    status, kind = query.get("status"), query.get("type")
    if status and status not in task_records.STATUSES:
        raise BadRequest(f"Invalid status value: {status}")
    if kind and kind not in ("import",):
        raise BadRequest(f"Invalid type value: {kind}")
    if status:
        sql.where(f"status = {sql.arg(status)}")
    if kind:
        sql.where(f"type = {sql.arg(kind)}")
    return sort_and_limit(query, SORT_KEYS)


async def list_tasks(request: web.Request) -> web.Response:
    me = caller(request)
    _require_access(me)
    query = request.query
    sql = Sql()
    sort_key, sort_dir, limit = _list_query(query, sql)
    op = "<" if sort_dir == "desc" else ">"
    async with ctx(request).pool.acquire() as conn:
        marker = query.get("marker")
        if marker is not None:
            try:
                uuid.UUID(marker)
            except ValueError:
                raise BadRequest("Invalid marker format") from None
            after = await task_records.get(conn, marker)
            if after is None:
                raise BadRequest(f"Task with the given id {marker} was not found")
            sql.where(f"({sort_key}, id) {op} ({sql.arg(after[sort_key])}, {sql.arg(after['id'])})")
        rows = await conn.fetch(
            f"SELECT * FROM image_tasks WHERE {sql.clause()} ORDER BY {sort_key} {sort_dir}, id {sort_dir} "
            f"LIMIT {sql.arg(limit + 1)}",
            *sql.args,
        )
    page = rows[:limit]
    kept = [(k, v) for k, v in query.items() if k != "marker"]
    body: dict[str, Any] = {
        "tasks": [task_records.stub_view(r) for r in page],
        "first": "/v2/tasks" + (f"?{urlencode(kept)}" if kept else ""),
        "schema": "/v2/schemas/tasks",
    }
    if len(rows) > limit and page:
        body["next"] = f"/v2/tasks?{urlencode([*kept, ('marker', page[-1]['id'])])}"
    return json_response(body)


async def get_task(request: web.Request) -> web.Response:
    me = caller(request)
    _require_access(me)
    task_id = request.match_info["task_id"]
    row = await task_records.get(ctx(request).pool, task_id)
    if row is None:
        raise _not_found(task_id)
    return json_response(task_records.task_view(row))


async def delete_task(request: web.Request) -> web.Response:
    _require_access(caller(request))
    raise MethodNotAllowed(
        "This operation is currently not permitted on Glance Tasks. They are auto deleted after reaching "
        "the time based on their expires_at property.",
        headers={"Allow": "GET"},
    )


async def get_task_schema(request: web.Request) -> web.Response:
    return json_response(task_records.task_schema())


async def get_tasks_schema(request: web.Request) -> web.Response:
    return json_response(task_records.tasks_schema())


def setup(app: web.Application) -> None:
    r = app.router
    list_tasks.query_parameters = [  # for /openapi.json
        *query.paging_parameters(SORT_KEYS, "The id of the last task of the previous page"),
        query.param(
            "status", {"type": "string", "enum": list(task_records.STATUSES)}, "Only tasks in this status"
        ),
        query.param("type", {"type": "string", "enum": ["import"]}, "Only tasks of this type"),
    ]
    r.add_get("/image/v2/tasks", list_tasks)
    r.add_post("/image/v2/tasks", create_task)
    r.add_get("/image/v2/tasks/{task_id}", get_task)
    r.add_delete("/image/v2/tasks/{task_id}", delete_task)
    r.add_get("/image/v2/schemas/task", get_task_schema)
    r.add_get("/image/v2/schemas/tasks", get_tasks_schema)
