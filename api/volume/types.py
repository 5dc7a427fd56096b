"""Volume types: the one type this cloud has, Cinder's `__DEFAULT__`.

GET …/types, …/types/{id} (its id or name) and …/types/default, in Cinder's shapes, so that
`openstack volume type list/show` and `volume create --type __DEFAULT__` work. Creating types
(and extra specs, QoS, encryption) is not offered: every volume is on the file backends.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from api.context import caller, json_response
from api.errors import NotFound

DEFAULT_NAME = "__DEFAULT__"
DEFAULT_ID = "5f0b2d2e-4c57-4a43-9f2b-9b1a6c0d3e11"  # fixed: clients may remember it


def resolve(name_or_id: str) -> str:
    """The type's name for a name or id given in a request; Cinder's 404s for any other."""
    if name_or_id in (DEFAULT_NAME, DEFAULT_ID):
        return DEFAULT_NAME
    raise not_found(name_or_id)


def not_found(name_or_id: str) -> NotFound:
    try:
        uuid.UUID(name_or_id)
    except ValueError:
        return NotFound(f"Volume type with name {name_or_id} could not be found.")
    return NotFound(f"Volume type {name_or_id} could not be found.")


def view(request: web.Request) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": DEFAULT_ID,
        "name": DEFAULT_NAME,
        "is_public": True,
        "description": "Default Volume Type",
        "os-volume-type-access:is_public": True,
    }
    if caller(request).is_admin:  # Cinder shows these to admins only
        shown["extra_specs"] = {}
        shown["qos_specs_id"] = None
    return shown


async def list_types(request: web.Request) -> web.Response:
    return json_response({"volume_types": [view(request)]})


async def show_type(request: web.Request) -> web.Response:
    wanted = request.match_info["type_id"]
    if wanted != "default":
        resolve(wanted)
    return json_response({"volume_type": view(request)})


async def show_extra_specs(request: web.Request) -> web.Response:
    resolve(request.match_info["type_id"])
    return json_response({"extra_specs": {}})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/volume/v3/{project_id}/types", list_types)
    r.add_get("/volume/v3/{project_id}/types/{type_id}", show_type)
    r.add_get("/volume/v3/{project_id}/types/{type_id}/extra_specs", show_extra_specs)
