"""/identity/v3/OS-TRUST/trusts and trust-scoped tokens, as Keystone has them.

A trustor lets a trustee act on one of the trustor's projects with some of the trustor's roles
there, until an expiry and for a number of token issues if given. The trustee gets a token with
`"scope": {"OS-TRUST:trust": {"id": ...}}`: it holds the trust's roles the trustor still holds
on the project, and acts as the trustor (`impersonation`) or as the trustee. Deleting the trust,
or its expiry, or disabling either user ends its tokens (api/auth.py). With
`allow_redelegation`, a trust token may make a narrower trust of its own (at most
`MAX_REDELEGATION` deep); it goes with the trust it came from.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import asyncpg
from aiohttp import web

from api import effective_roles
from api.auth import AuthContext, TrustRef, new_id
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Forbidden, NotFound, Unauthorized
from api.identity import policy
from api.identity import validate as v
from api.identity.views import get_or_404, links
from api.query_doc import documented, strings

MAX_REDELEGATION = 3  # Keystone's [trust] max_redelegation_count
_LIVE = "(expires_at IS NULL OR expires_at > now()) AND (remaining_uses IS NULL OR remaining_uses > 0)"


def _time(moment: datetime.datetime | None) -> str | None:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment is not None else None


def _role_ref(row: Any, base: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "domain_id": row["domain_id"],
        "links": {"self": f"{base}/identity/v3/roles/{row['id']}"},
    }


def _view(row: asyncpg.Record, roles: list[Any], base: str) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row["id"],
        "trustor_user_id": row["trustor_user_id"],
        "trustee_user_id": row["trustee_user_id"],
        "project_id": row["project_id"],
        "impersonation": row["impersonation"],
        "expires_at": _time(row["expires_at"]),
        "remaining_uses": row["remaining_uses"],
        "allow_redelegation": row["allow_redelegation"],
        "roles": [_role_ref(r, base) for r in roles],
        "roles_links": {"self": None, "previous": None, "next": None},
        "links": {"self": f"{base}/identity/v3/OS-TRUST/trusts/{row['id']}"},
    }
    if row["allow_redelegation"]:
        view["redelegation_count"] = row["redelegation_count"]
    if row["redelegated_trust_id"]:
        view["redelegated_trust_id"] = row["redelegated_trust_id"]
    return view


def token_view(trust: TrustRef) -> dict[str, Any]:
    """The `OS-TRUST:trust` member of a trust-scoped token."""
    return {
        "id": trust.id,
        "impersonation": trust.impersonation,
        "trustee_user": {"id": trust.trustee_user_id},
        "trustor_user": {"id": trust.trustor_user_id},
    }


async def _roles_of(conn: Any, trust_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    rows = await conn.fetch(
        "SELECT t.trust_id, r.* FROM trust_roles t JOIN roles r ON r.id = t.role_id "
        "WHERE t.trust_id = ANY($1::text[]) ORDER BY r.name",
        trust_ids,
    )
    found: dict[str, list[asyncpg.Record]] = {i: [] for i in trust_ids}
    for row in rows:
        found[row["trust_id"]].append(row)
    return found


async def _live(conn: Any, trust_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT * FROM trusts WHERE id = $1 AND {_LIVE}", trust_id)
    if row is None:
        raise NotFound(f"Could not find trust: {trust_id}.")
    return row


# --- Reading a create request ---------------------------------------------------------------------


def _expires_at(data: dict[str, Any]) -> datetime.datetime | None:
    raw = data.get("expires_at")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise BadRequest(f"Invalid input for field 'expires_at': {raw!r} is not of type 'string', 'null'")
    try:
        moment = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid input for field 'expires_at': {raw!r} is not an ISO 8601 time") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
    if moment <= datetime.datetime.now(datetime.UTC):
        raise BadRequest("Invalid input for field 'expires_at': the trust would already have expired")
    return moment


def _count(data: dict[str, Any], key: str, minimum: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= 2**31 - 1:
        raise BadRequest(
            f"Invalid input for field '{key}': an integer of at least {minimum} or null was expected"
        )
    return value


@dataclasses.dataclass(frozen=True)
class _Request:
    trustor: str
    trustee: str
    project_id: str | None
    impersonation: bool
    role_refs: list[dict[str, str]]
    expires_at: datetime.datetime | None
    remaining_uses: int | None
    allow_redelegation: bool
    redelegation_count: int | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> _Request:
        impersonation = v.flag(data, "impersonation")
        if impersonation is None:
            raise BadRequest("'impersonation' is a required property")
        refs = data.get("roles") or []
        if not isinstance(refs, list) or not all(
            isinstance(r, dict) and isinstance(r.get("id", r.get("name")), str) for r in refs
        ):
            raise BadRequest(
                'Invalid input for field \'roles\': a list of {"id": …} or {"name": …} was expected'
            )
        request = cls(
            trustor=v.text(data, "trustor_user_id", required=True, max_len=64) or "",
            trustee=v.text(data, "trustee_user_id", required=True, max_len=64) or "",
            project_id=v.text(data, "project_id", max_len=64),
            impersonation=impersonation,
            role_refs=refs,
            expires_at=_expires_at(data),
            remaining_uses=_count(data, "remaining_uses", 1),
            allow_redelegation=bool(v.flag(data, "allow_redelegation")),
            redelegation_count=_count(data, "redelegation_count", 0),
        )
        if refs and request.project_id is None:
            raise BadRequest("Roles can only be delegated on a project: project_id is missing.")
        if request.project_id is not None and not refs:
            raise BadRequest("At least one role should be specified.")
        if request.allow_redelegation and request.remaining_uses is not None:
            raise BadRequest("A trust that allows redelegation cannot limit its uses (remaining_uses).")
        return request


async def _root_trustor(conn: Any, trust_id: str) -> str:
    """The first trustor of a chain of redelegated trusts: the user whose roles they delegate."""
    return await conn.fetchval(
        "WITH RECURSIVE chain (id, trustor, parent) AS (SELECT id, trustor_user_id, redelegated_trust_id "
        "FROM trusts WHERE id = $1 UNION SELECT t.id, t.trustor_user_id, t.redelegated_trust_id "
        "FROM trusts t JOIN chain c ON t.id = c.parent) SELECT trustor FROM chain WHERE parent IS NULL",
        trust_id,
    )


async def _delegated_roles(conn: Any, request: _Request, holder: str) -> list[asyncpg.Record]:
    """The roles asked for, each held on the project by `holder` (the trustor, or the first
    trustor of the chain a redelegated trust continues)."""
    held = {rid for rid, _ in await effective_roles.on_project(conn, holder, request.project_id or "")}
    roles = []
    for ref in request.role_refs:
        if "id" in ref:
            row = await conn.fetchrow("SELECT * FROM roles WHERE id = $1", ref["id"])
        else:
            row = await conn.fetchrow(
                "SELECT * FROM roles WHERE name = $1 AND domain_id IS NULL", ref["name"]
            )
        if row is None:
            raise NotFound(f"Could not find role: {ref.get('id') or ref.get('name')}.")
        if row["id"] not in held:
            raise Forbidden(
                f"The trustor does not hold the role {row['id']} on project {request.project_id}."
            )
        roles.append(row)
    return list({r["id"]: r for r in roles}.values())


async def _redelegation(
    conn: Any, me: AuthContext, request: _Request, role_ids: set[str]
) -> tuple[str | None, int | None]:
    """(the trust this one comes from, its redelegation count) for a trust made with a trust's
    token; Keystone's rules: the parent allows it, and the new trust is no wider."""
    if me.trust is None:
        count = request.redelegation_count if request.redelegation_count is not None else MAX_REDELEGATION
        if request.allow_redelegation and count > MAX_REDELEGATION:
            raise Forbidden(
                f"Remaining redelegation depth of {count} out of allowed range of [0..{MAX_REDELEGATION}]."
            )
        return None, count if request.allow_redelegation else None
    parent = await _live(conn, me.trust.id)
    if not parent["allow_redelegation"] or not parent["redelegation_count"]:
        raise Forbidden("Redelegation is not allowed for this trust (or its depth is exhausted).")
    parent_roles = {r["id"] for r in (await _roles_of(conn, [parent["id"]]))[parent["id"]]}
    widens = (
        not role_ids <= parent_roles
        or request.project_id != parent["project_id"]
        or (request.impersonation and not parent["impersonation"])
        or (
            parent["expires_at"] is not None
            and (request.expires_at is None or request.expires_at > parent["expires_at"])
        )
    )
    if widens:
        raise Forbidden("A redelegated trust cannot give more than the trust it comes from.")
    return parent["id"], parent["redelegation_count"] - 1


