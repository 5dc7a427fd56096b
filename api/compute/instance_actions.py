"""/compute/v2.1/servers/{id}/os-instance-actions: what was asked of a server, by whom and with
which outcome (`openstack server event list/show`).

Every request that changes a server records its action (servers.py, server_volumes.py) in
`instance_actions`. The action's one Nova event is not stored: it is derived from the actor events
its request caused (every turn records the request id it carries as its correlation id), so it
says what the actors did, not what the API expected. Actions stay readable after the server is
deleted, as in Nova.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from actors import volume as volume_actor
from api.compute.microversion import requested
from api.compute.server_lookup import not_found
from api.compute.server_views import host_id
from api.context import caller, ctx, json_response
from api.errors import NotFound
from api.times import iso_seconds
from protocol import power
from protocol.states import VmState


def _action_view(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    action = {
        "action": row["action"],
        "instance_uuid": row["server_id"],
        "message": row["message"],
        "project_id": row["project_id"],
        "request_id": row["request_id"],
        "start_time": iso_seconds(row["start_time"]),
        "user_id": row["user_id"],
    }
    if requested(request) >= (2, 58):
        action["updated_at"] = iso_seconds(row["start_time"])
    return action


async def _actions_server(request: web.Request, conn: Any) -> str:
    """Instance actions stay readable after the server is deleted, as in Nova."""
    me = caller(request)
    server_id = request.match_info["server_id"]
    owner = await conn.fetchval("SELECT project_id FROM servers WHERE id = $1", server_id)
    if owner is None or (owner != me.project_id and not me.is_admin):
        raise not_found(server_id)
    return server_id


async def list_actions(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        server_id = await _actions_server(request, conn)
        rows = await conn.fetch(
            "SELECT * FROM instance_actions WHERE server_id = $1 ORDER BY id DESC", server_id
        )
    return json_response({"instanceActions": [_action_view(request, r) for r in rows]})


async def record(
    conn: Any, *, server_id: str, request_id: str, action: str, project_id: str, user_id: str
) -> None:
    """Record that this request asked this of the server (Nova's instance action), in the
    request's transaction: its events are derived later from the actor events it caused."""
    await conn.execute(
        "INSERT INTO instance_actions (server_id, request_id, action, project_id, user_id) "
        "VALUES ($1, $2, $3, $4, $5)",
        server_id,
        request_id,
        action,
        project_id,
        user_id,
    )


# Nova's name for the event of each action (what `openstack server event show` lists).
_EVENT_NAMES = {
    "create": "compute__do_build_and_run_instance",
    "delete": "compute_terminate_instance",
    "restore": "compute_restore_instance",
    "attach_volume": "compute_attach_volume",
    "detach_volume": "compute_detach_volume",
    **{row.nova_action: row.event for row in power.ROWS},
}
# The actions the API does itself (Nova's wrap_instance_event(prefix='api')).
_API_EVENTS = {"lock": "api_lock", "unlock": "api_unlock"}
_VOLUME_ACTIONS = ("attach_volume", "detach_volume")
# A volume's transitional statuses are the ones its table gives a timeout.
_VOLUME_TRANSITIONAL = frozenset(volume_actor.table.timeouts())


async def _actor_event(conn: Any, action: asyncpg.Record) -> tuple[dict[str, Any], bool] | None:
    """The event of an action the actors carry out, and whether it failed; None for an action
    without one."""
    name = _EVENT_NAMES.get(action["action"])
    if name is None:
        return None
    kind = "volume" if action["action"] in _VOLUME_ACTIONS else "server"
    where = "kind = 'volume'" if kind == "volume" else "kind = 'server' AND actor_id = $2"
    args = [action["request_id"]] if kind == "volume" else [action["request_id"], action["server_id"]]
    rows = await conn.fetch(
        f"SELECT at, new_state FROM events WHERE correlation_id = $1 AND {where} ORDER BY id", *args
    )
    done = next((r for r in rows if _settled(kind, r["new_state"])), None)
    failed = done is not None and (done["new_state"] or "").startswith(VmState.ERROR)
    event = {
        "event": name,
        "start_time": iso_seconds(action["start_time"]),
        "finish_time": iso_seconds(done["at"]) if done else None,
        "result": None if done is None else ("Error" if failed else "Success"),
    }
    return event, failed


def _settled(kind: str, state: str | None) -> bool:
    if state is None:
        return False
    if kind == "volume":
        return state not in _VOLUME_TRANSITIONAL
    return ":" not in state  # a server with no task in progress (or deleted)


async def _action_event(request: web.Request, conn: Any, action: asyncpg.Record) -> dict[str, Any] | None:
    """The action's Nova event, derived from the actor events its request caused (every turn
    records the request id it carries as its correlation id): started with the request,
    finished at the first settled state, Error when that state is an error. An action the API
    does itself (lock) is done when its request is."""
    if action["action"] in _API_EVENTS:
        moment = iso_seconds(action["start_time"])
        event: dict[str, Any] = {
            "event": _API_EVENTS[action["action"]],
            "start_time": moment,
            "finish_time": moment,
            "result": "Success",
        }
        failed = False
    else:
        found = await _actor_event(conn, action)
        if found is None:
            return None
        event, failed = found
    me = caller(request)
    if me.is_admin:
        event["traceback"] = None
    version = requested(request)
    if version < (2, 62):
        return event
    server = await conn.fetchrow("SELECT host, fault FROM servers WHERE id = $1", action["server_id"])
    host = (server["host"] if server else None) or ""
    event["hostId"] = host_id(action["project_id"], host) if host else ""
    if me.is_admin:
        event["host"] = host
    if version >= (2, 84):
        fault = server["fault"] if server and failed else None
        event["details"] = fault.get("message") if isinstance(fault, dict) else None
    return event


async def show_action(request: web.Request) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        server_id = await _actions_server(request, conn)
        row = await conn.fetchrow(
            "SELECT * FROM instance_actions WHERE server_id = $1 AND request_id = $2",
            server_id,
            request.match_info["request_id"],
        )
        if row is None:
            raise NotFound(
                f"Action for request_id {request.match_info['request_id']} on instance {server_id} not found"
            )
        event = await _action_event(request, conn, row)
    view = _action_view(request, row)
    if event is not None and event["result"] == "Error":
        view["message"] = "Error"  # as Nova marks an action whose event failed
    return json_response({"instanceAction": {**view, "events": [event] if event else []}})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/servers/{server_id}/os-instance-actions", list_actions)
    r.add_get("/compute/v2.1/servers/{server_id}/os-instance-actions/{request_id}", show_action)
