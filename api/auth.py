"""Tokens, passwords and who is asking.

Tokens are signed, not stored (like Keystone's Fernet tokens): `as1.<payload>.<mac>`, where
payload is base64url JSON (user, scope, expiry, audit id, the application credential or trust
it was made from if any) and mac is its HMAC-SHA256 under the cluster's `token_key`. Validation
needs no token lookup that a forged token could pass: a bad MAC or a past expiry is refused
before the database is asked anything; then one query for revocations (a revoked token, every
token of a user, a scope, a project or a domain revoked after it was issued, a deleted
application credential or trust) and one for the roles it holds now (api/effective_roles.py),
which a token does not carry, as Keystone's do not.

Passwords are stored as scrypt hashes with a per-password salt; hashing runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
import time
import uuid
from typing import Any

import asyncpg
import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from api import catalog, effective_roles
from api.errors import Forbidden, Unauthorized

TOKEN_PREFIX = "as1."
DbConn = asyncpg.Connection | asyncpg.Pool
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AppCredentialRef(msgspec.Struct, frozen=True, array_like=True):
    """The application credential a token was made from (its fields never change after creation,
    so the token can carry them; whether it still exists is checked with the revocations)."""

    id: str
    name: str
    unrestricted: bool
    limited: bool = False  # it has access rules: its tokens may call only what they allow


class TrustRef(msgspec.Struct, frozen=True, array_like=True):
    """The trust (OS-TRUST) a token was made from: it acts for the trustor on the trust's project
    with the trust's roles (as the trustor when it impersonates, else as the trustee); whether
    the trust still stands is checked with the revocations."""

    id: str
    trustor_user_id: str
    trustee_user_id: str
    impersonation: bool
    roles_from: str | None = None  # a redelegated trust's: the first trustor of its chain

    @property
    def holder(self) -> str:
        """The user whose roles the trust delegates (they must still hold them)."""
        return self.roles_from or self.trustor_user_id


class TokenPayload(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a token says: who, on which scope (a project, a domain, the system, or none), how,
    until when. Not its roles: those are computed whenever it is used (api/effective_roles.py)."""

    user_id: str
    user_name: str
    user_domain_id: str
    project_id: str | None
    project_name: str | None
    project_domain_id: str | None
    methods: tuple[str, ...]
    issued_at: float
    expires_at: float
    audit_id: str
    # Fields added later have defaults (and are left out when unset) so older tokens still decode.
    roles: tuple[tuple[str, str], ...] = ()  # only in tokens issued before roles were computed
    application_credential: AppCredentialRef | None = None
    system: bool = False  # scoped to the system ({"system": {"all": true}})
    domain_id: str | None = None  # scoped to this domain
    trust: TrustRef | None = None  # scoped to this trust (its project)

    @property
    def scoped(self) -> bool:
        return self.project_id is not None or self.domain_id is not None or self.system