async def create_trust(request: web.Request) -> web.Response:
    me = caller(request)
    wanted = _Request.of(v.member(await json_body(request), "trust"))
    if wanted.trustor != me.user_id:
        raise policy.denied("create_trust")
    if me.application_credential is not None:
        raise Forbidden("Using method 'application_credential' is not allowed for managing trusts.")
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        await get_or_404(conn, "users", wanted.trustee, "user")
        if wanted.project_id is not None:
            await get_or_404(conn, "projects", wanted.project_id, "project")
        holder = await _root_trustor(conn, me.trust.id) if me.trust is not None else wanted.trustor
        roles = await _delegated_roles(conn, wanted, holder)
        parent_id, count = await _redelegation(conn, me, wanted, {r["id"] for r in roles})
        allow = wanted.allow_redelegation and (count is None or count > 0)
        row = await conn.fetchrow(
            "INSERT INTO trusts (id, trustor_user_id, trustee_user_id, project_id, impersonation, "
            "expires_at, "
            "remaining_uses, allow_redelegation, redelegation_count, redelegated_trust_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
            new_id(),
            wanted.trustor,
            wanted.trustee,
            wanted.project_id,
            wanted.impersonation,
            wanted.expires_at,
            wanted.remaining_uses,
            allow,
            count if allow else None,
            parent_id,
        )
        await conn.executemany(
            "INSERT INTO trust_roles (trust_id, role_id) VALUES ($1, $2)",
            [(row["id"], r["id"]) for r in roles],
        )
    return json_response({"trust": _view(row, roles, context.base_url)}, status=201)


