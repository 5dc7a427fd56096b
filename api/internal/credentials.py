"""Host tokens: the credential a host agent shows the internal API (`X-Host-Token`).

A host agent holds no database credentials and no Keystone user. What it may read is scoped
to the hosts its token names: `<version>.<hosts>.<signature>`, the hosts a base64url JSON list
and the signature an HMAC-SHA256 under the cloud's `host_key` (cluster_settings, made by `db
init`). A process running several simulated hosts (`up --hosts N`) holds one token for all of
them; `actorstack host credentials NAME` mints the token of one host on another machine.
Tokens do not expire: a host's credential is replaced by replacing the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

PREFIX = "host1"
HEADER = "X-Host-Token"


class BadHostToken(Exception):
    pass


def _sign(key: str, payload: str) -> str:
    return hmac.new(key.encode(), f"{PREFIX}.{payload}".encode(), hashlib.sha256).hexdigest()


def mint(key: str, hosts: list[str] | tuple[str, ...] | frozenset[str]) -> str:
    """A token for these hosts."""
    names = sorted(set(hosts))
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError("a host token names one host or more")
    payload = base64.urlsafe_b64encode(json.dumps(names).encode()).decode().rstrip("=")
    return f"{PREFIX}.{payload}.{_sign(key, payload)}"


def verify(key: str, token: str) -> frozenset[str]:
    """The hosts a valid token names; BadHostToken otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise BadHostToken("not a host token")
    _, payload, signature = parts
    if not hmac.compare_digest(_sign(key, payload), signature):
        raise BadHostToken("the host token's signature does not match")
    try:
        names = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadHostToken("the host token's payload is not readable") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise BadHostToken("the host token names no host")
    return frozenset(names)
