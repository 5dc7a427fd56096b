"""POST/GET/HEAD/DELETE /identity/v3/auth/tokens and the /auth/* helpers, as Keystone has them.

A token is scoped to a project, a domain, the system (`{"system": {"all": true}}`), or nothing;
asked for without a scope, it is scoped to the user's default project if they hold a role there.
Its roles are not in it: they are the ones its user holds on its scope when it is issued,
validated or used (api/effective_roles.py). A user in a disabled domain cannot authenticate, and
a disabled project or domain cannot be scoped to. Any user may validate, check and revoke their
own tokens; admins and system readers may validate anyone's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg
from aiohttp import web

from api import effective_roles
from api.auth import (
    AppCredentialRef,
    TokenCodec,
    TokenPayload,
    TrustRef,
    authorize,
    check_not_revoked,
    check_password,
)
from api.context import caller, ctx, json_body, json_response, public
from api.errors import BadRequest, Forbidden, NotFound, Unauthorized
from api.identity import app_credentials, catalog, trusts
from api.identity.views import domain_names, domain_view, find_domain, links, project_view
from api.times import iso_micro

Role = tuple[str, str]


async def token_body(
    conn: Any,
    payload: TokenPayload,
    roles: list[Role] | tuple[Role, ...],
    base_url: str,
    *,
    with_catalog: bool = True,
) -> dict[str, Any]:
    names = await domain_names(conn, payload.user_domain_id, payload.project_domain_id, payload.domain_id)
    token: dict[str, Any] = {
        "methods": list(payload.methods),
        "user": {
            "domain": {"id": payload.user_domain_id, "name": names.get(payload.user_domain_id)},
            "id": payload.user_id,
            "name": payload.user_name,
            "password_expires_at": None,
        },
        "audit_ids": [payload.audit_id],
        "expires_at": iso_micro(payload.expires_at) + "Z",
        "issued_at": iso_micro(payload.issued_at) + "Z",
    }
    if payload.project_id is not None:
        pdomain = payload.project_domain_id or "default"
        token["project"] = {
            "domain": {"id": pdomain, "name": names.get(pdomain)},
            "id": payload.project_id,
            "name": payload.project_name,
        }
        token["is_domain"] = False
    elif payload.domain_id is not None:
        token["domain"] = {"id": payload.domain_id, "name": names.get(payload.domain_id)}
    elif payload.system:
        token["system"] = {"all": True}
    if payload.scoped:
        token["roles"] = [{"id": rid, "name": name} for rid, name in roles]
        if with_catalog:
            token["catalog"] = await catalog.for_token(conn, base_url, payload.project_id)
    if payload.trust is not None:
        token["OS-TRUST:trust"] = trusts.token_view(payload.trust)
    app_cred = payload.application_credential
    if app_cred is not None:
        token["application_credential"] = {
            "id": app_cred.id,
            "name": app_cred.name,
            "restricted": not app_cred.unrestricted,
        }
    return {"token": token}


def _unauthorized() -> Unauthorized:
    return Unauthorized("The request you have made requires authentication.")


async def _enabled_user(conn: Any, user: asyncpg.Record | None) -> asyncpg.Record:
    """The user, if they and their domain are enabled; Unauthorized otherwise."""
    if user is None or not user["enabled"]:
        raise _unauthorized()
    if not await conn.fetchval("SELECT enabled FROM domains WHERE id = $1", user["domain_id"]):
        raise _unauthorized()
    return user


async def _user_from_password(conn: Any, password: Any) -> asyncpg.Record:
    if not isinstance(password, dict) or not isinstance(password.get("user"), dict):
        raise BadRequest("Expecting to find user in password.")
    ref = password["user"]
    secret = ref.get("password")
    if not isinstance(secret, str):
        raise BadRequest("Expecting to find password in user.")
    if ref.get("id"):
        user = await conn.fetchrow("SELECT * FROM users WHERE id = $1", str(ref["id"]))
    elif ref.get("name"):
        if "domain" not in ref:
            raise BadRequest("Expecting to find domain in user.")
        try:
            domain = await find_domain(conn, ref["domain"])
        except NotFound:
            raise _unauthorized() from None
        user = await conn.fetchrow(
            "SELECT * FROM users WHERE name = $1 AND domain_id = $2", str(ref["name"]), domain["id"]
        )
    else:
        raise BadRequest("Expecting to find id or name in user.")
    ok = await check_password(secret, user["password_hash"] if user else None)
    if not ok:
        raise _unauthorized()
    return await _enabled_user(conn, user)


# --- Scopes ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scope:
    """What a token is scoped to: a project, a domain, the system, or nothing."""

    project: asyncpg.Record | None = None
    domain: asyncpg.Record | None = None
    system: bool = False
    trust: asyncpg.Record | None = None

    @property
    def kwargs(self) -> dict[str, Any]:
        """The scope as effective_roles.on_scope takes it."""
        return {
            "project_id": self.project["id"] if self.project else None,
            "domain_id": self.domain["id"] if self.domain else None,
            "system": self.system,
        }


async def _named(conn: Any, table: str, ref: Any, what: str) -> asyncpg.Record | None:
    """A project or domain by {"id"} or by {"name"} (a project's with its domain)."""
    if not isinstance(ref, dict):
        raise BadRequest(f"Expecting to find id or name in {what}.")
    if ref.get("id"):
        return await conn.fetchrow(f"SELECT * FROM {table} WHERE id = $1", str(ref["id"]))
    if not ref.get("name"):
        raise BadRequest(f"Expecting to find id or name in {what}.")
    if table == "domains":
        return await conn.fetchrow("SELECT * FROM domains WHERE name = $1", str(ref["name"]))
    if "domain" not in ref:
        raise BadRequest(f"Expecting to find domain in {what}.")
    try:
        domain = await find_domain(conn, ref["domain"])
    except NotFound:
        raise _unauthorized() from None
    return await conn.fetchrow(
        "SELECT * FROM projects WHERE name = $1 AND domain_id = $2", str(ref["name"]), domain["id"]
    )


async def _scope_of(conn: Any, scope: Any) -> Scope | None:
    """The scope a request asks for (None: unscoped); Unauthorized for a disabled or missing
    project or domain."""
    if scope is None or scope == "unscoped":
        return None
    if not isinstance(scope, dict) or len(scope) != 1:
        raise BadRequest("A scope names exactly one of project, domain, system or OS-TRUST:trust.")
    ((kind, ref),) = scope.items()
    if kind == "project":
        project = await _named(conn, "projects", ref, "project")
        if project is None or not project["enabled"]:
            raise _unauthorized()
        if not await conn.fetchval("SELECT enabled FROM domains WHERE id = $1", project["domain_id"]):
            raise _unauthorized()
        return Scope(project=project)
    if kind == "domain":
        domain = await _named(conn, "domains", ref, "domain")
        if domain is None or not domain["enabled"]:
            raise _unauthorized()
        return Scope(domain=domain)
    if kind == "system":
        if ref != {"all": True}:
            raise BadRequest("Invalid system scope: {'all': true} was expected.")
        return Scope(system=True)
    if kind == "OS-TRUST:trust":
        return Scope(trust=await trusts.for_scope(conn, ref))
    raise BadRequest(f"Invalid scope: {kind}.")


def _no_access(user_id: str, scope: Scope) -> Unauthorized:
    if scope.project is not None:
        return Unauthorized(f"User {user_id} has no access to project {scope.project['id']}.")
    if scope.domain is not None:
        return Unauthorized(f"User {user_id} has no access to domain {scope.domain['id']}.")
    return Unauthorized(f"User {user_id} has no access to the system.")


async def _default_scope(conn: Any, user: asyncpg.Record) -> tuple[Scope | None, list[Role]]:
    """The user's default project when they hold a role there and it and its domain are
    enabled; else no scope (as Keystone, an unusable default project is not an error)."""
    project_id = user["default_project_id"]
    if not project_id:
        return None, []
    project = await conn.fetchrow(
        "SELECT p.* FROM projects p JOIN domains d ON d.id = p.domain_id "
        "WHERE p.id = $1 AND p.enabled AND d.enabled",
        project_id,
    )
    if project is None:
        return None, []
    roles = await effective_roles.on_project(conn, user["id"], project_id)
    return (Scope(project=project), roles) if roles else (None, [])


# --- Grants: what a new token will say ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Grant:
    user: asyncpg.Record
    scope: Scope | None
    roles: list[Role]
    methods: tuple[str, ...]
    expires_at: float | None = None  # a cap: the token's own TTL applies below it
    app_cred: AppCredentialRef | None = None
    trust: TrustRef | None = None


async def _app_credential_grant(conn: Any, auth: dict[str, Any], identity: dict[str, Any]) -> _Grant:
    # The credential fixes the scope: asking for one is an error, as in Keystone.
    if "scope" in auth:
        raise Unauthorized(
            "Error authenticating with application credential: "
            "Application credentials cannot request a scope."
        )
    grant = await app_credentials.authenticate(conn, identity.get("application_credential"))
    await _enabled_user(conn, grant.user)
    return _Grant(
        grant.user,
        Scope(project=grant.project),
        grant.roles,
        ("application_credential",),
        grant.expires_at,
        grant.ref,
    )


async def _from_token(conn: Any, tokens: TokenCodec, identity: dict[str, Any]) -> TokenPayload:
    ref = identity.get("token")
    if not isinstance(ref, dict) or not isinstance(ref.get("id"), str):
        raise BadRequest("Expecting to find id in token.")
    old = tokens.verify(ref["id"])
    await check_not_revoked(conn, old)
    if old.trust is not None:
        raise Forbidden(
            "You are not authorized to perform the requested action: a trust-scoped token cannot be rescoped."
        )
    return old


async def _scoped_grant(
    conn: Any, user: asyncpg.Record, scope: Scope | None, methods: tuple[str, ...], cap: float | None
) -> _Grant:
    if scope is None:
        return _Grant(user, None, [], methods, cap)
    if scope.trust is not None:
        by_trust = await trusts.grant(conn, user, scope.trust)
        caps = [c for c in (cap, by_trust.expires_at) if c is not None]
        cap = min(caps) if caps else None
        return _Grant(
            by_trust.user, Scope(project=by_trust.project), by_trust.roles, methods, cap, trust=by_trust.ref
        )
    roles = await effective_roles.on_scope(conn, user["id"], **scope.kwargs)
    if not roles:
        raise _no_access(user["id"], scope)
    return _Grant(user, scope, roles, methods, cap)


async def _user_grant(
    conn: Any, tokens: TokenCodec, auth: dict[str, Any], identity: dict[str, Any], methods: list[str]
) -> _Grant:
    """Password or token authentication, scoped as asked (or to the user's default project)."""
    cap: float | None = None
    if "password" in methods:
        user = await _user_from_password(conn, identity.get("password"))
    elif "token" in methods:
        old = await _from_token(conn, tokens, identity)
        user = await _enabled_user(
            conn, await conn.fetchrow("SELECT * FROM users WHERE id = $1", old.user_id)
        )
        cap = old.expires_at
        if old.application_credential is not None:
            return await _rescoped_app_credential(conn, user, old, auth.get("scope"), tuple(methods))
        methods = sorted(set(old.methods) | set(methods))
    else:
        raise Unauthorized(f"Unsupported authentication method: {methods[0]}.")
    if "scope" not in auth:
        scope, roles = await _default_scope(conn, user)
        return _Grant(user, scope, roles, tuple(methods), cap)
    return await _scoped_grant(conn, user, await _scope_of(conn, auth["scope"]), tuple(methods), cap)


async def _rescoped_app_credential(
    conn: Any, user: asyncpg.Record, old: TokenPayload, scope: Any, methods: tuple[str, ...]
) -> _Grant:
    """A token made from a credential's token stays bound to the credential: its project, its roles."""
    assert old.application_credential is not None
    bound = await app_credentials.regrant(conn, old.application_credential)
    asked = await _scope_of(conn, scope)
    if asked is not None and (asked.project is None or asked.project["id"] != bound.project["id"]):
        raise Forbidden(
            "You are not authorized to perform the requested action: a token made from an "
            "application credential cannot be rescoped to another project."
        )
    return _Grant(
        user, Scope(project=bound.project), bound.roles, methods, old.expires_at, old.application_credential
    )


@public
async def issue(request: web.Request) -> web.Response:
    context = ctx(request)
    data = await json_body(request)
    if not isinstance(data, dict) or not isinstance(data.get("auth"), dict):
        raise BadRequest("Expecting to find auth in request body.")
    auth = data["auth"]
    identity = auth.get("identity")
    if (
        not isinstance(identity, dict)
        or not isinstance(identity.get("methods"), list)
        or not identity["methods"]
    ):
        raise BadRequest("Expecting to find identity methods in auth.")
    methods = [str(m) for m in identity["methods"]]
    async with context.pool.acquire() as conn:
        if "application_credential" in methods:
            grant = await _app_credential_grant(conn, auth, identity)
        else:
            grant = await _user_grant(conn, context.tokens, auth, identity, methods)
        user, scope = grant.user, grant.scope or Scope()
        project, domain = scope.project, scope.domain
        token, payload = context.tokens.issue(
            user_id=user["id"],
            user_name=user["name"],
            user_domain_id=user["domain_id"],
            project_id=project["id"] if project else None,
            project_name=project["name"] if project else None,
            project_domain_id=project["domain_id"] if project else None,
            domain_id=domain["id"] if domain else None,
            system=scope.system,
            methods=grant.methods,
            expires_at=grant.expires_at,
            application_credential=grant.app_cred,
            trust=grant.trust,
        )
        body = await token_body(
            conn, payload, grant.roles, context.base_url, with_catalog="nocatalog" not in request.query
        )
    return json_response(body, status=201, headers={"X-Subject-Token": token})


async def _subject(request: web.Request, action: str) -> tuple[TokenPayload, list[Role]]:
    """The token named by X-Subject-Token with its roles now, if the caller may see it: its own
    user, or (for anything but a revocation) an admin or a system reader."""
    me = caller(request)
    subject = request.headers.get("X-Subject-Token")
    if not subject:
        raise BadRequest("X-Subject-Token is missing.")
    context = ctx(request)
    try:
        payload = context.tokens.verify(subject)
        async with context.pool.acquire() as conn:
            held = await authorize(conn, subject, payload)
    except Unauthorized:
        raise NotFound(f"Could not find token: {subject[:16]}…") from None
    allowed = me.is_admin if action == "revoke_token" else me.reads_all
    if payload.user_id != me.user_id and not allowed:
        raise Forbidden(f"You are not authorized to perform the requested action: identity:{action}.")
    return payload, list(held.roles)


async def validate(request: web.Request) -> web.Response:
    payload, roles = await _subject(request, "validate_token")
    context = ctx(request)
    async with context.pool.acquire() as conn:
        body = await token_body(
            conn, payload, roles, context.base_url, with_catalog="nocatalog" not in request.query
        )
    return json_response(body, headers={"X-Subject-Token": request.headers["X-Subject-Token"]})


async def check(request: web.Request) -> web.Response:
    await _subject(request, "check_token")
    return web.Response(status=200)


async def revoke(request: web.Request) -> web.Response:
    payload, _ = await _subject(request, "revoke_token")
    await ctx(request).pool.execute("INSERT INTO token_revocations (audit_id) VALUES ($1)", payload.audit_id)
    return web.Response(status=204)


async def auth_catalog(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    async with context.pool.acquire() as conn:
        entries = await catalog.for_token(conn, context.base_url, me.project_id)
    return json_response({"catalog": entries, "links": links(context.base_url, "auth/catalog")})


async def auth_projects(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    async with context.pool.acquire() as conn:
        rows = await effective_roles.projects_of(conn, me.user_id, enabled_only=True)
    return json_response(
        {
            "projects": [project_view(r, context.base_url) for r in rows],
            "links": links(context.base_url, "auth/projects"),
        }
    )


async def auth_domains(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    async with context.pool.acquire() as conn:
        rows = await effective_roles.domains_of(conn, me.user_id)
    return json_response(
        {
            "domains": [domain_view(r, context.base_url) for r in rows],
            "links": links(context.base_url, "auth/domains"),
        }
    )


async def auth_system(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    async with context.pool.acquire() as conn:
        system = [{"all": True}] if await effective_roles.has_system_role(conn, me.user_id) else []
    return json_response({"system": system, "links": links(context.base_url, "auth/system")})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/identity/v3/auth/tokens", issue)
    r.add_get("/identity/v3/auth/tokens", validate, allow_head=False)
    r.add_head("/identity/v3/auth/tokens", check)
    r.add_delete("/identity/v3/auth/tokens", revoke)
    r.add_get("/identity/v3/auth/catalog", auth_catalog)
    r.add_get("/identity/v3/auth/projects", auth_projects)
    r.add_get("/identity/v3/auth/domains", auth_domains)
    r.add_get("/identity/v3/auth/system", auth_system)
