"""POST/GET/HEAD/DELETE /identity/v3/auth/tokens and the /auth/* helpers."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg
from aiohttp import web

from api import catalog as catalog_
from api.auth import (
    AppCredentialRef,
    AuthContext,
    TokenCodec,
    TokenPayload,
    check_not_revoked,
    check_password,
)
from api.context import caller, ctx, json_body, json_response, public
from api.errors import BadRequest, Forbidden, NotFound, Unauthorized
from api.identity import app_credentials
from api.identity.views import effective_roles, find_domain, links, project_view
from api.times import iso_micro


def token_body(payload: TokenPayload, base_url: str, *, with_catalog: bool = True) -> dict[str, Any]:
    domain = {
        "id": payload.user_domain_id,
        "name": "Default" if payload.user_domain_id == "default" else payload.user_domain_id,
    }
    token: dict[str, Any] = {
        "methods": list(payload.methods),
        "user": {
            "domain": domain,
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
            "domain": {"id": pdomain, "name": "Default" if pdomain == "default" else pdomain},
            "id": payload.project_id,
            "name": payload.project_name,
        }
        token["is_domain"] = False
        token["roles"] = [{"id": rid, "name": name} for rid, name in payload.roles]
        if with_catalog:
            token["catalog"] = catalog_.catalog(base_url, payload.project_id)
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
    if user is None or not ok or not user["enabled"]:
        raise _unauthorized()
    return user


async def _project_from_scope(conn: Any, scope: Any) -> asyncpg.Record | None:
    if scope is None or scope == "unscoped":
        return None
    if not isinstance(scope, dict):
        raise BadRequest("Invalid scope.")
    if "project" not in scope:
        if "domain" in scope or "system" in scope:
            raise Unauthorized("Only project-scoped and unscoped tokens are supported.")
        raise BadRequest("Expecting to find project in scope.")
    ref = scope["project"]
    if not isinstance(ref, dict):
        raise BadRequest("Expecting to find id or name in project.")
    if ref.get("id"):
        project = await conn.fetchrow("SELECT * FROM projects WHERE id = $1", str(ref["id"]))
    elif ref.get("name"):
        if "domain" not in ref:
            raise BadRequest("Expecting to find domain in project.")
        try:
            domain = await find_domain(conn, ref["domain"])
        except NotFound:
            raise _unauthorized() from None
        project = await conn.fetchrow(
            "SELECT * FROM projects WHERE name = $1 AND domain_id = $2", str(ref["name"]), domain["id"]
        )
    else:
        raise BadRequest("Expecting to find id or name in project.")
    if project is None or not project["enabled"]:
        raise _unauthorized()
    return project


@dataclasses.dataclass(frozen=True)
class _Grant:
    """What a new token will say."""

    user: asyncpg.Record
    project: asyncpg.Record | None
    roles: list[tuple[str, str]]
    methods: tuple[str, ...]
    expires_at: float | None = None  # a cap: the token's own TTL applies below it
    app_cred: AppCredentialRef | None = None


async def _app_credential_grant(conn: Any, auth: dict[str, Any], identity: dict[str, Any]) -> _Grant:
    # The credential fixes the scope: asking for one is an error, as in Keystone.
    if "scope" in auth:
        raise Unauthorized(
            "Error authenticating with application credential: "
            "Application credentials cannot request a scope."
        )
    grant = await app_credentials.authenticate(conn, identity.get("application_credential"))
    return _Grant(
        grant.user, grant.project, grant.roles, ("application_credential",), grant.expires_at, grant.ref
    )


async def _user_grant(
    conn: Any, tokens: TokenCodec, auth: dict[str, Any], identity: dict[str, Any], methods: list[str]
) -> _Grant:
    """Password or token authentication, scoped as asked (or to the user's default project)."""
    expires_at: float | None = None
    app_cred: AppCredentialRef | None = None
    if "password" in methods:
        user = await _user_from_password(conn, identity.get("password"))
    elif "token" in methods:
        ref = identity.get("token")
        if not isinstance(ref, dict) or not isinstance(ref.get("id"), str):
            raise BadRequest("Expecting to find id in token.")
        old = tokens.verify(ref["id"])
        await check_not_revoked(conn, old)
        user = await conn.fetchrow("SELECT * FROM users WHERE id = $1", old.user_id)
        if user is None or not user["enabled"]:
            raise _unauthorized()
        expires_at, app_cred = old.expires_at, old.application_credential
    else:
        raise Unauthorized(f"Unsupported authentication method: {methods[0]}.")
    scope = auth.get("scope")
    project = await _project_from_scope(conn, scope)
    if app_cred is not None:
        # A token made from a credential's token stays bound to the credential: its project, its roles.
        bound = await app_credentials.regrant(conn, app_cred)
        if project is not None and project["id"] != bound.project["id"]:
            raise Forbidden(
                "You are not authorized to perform the requested action: a token made from an "
                "application credential cannot be rescoped to another project."
            )
        return _Grant(user, bound.project, bound.roles, tuple(methods), expires_at, app_cred)
    if project is None and scope is None and user["default_project_id"]:
        project = await conn.fetchrow(
            "SELECT * FROM projects WHERE id = $1 AND enabled", user["default_project_id"]
        )
    roles: list[tuple[str, str]] = []
    if project is not None:
        roles = await effective_roles(conn, user["id"], project["id"])
        if not roles:
            raise Unauthorized(f"User {user['id']} has no access to project {project['id']}.")
    return _Grant(user, project, roles, tuple(methods), expires_at)


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
    user, project = grant.user, grant.project
    token, payload = context.tokens.issue(
        user_id=user["id"],
        user_name=user["name"],
        user_domain_id=user["domain_id"],
        project_id=project["id"] if project else None,
        project_name=project["name"] if project else None,
        project_domain_id=project["domain_id"] if project else None,
        roles=tuple(grant.roles),
        methods=grant.methods,
        expires_at=grant.expires_at,
        application_credential=grant.app_cred,
    )
    nocatalog = "nocatalog" in request.query
    return json_response(
        token_body(payload, context.base_url, with_catalog=not nocatalog),
        status=201,
        headers={"X-Subject-Token": token},
    )


async def _subject(request: web.Request) -> tuple[AuthContext, TokenPayload]:
    me = caller(request)
    subject = request.headers.get("X-Subject-Token")
    if not subject:
        raise BadRequest("X-Subject-Token is missing.")
    if subject != me.token and not me.is_admin:
        raise Forbidden("You are not authorized to perform the requested action: identity:validate_token.")
    context = ctx(request)
    try:
        payload = context.tokens.verify(subject)
        await check_not_revoked(context.pool, payload)
    except Unauthorized:
        raise NotFound(f"Could not find token: {subject[:16]}…") from None
    return me, payload


async def validate(request: web.Request) -> web.Response:
    _, payload = await _subject(request)
    subject = request.headers["X-Subject-Token"]
    return json_response(
        token_body(payload, ctx(request).base_url, with_catalog="nocatalog" not in request.query),
        headers={"X-Subject-Token": subject},
    )


async def check(request: web.Request) -> web.Response:
    await _subject(request)
    return web.Response(status=200)


async def revoke(request: web.Request) -> web.Response:
    _, payload = await _subject(request)
    await ctx(request).pool.execute("INSERT INTO token_revocations (audit_id) VALUES ($1)", payload.audit_id)
    return web.Response(status=204)


async def auth_catalog(request: web.Request) -> web.Response:
    me = caller(request)
    base = ctx(request).base_url
    return json_response(
        {"catalog": catalog_.catalog(base, me.project_id), "links": links(base, "auth/catalog")}
    )


async def auth_projects(request: web.Request) -> web.Response:
    me = caller(request)
    context = ctx(request)
    rows = await context.pool.fetch(
        "SELECT DISTINCT p.* FROM projects p JOIN role_assignments a ON a.project_id = p.id "
        "WHERE a.user_id = $1 AND p.enabled ORDER BY p.name",
        me.user_id,
    )
    return json_response(
        {
            "projects": [project_view(r, context.base_url) for r in rows],
            "links": links(context.base_url, "auth/projects"),
        }
    )


async def auth_domains(request: web.Request) -> web.Response:
    return json_response({"domains": [], "links": links(ctx(request).base_url, "auth/domains")})


async def auth_system(request: web.Request) -> web.Response:
    return json_response({"system": [], "links": links(ctx(request).base_url, "auth/system")})


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