@dataclasses.dataclass(frozen=True)
class AuthContext:
    """Who is calling, from a validated token, with the roles it holds now on its scope."""

    token: str
    payload: TokenPayload
    held: tuple[tuple[str, str], ...] | None = None  # (id, name); None: the payload's own

    @property
    def roles(self) -> tuple[tuple[str, str], ...]:
        return self.held if self.held is not None else self.payload.roles

    @property
    def user_id(self) -> str:
        return self.payload.user_id

    @property
    def project_id(self) -> str | None:
        return self.payload.project_id

    @property
    def domain_id(self) -> str | None:
        """The domain of a domain-scoped token."""
        return self.payload.domain_id

    @property
    def system_scoped(self) -> bool:
        return self.payload.system

    @property
    def application_credential(self) -> AppCredentialRef | None:
        return self.payload.application_credential

    @property
    def trust(self) -> TrustRef | None:
        return self.payload.trust

    @property
    def role_names(self) -> frozenset[str]:
        return frozenset(name for _, name in self.roles)

    @property
    def is_admin(self) -> bool:
        """Keystone's `admin_required`: the admin role, on whatever scope."""
        return "admin" in self.role_names

    @property
    def is_system_reader(self) -> bool:
        """Keystone's SYSTEM_READER: the reader role (or one implying it) on the system."""
        return self.system_scoped and "reader" in self.role_names

    @property
    def is_system_admin(self) -> bool:
        return self.system_scoped and "admin" in self.role_names

    @property
    def reads_all(self) -> bool:
        """Keystone's ADMIN_OR_SYSTEM_READER."""
        return self.is_admin or self.is_system_reader

    @property
    def can_write(self) -> bool:
        return bool(self.role_names & {"admin", "member"})

    def require_project(self) -> str:
        if self.project_id is None:
            raise Forbidden("This action needs a project-scoped token.")
        return self.project_id

    def require_admin(self, action: str = "this action") -> None:
        if not self.is_admin:
            raise Forbidden(f"Policy doesn't allow {action} to be performed.")

    def require_writer(self, action: str = "this action") -> None:
        self.require_project()
        if not self.can_write:
            raise Forbidden(f"Policy doesn't allow {action} to be performed.")

    def require_project_access(self, project_id: str, action: str = "this action") -> None:
        """Own project, or any project for an admin."""
        if not self.is_admin and project_id != self.project_id:
            raise Forbidden(f"Policy doesn't allow {action} to be performed.")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenCodec:
    def __init__(self, key: str, ttl: float = 3600.0) -> None:
        self._key = key.encode()
        self.ttl = ttl

    def derive_key(self, purpose: str) -> bytes:
        """32 bytes for another use of the cluster's secret (e.g. encrypting credential blobs),
        independent of the token MAC key (HKDF-SHA256 over the token key)."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(self._key)

    def issue(self, *, expires_at: float | None = None, **fields: object) -> tuple[str, TokenPayload]:
        """A new token; `expires_at` caps it (a rescoped token keeps its original expiry)."""
        now = time.time()
        expiry = now + self.ttl if expires_at is None else min(expires_at, now + self.ttl)
        payload = TokenPayload(
            issued_at=now,
            expires_at=expiry,
            audit_id=_b64(secrets.token_bytes(16)),
            **fields,  # type: ignore[arg-type]
        )
        body = _b64(msgspec.json.encode(payload))
        mac = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        return f"{TOKEN_PREFIX}{body}.{mac}", payload

    def verify(self, token: str) -> TokenPayload:
        """The payload of a genuine, unexpired token; Unauthorized otherwise."""
        if not token.startswith(TOKEN_PREFIX) or token.count(".") != 2:
            raise Unauthorized("The request you have made requires authentication.")
        body, mac = token[len(TOKEN_PREFIX) :].split(".")
        expected = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(mac, expected):
            raise Unauthorized("The request you have made requires authentication.")
        try:
            payload = msgspec.json.decode(_unb64(body), type=TokenPayload)
        except (msgspec.DecodeError, ValueError):
            raise Unauthorized("The request you have made requires authentication.") from None
        if payload.expires_at <= time.time():
            raise Unauthorized("The token has expired.")
        return payload


_REVOKED = """
SELECT EXISTS (SELECT 1 FROM token_revocations WHERE audit_id = $1)
    OR EXISTS (SELECT 1 FROM token_revocations WHERE user_id = $2 AND revoked_at >= to_timestamp($3) AND (
        (project_id IS NULL AND domain_id IS NULL AND NOT system)
        OR project_id = $4 OR domain_id = $5 OR (system AND $6)))
    OR EXISTS (SELECT 1 FROM token_revocations
        WHERE project_id = $4 AND user_id IS NULL AND revoked_at >= to_timestamp($3))
    OR EXISTS (SELECT 1 FROM token_revocations
        WHERE domain_id = ANY($7::text[]) AND user_id IS NULL AND revoked_at >= to_timestamp($3))
    OR ($8::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM application_credentials WHERE id = $8))
    OR ($9::text IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM trusts t JOIN users trustor ON trustor.id = t.trustor_user_id
        JOIN users trustee ON trustee.id = t.trustee_user_id
        WHERE t.id = $9 AND trustor.enabled AND trustee.enabled
        AND (t.expires_at IS NULL OR t.expires_at > now())))
