"""GET /identity/v3/role_assignments: Keystone's list of role assignments.

As stored (user or group; project, domain or system; inherited to projects), or with
`effective`: what they amount to for users on projects, domains and the system: a group's become
its members', an inherited one becomes one per project below its domain or project, the roles a
role implies are listed after it (with a `prior_role` link), and domain-specific roles, which a
token never holds, are left out. Filters: `user.id`, `group.id`, `role.id`, `scope.project.id`
(with `include_subtree`), `scope.domain.id`, `scope.system`, `scope.OS-INHERIT:inherited_to`;
`include_names` adds the names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg
from aiohttp import web

from api.context import caller, ctx, json_response
from api.errors import BadRequest
from api.identity import policy
from api.identity.views import links
from api.query_doc import documented, param, strings
from api.sql import Sql


@dataclasses.dataclass
class Entry:
    """One assignment in the answer."""

    role_id: str
    user_id: str | None
    group_id: str | None
    project_id: str | None
    domain_id: str | None
    system: bool
    inherited: bool
    source: str  # the assignment's own link
    membership: str | None = None  # the group membership it came through (effective)
    prior_role: str | None = None  # the role that implies it (effective)


def _flag(q: Any, key: str) -> bool:
    value = q.get(key)
    return value is not None and value.lower() not in ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class Query:
    user_id: str | None
    group_id: str | None
    role_id: str | None
    project_id: str | None
    domain_id: str | None
    system: bool
    inherited_only: bool
    effective: bool
    include_names: bool
    include_subtree: bool

    @classmethod
    def of(cls, q: Any) -> Query:
        effective = "effective" in q and q.get("effective", "").lower() not in ("0", "false", "no", "off")
        query = cls(
            user_id=q.get("user.id"),
            group_id=q.get("group.id"),
            role_id=q.get("role.id"),
            project_id=q.get("scope.project.id"),
            domain_id=q.get("scope.domain.id"),
            system="scope.system" in q,
            inherited_only=q.get("scope.OS-INHERIT:inherited_to") == "projects",
            effective=effective,
            include_names=_flag(q, "include_names"),
            include_subtree=_flag(q, "include_subtree"),
        )
        if query.effective and query.group_id:
            raise BadRequest("Combining effective and group filter will always result in an empty list.")
        if sum(map(bool, (query.project_id, query.domain_id, query.system))) > 1:
            raise BadRequest("Specify a domain, a project or the system, not more than one.")
        if query.include_subtree and not query.project_id:
            raise BadRequest("scope.project.id needs to be specified if include_subtree is also specified.")
        return query


def _link(base: str, r: Any) -> str:
    actor = f"users/{r['user_id']}" if r["user_id"] else f"groups/{r['group_id']}"
    if r["system"]:
        return f"{base}/identity/v3/system/{actor}/roles/{r['role_id']}"
    target = f"projects/{r['project_id']}" if r["project_id"] else f"domains/{r['domain_id']}"
    if r["inherited"]:
        return f"{base}/identity/v3/OS-INHERIT/{target}/{actor}/roles/{r['role_id']}/inherited_to_projects"
    return f"{base}/identity/v3/{target}/{actor}/roles/{r['role_id']}"


async def _projects_in_scope(conn: Any, query: Query) -> list[str] | None:
    """The projects the answer may name: the one asked for (and its subtree), or None for any."""
    if not query.project_id:
        return None
    if not query.include_subtree:
        return [query.project_id]
    rows = await conn.fetch(
        "WITH RECURSIVE tree (id) AS (SELECT id FROM projects WHERE id = $1 "
        "UNION SELECT p.id FROM projects p JOIN tree t ON p.parent_id = t.id) SELECT id FROM tree",
        query.project_id,
    )
    return [r["id"] for r in rows]


async def _stored(conn: Any, query: Query, projects: list[str] | None) -> list[asyncpg.Record]:
    """The stored assignments that may lead to an entry of the answer."""
    sql = Sql()
    if query.user_id:
        if query.effective:
            u = sql.arg(query.user_id)
            sql.where(
                f"(user_id = {u} OR group_id IN (SELECT group_id FROM group_members WHERE user_id = {u}))"
            )
        else:
            sql.where(f"user_id = {sql.arg(query.user_id)}")
    if query.group_id:
        sql.where(f"group_id = {sql.arg(query.group_id)}")
    if query.role_id and not query.effective:
        sql.where(f"role_id = {sql.arg(query.role_id)}")
    if query.inherited_only:
        sql.where("inherited")
    if query.system:
        sql.where("system")
    if query.domain_id:
        d = sql.arg(query.domain_id)
        sql.where(f"domain_id = {d} AND NOT inherited" if query.effective else f"domain_id = {d}")
    ancestors = ""
    if projects is not None:
        p = sql.arg(projects)
        if query.effective:
            # Inherited ones reach the projects from their domains and from the projects above.
            sql.where(
                f"((project_id = ANY({p}::text[]) AND NOT inherited) OR (inherited AND "
                f"(domain_id IN (SELECT domain_id FROM projects WHERE id = ANY({p}::text[])) "
                f"OR project_id IN (SELECT id FROM ancestors))))"
            )
            ancestors = (
                "WITH RECURSIVE ancestors (id) AS (SELECT parent_id FROM projects "
                f"WHERE id = ANY({p}::text[]) AND parent_id IS NOT NULL "
                "UNION SELECT p.parent_id FROM projects p JOIN ancestors c ON p.id = c.id "
                "WHERE p.parent_id IS NOT NULL) "
            )
        else:
            sql.where(f"project_id = ANY({p}::text[])")
    return await conn.fetch(
        f"{ancestors}SELECT * FROM role_assignments WHERE {sql.clause()} "
        "ORDER BY system DESC, domain_id NULLS LAST, project_id, user_id, group_id, role_id",
        *sql.args,
    )


async def _effective(
    conn: Any, rows: list[asyncpg.Record], query: Query, projects: list[str] | None, base: str
) -> list[Entry]:
    """Groups to their members, inherited assignments to the projects below, implied roles added,
    domain-specific roles dropped; then the filters the stored rows could not take."""
    members = await _members(conn, [r["group_id"] for r in rows if r["group_id"]])
    reaches = await _reaches(conn, [r for r in rows if r["inherited"]])
    implied = await _implications(conn)
    entries: list[Entry] = []
    for r in rows:
        link = _link(base, r)
        users = (
            [(r["user_id"], None)]
            if r["user_id"]
            else [
                (u, f"{base}/identity/v3/groups/{r['group_id']}/users/{u}")
                for u in members.get(r["group_id"], [])
            ]
        )
        targets = (
            reaches.get(_key(r), []) if r["inherited"] else [(r["project_id"], r["domain_id"], r["system"])]
        )
        for user_id, membership in users:
            for project_id, domain_id, system in targets:
                for role_id, prior in _with_implied(r["role_id"], implied):
                    entries.append(
                        Entry(
                            role_id,
                            user_id,
                            None,
                            project_id,
                            domain_id,
                            system,
                            False,
                            link,
                            membership,
                            f"{base}/identity/v3/roles/{prior}" if prior else None,
                        )
                    )
    return await _filtered(conn, entries, query, projects)


def _key(r: Any) -> tuple[Any, ...]:
    return (r["project_id"], r["domain_id"])


async def _members(conn: Any, group_ids: list[str]) -> dict[str, list[str]]:
    rows = await conn.fetch(
        "SELECT group_id, user_id FROM group_members WHERE group_id = ANY($1::text[]) ORDER BY user_id",
        group_ids,
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["group_id"], []).append(row["user_id"])
    return found


async def _reaches(
    conn: Any, inherited: list[asyncpg.Record]
) -> dict[tuple[Any, ...], list[tuple[Any, ...]]]:
    """For each domain or project an inherited assignment is on, the projects it reaches."""
    found: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for r in inherited:
        key = _key(r)
        if key in found:
            continue
        if r["domain_id"]:
            rows = await conn.fetch(
                "SELECT id FROM projects WHERE domain_id = $1 ORDER BY name", r["domain_id"]
            )
        else:
            rows = await conn.fetch(
                "WITH RECURSIVE below (id) AS (SELECT id FROM projects WHERE parent_id = $1 "
                "UNION SELECT p.id FROM projects p JOIN below b ON p.parent_id = b.id) SELECT id FROM below",
                r["project_id"],
            )
        found[key] = [(row["id"], None, False) for row in rows]
    return found


async def _implications(conn: Any) -> dict[str, list[str]]:
    rows = await conn.fetch("SELECT prior_role_id, implied_role_id FROM implied_roles")
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["prior_role_id"], []).append(row["implied_role_id"])
    return found


def _with_implied(role_id: str, implied: dict[str, list[str]]) -> list[tuple[str, str | None]]:
    """The role, then every role it implies (transitively), each with the role implying it."""
    result: list[tuple[str, str | None]] = [(role_id, None)]
    seen = {role_id}
    i = 0
    while i < len(result):
        current = result[i][0]
        for nxt in implied.get(current, []):
            if nxt not in seen:
                seen.add(nxt)
                result.append((nxt, current))
        i += 1
    return result


async def _filtered(conn: Any, entries: list[Entry], query: Query, projects: list[str] | None) -> list[Entry]:
    domain_roles = {
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM roles WHERE domain_id IS NOT NULL AND id = ANY($1::text[])",
            list({e.role_id for e in entries}),
        )
    }
    kept = []
    for e in entries:
        if e.role_id in domain_roles:
            continue
        if query.user_id and e.user_id != query.user_id:
            continue
        if query.role_id and e.role_id != query.role_id:
            continue
        if projects is not None and e.project_id not in projects:
            continue
        kept.append(e)
    return kept


def _stored_entries(rows: list[asyncpg.Record], base: str) -> list[Entry]:
    return [
        Entry(
            r["role_id"],
            r["user_id"],
            r["group_id"],
            r["project_id"],
            r["domain_id"],
            r["system"],
            r["inherited"],
            _link(base, r),
        )
        for r in rows
    ]


async def _names(conn: Any, entries: list[Entry]) -> dict[str, dict[str, Any]]:
    """Names (and domains) of everything the entries name, by id."""
    ids = {i for e in entries for i in (e.role_id, e.user_id, e.group_id, e.project_id, e.domain_id) if i}
    rows = await conn.fetch(
        "SELECT t.id, t.name, t.domain_id, d.name AS domain_name FROM ("
        "SELECT id, name, domain_id FROM roles UNION ALL SELECT id, name, domain_id FROM users "
        "UNION ALL SELECT id, name, domain_id FROM groups UNION ALL SELECT id, name, domain_id FROM projects "
        "UNION ALL SELECT id, name, NULL FROM domains) t LEFT JOIN domains d ON d.id = t.domain_id "
        "WHERE t.id = ANY($1::text[])",
        list(ids),
    )
    return {
        r["id"]: {"name": r["name"], "domain_id": r["domain_id"], "domain_name": r["domain_name"]}
        for r in rows
    }


def _named(ref: dict[str, Any], names: dict[str, dict[str, Any]], *, domain: bool = True) -> dict[str, Any]:
    found = names.get(ref["id"])
    if found is None:
        return ref
    ref["name"] = found["name"]
    if domain and found["domain_id"]:
        ref["domain"] = {"id": found["domain_id"], "name": found["domain_name"]}
    return ref


def _view(e: Entry, names: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    def named(ref: dict[str, Any], domain: bool = True) -> dict[str, Any]:
        return _named(ref, names, domain=domain) if names is not None else ref

    view: dict[str, Any] = {"role": named({"id": e.role_id})}
    if e.user_id:
        view["user"] = named({"id": e.user_id})
    else:
        view["group"] = named({"id": e.group_id})
    if e.system:
        scope: dict[str, Any] = {"system": {"all": True}}
    elif e.project_id:
        scope = {"project": named({"id": e.project_id})}
    else:
        scope = {"domain": named({"id": e.domain_id}, domain=False)}
    if e.inherited:
        scope["OS-INHERIT:inherited_to"] = "projects"
    view["scope"] = scope
    view["links"] = {"assignment": e.source}
    if e.membership:
        view["links"]["membership"] = e.membership
    if e.prior_role:
        view["links"]["prior_role"] = e.prior_role
    return view


def _may_list(request: web.Request, query: Query) -> None:
    me = caller(request)
    if me.reads_all:
        return
    if query.domain_id and policy.domain_reader(me, query.domain_id):
        return
    raise policy.denied("list_role_assignments")


async def role_assignments(request: web.Request) -> web.Response:
    query = Query.of(request.query)
    _may_list(request, query)
    context = ctx(request)
    base = context.base_url
    async with context.pool.acquire() as conn:
        projects = await _projects_in_scope(conn, query)
        rows = await _stored(conn, query, projects)
        entries = (
            await _effective(conn, rows, query, projects, base)
            if query.effective
            else _stored_entries(rows, base)
        )
        names = await _names(conn, entries) if query.include_names else None
    return json_response(
        {"role_assignments": [_view(e, names) for e in entries], "links": links(base, "role_assignments")}
    )


documented(
    role_assignments,
    parameters=[
        *strings("user.id", "group.id", "role.id", "scope.project.id", "scope.domain.id", "scope.system"),
        param("effective", description="Effective assignments (present: yes)"),
        param("include_names", "boolean"),
        param("include_subtree", "boolean"),
    ],
)


def setup(app: web.Application) -> None:
    app.router.add_get("/identity/v3/role_assignments", role_assignments)
