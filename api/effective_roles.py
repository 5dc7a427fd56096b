"""Keystone's effective roles: what a user holds at this moment on a project, a domain or the
system.

A user holds the roles assigned to them or to one of their groups on the target itself, for a
project also those inherited (OS-INHERIT) from its domain or from a project above it, and every
role those imply (role inference rules, followed transitively). Domain-specific roles are never
held themselves: only the global roles they imply are.

A token carries no roles (as Keystone's Fernet tokens): they are computed whenever it is used
(api/middleware.py) or validated, so a role granted after a token was issued counts at once, and
one taken away stops counting at once. A trust's token holds the trust's roles that its trustor
still holds on the trust's project; an application credential's, the credential's roles that
its user still holds on its project (`delegated`).
"""

from __future__ import annotations

import re
from typing import Any

Role = tuple[str, str]  # (id, name)

# The user or one of their groups ($1 is the user): evaluated on the few assignments a target's
# index finds, never as a scan of every assignment.
_ACTOR = "(a.user_id = $1 OR a.group_id IN (SELECT group_id FROM group_members WHERE user_id = $1))"

# Each yields the ids of the roles assigned on the scope ($2: the project or the domain): on the
# project itself, inherited from its domain, inherited from a project above it.
_ASSIGNED_ON_PROJECT = f"""
    SELECT a.role_id FROM role_assignments a WHERE a.project_id = $2 AND NOT a.inherited AND {_ACTOR}
    UNION ALL
    SELECT a.role_id FROM role_assignments a
    WHERE a.domain_id = (SELECT domain_id FROM projects WHERE id = $2) AND a.inherited AND {_ACTOR}
    UNION ALL
    SELECT a.role_id FROM role_assignments a
    WHERE a.project_id = ANY (ARRAY(SELECT id FROM ancestors)) AND a.inherited AND {_ACTOR}
"""
_ANCESTORS = """
    ancestors (id) AS (
        SELECT parent_id FROM projects WHERE id = $2 AND parent_id IS NOT NULL
        UNION SELECT p.parent_id FROM projects p JOIN ancestors c ON p.id = c.id
        WHERE p.parent_id IS NOT NULL),
"""
_ASSIGNED_ON_DOMAIN = (
    f"SELECT a.role_id FROM role_assignments a WHERE a.domain_id = $2 AND NOT a.inherited AND {_ACTOR}"
)
# The system: the user's own assignments and their groups' (each by its index), on the system.
_ASSIGNED_ON_SYSTEM = """
    SELECT a.role_id FROM role_assignments a WHERE a.user_id = $1 AND a.system
    UNION ALL
    SELECT a.role_id FROM group_members g JOIN role_assignments a ON a.group_id = g.group_id
    WHERE g.user_id = $1 AND a.system
"""

# Implications followed transitively (UNION stops at a cycle), global roles only.
_EXPANDED = """
    implied (role_id) AS (
        SELECT role_id FROM granted
        UNION SELECT i.implied_role_id FROM implied_roles i JOIN implied ON i.prior_role_id = implied.role_id)
    SELECT r.id, r.name FROM roles r
    WHERE r.id IN (SELECT role_id FROM implied) AND r.domain_id IS NULL ORDER BY r.name
"""

ON_PROJECT = f"WITH RECURSIVE {_ANCESTORS} granted AS ({_ASSIGNED_ON_PROJECT}), {_EXPANDED}"
ON_DOMAIN = f"WITH RECURSIVE granted AS ({_ASSIGNED_ON_DOMAIN}), {_EXPANDED}"
ON_SYSTEM = f"WITH RECURSIVE granted AS ({_ASSIGNED_ON_SYSTEM}), {_EXPANDED}"
EXPAND = f"WITH RECURSIVE granted AS (SELECT unnest($1::text[]) AS role_id), {_EXPANDED}"


