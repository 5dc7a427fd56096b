"""/compute/v2.1/os-keypairs: a user's SSH (or X.509) keypairs.

Keypairs belong to a user, not a project. Admins may act on another user's keypairs with
?user_id= (2.10+); anyone else asking for another user is refused (403), and a name that is not
the caller's own is simply not found (404). Creating imports the given public key, or (before
2.92) generates a pair and returns the private key once; the key_pairs quota is counted per user
and enforced in the insert's transaction, so concurrent creates can never pass it.

Status codes follow the microversion as Nova's do: create 200 at 2.1 and 201 from 2.2, delete
202 at 2.1 and 204 from 2.2.
"""

from __future__ import annotations

import asyncio
import string
from typing import Any

import asyncpg
from aiohttp import web

from api import quotas
from api import validate as v
from api.auth import AuthContext
from api.compute import keys, query_params
from api.compute.links import limit, next_links
from api.compute.microversion import requested
from api.compute.usage import keypair_usage
from api.context import caller, ctx, json_response
from api.errors import BadRequest, Conflict, NotFound
from api.query_doc import documented, param
from api.times import iso_micro

_NAME_CHARS = "_- " + string.digits + string.ascii_letters
_NAME_CHARS_292 = "@._- " + string.digits + string.ascii_letters


