"""Glance's task records (`image_tasks`): writing them through their life and their shapes.

A task is `pending` when created, `processing` once its runner starts (api/image/importer.py),
and ends `success` (with a result) or `failure` (with a message); an ended task expires
TIME_TO_LIVE after it ended, as Glance's task_time_to_live. A running task's row is touched while
it works, so that one whose runner died is found and failed (`reap`).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import asyncpg

from api.times import iso_micro, iso_seconds

TIME_TO_LIVE = datetime.timedelta(hours=48)
TYPES = ("import", "api_image_import")
STATUSES = ("pending", "processing", "success", "failure")
ACTIVE = ("pending", "processing")


async def create(
    conn: Any,
    *,
    type: str,
    owner: str,
    input: dict[str, Any],
    image_id: str | None,
    request_id: str | None,
    user_id: str | None,
) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO image_tasks (id, type, owner, input, image_id, request_id, user_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        str(uuid.uuid4()),
        type,
        owner,
        input,
        image_id,
        request_id,
        user_id,
    )


async def begin(conn: Any, task_id: str) -> bool:
    """pending -> processing; False when the task is no longer pending (failed by a reaper)."""
    status = await conn.execute(
        "UPDATE image_tasks SET status = 'processing', updated_at = now() "
        "WHERE id = $1 AND status = 'pending'",
        task_id,
    )
    return status == "UPDATE 1"


async def touch(conn: Any, task_id: str, message: str | None = None) -> None:
    """A sign of life from a running task (and its progress message, as Glance's 'Copied N MiB')."""
    await conn.execute(
        "UPDATE image_tasks SET updated_at = now(), message = coalesce($2, message) WHERE id = $1",
        task_id,
        message,
    )


async def succeed(conn: Any, task_id: str, result: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE image_tasks SET status = 'success', result = $2, message = '', updated_at = now(), "
        "expires_at = now() + $3::interval WHERE id = $1 AND status IN ('pending', 'processing')",
        task_id,
        result,
        TIME_TO_LIVE,
    )


async def fail(conn: Any, task_id: str, message: str) -> None:
    await conn.execute(
        "UPDATE image_tasks SET status = 'failure', message = $2, updated_at = now(), "
        "expires_at = now() + $3::interval WHERE id = $1 AND status IN ('pending', 'processing')",
        task_id,
        message,
        TIME_TO_LIVE,
    )


async def get(conn: Any, task_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM image_tasks WHERE id = $1", task_id)


def _href(task_id: str) -> str:
    return f"/v2/tasks/{task_id}"


def task_view(row: asyncpg.Record) -> dict[str, Any]:
    """GET /v2/tasks/<id>: the whole task."""
    view: dict[str, Any] = {
        "id": row["id"],
        "input": row["input"],
        "type": row["type"],
        "status": row["status"],
        "owner": row["owner"],
        "message": row["message"],
        "result": row["result"],
        "created_at": iso_seconds(row["created_at"]),
        "updated_at": iso_seconds(row["updated_at"]),
        "self": _href(row["id"]),
        "schema": "/v2/schemas/task",
    }
    for key in ("image_id", "request_id", "user_id"):
        if row[key]:
            view[key] = row[key]
    if row["expires_at"] is not None:
        view["expires_at"] = iso_seconds(row["expires_at"])
    return view


def stub_view(row: asyncpg.Record) -> dict[str, Any]:
    """A task in GET /v2/tasks: no input, result or message."""
    view: dict[str, Any] = {
        "id": row["id"],
        "type": row["type"],
        "status": row["status"],
        "owner": row["owner"],
        "created_at": iso_seconds(row["created_at"]),
        "updated_at": iso_seconds(row["updated_at"]),
        "self": _href(row["id"]),
        "schema": "/v2/schemas/task",
    }
    if row["expires_at"] is not None:
        view["expires_at"] = iso_seconds(row["expires_at"])
    return view


def image_task_view(row: asyncpg.Record) -> dict[str, Any]:
    """A task in GET /v2/images/<id>/tasks: Glance shows its database record there."""
    return {
        "id": row["id"],
        "image_id": row["image_id"],
        "request_id": row["request_id"],
        "user_id": row["user_id"],
        "type": row["type"],
        "status": row["status"],
        "owner": row["owner"],
        "expires_at": iso_micro(row["expires_at"]) if row["expires_at"] else None,
        "created_at": iso_micro(row["created_at"]),
        "updated_at": iso_micro(row["updated_at"]),
        "deleted_at": None,
        "deleted": False,
        "input": row["input"],
        "result": row["result"],
        "message": row["message"],
    }


TASK_PROPERTIES: dict[str, Any] = {
    "id": {
        "description": "An identifier for the task",
        "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$",
        "type": "string",
    },
    "type": {
        "description": "The type of task represented by this content",
        "enum": list(TYPES),
        "type": "string",
    },
    "status": {"description": "The current status of this task", "enum": list(STATUSES), "type": "string"},
    "input": {"description": "The parameters required by task, JSON blob", "type": ["null", "object"]},
    "result": {"description": "The result of current task, JSON blob", "type": ["null", "object"]},
    "owner": {"description": "An identifier for the owner of this task", "type": "string"},
    "message": {
        "description": "Human-readable informative message only included when appropriate "
        "(usually on failure)",
        "type": "string",
    },
    "image_id": {"description": "Image associated with the task", "type": "string"},
    "request_id": {"description": "Human-readable informative request-id", "type": "string"},
    "user_id": {"description": "User associated with the task", "type": "string"},
    "expires_at": {
        "description": "Datetime when this resource would be subject to removal",
        "type": ["null", "string"],
    },
    "created_at": {"description": "Datetime when this resource was created", "type": "string"},
    "updated_at": {"description": "Datetime when this resource was updated", "type": "string"},
    "self": {"readOnly": True, "type": "string"},
    "schema": {"readOnly": True, "type": "string"},
}


def task_schema() -> dict[str, Any]:
    return {"name": "task", "properties": TASK_PROPERTIES, "additionalProperties": False}


def tasks_schema() -> dict[str, Any]:
    partial = {k: v for k, v in TASK_PROPERTIES.items() if k not in ("input", "result", "message")}
    return {
        "name": "tasks",
        "properties": {
            "tasks": {
                "type": "array",
                "items": {"name": "task", "properties": partial, "additionalProperties": False},
            },
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }
