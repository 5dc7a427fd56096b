"""Neutron's tag API (standard-attr-tag) on networks, subnets, ports and security groups:
/{collection}/{id}/tags (GET, PUT the whole list, DELETE all) and /{collection}/{id}/tags/{tag}
(GET 204 or 404, PUT adds, DELETE removes). `openstack ... create --tag` and `... set --tag`
use it. Changing tags is changing the resource: its revision goes up (and its `version`, where an
actor keeps a copy)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from api.auth import AuthContext
from api.context import caller, ctx, json_body, json_response
from api.errors import NotFound
from api.network import networks, policy, ports, security_groups, subnets
from api.network.attributes import tags as tag_list
from api.network.faults import bad_request, policy_denied


@dataclasses.dataclass(frozen=True)
class Tagged:
    table: str
    find: Callable[..., Awaitable[asyncpg.Record]]
    owners: Callable[[asyncpg.Record], tuple[str, ...]]  # the projects that may change it
    versioned: bool  # an actor keeps a copy of the row


RESOURCES = {
    "networks": Tagged("networks", networks.find, lambda r: (r["project_id"],), True),
    "subnets": Tagged("subnets", subnets.find, lambda r: (r["project_id"], r["network_project_id"]), False),
    "ports": Tagged("ports", ports.find, lambda r: (r["project_id"], r["network_project_id"]), True),
    "security-groups": Tagged("security_groups", security_groups.find, lambda r: (r["project_id"],), False),
}


def _resource(request: web.Request) -> tuple[Tagged, str, str]:
    collection = request.match_info["collection"]
    return RESOURCES[collection], collection[:-1].replace("-", "_"), request.match_info["resource_id"]


async def _write(request: web.Request, change: Callable[[list[str]], list[str]]) -> list[str]:
    me = caller(request)
    tagged, singular, resource_id = _resource(request)
    policy.require_writer(me, f"update_{singular}:tags")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await tagged.find(conn, me, resource_id, lock="FOR UPDATE")
        _may_change(me, row, tagged, singular)
        new = change(list(row["tags"]))
        if new != list(row["tags"]):
            version = ", version = version + 1" if tagged.versioned else ""
            await conn.execute(
                f"UPDATE {tagged.table} SET tags = $2, revision_number = revision_number + 1, "
                f"updated_at = now(){version} WHERE id = $1",
                resource_id,
                new,
            )
    return new


def _may_change(me: AuthContext, row: asyncpg.Record, tagged: Tagged, singular: str) -> None:
    if not any(policy.owns(me, project) for project in tagged.owners(row)):
        raise policy_denied(f"rule:update_{singular}:tags")


def _not_found(request: web.Request, tag: str) -> NotFound:
    _, singular, resource_id = _resource(request)
    return NotFound(f"Tag {tag} could not be found for {singular} {resource_id}.", kind="TagNotFound")


async def list_tags(request: web.Request) -> web.Response:
    tagged, _, resource_id = _resource(request)
    row = await tagged.find(ctx(request).pool, caller(request), resource_id)
    return json_response({"tags": list(row["tags"])})


async def check_tag(request: web.Request) -> web.Response:
    tagged, _, resource_id = _resource(request)
    row = await tagged.find(ctx(request).pool, caller(request), resource_id)
    tag = request.match_info["tag"]
    if tag not in row["tags"]:
        raise _not_found(request, tag)
    return web.Response(status=204)


async def replace_tags(request: web.Request) -> web.Response:
    document = await json_body(request)
    if not isinstance(document, dict) or set(document) != {"tags"}:
        raise bad_request('Invalid tags body: {"tags": [...]} was expected')
    wanted = tag_list("tags", document["tags"])
    return json_response({"tags": await _write(request, lambda old: wanted)})


async def add_tag(request: web.Request) -> web.Response:
    tag = tag_list("tags", [request.match_info["tag"]])[0]
    await _write(request, lambda old: old if tag in old else [*old, tag])
    return web.Response(status=201)


async def remove_all(request: web.Request) -> web.Response:
    await _write(request, lambda old: [])
    return web.Response(status=204)


async def remove_tag(request: web.Request) -> web.Response:
    tag = request.match_info["tag"]

    def without(old: list[str]) -> list[str]:
        if tag not in old:
            raise _not_found(request, tag)
        return [t for t in old if t != tag]

    await _write(request, without)
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    base = "/networking/v2.0/{collection:networks|subnets|ports|security-groups}/{resource_id}/tags"
    r.add_get(base, list_tags)
    r.add_put(base, replace_tags)
    r.add_delete(base, remove_all)
    r.add_get(base + "/{tag}", check_tag)
    r.add_put(base + "/{tag}", add_tag)
    r.add_delete(base + "/{tag}", remove_tag)
