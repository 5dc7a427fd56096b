"""The `os-getConsoleOutput` server action (`openstack console log show`): the tail of the
serial console QEMU writes to the instance's `console.log` on its host.

As Nova's API asks the compute host by RPC (get_console_output), this asks the server's host
agent over the broker (`agent.console_output`, a question: not persisted, expiring with the
wait) and renders what it answers. The API never reads a host's files: hosts may be other
machines. A host that does not answer in CONSOLE_TIMEOUT seconds is a 409 that says so; a
host without the file, a 404 (no console available), as Nova's.
"""

from __future__ import annotations

import base64
import re
import sys
from typing import Any

import asyncpg
from aiohttp import web

from api import validate as v
from api.compute.server_lookup import find
from api.context import caller, ctx, json_response
from api.errors import Conflict, NotFound
from protocol import Target
from protocol.compute import ConsoleOutputOnHost
from protocol.states import TaskState

ACTION = "os-getConsoleOutput"
POLICY = "os_compute_api:os-console-output"

# Nova's libvirt driver reads no more than the last 100 KiB of the file (MAX_CONSOLE_BYTES).
MAX_CONSOLE_BYTES = 100 * 1024
CONSOLE_TIMEOUT = 20.0  # seconds the server's host gets to answer

# What Nova's API strips from the output: C0 control characters except tab and line feed
# (carriage returns go too, so a serial console's CRLF reads as LF). JSON could carry them
# escaped; Nova removes them, and clients print what they get.
_STRIPPED = re.compile("[\x00-\x08\x0b-\x1f]")


def console_not_available() -> NotFound:
    return NotFound("Guest does not have a console available.")


def requested_lines(document: Any) -> int | None:
    """The body's `length`: how many lines from the end; None for all of them (Nova accepts -1,
    null or no length for that)."""
    args = v.member(document, ACTION)
    v.only(args, {"length"}, ACTION)
    value = args.get("length")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise v.invalid("length", value, f"{value!r} is not of type 'integer', 'string', 'null'")
    length = v.integer(args, "length", minimum=-1, maximum=sys.maxsize, signed=True)
    return None if length == -1 else length


def render(raw: bytes, lines: int | None) -> str:
    """The console text as Nova returns it: the last `lines` pieces of the log split at line
    feeds (so a log ending in a newline gives lines - 1 lines and that newline, and 0 gives
    nothing, as Nova's compute manager does), decoded, control characters stripped."""
    if lines is not None:
        raw = b"\n".join(raw.split(b"\n")[-lines:]) if lines > 0 else b""
    return _STRIPPED.sub("", raw.decode("utf-8", errors="replace"))


def _check_ready(row: asyncpg.Record) -> None:
    """Nova's checks before it asks the compute host: a host to ask, and no delete under way."""
    if row["host"] is None:
        raise Conflict(f"Instance {row['id']} is not ready")
    if row["task_state"] == TaskState.DELETING:
        raise Conflict(
            f"Instance {row['id']} in task_state deleting. Cannot get_console_output while "
            "the instance is in this state."
        )


async def get_output(request: web.Request, document: Any) -> web.Response:
    """POST /servers/{id}/action {"os-getConsoleOutput": {"length": N}} -> 200 {"output": ...}.

    As in Nova: the body is checked first (400), then the server is looked up like any other
    action's (404 for another project's), then the policy (403 for a reader), then the state
    (409 before a host is chosen or while deleting)."""
    lines = requested_lines(document)
    me = caller(request)
    context = ctx(request)
    async with context.pool.acquire() as conn:
        row = await find(conn, me, request.match_info["server_id"])
    me.require_writer(POLICY)
    _check_ready(row)
    raw = await ask_host(context.agents, row["host"], row["id"])
    if raw is None:
        raise console_not_available()
    return json_response({"output": render(raw, lines)})


async def ask_host(agents: Any, host: str, server_id: str) -> bytes | None:
    """The console log's tail, as the server's host agent reads it; None without one."""
    if agents is None:
        return None
    question = ConsoleOutputOnHost(server_id=server_id, max_bytes=MAX_CONSOLE_BYTES)
    try:
        reply = await agents.ask(Target("agent", host), question, timeout=CONSOLE_TIMEOUT, question=True)
    except TimeoutError:
        raise Conflict(
            f"The host {host} of instance {server_id} did not answer in {CONSOLE_TIMEOUT:.0f} s; "
            "try again later."
        ) from None
    output = (reply.result or {}).get("output") if reply.ok else None
    return base64.b64decode(output) if isinstance(output, str) else None
