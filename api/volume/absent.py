"""Cinder's collections this cloud has none of yet: snapshots, backups, volume transfers, groups
and group snapshots, under /volume/v3/{project_id}.

Clients list them beside volumes (`openstack volume snapshot list`, `volume backup list`,
`volume transfer request list`, a dashboard's overview), so they answer as a Cinder with none of
them: an empty list (with the microversion each needs, else 404, as Cinder), and 404 in Cinder's
words for any one id. Creating one answers as Cinder answers what a deployment lacks: a backup
404s on the absent backup service, a group on its (absent) group type, a group snapshot on its
group, a snapshot or a transfer of a volume the caller cannot see 404s on the volume, and of one
it can see is refused (400, InvalidInput) with the reason. Nothing here writes anything.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from api.context import caller, ctx, json_body, json_response
from api.errors import NotFound
from api.validate import invalid
from api.volume import filters, volumes
from api.volume import validate as check
from api.volume.microversion import requested

Version = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Collection:
    path: str  # below /volume/v3/{project_id}
    key: str  # the list's key in the body
    noun: str  # Cinder's NotFound wording: "<noun> <id> could not be found."
    since: Version = (3, 0)
    detail: bool = True  # has /detail


COLLECTIONS = (
    Collection("snapshots", "snapshots", "Snapshot"),
    Collection("backups", "backups", "Backup"),
    Collection("os-volume-transfer", "transfers", "Transfer"),
    Collection("volume-transfers", "transfers", "Transfer", since=(3, 55)),
    Collection("groups", "groups", "Group", since=(3, 13)),
    Collection("group_snapshots", "group_snapshots", "GroupSnapshot", since=(3, 14)),
    Collection("group_types", "group_types", "Group type", since=(3, 11), detail=False),
)


def _checked(request: web.Request, collection: Collection) -> None:
    volumes.url_project(request)
    if requested(request) < collection.since:
        raise NotFound("The resource could not be found.")


def _lister(collection: Collection) -> Any:
    async def handler(request: web.Request) -> web.Response:
        _checked(request, collection)
        return json_response({collection.key: []})

    return handler


def _one(collection: Collection) -> Any:
    async def handler(request: web.Request) -> web.Response:
        _checked(request, collection)
        raise NotFound(f"{collection.noun} {request.match_info['id']} could not be found.")

    return handler


async def _resource(request: web.Request, key: str) -> dict[str, Any]:
    document = await json_body(request)
    if not isinstance(document, dict) or not isinstance(document.get(key), dict):
        raise invalid(key, document, f"'{key}' is a required property of type 'object'")
    return document[key]


async def _refuse_for_volume(request: web.Request, key: str, what: str) -> web.Response:
    """A snapshot or a transfer of `volume_id`: 404 for a volume the caller cannot see, else
    refused."""
    body = await _resource(request, key)
    volume_id = check.optional_uuid(body, "volume_id")
    if volume_id is None:
        raise invalid(key, body, "'volume_id' is a required property")
    await volumes.find(ctx(request).pool, caller(request), volume_id)
    raise check.invalid_input(f"{what} are not supported by this cloud yet.")


async def _create_snapshot(request: web.Request) -> web.Response:
    return await _refuse_for_volume(request, "snapshot", "Volume snapshots")


async def _create_transfer(request: web.Request) -> web.Response:
    return await _refuse_for_volume(request, "transfer", "Volume transfers")


async def _create_backup(request: web.Request) -> web.Response:
    await _resource(request, "backup")
    raise NotFound("Service cinder-backup could not be found.")


async def _create_group(request: web.Request) -> web.Response:
    body = await _resource(request, "group")
    raise NotFound(f"Group type {body.get('group_type')} could not be found.")


async def _create_group_snapshot(request: web.Request) -> web.Response:
    body = await _resource(request, "group_snapshot")
    raise NotFound(f"Group {body.get('group_id')} could not be found.")


async def _create_group_type(request: web.Request) -> web.Response:
    caller(request).require_admin("group:group_types:create")
    await _resource(request, "group_type")
    raise check.invalid_input("Group types are not supported by this cloud yet.")


# collection key -> (Cinder's policy rule, the create's answer)
_CREATE = {
    "snapshots": ("volume:create_snapshot", _create_snapshot),
    "transfers": ("volume:create_transfer", _create_transfer),
    "backups": ("backup:create", _create_backup),
    "groups": ("group:create", _create_group),
    "group_snapshots": ("group:create_group_snapshot", _create_group_snapshot),
    "group_types": ("group:group_types:create", _create_group_type),
}


def _creator(collection: Collection) -> Any:
    rule, answer = _CREATE[collection.key]

    async def handler(request: web.Request) -> web.Response:
        _checked(request, collection)
        caller(request).require_writer(rule)
        return await answer(request)

    return handler


# What Cinder's lists of these take (nothing to filter, page or sort here: they are empty).
_PARAMETERS = [
    filters.ALL_TENANTS,
    *filters.PAGING,
    filters.query_parameter("sort", {"type": "string"}, "key[:asc|desc],..."),
]


def setup(app: web.Application) -> None:
    r = app.router
    for collection in COLLECTIONS:
        base = f"/volume/v3/{{project_id}}/{collection.path}"
        r.add_get(base, filters.described(_lister(collection), _PARAMETERS))
        r.add_post(base, _creator(collection))
        if collection.detail:
            r.add_get(base + "/detail", filters.described(_lister(collection), _PARAMETERS))
        r.add_route("*", base + "/{id}", _one(collection))
        r.add_route("*", base + "/{id}/{tail:.*}", _one(collection))