def _list_view(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    view = {"name": row["name"], "public_key": row["public_key"], "fingerprint": row["fingerprint"]}
    if requested(request) >= (2, 2):
        view["type"] = row["type"]
    return view


def _show_view(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    view = _list_view(request, row)
    view.update(
        user_id=row["user_id"],
        created_at=iso_micro(row["created_at"]),
        deleted=False,
        deleted_at=None,
        id=row["id"],
        updated_at=None,
    )
    return view


def _target_user(request: web.Request, me: AuthContext, action: str) -> str:
    """Whose keypairs: ?user_id= from 2.10 (the caller's own, or anyone's for an admin)."""
    user_id = request.query.get("user_id") if requested(request) >= (2, 10) else None
    return _authorize(me, user_id or me.user_id, action)


def _authorize(me: AuthContext, user_id: str, action: str) -> str:
    if not me.is_admin and user_id != me.user_id:
        me.require_admin(f"os_compute_api:os-keypairs:{action}")
    return user_id


def _not_found(name: str, user_id: str) -> NotFound:
    return NotFound(f"Keypair {name} not found for user {user_id}")


async def list_keypairs(request: web.Request) -> web.Response:
    me = caller(request)
    version = requested(request)
    paged = version >= (2, 35)
    query_params.only_known(request, ("user_id", "limit", "marker") if paged else ("user_id",))
    user_id = _target_user(request, me, "index")
    page = limit(request) if paged else None
    marker = request.query.get("marker") if paged else None
    async with ctx(request).pool.acquire() as conn:
        after = 0
        if marker is not None:
            after = await conn.fetchval(
                "SELECT id FROM keypairs WHERE user_id = $1 AND name = $2", user_id, marker
            )
            if after is None:
                raise BadRequest(f"Marker {marker} could not be found.")
        rows = await conn.fetch(
            "SELECT * FROM keypairs WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3", user_id, after, page
        )
    body: dict[str, Any] = {"keypairs": [{"keypair": _list_view(request, r)} for r in rows]}
    if paged:
        links = next_links(request, "os-keypairs", len(rows), rows[-1]["name"] if rows else None)
        if links:
            body["keypairs_links"] = links
    return json_response(body)


async def show_keypair(request: web.Request) -> web.Response:
    me = caller(request)
    query_params.only_known(request, ("user_id",))
    user_id = _target_user(request, me, "show")
    name = request.match_info["name"]
    row = await ctx(request).pool.fetchrow(
        "SELECT * FROM keypairs WHERE user_id = $1 AND name = $2", user_id, name
    )
    if row is None:
        raise _not_found(name, user_id)
    return json_response({"keypair": _show_view(request, row)})


async def delete_keypair(request: web.Request) -> web.Response:
    me = caller(request)
    query_params.only_known(request, ("user_id",))
    user_id = _target_user(request, me, "delete")
    me.require_writer("os_compute_api:os-keypairs:delete")
    name = request.match_info["name"]
    status = await ctx(request).pool.execute(
        "DELETE FROM keypairs WHERE user_id = $1 AND name = $2", user_id, name
    )
    if status == "DELETE 0":
        raise _not_found(name, user_id)
    return web.Response(status=202 if requested(request) < (2, 2) else 204)


def _keypair_name(data: dict[str, Any], version: tuple[int, int]) -> str:
    name = v.name(data)
    allowed = _NAME_CHARS_292 if version >= (2, 92) else _NAME_CHARS
    if any(c not in allowed for c in name):
        raise BadRequest(
            f"An invalid 'name' value was provided. The name must be: Only expected characters: [{allowed}]"
        )
    return name


def _create_request(request: web.Request, data: Any, me: AuthContext) -> tuple[str, str, str | None, str]:
    """(name, type, public key or None, user id) from a create body, checked as the microversion's
    schema checks it."""
    version = requested(request)
    body = v.member(data, "keypair")
    allowed = {"name", "public_key"}
    if version >= (2, 2):
        allowed.add("type")
    if version >= (2, 10):
        allowed.add("user_id")
    v.only(body, allowed, "keypair")
    v.required(body, ("name", "public_key") if version >= (2, 92) else ("name",), "keypair")
    name = _keypair_name(body, version)
    key_type = body.get("type", keys.SSH)
    if key_type not in keys.TYPES:
        raise v.invalid("type", key_type, f"{key_type!r} is not one of {list(keys.TYPES)!r}")
    public_key = body.get("public_key")
    if public_key is not None and not isinstance(public_key, str):
        raise v.invalid("public_key", public_key, f"{public_key!r} is not of type 'string'")
    user_id = body.get("user_id", me.user_id)
    if not isinstance(user_id, str):
        raise v.invalid("user_id", user_id, f"{user_id!r} is not of type 'string'")
    return name, key_type, public_key, user_id


async def create_keypair(request: web.Request) -> web.Response:
    me = caller(request)
    name, key_type, public_key, user_id = _create_request(request, await v.document(request), me)
    _authorize(me, user_id, "create")
    project_id = me.require_project()
    me.require_writer("os_compute_api:os-keypairs:create")
    private_key = None
    if public_key is None:
        private_key, public_key, fingerprint = await asyncio.to_thread(keys.generate, key_type, user_id)
    else:
        fingerprint = keys.fingerprint(key_type, public_key)

    async def usage(conn: asyncpg.Connection) -> dict[str, int]:
        return await keypair_usage(conn, user_id)

    async with ctx(request).pool.acquire() as conn, conn.transaction():
        await quotas.enforce(
            conn,
            project_id,
            {"key_pairs": 1},
            usage,
            holder=f"user:{user_id}",
            message=lambda *_: "Quota exceeded, too many key pairs.",
        )
        row = await conn.fetchrow(
            "INSERT INTO keypairs (user_id, name, project_id, type, public_key, fingerprint) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, name) DO NOTHING RETURNING *",
            user_id,
            name,
            project_id,
            key_type,
            public_key,
            fingerprint,
        )
    if row is None:
        raise Conflict(f"Key pair '{name}' already exists.")
    view = {
        "name": row["name"],
        "public_key": row["public_key"],
        "fingerprint": row["fingerprint"],
        "user_id": row["user_id"],
    }
    if requested(request) >= (2, 2):
        view["type"] = row["type"]
    if private_key is not None:
        view["private_key"] = private_key
    return json_response({"keypair": view}, status=200 if requested(request) < (2, 2) else 201)


documented(
    list_keypairs,
    parameters=[
        param("user_id", description="Another user's (admin)"),
        param("limit", "integer"),
        param("marker"),
    ],
)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/os-keypairs", list_keypairs)
    r.add_post("/compute/v2.1/os-keypairs", create_keypair)
    r.add_get("/compute/v2.1/os-keypairs/{name}", show_keypair)
    r.add_delete("/compute/v2.1/os-keypairs/{name}", delete_keypair)
