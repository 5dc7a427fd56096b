"""/identity/v3/services, /endpoints and /regions: the service catalog as Keystone serves it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import catalog as catalog_
from api.context import caller, ctx, json_response
from api.errors import NotFound
from api.identity.views import links


async def list_services(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:list_services")
    base = ctx(request).base_url
    return json_response({"services": catalog_.services(base), "links": links(base, "services")})


async def list_endpoints(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:list_endpoints")
    base = ctx(request).base_url
    return json_response({"endpoints": catalog_.endpoints(base), "links": links(base, "endpoints")})


async def get_service(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:get_service")
    base = ctx(request).base_url
    for service in catalog_.services(base):
        if service["id"] == request.match_info["service_id"]:
            return json_response({"service": service})
    raise NotFound(f"Could not find service: {request.match_info['service_id']}.")


async def get_endpoint(request: web.Request) -> web.Response:
    caller(request).require_admin("identity:get_endpoint")
    base = ctx(request).base_url
    for endpoint in catalog_.endpoints(base):
        if endpoint["id"] == request.match_info["endpoint_id"]:
            return json_response({"endpoint": endpoint})
    raise NotFound(f"Could not find endpoint: {request.match_info['endpoint_id']}.")


async def list_regions(request: web.Request) -> web.Response:
    base = ctx(request).base_url
    region = {
        "id": catalog_.REGION,
        "description": "",
        "parent_region_id": None,
        "links": {"self": f"{base}/identity/v3/regions/{catalog_.REGION}"},
    }
    return json_response({"regions": [region], "links": links(base, "regions")})


async def for_token(conn: Any, base_url: str, project_id: str | None) -> list[dict[str, Any]]:
    """The catalog a token carries (the project's id put in the URLs that need one; those left
    out for a token without a project)."""
    return catalog_.catalog(base_url, project_id)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/identity/v3/services", list_services)
    r.add_get("/identity/v3/services/{service_id}", get_service)
    r.add_get("/identity/v3/endpoints", list_endpoints)
    r.add_get("/identity/v3/endpoints/{endpoint_id}", get_endpoint)
    r.add_get("/identity/v3/regions", list_regions)
