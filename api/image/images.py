"""/image/v2/images: image records — create, list, show, JSON-patch update, delete — with their
tags and the deactivate/reactivate actions. Data upload and download are in
`api/image/data.py`, sharing in `api/image/members.py`.

Every change to an image row happens in one transaction that first locks the row (SELECT …
FOR UPDATE), so two concurrent patches apply one after the other and none is lost.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import asyncpg
import structlog
from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, UnsupportedMediaType
from api.image import access, info, patch, query, schema, store
from api.image.views import image_view
from api.sql import Sql
from protocol.states import ImageStatus

log = structlog.get_logger("api.image")


def split_create_body(data: Any) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(image attributes, extra properties, tags) of a create request, refused as Glance does."""
    if not isinstance(data, dict):
        raise BadRequest(f"Provided object does not match schema 'image': {data!r} is not of type 'object'")
    attributes: dict[str, Any] = {}
    properties: dict[str, str] = {}
    for key, value in data.items():
        if key != "id":
            schema.check_writable(key)
        schema.check_value(key, value)
        if key in schema.BASE:
            attributes[key] = value
        else:
            properties[key] = value
    tags = list(dict.fromkeys(attributes.pop("tags", [])))
    if len(properties) > schema.PROPERTY_QUOTA:
        raise PayloadTooLarge(
            f"Maximum number of image properties exceeded: {len(properties)} of "
            f"{schema.PROPERTY_QUOTA} allowed."
        )
    if len(tags) > schema.TAG_QUOTA:
        raise PayloadTooLarge(
            f"Maximum number of image tags exceeded: {len(tags)} of {schema.TAG_QUOTA} allowed."
        )
    return attributes, properties, tags


async def insert_image(
    conn: Any, owner: str | None, attributes: dict[str, Any], properties: dict[str, str], tags: list[str]
) -> asyncpg.Record:
    """A new queued image (the caller checked who may create it); 409 when its id is taken."""
    image_id = attributes.get("id") or str(uuid.uuid4())
    try:
        return await conn.fetchrow(
            "INSERT INTO images (id, name, owner, visibility, disk_format, container_format, min_disk, "
            "min_ram, protected, os_hidden, tags, properties) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
            "$10, $11, $12) RETURNING *",
            image_id,
            attributes.get("name"),
            owner,
            attributes.get("visibility", "shared"),
            attributes.get("disk_format"),
            attributes.get("container_format"),
            attributes.get("min_disk", 0),
            attributes.get("min_ram", 0),
            attributes.get("protected", False),
            attributes.get("os_hidden", False),
            tags,
            properties,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"Image with identifier {image_id} already exists!") from None


async def create_image(request: web.Request) -> web.Response:
    me = caller(request)
    project_id = me.require_project()
    if not me.can_write:
        raise access.forbidden("add_image")
    attributes, properties, tags = split_create_body(await json_body(request))
    owner = attributes.get("owner", project_id)
    if owner != project_id and not me.is_admin:
        raise access.forbidden("add_image")
    if attributes.get("visibility") == "public" and not me.is_admin:
        raise access.forbidden("publicize_image")
    context = ctx(request)
    async with context.pool.acquire() as conn:
        row = await insert_image(conn, owner, attributes, properties, tags)
    headers = {"Location": f"{context.base_url}/image/v2/images/{row['id']}", **info.CREATE_HEADERS}
    return json_response(image_view(row), status=201, headers=headers)


