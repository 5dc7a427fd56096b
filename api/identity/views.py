"""Keystone's JSON shapes for the identity resources, and lookups shared by its handlers."""

from __future__ import annotations

from typing import Any

import asyncpg

from api.errors import BadRequest, NotFound
from api.times import iso_micro


def links(base: str, collection: str) -> dict[str, Any]:
    return {"self": f"{base}/identity/v3/{collection}", "previous": None, "next": None}


def _with_extra(view: dict[str, Any], row: asyncpg.Record) -> dict[str, Any]:
    """Keystone returns the attributes it was given beside the known ones as they were given."""
    extra = {k: v for k, v in (row["extra"] or {}).items() if k not in view}
    return {**extra, **view}


def project_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    return _with_extra(
        {
            "id": row["id"],
            "name": row["name"],
            "domain_id": row["domain_id"],
            "description": row["description"],
            "enabled": row["enabled"],
            "parent_id": row["parent_id"] or row["domain_id"],
            "is_domain": False,
            "tags": list(row["tags"]),
            "options": {},
            "links": {"self": f"{base}/identity/v3/projects/{row['id']}"},
        },
        row,
    )


def domain_as_project_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    """A domain as Keystone lists it among projects (`is_domain`): a project acting as a domain."""
    return _with_extra(
        {
            "id": row["id"],
            "name": row["name"],
            "domain_id": None,
            "description": row["description"],
            "enabled": row["enabled"],
            "parent_id": None,
            "is_domain": True,
            "tags": list(row["tags"]),
            "options": {},
            "links": {"self": f"{base}/identity/v3/projects/{row['id']}"},
        },
        row,
    )


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
    return _with_extra(view, row)


def role_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    return _with_extra(
        {
            "id": row["id"],
            "name": row["name"],
            "domain_id": row["domain_id"],
            "description": row["description"],
            "options": {},
            "links": {"self": f"{base}/identity/v3/roles/{row['id']}"},
        },
        row,
    )


def role_ref(row: asyncpg.Record, base: str) -> dict[str, Any]:
    """A role as a role inference rule names it."""
    return {"id": row["id"], "name": row["name"], "links": {"self": f"{base}/identity/v3/roles/{row['id']}"}}


def group_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    return _with_extra(
        {
            "id": row["id"],
            "name": row["name"],
            "domain_id": row["domain_id"],
            "description": row["description"],
            "links": {"self": f"{base}/identity/v3/groups/{row['id']}"},
        },
        row,
    )


def keystone_time(moment: Any) -> str | None:
    """A datetime as Keystone's JSON encoder writes it (oslo's to_primitive: microseconds, no
    zone suffix), e.g. an application credential's `expires_at`."""
    return iso_micro(moment) if moment is not None else None


def app_credential_view(
    row: asyncpg.Record,
    roles: list[asyncpg.Record],
    base: str,
    *,
    access_rules: list[dict[str, Any]] | None = None,
    detail: bool = False,
) -> dict[str, Any]:
    """Keystone's application credential. Its create and list answers filter the record to the
    public fields; the show answer does not, so it alone also has `user_id` and `system`."""
    view: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "project_id": row["project_id"],
        "roles": [{"id": r["id"], "name": r["name"], "domain_id": None} for r in roles],
        "expires_at": keystone_time(row["expires_at"]),
        "unrestricted": row["unrestricted"],
        "access_rules": access_rules or [],
        "links": {"self": f"{base}/identity/v3/users/{row['user_id']}/application_credentials/{row['id']}"},
    }
    if detail:
        view.update(user_id=row["user_id"], system=None)
    return view


def domain_view(row: asyncpg.Record, base: str) -> dict[str, Any]:
    return _with_extra(
        {
            "id": row["id"],
            "name": row["name"],
            "description": row["description"],
            "enabled": row["enabled"],
            "tags": list(row["tags"]),
            "options": {},
            "links": {"self": f"{base}/identity/v3/domains/{row['id']}"},
        },
        row,
    )


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


async def domain_names(conn: Any, *ids: str | None) -> dict[str, str]:
    """Names of the domains given by id (to name them in a token)."""
    wanted = [i for i in ids if i]
    rows = await conn.fetch("SELECT id, name FROM domains WHERE id = ANY($1::text[])", wanted)
    return {r["id"]: r["name"] for r in rows}
