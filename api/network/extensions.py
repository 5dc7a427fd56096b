"""/networking/v2.0/extensions and /availability_zones: what this Neutron API supports, by
Neutron's extension aliases (clients check these before they use a feature), and its one zone.

Only what is true is listed: no routers, QoS or subnet pools here.
"""

from __future__ import annotations

from aiohttp import web

from api.context import json_response
from api.errors import NotFound
from api.network.networks import AVAILABILITY_ZONE

_UPDATED = "2026-01-01T00:00:00-00:00"

EXTENSIONS = (
    ("quotas", "Quota management support", "Expose functions for quotas management per project"),
    (
        "quota_details",
        "Quota details management support",
        "Expose functions for quotas usage statistics per project",
    ),
    (
        "quota-check-limit",
        "Quota engine limit check",
        "Support for checking the resource usage before applying a new quota limit",
    ),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("agent", "agent", "The agent management extension."),
    ("port-security", "Port Security", "Provides port security"),
    ("security-group", "security-group", "The security groups extension."),
    (
        "stateful-security-group",
        "Stateful security group",
        "Indicates if the security group is stateful or not",
    ),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    (
        "net-mtu-writable",
        "Network MTU (writable)",
        "Provides a writable MTU attribute for a network resource.",
    ),
    ("dns-integration", "DNS Integration", "Provides integration with DNS."),
    ("availability_zone", "Availability Zone", "The availability zone extension."),
    ("network_availability_zone", "Network Availability Zone", "Availability zone support for network."),
    ("l2_adjacency", "L2 Adjacency", "Display L2 Adjacency for Neutron Networks."),
    (
        "standard-attr-tag",
        "Tag support for resources with standard attribute: network, subnet, port",
        "Enables to set tag on resources with standard attribute.",
    ),
    ("tag-creation", "Tag support on creation", "Enables to set tags on resources at creation."),
    (
        "standard-attr-description",
        "standard-attr-description",
        "Extension to add descriptions to standard attributes",
    ),
    (
        "standard-attr-revisions",
        "Resource revision numbers",
        "This extension will display the revision number of neutron resources.",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard "
        "attributes.",
    ),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    (
        "filter-validation",
        "Filter parameters validation",
        "Provides validation on filter parameters.",
    ),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    (
        "ip-substring-filtering",
        "IP address substring filtering",
        "Provides IP address substring filtering when listing ports",
    ),
)


def _view(alias: str, name: str, description: str) -> dict[str, object]:
    return {"alias": alias, "name": name, "description": description, "updated": _UPDATED, "links": []}


async def list_extensions(request: web.Request) -> web.Response:
    return json_response({"extensions": [_view(*e) for e in EXTENSIONS]})


async def show_extension(request: web.Request) -> web.Response:
    alias = request.match_info["alias"]
    for extension in EXTENSIONS:
        if extension[0] == alias:
            return json_response({"extension": _view(*extension)})
    raise NotFound(f"Extension with alias {alias} does not exist", kind="HTTPNotFound")


async def list_zones(request: web.Request) -> web.Response:
    zones = [{"name": AVAILABILITY_ZONE, "resource": "network", "state": "available"}]
    for key in ("name", "resource", "state"):
        wanted = request.query.getall(key, [])
        if wanted:
            zones = [z for z in zones if z[key] in wanted]
    return json_response({"availability_zones": zones})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/networking/v2.0/extensions", list_extensions)
    r.add_get("/networking/v2.0/extensions/{alias}", show_extension)
    r.add_get("/networking/v2.0/availability_zones", list_zones)
