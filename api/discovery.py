"""Version discovery documents at each service prefix, as the OpenStack services serve them
(keystoneauth and openstacksdk read these to pick a version and the microversion range)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.context import CTX, json_response, public

COMPUTE_MIN, COMPUTE_MAX = "2.1", "2.96"
VOLUME_MIN, VOLUME_MAX = "3.0", "3.70"


def _base(request: web.Request) -> str:
    return request.app[CTX].base_url


def _identity_version(base: str) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    }


def _compute_version(base: str, *, legacy: bool = False, single: bool = False) -> dict[str, Any]:
    """Nova's v2.1 (CURRENT, with microversions) or its legacy v2.0 (SUPPORTED, without); the
    document of one version (`single`) carries its media type, the list does not, as Nova's."""
    if legacy:
        version: dict[str, Any] = {
            "id": "v2.0",
            "status": "SUPPORTED",
            "version": "",
            "min_version": "",
            "updated": "2011-01-21T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base}/compute/v2/"}],
        }
        media = "application/vnd.openstack.compute+json;version=2"
    else:
        version = {
            "id": "v2.1",
            "status": "CURRENT",
            "version": COMPUTE_MAX,
            "min_version": COMPUTE_MIN,
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base}/compute/v2.1/"}],
        }
        media = "application/vnd.openstack.compute+json;version=2.1"
    if single:
        version["media-types"] = [{"base": "application/json", "type": media}]
    return version


def _volume_version(base: str) -> dict[str, Any]:
    return {
        "id": "v3.0",
        "status": "CURRENT",
        "version": VOLUME_MAX,
        "min_version": VOLUME_MIN,
        "updated": "2023-01-01T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/volume/v3/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}
        ],
    }


@public
async def identity_versions(request: web.Request) -> web.Response:
    return json_response({"versions": {"values": [_identity_version(_base(request))]}}, status=300)


@public
async def identity_v3(request: web.Request) -> web.Response:
    return json_response({"version": _identity_version(_base(request))})


@public
async def compute_versions(request: web.Request) -> web.Response:
    base = _base(request)
    return json_response({"versions": [_compute_version(base, legacy=True), _compute_version(base)]})


@public
async def compute_v2(request: web.Request) -> web.Response:
    return json_response({"version": _compute_version(_base(request), legacy=True, single=True)})


@public
async def compute_v21(request: web.Request) -> web.Response:
    return json_response({"version": _compute_version(_base(request), single=True)})


@public
async def image_versions(request: web.Request) -> web.Response:
    base = _base(request)
    versions = [
        {
            "id": f"v2.{minor}",
            "status": "CURRENT" if minor == 16 else "SUPPORTED",
            "links": [{"rel": "self", "href": f"{base}/image/v2/"}],
        }
        for minor in range(16, -1, -1)
    ]
    return json_response({"versions": versions}, status=300)


@public
async def volume_versions(request: web.Request) -> web.Response:
    return json_response({"versions": [_volume_version(_base(request))]}, status=300)


@public
async def volume_v3(request: web.Request) -> web.Response:
    return json_response({"versions": [_volume_version(_base(request))]})


@public
async def network_versions(request: web.Request) -> web.Response:
    base = _base(request)
    return json_response(
        {
            "versions": [
                {
                    "id": "v2.0",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": f"{base}/networking/v2.0/"}],
                }
            ]
        }
    )


def setup(app: web.Application) -> None:
    r = app.router
    for path in ("/identity", "/identity/"):
        r.add_get(path, identity_versions)
    for path in ("/identity/v3", "/identity/v3/"):
        r.add_get(path, identity_v3)
    for path in ("/compute", "/compute/"):
        r.add_get(path, compute_versions)
    for path in ("/compute/v2", "/compute/v2/"):
        r.add_get(path, compute_v2)
    for path in ("/compute/v2.1", "/compute/v2.1/"):
        r.add_get(path, compute_v21)
    for path in ("/image", "/image/", "/image/v2", "/image/v2/"):
        r.add_get(path, image_versions)
    for path in ("/volume", "/volume/"):
        r.add_get(path, volume_versions)
    for path in ("/volume/v3", "/volume/v3/"):
        r.add_get(path, volume_v3)
    for path in ("/networking", "/networking/"):
        r.add_get(path, network_versions)
