"""GET /compute/v2.1/limits: the project's compute quotas and usage in Nova's "absolute limits"
names (rate limits went with the v2 API; `rate` is always empty). Admins may ask about another
project with ?tenant_id=.

Which names appear follows the microversion as in Nova: nova-network's limits go at 2.36,
maxImageMeta at 2.39, the personality (injected file) limits at 2.57.
"""

from __future__ import annotations

from aiohttp import web

from api.compute import query_params
from api.compute.microversion import requested
from api.compute.usage import compute_usage
from api.context import caller, ctx, json_response
from api.query_doc import documented, param
from api.quotas import COMPUTE, limits

# quota resource -> the absolute limit names that show it
_LIMIT_NAMES = {
    "ram": ("maxTotalRAMSize",),
    "instances": ("maxTotalInstances",),
    "cores": ("maxTotalCores",),
    "key_pairs": ("maxTotalKeypairs",),
    "floating_ips": ("maxTotalFloatingIps",),
    "metadata_items": ("maxServerMeta", "maxImageMeta"),
    "injected_files": ("maxPersonality",),
    "injected_file_content_bytes": ("maxPersonalitySize",),
    "security_groups": ("maxSecurityGroups",),
    "security_group_rules": ("maxSecurityGroupRules",),
    "server_groups": ("maxServerGroups",),
    "server_group_members": ("maxServerGroupMembers",),
}
# usage name -> quota resource
_USED_NAMES = {
    "totalRAMUsed": "ram",
    "totalCoresUsed": "cores",
    "totalInstancesUsed": "instances",
    "totalFloatingIpsUsed": "floating_ips",
    "totalSecurityGroupsUsed": "security_groups",
    "totalServerGroupsUsed": "server_groups",
}


async def show_limits(request: web.Request) -> web.Response:
    me = caller(request)
    version = requested(request)
    query_params.only_known(request, ("tenant_id",))
    project_id = me.require_project()
    if "tenant_id" in request.query:
        project_id = request.query["tenant_id"]
        me.require_admin("os_compute_api:limits:other_project")
    hidden: set[str] = set()
    if version >= (2, 36):
        hidden |= {"floating_ips", "security_groups", "security_group_rules"}
    if version >= (2, 57):
        hidden |= {"injected_files", "injected_file_content_bytes"}
    async with ctx(request).pool.acquire() as conn:
        hard = await limits(conn, project_id, COMPUTE)
        used = await compute_usage(conn, project_id, None)
    absolute: dict[str, int] = {}
    for resource, names in _LIMIT_NAMES.items():
        if resource in hidden:
            continue
        for name in names:
            if name == "maxImageMeta" and version >= (2, 39):
                continue
            absolute[name] = hard[resource]
    for name, resource in _USED_NAMES.items():
        if resource not in hidden:
            absolute[name] = used[resource]
    return json_response({"limits": {"rate": [], "absolute": absolute}})


documented(show_limits, parameters=[param("tenant_id", description="Another project's (admin)")])


def setup(app: web.Application) -> None:
    app.router.add_get("/compute/v2.1/limits", show_limits)