async def list_trusts(request: web.Request) -> web.Response:
    me = caller(request)
    q = request.query
    trustor, trustee = q.get("trustor_user_id"), q.get("trustee_user_id")
    if not me.reads_all:
        if trustor is None and trustee is None:
            raise policy.denied("list_trusts")
        if trustor is not None and trustor != me.user_id:
            raise policy.denied("list_trusts_for_trustor")
        if trustee is not None and trustee != me.user_id:
            raise policy.denied("list_trusts_for_trustee")
    context = ctx(request)
    async with context.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT * FROM trusts WHERE {_LIVE} AND ($1::text IS NULL OR trustor_user_id = $1) "
            "AND ($2::text IS NULL OR trustee_user_id = $2) ORDER BY created_at, id",
            trustor,
            trustee,
        )
        roles = await _roles_of(conn, [r["id"] for r in rows])
    base = context.base_url
    return json_response(
        {"trusts": [_view(r, roles[r["id"]], base) for r in rows], "links": links(base, "OS-TRUST/trusts")}
    )


async def _visible(request: web.Request, conn: Any, action: str) -> asyncpg.Record:
    row = await _live(conn, request.match_info["trust_id"])
    me = caller(request)
    if not (me.reads_all or me.user_id in (row["trustor_user_id"], row["trustee_user_id"])):
        raise policy.denied(action)
    return row


async def get_trust(request: web.Request) -> web.Response:
    context = ctx(request)
    async with context.pool.acquire() as conn:
        row = await _visible(request, conn, "get_trust")
        roles = (await _roles_of(conn, [row["id"]]))[row["id"]]
    return json_response({"trust": _view(row, roles, context.base_url)})


async def delete_trust(request: web.Request) -> web.Response:
    """Its tokens end with it, and so do the trusts redelegated from it."""
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM trusts WHERE id = $1", request.match_info["trust_id"])
        if row is None:
            raise NotFound(f"Could not find trust: {request.match_info['trust_id']}.")
        policy.require_admin_or_owner(caller(request), "delete_trust", row["trustor_user_id"])
        await conn.execute("DELETE FROM trusts WHERE id = $1", row["id"])
    return web.Response(status=204)


