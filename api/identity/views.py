"""Keystone's JSON shapes for the identity resources, and lookups shared by its handlers."""

from __future__ import annotations

from typing import Any

import asyncpg

from api.errors import BadRequest, NotFound
from api.times import iso_micro

# Keystone's default role hierarchy: admin implies member implies reader.
IMPLIED = {"admin": ("member", "reader"), "member": ("reader",), "reader": ()}


def links(base: str, collection: str) -> dict[str, Any]:
    return {"self": f"{base}/identity/v3/{collection}", "previous": None, "next": None}


def project_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "domain_id": row["domain_id"],
        "description": row["description"],
        "enabled": row["enabled"],
        "parent_id": row["domain_id"],
        "is_domain": False,
        "tags": list(row["tags"]),
        "options": {},
        "links": {"self": f"{base}/identity/v3/projects/{row['id']}"},
    }


def user_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "domain_id": row["domain_id"],
        "enabled": row["enabled"],
        "password_expires_at": None,
        "options": {},
        "links": {"self": f"{base}/identity/v3/users/{row['id']}"},
    }
    if row["default_project_id"]:
        view["default_project_id"] = row["default_project_id"]
    if row["email"]:
        view["email"] = row["email"]
    if row["description"]:
        view["description"] = row["description"]
    return view


def role_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "domain_id": None,
        "description": None,
        "options": {},
        "links": {"self": f"{base}/identity/v3/roles/{row['id']}"},
    }


def app_credential_view(
    row: asyncpg.Record, roles: list[asyncpg.Record], base: str, *, detail: bool = False
) -> dict[str, Any]:
    """Keystone's application credential. Its create and list answers filter the record to the
    public fields; the show answer does not, so it alone also has `user_id` and `system`."""
    expires_at = row["expires_at"]
    view: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "project_id": row["project_id"],
        "roles": [{"id": r["id"], "name": r["name"], "domain_id": None} for r in roles],
        "expires_at": iso_micro(expires_at) + "Z" if expires_at is not None else None,
        "unrestricted": row["unrestricted"],
        "access_rules": [],
        "links": {"self": f"{base}/identity/v3/users/{row['user_id']}/application_credentials/{row['id']}"},
    }
    if detail:
        view.update(user_id=row["user_id"], system=None)
    return view


def domain_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "enabled": row["enabled"],
        "tags": [],
        "options": {},
        "links": {"self": f"{base}/identity/v3/domains/{row['id']}"},
    }


async def find_domain(conn: Any, ref: Any, *, what: str = "domain") -> asyncpg.Record:
    """A domain from {"id": …} or {"name": …}."""
    if not isinstance(ref, dict) or not (ref.get("id") or ref.get("name")):
        raise BadRequest(f"Expecting to find id or name in {what}.")
    if ref.get("id"):
        row = await conn.fetchrow("SELECT * FROM domains WHERE id = $1", str(ref["id"]))
    else:
        row = await conn.fetchrow("SELECT * FROM domains WHERE name = $1", str(ref["name"]))
    if row is None:
        raise NotFound(f"Could not find domain: {ref.get('id') or ref.get('name')}.")
    return row


async def get_or_404(conn: Any, table: str, id_: str, what: str) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT * FROM {table} WHERE id = $1", id_)
    if row is None:
        raise NotFound(f"Could not find {what}: {id_}.")
    return row


async def effective_roles(conn: Any, user_id: str, project_id: str) -> list[tuple[str, str]]:
    """(id, name) of the user's roles on the project, implied roles included."""
    rows = await conn.fetch(
        "SELECT r.id, r.name FROM role_assignments a JOIN roles r ON r.id = a.role_id "
        "WHERE a.user_id = $1 AND a.project_id = $2",
        user_id,
        project_id,
    )
    names = {r["name"] for r in rows}
    for name in list(names):
        names.update(IMPLIED.get(name, ()))
    all_roles = await conn.fetch(
        "SELECT id, name FROM roles WHERE name = ANY($1::text[]) ORDER BY name", list(names)
    )
    return [(r["id"], r["name"]) for r in all_roles]