def scope_sql(*, project: bool, domain: bool, system: bool, user: str, target: str) -> str:
    """The query of the user's roles on a project, a domain or the system, its parameters named
    `user` and `target` (e.g. "$10", "$11"), to be a part of a larger query."""
    template = ON_PROJECT if project else ON_DOMAIN if domain else ON_SYSTEM
    if not (project or domain or system):
        raise ValueError("an unscoped token holds no roles")
    return re.sub(r"\$([12])(?!\d)", lambda m: user if m.group(1) == "1" else target, template)


def _pairs(rows: Any) -> list[Role]:
    return [(r["id"], r["name"]) for r in rows]


async def on_project(conn: Any, user_id: str, project_id: str) -> list[Role]:
    return _pairs(await conn.fetch(ON_PROJECT, user_id, project_id))


async def on_domain(conn: Any, user_id: str, domain_id: str) -> list[Role]:
    return _pairs(await conn.fetch(ON_DOMAIN, user_id, domain_id))


async def on_system(conn: Any, user_id: str) -> list[Role]:
    return _pairs(await conn.fetch(ON_SYSTEM, user_id))


async def expand(conn: Any, role_ids: list[str]) -> list[Role]:
    """The roles given and every global role they imply."""
    return _pairs(await conn.fetch(EXPAND, role_ids))


async def on_scope(
    conn: Any,
    user_id: str,
    *,
    project_id: str | None = None,
    domain_id: str | None = None,
    system: bool = False,
) -> list[Role]:
    """The user's roles on the scope a token names; none for an unscoped token."""
    if project_id is not None:
        return await on_project(conn, user_id, project_id)
    if domain_id is not None:
        return await on_domain(conn, user_id, domain_id)
    if system:
        return await on_system(conn, user_id)
    return []


def delegated(holder_roles: list[Role], delegated_ids: list[str]) -> list[Role]:
    """The delegated roles that the delegating user still holds (as Keystone, what a delegated
    role implies is not delegated with it)."""
    wanted = set(delegated_ids)
    return [role for role in holder_roles if role[0] in wanted]


# The projects on which a user holds a role: assigned there (to them or a group of theirs), or
# inherited from its domain or a project above it. $1 is the user.
_PROJECTS_OF_USER = f"""
WITH RECURSIVE mine AS (SELECT a.* FROM role_assignments a WHERE {_ACTOR}),
below (id) AS (
    SELECT p.id FROM projects p JOIN mine m ON m.inherited AND m.project_id = p.parent_id
    UNION SELECT p.id FROM projects p JOIN below b ON p.parent_id = b.id)
SELECT p.* FROM projects p
WHERE p.id IN (SELECT project_id FROM mine WHERE NOT inherited)
    OR p.domain_id IN (SELECT domain_id FROM mine WHERE inherited)
    OR p.id IN (SELECT id FROM below)
ORDER BY p.name
"""
_DOMAINS_OF_USER = (
    f"SELECT d.* FROM domains d WHERE d.id IN (SELECT a.domain_id FROM role_assignments a "
    f"WHERE NOT a.inherited AND {_ACTOR}) ORDER BY d.name"
)
_HAS_SYSTEM_ROLE = f"SELECT EXISTS (SELECT 1 FROM role_assignments a WHERE a.system AND {_ACTOR})"


async def projects_of(conn: Any, user_id: str, *, enabled_only: bool = False) -> list[Any]:
    """The projects the user holds a role on (enabled ones in enabled domains only, for the
    scopes they may ask a token for)."""
    rows = await conn.fetch(_PROJECTS_OF_USER, user_id)
    if not enabled_only:
        return list(rows)
    disabled = {r["id"] for r in await conn.fetch("SELECT id FROM domains WHERE NOT enabled")}
    return [r for r in rows if r["enabled"] and r["domain_id"] not in disabled]


async def domains_of(conn: Any, user_id: str) -> list[Any]:
    """The domains the user holds a role on (to them or a group of theirs), enabled ones."""
    return [r for r in await conn.fetch(_DOMAINS_OF_USER, user_id) if r["enabled"]]


async def has_system_role(conn: Any, user_id: str) -> bool:
    return bool(await conn.fetchval(_HAS_SYSTEM_ROLE, user_id))
