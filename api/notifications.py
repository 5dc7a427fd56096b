"""Notifications the API itself sends (Neutron's, which neutron-server sends from its API):
written to the outbox in the request's transaction, so they leave only if the change commits.
The actors send the rest (actors/notifications.py)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from actors import notifications, outbox


def jsonable(value: Any) -> Any:
    """Parsed request values (addresses, networks…) as JSON values."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


async def neutron(
    conn: Any,
    action: str,
    resource: str,
    view: Mapping[str, Any],
    request_body: Mapping[str, Any] | None = None,
) -> None:
    """`<resource>.<action>.start` (the request's resource body, as Neutron) and `.end` (the
    resource as it is now). `view` is what the API answers for the resource."""
    now = time.time()
    start = notifications.neutron(
        f"{resource}.{action}.start",
        resource,
        jsonable(request_body) if request_body is not None else {"id": view.get("id")},
    )
    if action == "delete":
        start = notifications.neutron(f"{resource}.delete.start", resource, {"id": view.get("id")})
    end = notifications.neutron(f"{resource}.{action}.end", resource, view)
    await outbox.write(
        conn, [outbox.to_notifications(start, now), outbox.to_notifications(end, now)], wake=True
    )
