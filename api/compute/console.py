"""The `os-getConsoleOutput` server action (`openstack console log show`): the tail of the
serial console QEMU writes to the instance's `console.log`.

The API reads that file itself, from the state directory it shares with the host agents on this
machine: `up` runs its agents in the API's process, each in `<state dir>/hosts/<host>/`, and a
lone `actorstack hostagent` started with the same state directory keeps its instances in
`<state dir>/instances/`. A deployment whose hosts are other machines would need to ask the
server's host agent for the file over the broker, as Nova's API does with a compute RPC call; that
is not done here, and such a server's console answers 404 (no console available).
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from api import validate as v
from api.compute.server_lookup import find
from api.context import caller, ctx, json_response
from api.errors import Conflict, NotFound
from protocol.states import TaskState

ACTION = "os-getConsoleOutput"
POLICY = "os_compute_api:os-console-output"

# Nova's libvirt driver reads no more than the last 100 KiB of the file (MAX_CONSOLE_BYTES).
MAX_CONSOLE_BYTES = 100 * 1024

# What Nova's API strips from the output: C0 control characters except tab and line feed
# (carriage returns go too, so a serial console's CRLF reads as LF). JSON could carry them
# escaped; Nova removes them, and clients print what they get.
_STRIPPED = re.compile("[\x00-\x08\x0b-\x1f]")

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


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


def candidate_paths(state_dir: Path, host: str, server_id: str) -> list[Path]:
    """Where the host agents on this machine keep the server's console log: the simulated
    host's own directory first, then a lone host agent's. Neither name may leave the state
    directory."""
    if not _CANONICAL_UUID.fullmatch(server_id):
        return []
    paths = []
    if host and "/" not in host and "\0" not in host and not host.startswith("."):
        paths.append(state_dir / "hosts" / host / "instances" / server_id / "console.log")
    paths.append(state_dir / "instances" / server_id / "console.log")
    return paths


def _read_tail(paths: list[Path], limit: int) -> bytes | None:
    """The last `limit` bytes of the first of `paths` that exists; None if none does."""
    for path in paths:
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - limit))
                return f.read(limit)
        except FileNotFoundError:
            continue
    return None


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
    paths = candidate_paths(context.state_dir, row["host"], row["id"])
    raw = await asyncio.to_thread(_read_tail, paths, MAX_CONSOLE_BYTES)
    if raw is None:
        raise console_not_available()
    return json_response({"output": render(raw, lines)})
