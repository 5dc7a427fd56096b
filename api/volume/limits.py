"""GET /volume/v3/{project_id}/limits: the project's block storage quotas and usage in Cinder's
"absolute limits" names (`openstack limits show` asks both compute and block storage). Admins may
ask about another project with ?project_id= (Cinder 3.39+).
"""

from __future__ import annotations

from aiohttp import web

from api.context import caller, ctx, json_response
from api.quotas import VOLUME, limits
from api.volume.quotas import volume_usage

_LIMIT_NAMES = {
    "gigabytes": "maxTotalVolumeGigabytes",
    "backup_gigabytes": "maxTotalBackupGigabytes",
    "volumes": "maxTotalVolumes",
    "snapshots": "maxTotalSnapshots",
    "backups": "maxTotalBackups",
}
_USED_NAMES = {
    "totalGigabytesUsed": "gigabytes",
    "totalVolumesUsed": "volumes",
    "totalSnapshotsUsed": "snapshots",
    "totalBackupsUsed": "backups",
    "totalBackupGigabytesUsed": "backup_gigabytes",
}


async def show_limits(request: web.Request) -> web.Response:
    me = caller(request)
    project_id = me.require_project()
    if "project_id" in request.query:
        project_id = request.query["project_id"]
        me.require_admin("limits_extension:used_limits")
    async with ctx(request).pool.acquire() as conn:
        hard = await limits(conn, project_id, VOLUME)
        used = await volume_usage(conn, project_id)
    absolute = {name: hard[resource] for resource, name in _LIMIT_NAMES.items()}
    absolute.update({name: used[resource] for name, resource in _USED_NAMES.items()})
    return json_response({"limits": {"rate": [], "absolute": absolute}})


def setup(app: web.Application) -> None:
    app.router.add_get("/volume/v3/{project_id}/limits", show_limits)
