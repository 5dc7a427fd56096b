"""Role grants, as Keystone's routes name them: a role given to a user or a group on a project, a
domain or the system, and (OS-INHERIT) to the projects below a domain or a project:

    /projects/{p}/users/{u}/roles/{r}                 /projects/{p}/groups/{g}/roles/{r}
    /domains/{d}/users/{u}/roles/{r}                  /domains/{d}/groups/{g}/roles/{r}
    /system/users/{u}/roles/{r}                       /system/groups/{g}/roles/{r}
    /OS-INHERIT/domains/{d}/users/{u}/roles/{r}/inherited_to_projects   (and groups)
    /OS-INHERIT/projects/{p}/users/{u}/roles/{r}/inherited_to_projects  (and groups)

PUT grants (204, also when it exists), GET and HEAD check (204 or 404), DELETE revokes; the
collections list the roles granted there. Taking a role away revokes the tokens it reached (the
user's, or every member's of the group, on that project, domain or the system); tokens hold
their roles as the assignments say when they are used (api/effective_roles.py), so a new grant
counts at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg
from aiohttp import web

from api.context import caller, ctx, json_response
from api.errors import BadRequest, Forbidden, NotFound
from api.identity import policy
from api.identity.views import get_or_404, links, role_view


@dataclasses.dataclass(frozen=True)
class Kind:
    """One family of grant routes."""

    target: str  # "project", "domain" or "system"
    actor: str  # "user" or "group"
    inherited: bool = False

    @property
    def base(self) -> str:
        """The route's path up to `/roles` (with {target_id} and {actor_id})."""
        actors = f"{self.actor}s/{{actor_id}}"
        if self.target == "system":
            return f"/identity/v3/system/{actors}"
        prefix = "/identity/v3/OS-INHERIT" if self.inherited else "/identity/v3"
        return f"{prefix}/{self.target}s/{{target_id}}/{actors}"

    def action(self, verb: str) -> str:
        """Keystone's policy name, e.g. identity:create_grant, identity:check_system_grant_for_user."""
        noun = "grants" if verb == "list" else "grant"
        return f"{verb}_system_{noun}_for_{self.actor}" if self.target == "system" else f"{verb}_{noun}"

    @property
    def suffix(self) -> str:
        return "/inherited_to_projects" if self.inherited else ""


@dataclasses.dataclass(frozen=True)
class Target:
    """A grant's actor and target, checked to exist."""

    kind: Kind
    actor_id: str
    target_id: str | None  # None: the system
    domain_id: str | None  # the target's domain (the project's), for domain-scoped policy

    def where(self, first: int = 1) -> tuple[str, list[Any]]:
        """A WHERE clause naming the assignments of this actor on this target (and its args)."""
        kind = self.kind
        user = self.actor_id if kind.actor == "user" else None
        group = self.actor_id if kind.actor == "group" else None
        project = self.target_id if kind.target == "project" else None
        domain = self.target_id if kind.target == "domain" else None
        n = first
        sql = (
            f"user_id IS NOT DISTINCT FROM ${n} AND group_id IS NOT DISTINCT FROM ${n + 1} "
            f"AND project_id IS NOT DISTINCT FROM ${n + 2} AND domain_id IS NOT DISTINCT FROM ${n + 3} "
            f"AND system = ${n + 4} AND inherited = ${n + 5}"
        )
        return sql, [user, group, project, domain, kind.target == "system", kind.inherited]

    def not_found(self, role_id: str) -> NotFound:
        scope = self.target_id if self.target_id is not None else "system"
        return NotFound(
            f"Could not find role assignment with role: {role_id}, user or group: {self.actor_id}, "
            f"project, domain, or system: {scope}."
        )


async def _target(conn: Any, kind: Kind, request: web.Request) -> Target:
    m = request.match_info
    await get_or_404(conn, "users" if kind.actor == "user" else "groups", m["actor_id"], kind.actor)
    if kind.target == "system":
        return Target(kind, m["actor_id"], None, None)
    row = await get_or_404(conn, f"{kind.target}s", m["target_id"], kind.target)
    domain_id = row["domain_id"] if kind.target == "project" else row["id"]
    return Target(kind, m["actor_id"], row["id"], domain_id)


async def _role(conn: Any, target: Target, role_id: str) -> asyncpg.Record:
    role = await get_or_404(conn, "roles", role_id, "role")
    if role["domain_id"] is None:
        return role
    if target.domain_id is None:
        raise BadRequest(f"Role {role_id} is specific to a domain and cannot be assigned on the system.")
    if role["domain_id"] != target.domain_id:
        raise Forbidden(
            f"The {target.kind.target} {target.target_id} must be in the same domain as the role "
            f"{role_id} being assigned."
        )
    return role


