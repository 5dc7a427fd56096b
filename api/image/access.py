"""Who may see and who may change an image: Glance's default policies, in one place.

Seeing: an admin sees every image. Anyone else sees public and community images, the images
their project owns, and shared images their project is a member of (pending, accepted or
rejected alike when asking by id; listings narrow members further by member status). An image
a caller may not see does not exist for them: 404, never 403, so its id reveals nothing.

Changing: only the owner project (with the member role) or an admin writes an image, its data,
tags and members; a reader, or a project the image is merely shared with, gets 403.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from api.auth import AuthContext
from api.errors import Forbidden, NotFound


def visible_sql(project: str, member_status: str | None = None) -> str:
    """An SQL condition on `images i`: visible to the project named by placeholder `project`;
    shared images count only for memberships in `member_status` (a placeholder) when given."""
    status = f" AND m.status = {member_status}" if member_status else ""
    return (
        f"(i.owner = {project} OR i.visibility IN ('public', 'community') OR (i.visibility = 'shared' "
        "AND EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = i.id "
        f"AND m.member_id = {project}{status})))"
    )


def not_found(image_id: str) -> NotFound:
    return NotFound(f"No image found with ID {image_id}")


async def visible_image(
    conn: Any, me: AuthContext, image_id: str, *, for_update: bool = False
) -> asyncpg.Record:
    """The image as the caller may see it, locked for the transaction when `for_update`."""
    lock = " FOR UPDATE OF i" if for_update else ""
    if me.is_admin:
        row = await conn.fetchrow(f"SELECT * FROM images i WHERE i.id = $1{lock}", image_id)
    else:
        row = await conn.fetchrow(
            f"SELECT * FROM images i WHERE i.id = $1 AND {visible_sql('$2')}{lock}", image_id, me.project_id
        )
    if row is None:
        raise not_found(image_id)
    return row


def is_owner(me: AuthContext, image: asyncpg.Record) -> bool:
    return image["owner"] is not None and image["owner"] == me.project_id


def require_modify(me: AuthContext, image: asyncpg.Record, action: str = "modify_image") -> None:
    """The owner project's members and admins may change an image."""
    if me.is_admin:
        return
    if not (is_owner(me, image) and me.can_write):
        raise forbidden(action)


def forbidden(action: str) -> Forbidden:
    return Forbidden(f"You are not authorized to complete {action} action.")