async def list_trust_roles(request: web.Request) -> web.Response:
    context = ctx(request)
    async with context.pool.acquire() as conn:
        row = await _visible(request, conn, "list_roles_for_trust")
        roles = (await _roles_of(conn, [row["id"]]))[row["id"]]
    base = context.base_url
    return json_response(
        {
            "roles": [_role_ref(r, base) for r in roles],
            "links": links(base, f"OS-TRUST/trusts/{row['id']}/roles"),
        }
    )


async def get_trust_role(request: web.Request) -> web.Response:
    context = ctx(request)
    role_id = request.match_info["role_id"]
    async with context.pool.acquire() as conn:
        row = await _visible(request, conn, "get_role_for_trust")
        roles = (await _roles_of(conn, [row["id"]]))[row["id"]]
    for role in roles:
        if role["id"] == role_id:
            return json_response({"role": _role_ref(role, context.base_url)})
    raise NotFound(f"Could not find role: {role_id}.")


# --- Trust-scoped tokens --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Grant:
    """What a token made from a trust says."""

    user: asyncpg.Record  # the trustor when it impersonates, else the trustee
    project: asyncpg.Record
    roles: list[tuple[str, str]]
    ref: TrustRef
    expires_at: float | None


async def for_scope(conn: Any, ref: Any) -> asyncpg.Record:
    """The trust a scope names, if it can still be used."""
    if not isinstance(ref, dict) or not isinstance(ref.get("id"), str):
        raise BadRequest("Expecting to find id in OS-TRUST:trust.")
    row = await conn.fetchrow(f"SELECT * FROM trusts WHERE id = $1 AND {_LIVE}", ref["id"])
    if row is None:
        raise Unauthorized(f"Could not find trust: {ref['id']}.")
    return row


async def grant(conn: Any, user: asyncpg.Record, trust: asyncpg.Record) -> Grant:
    """A token for the trustee `user` from the trust (one of its uses spent)."""
    if user["id"] != trust["trustee_user_id"]:
        raise Forbidden(
            "You are not authorized to perform the requested action: only the trustee may use a trust."
        )
    if trust["project_id"] is None:
        raise Forbidden("This trust names no project to scope a token to.")
    trustor = await conn.fetchrow("SELECT * FROM users WHERE id = $1 AND enabled", trust["trustor_user_id"])
    project = await conn.fetchrow("SELECT * FROM projects WHERE id = $1 AND enabled", trust["project_id"])
    if trustor is None or project is None:
        raise Unauthorized("The trustor or the trust's project is disabled.")
    holder = await _root_trustor(conn, trust["id"])
    role_ids = [r["id"] for r in (await _roles_of(conn, [trust["id"]]))[trust["id"]]]
    roles = effective_roles.delegated(await effective_roles.on_project(conn, holder, project["id"]), role_ids)
    if not roles:
        raise Forbidden("Trustee has no delegated roles.")
    if trust["remaining_uses"] is not None:
        spent = await conn.fetchval(
            "UPDATE trusts SET remaining_uses = remaining_uses - 1 WHERE id = $1 AND remaining_uses > 0 "
            "RETURNING id",
            trust["id"],
        )
        if spent is None:
            raise Forbidden("No remaining uses for trust.")
    expires = trust["expires_at"]
    return Grant(
        user=trustor if trust["impersonation"] else user,
        project=project,
        roles=roles,
        ref=TrustRef(
            trust["id"],
            trust["trustor_user_id"],
            trust["trustee_user_id"],
            trust["impersonation"],
            holder if holder != trust["trustor_user_id"] else None,
        ),
        expires_at=expires.timestamp() if expires is not None else None,
    )


documented(list_trusts, parameters=strings("trustor_user_id", "trustee_user_id"))


def setup(app: web.Application) -> None:
    r = app.router
    for base in ("/identity/v3/OS-TRUST/trusts", "/identity/v3/OS-TRUST/trusts/"):
        r.add_get(base, list_trusts)
        r.add_post(base, create_trust)
    one = "/identity/v3/OS-TRUST/trusts/{trust_id}"
    r.add_get(one, get_trust)
    r.add_delete(one, delete_trust)
    r.add_get(one + "/roles", list_trust_roles)
    r.add_get(one + "/roles/{role_id}", get_trust_role)
