"""Who may do what to networking resources: Neutron's default policies, in the words of its
refusals. A resource the caller cannot see is a 404 (the handlers' `find`); one it can see but
not change is a 403 naming the rule, as oslo.policy prints it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from api.auth import AuthContext
from api.network.attributes import owner_project
from api.network.faults import bad_request, policy_denied


def require_writer(me: AuthContext, action: str) -> str:
    """The caller's project, if it may write at all (a project-scoped admin or member token)."""
    if me.project_id is None or not me.can_write:
        raise policy_denied(f"rule:{action}")
    return me.project_id


def owns(me: AuthContext, project_id: str) -> bool:
    return me.is_admin or project_id == me.project_id


def require_owner(me: AuthContext, project_id: str, action: str) -> None:
    if not owns(me, project_id):
        raise policy_denied(f"rule:{action}")


def admin_only(
    me: AuthContext,
    action: str,
    values: dict[str, Any],
    names: Iterable[str],
    defaults: dict[str, Any] | None = None,
) -> None:
    """Refuse attributes only admins may set; on create, an attribute given with its default
    value is not "set" (Neutron's _is_attribute_explicitly_set)."""
    if me.is_admin:
        return
    defaults = defaults or {}
    for name in names:
        if name in values and (name not in defaults or values[name] != defaults[name]):
            raise policy_denied(f"(rule:{action} and rule:{action}:{name})")


def project_for(me: AuthContext, values: dict[str, Any]) -> str:
    """The project a new resource goes to: the caller's, or (admins) the one named."""
    project_id = owner_project(values, me.project_id or "")
    if project_id != me.project_id and not me.is_admin:
        raise bad_request(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request "
            "requires admin privileges"
        )
    return project_id
