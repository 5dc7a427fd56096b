"""/compute/v2.1/flavors/{id}/os-extra_specs: a flavor's extra specs, readable by whoever sees
the flavor, written by admins.

Values are stored as strings, as Nova stores them (a number sent is kept as its decimal text).
Each write is one statement over the jsonb column, so concurrent writers never lose each other's
keys. Status codes are Nova's: 200 for every call, including create and delete.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from api import validate as v
from api.compute import extra_spec_rules, flavors
from api.compute.microversion import requested
from api.context import caller, ctx, json_response
from api.errors import BadRequest, NotFound

_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")


def _spec_value(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise v.invalid(key, value, f"{value!r} is not of type 'string', 'number'")
    text = value if isinstance(value, str) else str(value)
    if len(text) > 255:
        raise v.invalid(key, value, f"{value!r} is too long")
    return text


def _specs(request: web.Request, data: Any, field: str) -> dict[str, str]:
    """A {key: value} map as Nova's flavor metadata schema allows it, values as strings."""
    if not isinstance(data, dict):
        raise v.invalid(field, data, f"{data!r} is not of type 'object'")
    bad = sorted(k for k in data if not _KEY.match(k))
    if bad:
        raise v.invalid(
            field,
            data,
            f"Additional properties are not allowed ({', '.join(map(repr, bad))} "
            f"{'were' if len(bad) > 1 else 'was'} unexpected)",
        )
    specs = {key: _spec_value(key, value) for key, value in data.items()}
    if requested(request) >= (2, 86):
        for key, value in specs.items():
            extra_spec_rules.check(key, value)
    return specs


def _no_key(flavor_id: str, key: str) -> NotFound:
    return NotFound(f"Flavor {flavor_id} has no extra specs with key {key}.")


async def list_specs(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        row = await flavors.find(conn, caller(request), request.match_info["flavor_id"])
    return json_response({"extra_specs": dict(row["extra_specs"])})


async def create_specs(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-flavor-extra-specs:create")
    data = await v.document(request)
    if not isinstance(data, dict) or "extra_specs" not in data:
        raise BadRequest("'extra_specs' is a required property")
    v.only(data, {"extra_specs"}, "")
    specs = _specs(request, data["extra_specs"], "extra_specs")
    await _merge(request, specs)
    return json_response(data)


async def update_spec(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-flavor-extra-specs:update")
    data = await v.document(request)
    if not isinstance(data, dict) or len(data) != 1:
        count = len(data) if isinstance(data, dict) else 0
        reason = "does not have enough properties" if count < 1 else "has too many properties"
        raise BadRequest(f"Invalid input for field/attribute . Value: {data}. {data!r} {reason}")
    specs = _specs(request, data, "")
    if request.match_info["key"] not in specs:
        raise BadRequest("Request body and URI mismatch")
    await _merge(request, specs)
    return json_response(data)


async def _merge(request: web.Request, specs: dict[str, str]) -> None:
    flavor_id = request.match_info["flavor_id"]
    async with ctx(request).pool.acquire() as conn:
        await flavors.find(conn, caller(request), flavor_id)
        status = await conn.execute(
            "UPDATE flavors SET extra_specs = extra_specs || $2::jsonb WHERE id = $1", flavor_id, specs
        )
    if status == "UPDATE 0":  # deleted since we looked
        raise flavors.not_found(flavor_id)


async def show_spec(request: web.Request) -> web.Response:
    flavor_id, key = request.match_info["flavor_id"], request.match_info["key"]
    async with ctx(request).pool.acquire() as conn:
        row = await flavors.find(conn, caller(request), flavor_id)
    if key not in row["extra_specs"]:
        raise _no_key(flavor_id, key)
    return json_response({key: row["extra_specs"][key]})


async def delete_spec(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-flavor-extra-specs:delete")
    flavor_id, key = request.match_info["flavor_id"], request.match_info["key"]
    async with ctx(request).pool.acquire() as conn:
        await flavors.find(conn, caller(request), flavor_id)
        status = await conn.execute(
            "UPDATE flavors SET extra_specs = extra_specs - $2::text WHERE id = $1 AND extra_specs ? $2",
            flavor_id,
            key,
        )
    if status == "UPDATE 0":
        raise _no_key(flavor_id, key)
    return web.Response(status=200)


def setup(app: web.Application) -> None:
    r = app.router
    # Nova's path is os-extra_specs; the hyphenated spelling of its other paths is accepted too.
    for spelling in ("os-extra_specs", "os-extra-specs"):
        base = f"/compute/v2.1/flavors/{{flavor_id}}/{spelling}"
        r.add_get(base, list_specs)
        r.add_post(base, create_specs)
        r.add_get(base + "/{key}", show_spec)
        r.add_put(base + "/{key}", update_spec)
        r.add_delete(base + "/{key}", delete_spec)