"""


async def check_not_revoked(conn: DbConn, payload: TokenPayload) -> None:
    """Unauthorized for a revoked token (itself, its user's, its user's on its scope, every
    token of its project or domain), or one made from an application credential since deleted
    or from a trust since deleted or expired, or whose trustor or trustee was disabled (a few
    index probes in one query)."""
    if await conn.fetchval(_REVOKED, *_revocation_args(payload)):
        raise Unauthorized("The token has been revoked.")


def _pattern(path: str) -> re.Pattern[str]:
    """An access rule's path as keystonemiddleware reads it: `*` one segment, `**` any number."""
    parts = re.split(r"(\*\*|\*)", path.rstrip("/") or "/")
    return re.compile("".join(".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p) for p in parts))


def _service_of(path: str) -> tuple[set[str], str]:
    """The catalog's service types served under the request's path, and the path as the service
    sees it (below its mount point: `/compute/v2.1/servers` is compute's `/v2.1/servers`)."""
    types = set()
    for type_, _, mount in catalog.SERVICES:
        root = "/" + mount.strip("/").split("/")[0]
        if path == root or path.startswith(root + "/"):
            types.add(type_)
            relative = path[len(root) :] or "/"
    return (types, relative) if types else (set(), path)


async def check_access_rules(conn: DbConn, payload: TokenPayload, method: str, path: str) -> None:
    """A token made from an application credential with access rules may make only the calls
    they allow (Unauthorized otherwise), as keystonemiddleware enforces them."""
    app_cred = payload.application_credential
    if app_cred is None or not app_cred.limited:
        return
    types, relative = _service_of(path)
    rules = await conn.fetch(
        "SELECT r.service, r.path, r.method FROM application_credential_access_rules c "
        "JOIN access_rules r ON r.id = c.access_rule_id WHERE c.application_credential_id = $1",
        app_cred.id,
    )
    for rule in rules:
        if (
            rule["service"] in types
            and rule["method"] == method
            and _pattern(rule["path"]).fullmatch(relative.rstrip("/") or "/")
        ):
            return
    raise Unauthorized("The request you have made requires authentication.")


def _revocation_args(payload: TokenPayload) -> list[Any]:
    """The arguments of _REVOKED ($1 to $9) for a token."""
    app_cred, trust = payload.application_credential, payload.trust
    scope_domain = payload.domain_id or payload.project_domain_id
    return [
        payload.audit_id,
        payload.user_id,
        payload.issued_at,
        payload.project_id,
        scope_domain,
        payload.system,
        [d for d in (payload.user_domain_id, scope_domain) if d],
        app_cred.id if app_cred else None,
        trust.id if trust else None,
    ]


def _authorization(payload: TokenPayload) -> tuple[str, list[Any]]:
    """One query for whether the token still stands and which roles it holds now: its user's (a
    trust's trustor's) on its scope, narrowed to the trust's or the application credential's."""
    app_cred, trust = payload.application_credential, payload.trust
    args = _revocation_args(payload)
    if not payload.scoped:
        return f"SELECT ({_REVOKED}) AS revoked, NULL::json AS roles", args
    args.append(trust.holder if trust is not None else payload.user_id)
    target = payload.project_id or payload.domain_id
    if target is not None:
        args.append(target)
    roles = effective_roles.scope_sql(
        project=payload.project_id is not None,
        domain=payload.domain_id is not None,
        system=payload.system,
        user="$10",
        target="$11",
    )
    narrowed = ""
    if trust is not None:
        narrowed = "WHERE r.id IN (SELECT role_id FROM trust_roles WHERE trust_id = $9)"
    elif app_cred is not None:
        narrowed = (
            "WHERE r.id IN (SELECT role_id FROM application_credential_roles "
            "WHERE application_credential_id = $8)"
        )
    held = (
        "SELECT coalesce(json_agg(json_build_array(r.id, r.name) ORDER BY r.name), '[]'::json) "
        f"FROM ({roles}) r {narrowed}"
    )
    return f"SELECT ({_REVOKED}) AS revoked, ({held}) AS roles", args


async def authorize(
    conn: DbConn, token: str, payload: TokenPayload, method: str | None = None, path: str | None = None
) -> AuthContext:
    """The caller behind a genuine, unexpired token, with the roles it holds now: Unauthorized
    if it was revoked (see check_not_revoked), if it is scoped and holds no role there any more
    (its user lost them, or its trust or credential no longer gives any), or (given the request's
    method and path) if its credential's access rules do not allow the call. One query, and one
    more for a credential with access rules."""
    sql, args = _authorization(payload)
    row = await conn.fetchrow(sql, *args)
    if row["revoked"]:
        raise Unauthorized("The token has been revoked.")
    roles = tuple((rid, name) for rid, name in row["roles"] or ())
    if payload.scoped and not roles:
        raise Unauthorized("The request you have made requires authentication.")
    if method is not None and path is not None:
        await check_access_rules(conn, payload, method, path)
    return AuthContext(token, payload, roles)


def _hash_sync(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=64 * 1024 * 1024, **_SCRYPT)


async def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = await asyncio.to_thread(_hash_sync, password, salt)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


async def check_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        # Spend the same time as a real check so a missing user is not faster to find.
        await asyncio.to_thread(_hash_sync, password, b"0" * 16)
        return False
    _, n, r, p, salt, digest = stored.split("$")
    params = {"n": int(n), "r": int(r), "p": int(p)}
    got = await asyncio.to_thread(
        lambda: hashlib.scrypt(
            password.encode(), salt=_unb64(salt), dklen=32, maxmem=64 * 1024 * 1024, **params
        )
    )
    return hmac.compare_digest(got, _unb64(digest))


def new_id() -> str:
    """Keystone-style ids: 32 hex digits."""
    return uuid.uuid4().hex
