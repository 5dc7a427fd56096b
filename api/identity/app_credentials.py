"""/identity/v3/users/{user_id}/application_credentials, and authentication with one.

An application credential (Keystone's) lets a user hand an application some of their roles on
one project without their password: the application authenticates with the credential's id (or
name and user) and its secret, and gets a token for that project with those roles only — the
ones the user still holds there. The secret is shown once, at creation; only its scrypt hash is
stored. A token made from a credential carries its id, so deleting the credential (or its user or
project) ends the token too (api/auth.py, check_not_revoked).
"""

from __future__ import annotations

import dataclasses
import datetime
import secrets
from typing import Any

import asyncpg
from aiohttp import web

from api import effective_roles
from api.auth import AppCredentialRef, AuthContext, check_password, hash_password, new_id
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from api.identity import access_rules
from api.identity import validate as v
from api.identity.views import app_credential_view, find_domain, links
from api.query_doc import documented, strings

_KEYSTONE_CLIENT_ERROR = (
    "The server could not comply with the request since it is either malformed or otherwise "
    "incorrect. The client is assumed to be in error."
)


def _unauthorized() -> Unauthorized:
    return Unauthorized("The request you have made requires authentication.")


def _not_found(app_cred_id: str) -> NotFound:
    return NotFound(f"Could not find Application Credential: {app_cred_id}.")


def _forbidden(action: str) -> Forbidden:
    return Forbidden(f"You are not authorized to perform the requested action: {action}.")


def require_unrestricted(me: AuthContext) -> None:
    """Keystone's rule: a token made from a restricted credential may not create or delete
    credentials (else it could mint itself a longer-lived or unrestricted one)."""
    cred = me.application_credential
    if cred is not None and not cred.unrestricted:
        raise _forbidden(
            "Using method 'application_credential' is not allowed for managing additional "
            "application credentials"
        )


# --- Reading a create request ----------------------------------------------------------------


def _expires_at(data: dict[str, Any]) -> datetime.datetime | None:
    """ISO 8601 (no zone: UTC), in the future; Keystone's messages otherwise."""
    raw = data.get("expires_at")
    if raw is not None and not isinstance(raw, str):
        raise BadRequest(f"Invalid input for field 'expires_at': {raw!r} is not of type 'null', 'string'")
    if not raw:
        return None
    try:
        moment = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"Timestamp not in expected format. {_KEYSTONE_CLIENT_ERROR}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    if moment <= datetime.datetime.now(datetime.UTC):
        raise BadRequest(f"The 'expires_at' must not be before now. {_KEYSTONE_CLIENT_ERROR}")
    return moment


def _role_refs(data: dict[str, Any]) -> list[dict[str, str]] | None:
    """The requested roles as [{id} or {name}], None when the request names none."""
    refs = data.get("roles")
    if refs is None:
        return None
    if not isinstance(refs, list) or not all(
        isinstance(r, dict) and len(r) == 1 and isinstance(r.get("id", r.get("name")), str) for r in refs
    ):
        raise BadRequest('Invalid input for field \'roles\': a list of {"id": …} or {"name": …} was expected')
    return refs


async def _delegated_roles(conn: Any, me: AuthContext, refs: list[dict[str, str]] | None) -> list[str]:
    """Ids of the roles to delegate: those asked for (each must be among the token's roles), or
    the token's roles when none are; every one still held by the user on the project."""
    in_token = {rid for rid, _ in me.roles}
    wanted: set[str] = set()
    for ref in refs or []:
        if "id" in ref:
            wanted.add(ref["id"])
            continue
        role_id = await conn.fetchval("SELECT id FROM roles WHERE name = $1", ref["name"])
        if role_id is None:
            raise NotFound(f"Could not find role: {ref['name']}.")
        wanted.add(role_id)
    if not wanted <= in_token:
        raise BadRequest(
            "Invalid application credential: Cannot create an application credential with unassigned role"
        )
    wanted = wanted or in_token
    held = {rid for rid, _ in await effective_roles.on_project(conn, me.user_id, me.require_project())}
    missing = sorted(wanted - held)
    if missing:
        raise BadRequest(
            f"Invalid application credential: Could not find role assignment with role: {missing[0]}, "
            f"user or group: {me.user_id}, project, domain, or system: {me.project_id}."
        )
    return sorted(wanted)


