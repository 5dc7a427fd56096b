"""Who may see and who may change metadata definitions: Glance's default metadef policies.

Seeing: an admin sees every namespace; anyone else sees the public ones and those their project
owns. A namespace a caller may not see does not exist for them (404), and neither does anything
in it. Changing (creating, updating, deleting a namespace or anything in it): admins only, as
Glance's `metadef_admin` rule; anyone else gets 403 on what they can see.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from api.auth import AuthContext
from api.errors import Forbidden, NotFound


def visible_sql(project: str) -> str:
    """An SQL condition on `metadef_namespaces n` for a non-admin whose project is the
    placeholder `project`."""
    return f"(n.visibility = 'public' OR n.owner = {project})"


def namespace_not_found(name: str) -> NotFound:
    return NotFound(f"Metadata definition namespace={name} was not found.")


async def namespace(
    conn: Any, me: AuthContext, name: str, *, for_update: bool = False, inner: bool = True
) -> asyncpg.Record:
    """The namespace as the caller may see it (locked for the transaction when `for_update`).
    `inner`: the lookup is for something in the namespace, whose 404 says so in Glance's words."""
    lock = " FOR UPDATE" if for_update else ""
    if me.is_admin:
        row = await conn.fetchrow(f"SELECT * FROM metadef_namespaces n WHERE n.namespace = $1{lock}", name)
    else:
        row = await conn.fetchrow(
            f"SELECT * FROM metadef_namespaces n WHERE n.namespace = $1 AND {visible_sql('$2')}{lock}",
            name,
            me.project_id,
        )
    if row is None:
        raise NotFound(f"Namespace {name} not found") if inner else namespace_not_found(name)
    return row


def require_admin(me: AuthContext, action: str) -> None:
    """Glance's `metadef_admin` rule for every change."""
    if not me.is_admin:
        raise Forbidden(f"You are not authorized to complete {action} action.")


def refuse_if_protected(namespace: asyncpg.Record, message: str) -> None:
    """Nothing in a protected namespace is deleted (Glance's Protected*Delete, 403)."""
    if namespace["protected"]:
        raise Forbidden(message)
