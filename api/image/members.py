"""/image/v2/images/<id>/members: sharing an image with other projects, as Glance does.

Only images with visibility "shared" have members. The owner project adds and removes members;
a member project accepts or rejects (or returns to pending) its own membership and sees only
that one membership, never the others. A pending member can already reach the image by id; it
appears in the member's default image list once accepted.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.auth import AuthContext
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from api.image import access, schema
from api.image.views import member_view


def _require_shared(image: asyncpg.Record) -> None:
    if image["visibility"] != "shared":
        raise Forbidden("Only shared images have members.")


def _member_not_found(image_id: str, member_id: str) -> NotFound:
    return NotFound(f"Member {member_id} not found for image {image_id}.")


def _sees_all_members(me: AuthContext, image: asyncpg.Record) -> bool:
    return me.is_admin or access.is_owner(me, image)


async def list_members(request: web.Request) -> web.Response:
    me = caller(request)
    image_id = request.match_info["image_id"]
    async with ctx(request).pool.acquire() as conn:
        image = await access.visible_image(conn, me, image_id)
        _require_shared(image)
        if _sees_all_members(me, image):
            rows = await conn.fetch(
                "SELECT * FROM image_members WHERE image_id = $1 ORDER BY created_at, member_id", image_id
            )
        else:
            rows = await conn.fetch(
                "SELECT * FROM image_members WHERE image_id = $1 AND member_id = $2", image_id, me.project_id
            )
    return json_response({"members": [member_view(r) for r in rows], "schema": "/v2/schemas/members"})


async def add_member(request: web.Request) -> web.Response:
    me = caller(request)
    image_id = request.match_info["image_id"]
    data: Any = await json_body(request)
    member_id = data.get("member") if isinstance(data, dict) else None
    if not isinstance(member_id, str) or not member_id.strip() or len(member_id) > 255:
        raise BadRequest("Member to be added not specified")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        image = await access.visible_image(conn, me, image_id, for_update=True)
        access.require_modify(me, image, "add_member")
        _require_shared(image)
        count = await conn.fetchval("SELECT count(*) FROM image_members WHERE image_id = $1", image_id)
        if count >= schema.MEMBER_QUOTA:
            raise PayloadTooLarge(f"Maximum number of image members exceeded: {schema.MEMBER_QUOTA} allowed.")
        row = await conn.fetchrow(
            "INSERT INTO image_members (image_id, member_id) VALUES ($1, $2) ON CONFLICT DO NOTHING "
            "RETURNING *",
            image_id,
            member_id,
        )
        if row is None:
            raise Conflict(f"The target member {member_id} is already associated with image {image_id}.")
    return json_response(member_view(row))  # Glance answers 200, not 201


async def get_member(request: web.Request) -> web.Response:
    me = caller(request)
    image_id, member_id = request.match_info["image_id"], request.match_info["member_id"]
    async with ctx(request).pool.acquire() as conn:
        image = await access.visible_image(conn, me, image_id)
        _require_shared(image)
        if not _sees_all_members(me, image) and member_id != me.project_id:
            raise _member_not_found(image_id, member_id)
        row = await conn.fetchrow(
            "SELECT * FROM image_members WHERE image_id = $1 AND member_id = $2", image_id, member_id
        )
    if row is None:
        raise _member_not_found(image_id, member_id)
    return json_response(member_view(row))


async def update_member(request: web.Request) -> web.Response:
    """Only the member project itself (or an admin) answers an invitation."""
    me = caller(request)
    image_id, member_id = request.match_info["image_id"], request.match_info["member_id"]
    data: Any = await json_body(request)
    if not isinstance(data, dict) or "status" not in data:
        raise BadRequest("Status not specified")
    status = schema.check_member_status(data["status"])
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        image = await access.visible_image(conn, me, image_id)
        _require_shared(image)
        if not me.is_admin and (member_id != me.project_id or not me.can_write):
            raise access.forbidden("modify_member")
        row = await conn.fetchrow(
            "UPDATE image_members SET status = $3, updated_at = now() WHERE image_id = $1 AND member_id = $2 "
            "RETURNING *",
            image_id,
            member_id,
            status,
        )
    if row is None:
        raise _member_not_found(image_id, member_id)
    return json_response(member_view(row))


async def delete_member(request: web.Request) -> web.Response:
    me = caller(request)
    image_id, member_id = request.match_info["image_id"], request.match_info["member_id"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        image = await access.visible_image(conn, me, image_id, for_update=True)
        access.require_modify(me, image, "delete_member")
        _require_shared(image)
        status = await conn.execute(
            "DELETE FROM image_members WHERE image_id = $1 AND member_id = $2", image_id, member_id
        )
    if status == "DELETE 0":
        raise _member_not_found(image_id, member_id)
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/image/v2/images/{image_id}/members", list_members)
    r.add_post("/image/v2/images/{image_id}/members", add_member)
    r.add_get("/image/v2/images/{image_id}/members/{member_id}", get_member)
    r.add_put("/image/v2/images/{image_id}/members/{member_id}", update_member)
    r.add_delete("/image/v2/images/{image_id}/members/{member_id}", delete_member)