def _may_change(request: web.Request, target: Target, action: str) -> None:
    me = caller(request)
    if not (me.is_admin or policy.domain_admin(me, target.domain_id)):
        raise policy.denied(action)


def _may_read(request: web.Request, target: Target, action: str) -> None:
    policy.require_reader(caller(request), action, domain_id=target.domain_id)


async def _revoke_tokens(conn: Any, target: Target) -> None:
    """The tokens the assignment reached: its user's (every member's of its group) on its target
    (for a domain: on the domain and its projects; for the system: system-scoped ones)."""
    kind = target.kind
    if kind.actor == "user":
        users = [target.actor_id]
    else:
        rows = await conn.fetch("SELECT user_id FROM group_members WHERE group_id = $1", target.actor_id)
        users = [r["user_id"] for r in rows]
    project = target.target_id if kind.target == "project" else None
    domain = target.target_id if kind.target == "domain" else None
    await conn.executemany(
        "INSERT INTO token_revocations (user_id, project_id, domain_id, system) VALUES ($1, $2, $3, $4)",
        [(u, project, domain, kind.target == "system") for u in users],
    )


def _grant(kind: Kind) -> Any:
    async def grant(request: web.Request) -> web.Response:
        async with ctx(request).pool.acquire() as conn, conn.transaction():
            target = await _target(conn, kind, request)
            _may_change(
                request,
                target,
                kind.action("create"),
            )
            role = await _role(conn, target, request.match_info["role_id"])
            where, args = target.where(2)
            exists = await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM role_assignments WHERE role_id = $1 AND {where})",
                role["id"],
                *args,
            )
            if not exists:
                await conn.execute(
                    "INSERT INTO role_assignments (role_id, user_id, group_id, project_id, domain_id, "
                    "system, inherited) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    role["id"],
                    *args,
                )
        return web.Response(status=204)

    return grant


def _check(kind: Kind) -> Any:
    async def check(request: web.Request) -> web.Response:
        async with ctx(request).pool.acquire() as conn:
            target = await _target(conn, kind, request)
            _may_read(
                request,
                target,
                kind.action("check"),
            )
            role = await get_or_404(conn, "roles", request.match_info["role_id"], "role")
            where, args = target.where(2)
            exists = await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM role_assignments WHERE role_id = $1 AND {where})",
                role["id"],
                *args,
            )
        if not exists:
            raise target.not_found(role["id"])
        return web.Response(status=204)

    return check


def _revoke(kind: Kind) -> Any:
    async def revoke(request: web.Request) -> web.Response:
        async with ctx(request).pool.acquire() as conn, conn.transaction():
            target = await _target(conn, kind, request)
            _may_change(
                request,
                target,
                kind.action("revoke"),
            )
            role = await get_or_404(conn, "roles", request.match_info["role_id"], "role")
            where, args = target.where(2)
            status = await conn.execute(
                f"DELETE FROM role_assignments WHERE role_id = $1 AND {where}", role["id"], *args
            )
            if status == "DELETE 0":
                raise target.not_found(role["id"])
            await _revoke_tokens(conn, target)
        return web.Response(status=204)

    return revoke


def _list(kind: Kind) -> Any:
    async def list_(request: web.Request) -> web.Response:
        context = ctx(request)
        async with context.pool.acquire() as conn:
            target = await _target(conn, kind, request)
            _may_read(
                request,
                target,
                kind.action("list"),
            )
            where, args = target.where(1)
            rows = await conn.fetch(
                f"SELECT r.* FROM roles r WHERE r.id IN (SELECT role_id FROM role_assignments WHERE {where}) "
                "ORDER BY r.name",
                *args,
            )
        path = request.path.removeprefix("/identity/v3/")
        return json_response(
            {"roles": [role_view(r, context.base_url) for r in rows], "links": links(context.base_url, path)}
        )

    return list_


KINDS = [
    Kind(target, actor, inherited)
    for target, inherited in (
        ("project", False),
        ("domain", False),
        ("system", False),
        ("domain", True),
        ("project", True),
    )
    for actor in ("user", "group")
]


def setup(app: web.Application) -> None:
    r = app.router
    for kind in KINDS:
        one = f"{kind.base}/roles/{{role_id}}{kind.suffix}"
        r.add_put(one, _grant(kind))
        r.add_get(one, _check(kind), allow_head=False)
        r.add_head(one, _check(kind))
        r.add_delete(one, _revoke(kind))
        if not (kind.inherited and kind.target == "project"):  # Keystone lists no such collection
            r.add_get(f"{kind.base}/roles{kind.suffix}", _list(kind))
