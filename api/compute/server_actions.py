"""POST /compute/v2.1/servers/{id}/action, and the server's delete: every action Nova knows.

- The power actions (protocol/power.py's rows), the deferred delete's `restore` and
  `forceDelete`, and DELETE itself become messages to the server actor. Whether one is legal
  now is decided by the actor's own transition table (`actors.server.table`), so the API's 409
  and the actor agree; the same check runs again in the actor when the message arrives.
- `lock` and `unlock` change only the API's columns (who locked it and why): a locked server
  refuses the actions above (and metadata and volume changes) to anyone but an admin, 409.
- `os-getConsoleOutput` is console.py's; `addSecurityGroup` and `removeSecurityGroup` are
  server_security_groups.py's.
- Nova's other actions (rebuild, resize, createImage, migrate, shelve, rescue, ...) are ones
  this cloud does not have yet: after the server is found (404 first, as Nova looks it up before
  it acts), they answer Nova's 400 "The requested functionality is not supported." so a
  client tells them from an action no Nova has (400 "There is no such action: X").

DELETE is Nova's: a hard delete, or, with a reclaim interval (ACTORSTACK_RECLAIM_INSTANCE_INTERVAL,
seconds, default 0 as Nova's reclaim_instance_interval), a soft delete of a server that was ever
active: powered off and SOFT_DELETED until the interval is over, `restore` bringing it back and
`forceDelete` deleting it at once.
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg
from aiohttp import web

from actors import kinds, outbox
from actors import server as server_actor
from api.auth import AuthContext
from api.compute import console, instance_actions, server_security_groups
from api.compute.microversion import requested
from api.compute.server_lookup import find
from api.context import caller, ctx, json_body
from api.errors import BadRequest, Conflict
from protocol import Envelope, Message, Target, power
from protocol import compute as m
from protocol.power import PowerActionRow

RECLAIM_ENV = "ACTORSTACK_RECLAIM_INSTANCE_INTERVAL"

# The power actions by the key of their action body, then by the `type` that selects one of
# several (a reboot's SOFT or HARD; None for the others): the rows of protocol/power.py.
_POWER_ACTIONS: dict[str, dict[str | None, PowerActionRow]] = {}
for _row in power.ROWS:
    _POWER_ACTIONS.setdefault(_row.api_action, {})[_row.api_type] = _row

# Nova's server actions this cloud does not have yet (they come with later issues).
NOT_SUPPORTED = frozenset(
    {
        "rebuild", "resize", "confirmResize", "revertResize", "createImage", "createBackup",
        "migrate", "os-migrateLive", "evacuate", "shelve", "shelveOffload", "unshelve", "rescue",
        "unrescue", "changePassword", "os-resetState",
        "os-resetNetwork", "injectNetworkInfo", "addFixedIp", "removeFixedIp", "addFloatingIp",
        "removeFloatingIp", "trigger_crash_dump", "os-getVNCConsole", "os-getSPICEConsole",
        "os-getSerialConsole", "os-getRDPConsole", "os-getMKSConsole",
    }
)  # fmt: skip


def reclaim_interval() -> float:
    """Nova's reclaim_instance_interval: seconds a deleted server stays soft-deleted (0: none)."""
    raw = os.environ.get(RECLAIM_ENV, "0")
    try:
        return max(float(raw), 0.0)
    except ValueError:
        raise ValueError(f"{RECLAIM_ENV} must be a number of seconds, not {raw!r}") from None


def not_supported() -> BadRequest:
    """Nova's raise_feature_not_supported."""
    return BadRequest("The requested functionality is not supported.")


def _power_row(name: str, args: Any) -> PowerActionRow:
    """The power action the body asks for (400 as Nova for an unknown reboot type)."""
    rows = _POWER_ACTIONS[name]
    if None in rows:
        return rows[None]
    kind = args.get("type") if isinstance(args, dict) else None
    if not isinstance(kind, str) or kind.upper() not in rows:
        expected = " or ".join(f"'{t}'" for t in rows)
        raise BadRequest(f"Invalid input for field/attribute type. Value: {kind!r}. {expected} expected")
    return rows[kind.upper()]


def conflict(row: asyncpg.Record, action: str) -> Conflict:
    """Nova's 409 for an action the server's state does not allow."""
    if row["task_state"] is not None:
        attr, state = "task_state", row["task_state"]
    else:
        attr, state = "vm_state", row["vm_state"]
    return Conflict(f"Cannot '{action}' instance {row['id']} while it is in {attr} {state}")


def check_unlocked(row: asyncpg.Record, me: AuthContext) -> None:
    """Nova's check_instance_lock: a locked server is changed by an admin only."""
    if row["locked"] and not me.is_admin:
        raise Conflict(f"Instance {row['id']} is locked")


async def send(
    request: web.Request, body: Message, action: str, *, policy: str, record_as: str | None = None
) -> None:
    """Check the action against the lock and the actor's table, record it (as Nova's instance
    action `record_as`, by default `action`), and send it, in one transaction."""
    me = caller(request)
    context = ctx(request)
    server_id = request.match_info["server_id"]
    async with context.pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, server_id)
        me.require_writer(policy)
        check_unlocked(row, me)
        if not server_actor.table.allows(kinds.SERVER.store.decode(row), type(body)):
            raise conflict(row, action)
        if row["host"] is None and not isinstance(body, m.DeleteServer):
            raise Conflict(f"Instance {server_id} is not ready")
        await instance_actions.record(
            conn,
            server_id=server_id,
            request_id=request["request_id"],
            action=record_as or action,
            project_id=row["project_id"],
            user_id=me.user_id,
        )
        await outbox.send(
            conn,
            [Envelope.new(Target("server", server_id), body, correlation_id=request["request_id"])],
            context.shards,
        )