async def list_images(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    params = request.query
    order = query.sort_order(params)
    limit = query.limit(params)
    sql = Sql()
    query.add_filters(sql, params, me)
    async with context.pool.acquire() as conn:
        marker = params.get("marker")
        if marker is not None:
            try:
                marker_row = await access.visible_image(conn, me, marker)
            except NotFound:
                raise BadRequest(f"Marker {marker} could not be found.") from None
            query.add_after(sql, order, marker_row)
        one_more = sql.arg(limit + 1)  # one past the page says whether there is a next one
        rows = await conn.fetch(
            f"SELECT * FROM images i WHERE {sql.clause()} ORDER BY {query.order_by(order)} LIMIT {one_more}",
            *sql.args,
        )
    page = rows[:limit]
    kept = [(k, v) for k, v in params.items() if k != "marker"]
    body: dict[str, Any] = {
        "images": [image_view(r) for r in page],
        "first": "/v2/images" + (f"?{urlencode(kept)}" if kept else ""),
        "schema": "/v2/schemas/images",
    }
    if len(rows) > limit and page:
        body["next"] = f"/v2/images?{urlencode([*kept, ('marker', page[-1]['id'])])}"
    return json_response(body)


async def get_image(request: web.Request) -> web.Response:
    row = await access.visible_image(ctx(request).pool, caller(request), request.match_info["image_id"])
    return json_response(image_view(row))


async def update_image(request: web.Request) -> web.Response:
    me = caller(request)
    draft = patch.MEDIA_TYPES.get(request.content_type)
    if draft is None:
        accepted = ", ".join(sorted(patch.MEDIA_TYPES))
        raise UnsupportedMediaType(
            f"Content type {request.content_type} is not supported; send one of {accepted}.",
            headers={"Accept-Patch": accepted},
        )
    changes = patch.parse(await json_body(request), draft)
    image_id = request.match_info["image_id"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await access.visible_image(conn, me, image_id, for_update=True)
        access.require_modify(me, row)
        current = {key: row[key] for key in schema.MUTABLE}
        current.update(tags=list(row["tags"]), properties=row["properties"], status=row["status"])
        image = patch.apply(current, changes, draft=draft, is_admin=me.is_admin)
        if changes:
            row = await conn.fetchrow(
                "UPDATE images SET name = $2, visibility = $3, protected = $4, os_hidden = $5, owner = $6, "
                "container_format = $7, disk_format = $8, tags = $9, min_ram = $10, min_disk = $11, "
                "properties = $12, updated_at = now() WHERE id = $1 RETURNING *",
                image_id,
                image["name"],
                image["visibility"],
                image["protected"],
                image["os_hidden"],
                image["owner"],
                image["container_format"],
                image["disk_format"],
                image["tags"],
                image["min_ram"],
                image["min_disk"],
                image["properties"],
            )
    return json_response(image_view(row))


async def delete_image(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    image_id = request.match_info["image_id"]
    async with context.pool.acquire() as conn, conn.transaction():
        row = await access.visible_image(conn, me, image_id, for_update=True)
        access.require_modify(me, row, "delete_image")
        if row["protected"]:
            raise Forbidden(f"Image {image_id} is protected and cannot be deleted.")
        await conn.execute("DELETE FROM images WHERE id = $1", image_id)
    try:
        await store.remove(store.image_path(context.state_dir, image_id))
        await store.remove(store.staging_path(context.state_dir, image_id))
    except OSError:
        # The record is gone, which is what the client asked for; the orphan file is logged.
        log.exception("could not remove the data of a deleted image", image_id=image_id)
    return web.Response(status=204)


async def add_tag(request: web.Request) -> web.Response:
    me = caller(request)
    image_id, tag = request.match_info["image_id"], request.match_info["tag"]
    schema.check_value("tags", [tag])
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await access.visible_image(conn, me, image_id, for_update=True)
        access.require_modify(me, row)
        if tag not in row["tags"]:
            if len(row["tags"]) >= schema.TAG_QUOTA:
                raise PayloadTooLarge(f"Maximum number of image tags exceeded: {schema.TAG_QUOTA} allowed.")
            await conn.execute(
                "UPDATE images SET tags = array_append(tags, $2), updated_at = now() WHERE id = $1",
                image_id,
                tag,
            )
    return web.Response(status=204)


async def delete_tag(request: web.Request) -> web.Response:
    me = caller(request)
    image_id, tag = request.match_info["image_id"], request.match_info["tag"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await access.visible_image(conn, me, image_id, for_update=True)
        access.require_modify(me, row)
        if tag not in row["tags"]:
            raise NotFound(f"Tag {tag} not found on image {image_id}.")
        await conn.execute(
            "UPDATE images SET tags = array_remove(tags, $2), updated_at = now() WHERE id = $1", image_id, tag
        )
    return web.Response(status=204)


async def _set_activation(request: web.Request, *, action: str, source: str, target: str) -> web.Response:
    """Deactivate (active → deactivated) or reactivate (the reverse); idempotent. Glance's default
    policy: an admin, or a member of the image's owner project (a project the image is shared
    with may see it but gets 403)."""
    me = caller(request)
    image_id = request.match_info["image_id"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await access.visible_image(conn, me, image_id, for_update=True)
        access.require_modify(me, row, action)
        if row["status"] == source:
            await conn.execute(
                "UPDATE images SET status = $2, updated_at = now() WHERE id = $1", image_id, target
            )
        elif row["status"] != target:
            raise Forbidden(f"Not allowed to {action} image in status '{row['status']}'")
    return web.Response(status=204)


async def deactivate(request: web.Request) -> web.Response:
    return await _set_activation(
        request, action="deactivate", source=ImageStatus.ACTIVE, target=ImageStatus.DEACTIVATED
    )


async def reactivate(request: web.Request) -> web.Response:
    return await _set_activation(
        request, action="reactivate", source=ImageStatus.DEACTIVATED, target=ImageStatus.ACTIVE
    )


def setup(app: web.Application) -> None:
    r = app.router
    list_images.query_parameters = query.PARAMETERS  # for /openapi.json
    r.add_get("/image/v2/images", list_images)
    r.add_post("/image/v2/images", create_image)
    r.add_get("/image/v2/images/{image_id}", get_image)
    r.add_patch("/image/v2/images/{image_id}", update_image)
    r.add_delete("/image/v2/images/{image_id}", delete_image)
    r.add_put("/image/v2/images/{image_id}/tags/{tag}", add_tag)
    r.add_delete("/image/v2/images/{image_id}/tags/{tag}", delete_tag)
    r.add_post("/image/v2/images/{image_id}/actions/deactivate", deactivate)
    r.add_post("/image/v2/images/{image_id}/actions/reactivate", reactivate)