async def _roles_of(conn: Any, app_cred_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    rows = await conn.fetch(
        "SELECT c.application_credential_id AS cred, r.id, r.name FROM application_credential_roles c "
        "JOIN roles r ON r.id = c.role_id WHERE c.application_credential_id = ANY($1::text[]) "
        "ORDER BY r.name",
        app_cred_ids,
    )
    found: dict[str, list[asyncpg.Record]] = {i: [] for i in app_cred_ids}
    for row in rows:
        found[row["cred"]].append(row)
    return found


# --- Handlers --------------------------------------------------------------------------------


async def create(request: web.Request) -> web.Response:
    me = caller(request)
    user_id = request.match_info["user_id"]
    if me.user_id != user_id:  # not even an admin makes one for someone else
        raise _forbidden("identity:create_application_credential")
    data = v.member(await json_body(request), "application_credential")
    name = v.text(data, "name", required=True, max_len=255)
    description = v.text(data, "description", max_len=65535)
    secret = v.text(data, "secret", max_len=4096) or secrets.token_urlsafe(64)
    unrestricted = bool(v.flag(data, "unrestricted"))
    refs = _role_refs(data)
    rules = access_rules.parse(data.get("access_rules"))
    require_unrestricted(me)
    if me.trust is not None:
        raise _forbidden("Using a trust-scoped token to create application credentials")
    project_id = me.require_project()
    expires_at = _expires_at(data)
    context = ctx(request)
    secret_hash = await hash_password(secret)
    async with context.pool.acquire() as conn, conn.transaction():
        role_ids = await _delegated_roles(conn, me, refs)
        try:
            row = await conn.fetchrow(
                "INSERT INTO application_credentials (id, name, description, user_id, project_id, "
                "secret_hash, expires_at, unrestricted) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                new_id(),
                name,
                description,
                user_id,
                project_id,
                secret_hash,
                expires_at,
                unrestricted,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                "Conflict occurred attempting to store application_credential - Duplicate entry found "
                f"with name {name}."
            ) from None
        await conn.executemany(
            "INSERT INTO application_credential_roles (application_credential_id, role_id) VALUES ($1, $2)",
            [(row["id"], rid) for rid in role_ids],
        )
        roles = (await _roles_of(conn, [row["id"]]))[row["id"]]
        attached = await access_rules.attach(conn, user_id, row["id"], rules or [])
    view = app_credential_view(
        row, roles, context.base_url, access_rules=[access_rules.rule_view(r) for r in attached]
    )
    view["secret"] = secret  # the only time it is shown
    return json_response({"application_credential": view}, status=201)


async def list_(request: web.Request) -> web.Response:
    me = caller(request)
    user_id = request.match_info["user_id"]
    if me.user_id != user_id and not me.is_admin:
        raise _forbidden("identity:list_application_credentials")
    context = ctx(request)
    async with context.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM application_credentials WHERE user_id = $1 AND ($2::text IS NULL OR name = $2) "
            "ORDER BY name",
            user_id,
            request.query.get("name"),
        )
        roles = await _roles_of(conn, [r["id"] for r in rows])
        rules = await access_rules.of_credentials(conn, [r["id"] for r in rows])
    return json_response(
        {
            "application_credentials": [
                app_credential_view(r, roles[r["id"]], context.base_url, access_rules=rules[r["id"]])
                for r in rows
            ],
            "links": links(context.base_url, f"users/{user_id}/application_credentials"),
        }
    )


async def _own_or_404(conn: Any, request: web.Request, action: str) -> asyncpg.Record:
    """The credential named by the path; 404 unless it is the path user's, 403 unless the caller
    is that user or an admin."""
    user_id, app_cred_id = request.match_info["user_id"], request.match_info["app_cred_id"]
    row = await conn.fetchrow("SELECT * FROM application_credentials WHERE id = $1", app_cred_id)
    if row is None or row["user_id"] != user_id:
        raise _not_found(app_cred_id)
    me = caller(request)
    if me.user_id != user_id and not me.is_admin:
        raise _forbidden(action)
    return row


async def get(request: web.Request) -> web.Response:
    context = ctx(request)
    async with context.pool.acquire() as conn:
        row = await _own_or_404(conn, request, "identity:get_application_credential")
        roles = (await _roles_of(conn, [row["id"]]))[row["id"]]
        rules = (await access_rules.of_credentials(conn, [row["id"]]))[row["id"]]
    view = app_credential_view(row, roles, context.base_url, access_rules=rules, detail=True)
    return json_response({"application_credential": view})


async def delete(request: web.Request) -> web.Response:
    """Tokens made from the credential stop validating with its row (no revocation row needed)."""
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await _own_or_404(conn, request, "identity:delete_application_credential")
        require_unrestricted(caller(request))
        await conn.execute("DELETE FROM application_credentials WHERE id = $1", row["id"])
    return web.Response(status=204)