async def _deferred(request: web.Request) -> Message:
    """What a DELETE sends: a soft delete when a reclaim interval is set and the server was
    ever active and may be soft-deleted now; else the delete (Nova falls back to it the same way)."""
    interval = reclaim_interval()
    if interval <= 0:
        return m.DeleteServer()
    async with ctx(request).pool.acquire() as conn:
        row = await find(conn, caller(request), request.match_info["server_id"])
    record = kinds.SERVER.store.decode(row)
    if row["launched_at"] is None or not server_actor.table.allows(record, m.SoftDeleteServer):
        return m.DeleteServer()
    return m.SoftDeleteServer(reclaim_after=interval)


async def delete(request: web.Request) -> web.Response:
    await send(request, await _deferred(request), "delete", policy="os_compute_api:servers:delete")
    return web.Response(status=204)


async def _power(request: web.Request, name: str, args: Any) -> web.Response:
    row = _power_row(name, args)
    await send(request, row.request(), row.nova_action, policy=f"os_compute_api:servers:{row.nova_action}")
    return web.Response(status=202)


async def _restore(request: web.Request, name: str, args: Any) -> web.Response:
    await send(request, m.RestoreServer(), "restore", policy="os_compute_api:os-deferred-delete:restore")
    return web.Response(status=202)


async def _force_delete(request: web.Request, name: str, args: Any) -> web.Response:
    # Nova records a forced delete as the instance's 'delete' action.
    await send(
        request,
        m.DeleteServer(),
        "forceDelete",
        policy="os_compute_api:os-deferred-delete:force",
        record_as="delete",
    )
    return web.Response(status=202)


async def _lock(request: web.Request, name: str, args: Any) -> web.Response:
    """Nova's lock: by the owner's project ('owner') or an admin of another ('admin'), with an
    optional reason from 2.73; locking a server its owner already locked changes nothing."""
    reason = None
    if requested(request) >= (2, 73) and args is not None:
        if not isinstance(args, dict) or set(args) - {"locked_reason"}:
            raise BadRequest(
                f"Invalid input for field/attribute lock. Value: {args!r}. Additional properties are "
                "not allowed"
            )
        reason = args.get("locked_reason")
        if reason is not None and (not isinstance(reason, str) or not 1 <= len(reason) <= 255):
            raise BadRequest(
                f"Invalid input for field/attribute locked_reason. Value: {reason!r}. It must be a "
                "string of 1 to 255 characters"
            )
    await _set_lock(request, "lock", locked=True, reason=reason)
    return web.Response(status=202)


async def _unlock(request: web.Request, name: str, args: Any) -> web.Response:
    await _set_lock(request, "unlock", locked=False, reason=None)
    return web.Response(status=202)


async def _set_lock(request: web.Request, action: str, *, locked: bool, reason: str | None) -> None:
    me = caller(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await find(conn, me, request.match_info["server_id"])
        me.require_writer(f"os_compute_api:os-lock-server:{action}")
        owner = row["project_id"] == me.project_id
        if locked and row["locked"] and owner:
            return  # Nova: the owner's lock of a locked server changes nothing
        if (
            not locked
            and row["locked_by"] is not None
            and row["locked_by"] != ("owner" if owner else "admin")
        ):
            me.require_admin("os_compute_api:os-lock-server:unlock:unlock_override")
        await conn.execute(
            "UPDATE servers SET locked = $2, locked_by = $3, locked_reason = $4, "
            "updated_at = extract(epoch from now()), version = version + 1 WHERE id = $1",
            row["id"],
            locked,
            ("owner" if owner else "admin") if locked else None,
            reason if locked else None,
        )
        await instance_actions.record(
            conn,
            server_id=row["id"],
            request_id=request["request_id"],
            action=action,
            project_id=row["project_id"],
            user_id=me.user_id,
        )


async def _not_supported(request: web.Request, name: str, args: Any) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        await find(conn, caller(request), request.match_info["server_id"])
    raise not_supported()


_HANDLERS = {
    **dict.fromkeys(_POWER_ACTIONS, _power),
    "restore": _restore,
    "forceDelete": _force_delete,
    "lock": _lock,
    "unlock": _unlock,
    server_security_groups.ADD: server_security_groups.change,
    server_security_groups.REMOVE: server_security_groups.change,
    **dict.fromkeys(NOT_SUPPORTED, _not_supported),
}


async def action(request: web.Request) -> web.Response:
    document = await json_body(request)
    if not isinstance(document, dict) or len(document) != 1:
        raise BadRequest("There is no such action: the body must name exactly one action.")
    ((name, args),) = document.items()
    if name == console.ACTION:
        return await console.get_output(request, document)
    handler = _HANDLERS.get(name)
    if handler is None:
        raise BadRequest(f"There is no such action: {name}")
    return await handler(request, name, args)
