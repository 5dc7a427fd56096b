"""/compute/v2.1/servers/{id}/tags (microversion 2.26): a server's tags, as Nova keeps them.

List, replace all, add one, check one, delete one, delete all; at most 50 tags of 1 to 60
characters without '/' or ','. Changing them needs the server active, paused, suspended or shut
off (409 otherwise, as Nova); reading them needs only to see the server. The tags are the
`tags` column of the server's row (the API's), shown in the server's views from 2.26, given at
create from 2.52 (server_create.py checks them with `checked`) and filtered on by the list.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp import web

from api.compute.links import resource_links
from api.compute.microversion import requested
from api.compute.server_lookup import find
from api.context import caller, ctx, json_body, json_response
from api.errors import BadRequest, Conflict, NotFound
from protocol.states import VmState

MAX_TAGS = 50  # Nova's MAX_TAG_COUNT
MAX_TAG_LENGTH = 60
# The vm_states in which Nova lets a server's tags change.
_CHANGEABLE = frozenset({VmState.ACTIVE, VmState.PAUSED, VmState.SUSPENDED, VmState.STOPPED})


def _tag_problem(tag: Any) -> str | None:
    """Why `tag` is not a tag (Nova's parameter_types.tag), or None."""
    if not isinstance(tag, str):
        return f"{tag!r} is not of type 'string'"
    if not tag:
        return f"{tag!r} is too short"
    if len(tag) > MAX_TAG_LENGTH:
        return f"{tag!r} is too long"
    if "/" in tag or "," in tag:
        return f"{tag!r} does not match '^[^,/]*$'"
    return None


def checked(tags: Any, field: str = "tags") -> list[str]:
    """A list of tags as a body gives it (create from 2.52, replace all): 400 in Nova's words
    for anything else; duplicates count once."""
    if not isinstance(tags, list):
        raise BadRequest(
            f"Invalid input for field/attribute {field}. Value: {tags!r}. {tags!r} is not of type 'array'"
        )
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"Invalid input for field/attribute {field}. Value: {tags!r}. {tags!r} is too long")
    for tag in tags:
        problem = _tag_problem(tag)
        if problem is not None:
            raise BadRequest(
                f"Invalid input for field/attribute {field}[{tags.index(tag)}]. Value: {tag!r}. {problem}"
            )
    return list(dict.fromkeys(tags))


def _gate(request: web.Request) -> None:
    if requested(request) < (2, 26):
        raise NotFound("The resource could not be found.")


# Nova's policy of each change (os_compute_api:os-server-tags:<policy>)
_POLICIES = {
    "update tag": "update",
    "update tags": "update_all",
    "delete tag": "delete",
    "delete tags": "delete_all",
}


async def _server(request: web.Request, conn: Any, *, change: str | None = None) -> asyncpg.Record:
    """The server (404 if the caller cannot see it); for a `change`, in a state that allows it."""
    me = caller(request)
    row = await find(conn, me, request.match_info["server_id"])
    if change is not None:
        me.require_writer(f"os_compute_api:os-server-tags:{_POLICIES[change]}")
        if row["vm_state"] not in _CHANGEABLE:
            raise Conflict(
                f"Cannot '{change}' instance {row['id']} while it is in vm_state {row['vm_state']}"
            )
    return row


async def list_tags(request: web.Request) -> web.Response:
    _gate(request)
    async with ctx(request).pool.acquire() as conn:
        row = await _server(request, conn)
    return json_response({"tags": list(row["tags"])})


async def check_tag(request: web.Request) -> web.Response:
    _gate(request)
    tag = request.match_info["tag"]
    async with ctx(request).pool.acquire() as conn:
        row = await _server(request, conn)
    if tag not in row["tags"]:
        raise NotFound(f"Server {row['id']} has no tag '{tag}'")
    return web.Response(status=204)


async def replace_tags(request: web.Request) -> web.Response:
    _gate(request)
    document = await json_body(request)
    if not isinstance(document, dict) or set(document) != {"tags"}:
        raise BadRequest(
            "Invalid input for field/attribute tags. 'tags' is a required property and the only one allowed"
        )
    tags = checked(document["tags"])
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await _server(request, conn, change="update tags")
        await _store(conn, row["id"], tags)
    return json_response({"tags": tags})


async def add_tag(request: web.Request) -> web.Response:
    _gate(request)
    tag = request.match_info["tag"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await _server(request, conn, change="update tag")
        problem = _tag_problem(tag)
        if problem is not None:
            raise BadRequest(
                f"Tag '{tag}' is invalid. It must be a non empty string without characters '/' and "
                f"','. Validation error message: {problem}"
            )
        if tag in row["tags"]:
            return web.Response(status=204)  # already there
        if len(row["tags"]) >= MAX_TAGS:
            raise BadRequest(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
        await _store(conn, row["id"], [*row["tags"], tag])
    location = resource_links(request, "servers", row["id"])[0]["href"] + "/tags/" + quote(tag, safe="")
    return web.Response(status=201, headers={"Location": location})


async def delete_tag(request: web.Request) -> web.Response:
    _gate(request)
    tag = request.match_info["tag"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await _server(request, conn, change="delete tag")
        if tag not in row["tags"]:
            raise NotFound(f"Instance {row['id']} has no tag '{tag}'")
        await _store(conn, row["id"], [t for t in row["tags"] if t != tag])
    return web.Response(status=204)


async def delete_tags(request: web.Request) -> web.Response:
    _gate(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await _server(request, conn, change="delete tags")
        await _store(conn, row["id"], [])
    return web.Response(status=204)


async def _store(conn: Any, server_id: str, tags: list[str]) -> None:
    await conn.execute("UPDATE servers SET tags = $2, version = version + 1 WHERE id = $1", server_id, tags)


def setup(app: web.Application) -> None:
    r = app.router
    base = "/compute/v2.1/servers/{server_id}/tags"
    r.add_get(base, list_tags)
    r.add_put(base, replace_tags)
    r.add_delete(base, delete_tags)
    r.add_get(base + "/{tag}", check_tag)
    r.add_put(base + "/{tag}", add_tag)
    r.add_delete(base + "/{tag}", delete_tag)