# --- Authentication --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Grant:
    """What a token made from a credential may be: whose, for which project, with which roles,
    until when at the latest."""

    user: asyncpg.Record
    project: asyncpg.Record
    roles: list[tuple[str, str]]
    ref: AppCredentialRef
    expires_at: float | None


async def _find_for_auth(conn: Any, ref: dict[str, Any]) -> asyncpg.Record | None:
    """The credential an auth request names, by id or by name and user; None if there is none."""
    if ref.get("id"):
        return await conn.fetchrow("SELECT * FROM application_credentials WHERE id = $1", str(ref["id"]))
    if not ref.get("name"):
        raise BadRequest("Expecting to find id or name in application credential.")
    user_ref = ref.get("user")
    if not isinstance(user_ref, dict):
        raise BadRequest("Expecting to find user in application credential.")
    if user_ref.get("id"):
        user_id = str(user_ref["id"])
    elif user_ref.get("name"):
        if "domain" not in user_ref:
            raise BadRequest("Expecting to find domain in user.")
        try:
            domain = await find_domain(conn, user_ref["domain"])
        except NotFound:
            return None
        user_id = await conn.fetchval(
            "SELECT id FROM users WHERE name = $1 AND domain_id = $2", str(user_ref["name"]), domain["id"]
        )
    else:
        raise BadRequest("Expecting to find id or name in user.")
    return await conn.fetchrow(
        "SELECT * FROM application_credentials WHERE user_id = $1 AND name = $2", user_id, str(ref["name"])
    )


async def grant_of(conn: Any, row: asyncpg.Record) -> Grant:
    """The token a live credential gives now; Unauthorized when its user or project is disabled or
    the user holds none of its roles there any more."""
    expires_at = row["expires_at"]
    if expires_at is not None and expires_at <= datetime.datetime.now(datetime.UTC):
        raise _unauthorized()
    user = await conn.fetchrow("SELECT * FROM users WHERE id = $1", row["user_id"])
    project = await conn.fetchrow(
        "SELECT p.* FROM projects p JOIN domains d ON d.id = p.domain_id WHERE p.id = $1 AND d.enabled",
        row["project_id"],
    )
    if user is None or not user["enabled"] or project is None or not project["enabled"]:
        raise _unauthorized()
    limited = bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM application_credential_access_rules WHERE "
            "application_credential_id = $1)",
            row["id"],
        )
    )
    delegated = [r["id"] for r in (await _roles_of(conn, [row["id"]]))[row["id"]]]
    roles = effective_roles.delegated(
        await effective_roles.on_project(conn, user["id"], project["id"]), delegated
    )
    if not roles:
        raise Unauthorized(f"User {user['id']} has no access to project {project['id']}.")
    return Grant(
        user=user,
        project=project,
        roles=roles,
        ref=AppCredentialRef(
            id=row["id"], name=row["name"], unrestricted=row["unrestricted"], limited=limited
        ),
        expires_at=expires_at.timestamp() if expires_at is not None else None,
    )


async def authenticate(conn: Any, ref: Any) -> Grant:
    """Check an `application_credential` auth method ({id, secret} or {name, user, secret})."""
    if not isinstance(ref, dict):
        raise BadRequest("Expecting to find application_credential in identity.")
    secret = ref.get("secret")
    if not isinstance(secret, str):
        raise BadRequest("Expecting to find secret in application credential.")
    row = await _find_for_auth(conn, ref)
    # A missing credential costs the same hashing time as a wrong secret.
    if not await check_password(secret, row["secret_hash"] if row else None) or row is None:
        raise _unauthorized()
    return await grant_of(conn, row)


async def regrant(conn: Any, app_cred: AppCredentialRef) -> Grant:
    """The grant of the credential a token was made from, for a token made from that token: it
    stays bound to the credential (its project, its roles)."""
    row = await conn.fetchrow("SELECT * FROM application_credentials WHERE id = $1", app_cred.id)
    if row is None:
        raise _unauthorized()
    return await grant_of(conn, row)


documented(list_, parameters=strings("name"))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/users/{user_id}/application_credentials", list_)
    r.add_post("/identity/v3/users/{user_id}/application_credentials", create)
    r.add_get("/identity/v3/users/{user_id}/application_credentials/{app_cred_id}", get)
    r.add_delete("/identity/v3/users/{user_id}/application_credentials/{app_cred_id}", delete)
