"""Finding a server as a request's caller may see it: what every /servers/{id}/... handler does
first (servers, their metadata, actions, console, IPs and volume attachments).

It imports none of those handlers' modules, so all of them can use it.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from api.auth import AuthContext
from api.errors import NotFound


def not_found(server_id: str) -> NotFound:
    return NotFound(f"Instance {server_id} could not be found.")


async def find(conn: Any, me: AuthContext, server_id: str) -> asyncpg.Record:
    """The server if the caller may see it (own project, or any for an admin); deleted ones are gone."""
    row = await conn.fetchrow("SELECT * FROM servers WHERE id = $1 AND vm_state <> 'deleted'", server_id)
    if row is None or (not me.is_admin and row["project_id"] != me.project_id):
        raise not_found(server_id)
    return row
