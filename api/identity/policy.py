"""Keystone's default policies, the few rules its API uses (keystone/common/policies/base.py):

- `admin_required`: the admin role, on any scope (a project admin is a cloud admin);
- ADMIN_OR_SYSTEM_READER: that, or the reader role (or one implying it) on the system;
- a domain reader: the reader role on a token scoped to the target's domain;
- the owner: the target belongs to the caller (their user, credential, trust, token).

A refusal names the policy it failed, as Keystone's 403 does.
"""

from __future__ import annotations

from api.auth import AuthContext
from api.errors import Forbidden


def denied(action: str) -> Forbidden:
    return Forbidden(f"You are not authorized to perform the requested action: identity:{action}.")


def domain_reader(me: AuthContext, domain_id: str | None) -> bool:
    return domain_id is not None and me.domain_id == domain_id and "reader" in me.role_names


def domain_admin(me: AuthContext, domain_id: str | None) -> bool:
    return domain_id is not None and me.domain_id == domain_id and "admin" in me.role_names


def require_admin(me: AuthContext, action: str) -> None:
    """admin_required."""
    if not me.is_admin:
        raise denied(action)


def require_reader(
    me: AuthContext, action: str, *, domain_id: str | None = None, owner: str | None = None
) -> None:
    """ADMIN_OR_SYSTEM_READER, or a reader of the target's domain (`domain_id`), or the user the
    target belongs to (`owner`)."""
    if me.reads_all or domain_reader(me, domain_id) or (owner is not None and owner == me.user_id):
        return
    raise denied(action)


def require_admin_or_owner(me: AuthContext, action: str, owner: str | None) -> None:
    if me.is_admin or (owner is not None and owner == me.user_id):
        return
    raise denied(action)


def listable_domain(me: AuthContext, action: str) -> str | None:
    """What a list may show the caller: None for every domain's entries (ADMIN_OR_SYSTEM_READER),
    a domain's id for a reader of that domain (its entries only); a refusal for anyone else."""
    if me.reads_all:
        return None
    if me.domain_id is not None and "reader" in me.role_names:
        return me.domain_id
    raise denied(action)
