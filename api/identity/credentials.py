"""/identity/v3/credentials and a user's EC2 credentials (/users/{id}/credentials/OS-EC2), as
Keystone has them.

A credential is a blob a user keeps for a type of service (`ec2`, `totp`, `cert`, ...); an EC2
credential is one of type `ec2` whose blob holds an access key and a secret, and whose id is the
sha256 of its access key. As Keystone, the blobs are kept encrypted (Fernet, under a key derived
from the cloud's token key). Admins and system readers see every credential, a user their own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import asyncpg
from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken

from api.auth import AuthContext
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, Forbidden, NotFound
from api.identity import policy
from api.identity import validate as v
from api.identity.views import get_or_404, links
from api.query_doc import documented, strings

_KNOWN = {"id", "user_id", "project_id", "type", "blob"}


def _fernet(request: web.Request) -> Fernet:
    key = ctx(request).tokens.derive_key("actorstack credential blobs")
    return Fernet(base64.urlsafe_b64encode(key))


def _blob(request: web.Request, row: asyncpg.Record) -> str:
    try:
        return _fernet(request).decrypt(row["encrypted_blob"].encode()).decode()
    except InvalidToken:
        raise Forbidden(
            f"The blob of credential {row['id']} cannot be decrypted with this cloud's key."
        ) from None


def _encrypted(request: web.Request, blob: str) -> str:
    return _fernet(request).encrypt(blob.encode()).decode()


def access_id(access: str) -> str:
    """An EC2 credential's id: the sha256 of its access key (Keystone's hash_access_key)."""
    return hashlib.sha256(access.encode()).hexdigest()


def _view(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    base = ctx(request).base_url
    view = {
        "id": row["id"],
        "user_id": row["user_id"],
        "project_id": row["project_id"],
        "type": row["type"],
        "blob": _blob(request, row),
        "links": {"self": f"{base}/identity/v3/credentials/{row['id']}"},
    }
    return {**{k: val for k, val in row["extra"].items() if k not in view}, **view}


def _ec2_access(type_: str | None, blob: str | None) -> str | None:
    """The access key an `ec2` blob holds (400 when it is not JSON with one)."""
    if type_ != "ec2" or blob is None:
        return None
    try:
        parsed = json.loads(blob)
    except ValueError:
        raise BadRequest("Invalid blob in credential: an ec2 blob must be JSON.") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("access"), str) or not parsed["access"]:
        raise BadRequest("Invalid blob in credential: an ec2 blob needs an access key.")
    return parsed["access"]


async def _credential(conn: Any, credential_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM credentials WHERE id = $1", credential_id)
    if row is None:
        raise NotFound(f"Could not find credential: {credential_id}.")
    return row


def _may_manage(me: AuthContext, user_id: str, action: str) -> None:
    if me.is_admin or user_id == me.user_id:
        return
    raise policy.denied(action)


async def list_credentials(request: web.Request) -> web.Response:
    me = caller(request)
    q = request.query
    user_id = q.get("user_id")
    if not me.reads_all:
        # Keystone answers a user with their own credentials only.
        if user_id is not None and user_id != me.user_id:
            raise policy.denied("list_credentials")
        user_id = me.user_id
    rows = await ctx(request).pool.fetch(
        "SELECT * FROM credentials WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR type = "
        "$2) "
        "ORDER BY user_id, id",
        user_id,
        q.get("type"),
    )
    return json_response(
        {
            "credentials": [_view(request, r) for r in rows],
            "links": links(ctx(request).base_url, "credentials"),
        }
    )


async def create_credential(request: web.Request) -> web.Response:
    me = caller(request)
    data = v.member(await json_body(request), "credential")
    user_id = v.text(data, "user_id", required=True, max_len=64) or ""
    type_ = v.text(data, "type", required=True, max_len=255)
    blob = v.text(data, "blob", required=True, max_len=1024 * 1024)
    project_id = v.text(data, "project_id", max_len=64)
    _may_manage(me, user_id, "create_credential")
    access = _ec2_access(type_, blob)
    if access is not None and project_id is None:
        raise BadRequest("Credential of type ec2 needs a project_id.")
    credential_id = access_id(access) if access is not None else uuid.uuid4().hex
    async with ctx(request).pool.acquire() as conn:
        await get_or_404(conn, "users", user_id, "user")
        if project_id is not None:
            await get_or_404(conn, "projects", project_id, "project")
        try:
            row = await conn.fetchrow(
                "INSERT INTO credentials (id, user_id, project_id, type, encrypted_blob, extra) "
                "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                credential_id,
                user_id,
                project_id,
                type_,
                _encrypted(request, blob or ""),
                v.extra(data, _KNOWN),
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"Conflict occurred attempting to store credential - Duplicate ID, {credential_id}."
            ) from None
    return json_response({"credential": _view(request, row)}, status=201)


async def get_credential(request: web.Request) -> web.Response:
    row = await _credential(ctx(request).pool, request.match_info["credential_id"])
    policy.require_reader(caller(request), "get_credential", owner=row["user_id"])
    return json_response({"credential": _view(request, row)})


async def update_credential(request: web.Request) -> web.Response:
    me = caller(request)
    data = v.member(await json_body(request), "credential")
    type_ = v.text(data, "type", max_len=255)
    blob = v.text(data, "blob", max_len=1024 * 1024)
    project_id = v.text(data, "project_id", max_len=64)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        old = await _credential(conn, request.match_info["credential_id"])
        _may_manage(me, old["user_id"], "update_credential")
        if data.get("user_id", old["user_id"]) != old["user_id"] and not me.is_admin:
            raise policy.denied("update_credential")
        new_type = type_ or old["type"]
        if new_type == "ec2" and (project_id or old["project_id"]) is None:
            raise BadRequest("Credential of type ec2 needs a project_id.")
        _ec2_access(new_type, blob if blob is not None else _blob(request, old))
        if project_id is not None:
            await get_or_404(conn, "projects", project_id, "project")
        row = await conn.fetchrow(
            "UPDATE credentials SET type = $2, encrypted_blob = coalesce($3, encrypted_blob), "
            "project_id = coalesce($4, project_id), extra = extra || $5 WHERE id = $1 RETURNING *",
            old["id"],
            new_type,
            _encrypted(request, blob) if blob is not None else None,
            project_id,
            v.extra(data, _KNOWN | {"user_id"}),
        )
    return json_response({"credential": _view(request, row)})


async def delete_credential(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        old = await _credential(conn, request.match_info["credential_id"])
        _may_manage(caller(request), old["user_id"], "delete_credential")
        await conn.execute("DELETE FROM credentials WHERE id = $1", old["id"])
    return web.Response(status=204)


# --- OS-EC2 -----------------------------------------------------------------------------------


def _ec2_view(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    blob = json.loads(_blob(request, row))
    base = ctx(request).base_url
    return {
        "user_id": row["user_id"],
        "tenant_id": row["project_id"],
        "access": blob.get("access"),
        "secret": blob.get("secret"),
        "trust_id": blob.get("trust_id"),
        "links": {
            "self": f"{base}/identity/v3/users/{row['user_id']}/credentials/OS-EC2/{blob.get('access')}"
        },
    }


async def _ec2_user(request: web.Request, conn: Any, action: str, *, read: bool) -> str:
    user_id = request.match_info["user_id"]
    me = caller(request)
    if read:
        policy.require_reader(me, action, owner=user_id)
    else:
        _may_manage(me, user_id, action)
    await get_or_404(conn, "users", user_id, "user")
    return user_id


async def create_ec2(request: web.Request) -> web.Response:
    data = await json_body(request)
    if not isinstance(data, dict) or not isinstance(data.get("tenant_id"), str):
        raise BadRequest("'tenant_id' is a required property")
    me = caller(request)
    blob = {
        "access": uuid.uuid4().hex,
        "secret": uuid.uuid4().hex,
        "trust_id": me.trust.id if me.trust else None,
    }
    async with ctx(request).pool.acquire() as conn:
        user_id = await _ec2_user(request, conn, "ec2_create_credential", read=False)
        project = await get_or_404(conn, "projects", data["tenant_id"], "project")
        row = await conn.fetchrow(
            "INSERT INTO credentials (id, user_id, project_id, type, encrypted_blob) VALUES ($1, $2, $3, "
            "'ec2', $4) "
            "RETURNING *",
            access_id(blob["access"]),
            user_id,
            project["id"],
            _encrypted(request, json.dumps(blob)),
        )
    return json_response({"credential": _ec2_view(request, row)}, status=201)


async def list_ec2(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        user_id = await _ec2_user(request, conn, "ec2_list_credentials", read=True)
        rows = await conn.fetch(
            "SELECT * FROM credentials WHERE user_id = $1 AND type = 'ec2' ORDER BY id", user_id
        )
    return json_response(
        {
            "credentials": [_ec2_view(request, r) for r in rows],
            "links": links(ctx(request).base_url, f"users/{user_id}/credentials/OS-EC2"),
        }
    )


async def _ec2(request: web.Request, conn: Any, user_id: str) -> asyncpg.Record:
    access = request.match_info["access"]
    row = await conn.fetchrow(
        "SELECT * FROM credentials WHERE id = $1 AND type = 'ec2' AND user_id = $2",
        access_id(access),
        user_id,
    )
    if row is None:
        raise NotFound(f"Could not find credential: {access}.")
    return row


async def get_ec2(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        user_id = await _ec2_user(request, conn, "ec2_get_credential", read=True)
        row = await _ec2(request, conn, user_id)
    return json_response({"credential": _ec2_view(request, row)})


async def delete_ec2(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        user_id = await _ec2_user(request, conn, "ec2_delete_credential", read=False)
        row = await _ec2(request, conn, user_id)
        await conn.execute("DELETE FROM credentials WHERE id = $1", row["id"])
    return web.Response(status=204)


documented(list_credentials, parameters=strings("user_id", "type"))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/credentials", list_credentials)
    r.add_post("/identity/v3/credentials", create_credential)
    r.add_get("/identity/v3/credentials/{credential_id}", get_credential)
    r.add_patch("/identity/v3/credentials/{credential_id}", update_credential)
    r.add_delete("/identity/v3/credentials/{credential_id}", delete_credential)
    ec2 = "/identity/v3/users/{user_id}/credentials/OS-EC2"
    r.add_get(ec2, list_ec2)
    r.add_post(ec2, create_ec2)
    r.add_get(ec2 + "/{access}", get_ec2)
    r.add_delete(ec2 + "/{access}", delete_ec2)
