"""`actorstack events`: tail the operator event stream in a terminal.

It signs in as the `openstack` CLI does, from the OS_* variables (`eval "$(actorstack openrc)"`),
or uses OS_TOKEN; the API's URL is OS_AUTH_URL without its `/identity/v3`, or `--url`. One line
per event (time, number, kind and actor, the state change, the message that caused it, the
request id), coloured on a terminal; `--json` prints each event's JSON instead. A dropped
connection is resumed from the last event seen (Last-Event-ID), so nothing is skipped or shown
twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import aiohttp

from protocol.states import VmState, VolumeStatus

RESET, DIM, BOLD = "\033[0m", "\033[2m", "\033[1m"
COLOURS = {
    VmState.ACTIVE: "\033[32m",
    VolumeStatus.AVAILABLE: "\033[32m",
    VolumeStatus.IN_USE: "\033[32m",
    VmState.ERROR: "\033[31m",
    VmState.DELETED: "\033[35m",
    VmState.STOPPED: "\033[34m",
    "down": "\033[33m",  # a host
}
TRANSITIONAL = "\033[33m"


class EventsError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the API's URL (default: OS_AUTH_URL without /identity/v3)")
    parser.add_argument("--after", type=int, help="replay the events after this number first (0: all)")
    parser.add_argument("--kind", action="append", default=[], help="only this actor kind (server, port, …)")
    parser.add_argument("--id", action="append", default=[], help="only this actor")
    parser.add_argument("--type", action="append", default=[], help="only this message type")
    parser.add_argument("--project-id", help="admins: only this project's events")
    parser.add_argument("--json", action="store_true", help="one JSON document per line")
    parser.add_argument("--count", type=int, help="stop after this many events")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto")


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return args.url.rstrip("/")
    auth = os.environ.get("OS_AUTH_URL")
    if not auth:
        raise EventsError('no API URL: set OS_AUTH_URL (eval "$(actorstack openrc)") or pass --url')
    auth = auth.rstrip("/")
    for suffix in ("/identity/v3", "/v3", "/identity"):
        if auth.endswith(suffix):
            return auth[: -len(suffix)]
    return auth


async def _token(session: aiohttp.ClientSession, base: str) -> str:
    if os.environ.get("OS_TOKEN"):
        return os.environ["OS_TOKEN"]
    env = os.environ
    missing = [v for v in ("OS_USERNAME", "OS_PASSWORD", "OS_PROJECT_NAME") if not env.get(v)]
    if missing:
        raise EventsError(f'cannot sign in: {", ".join(missing)} not set (eval "$(actorstack openrc)")')
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": env["OS_USERNAME"],
                        "password": env["OS_PASSWORD"],
                        "domain": {"name": env.get("OS_USER_DOMAIN_NAME", "Default")},
                    }
                },
            },
            "scope": {
                "project": {
                    "name": env["OS_PROJECT_NAME"],
                    "domain": {"name": env.get("OS_PROJECT_DOMAIN_NAME", "Default")},
                }
            },
        }
    }
    async with session.post(f"{base}/identity/v3/auth/tokens", json=body) as response:
        if response.status != 201:
            raise EventsError(f"sign-in refused ({response.status}): {(await response.text())[:300]}")
        return response.headers["X-Subject-Token"]


def _query(args: argparse.Namespace) -> list[tuple[str, str]]:
    query = [("kind", k) for k in args.kind] + [("id", i) for i in args.id] + [("type", t) for t in args.type]
    if args.project_id:
        query.append(("project_id", args.project_id))
    return query


def render(event: dict[str, Any], colour: bool) -> str:
    time = event["time"][11:23]
    new = event["new_state"] or "-"
    prev = event["prev_state"] or "-"
    paint = TRANSITIONAL if ":" in new else COLOURS.get(new, "")  # "vm_state:task_state" is on its way
    change = f"{prev} -> {new}" if prev != new else new
    text = (
        f"{time} #{event['id']:<7} {event['kind']:<9} {event['actor_id']}  {change:<44} "
        f"{event['type']}  {event['request_id'] or ''}"
    )
    if not colour:
        return text
    head, _, rest = text.partition(f"{change:<44}")
    return f"{DIM}{head}{RESET}{BOLD}{paint}{change:<44}{RESET}{DIM}{rest}{RESET}"


async def tail(args: argparse.Namespace) -> int:
    base = _base_url(args)
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty() and not args.json)
    shown = 0
    last = args.after
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        token = await _token(session, base)
        failures = 0
        while True:
            headers = {"X-Auth-Token": token, "Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                async with session.get(f"{base}/v1/events", params=_query(args), headers=headers) as response:
                    if response.status != 200:
                        raise EventsError(
                            f"the event stream answered {response.status}: {(await response.text())[:300]}"
                        )
                    failures = 0
                    data = None
                    async for raw in response.content:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("data:"):
                            data = line[5:].strip()
                        elif line == "" and data is not None:
                            event = json.loads(data)
                            data = None
                            if "id" not in event:  # the server's closing reason
                                raise EventsError(f"the stream ended: {event.get('reason')}")
                            last = event["id"]
                            print(json.dumps(event) if args.json else render(event, colour), flush=True)
                            shown += 1
                            if args.count is not None and shown >= args.count:
                                return 0
            except (TimeoutError, aiohttp.ClientError) as exc:
                failures += 1
                if failures > 5:
                    raise EventsError(f"cannot reach the event stream at {base}: {exc}") from None
                print(f"(connection lost: {exc}; resuming after #{last})", file=sys.stderr)
                await asyncio.sleep(min(2.0 * failures, 10.0))
