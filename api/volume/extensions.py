"""/volume/v3/{project_id}/extensions: Cinder's API extensions this cloud serves, as Cinder lists
its loaded extensions (alias, name, description, updated, links), and one by alias.

Only the extensions whose API exists here are listed: the volume attributes shown in a volume's
view (tenant, host, migration status, image metadata), the volume and admin actions, scheduler
hints, availability zones, quotas and used limits, volume services and the scheduler's pools.
Snapshots, backups, transfers, consistency groups, QoS, type management, manage/unmanage and
encryption are not here, so their extensions are not listed.
"""

from __future__ import annotations

from aiohttp import web

from api.context import json_response
from api.errors import NotFound
from api.volume import volumes

# (alias, name, updated, description) as Cinder's extension classes declare them
EXTENSIONS = (
    ("os-vol-tenant-attr", "VolumeTenantAttribute", "2011-11-03T00:00:00+00:00",
     "Expose the internal project_id as an attribute of a volume."),
    ("os-vol-host-attr", "VolumeHostAttribute", "2011-11-03T00:00:00+00:00",
     "Expose host as an attribute of a volume."),
    ("os-vol-mig-status-attr", "VolumeMigStatusAttribute", "2013-08-08T00:00:00+00:00",
     "Expose migration_status as an attribute of a volume."),
    ("os-vol-image-meta", "VolumeImageMetadata", "2012-12-07T00:00:00+00:00",
     "Show image metadata associated with the volume."),
    ("os-volume-actions", "VolumeActions", "2012-05-31T00:00:00+00:00", "Enable volume actions."),
    ("os-admin-actions", "AdminActions", "2012-08-25T00:00:00+00:00", "Enable admin actions."),
    ("OS-SCH-HNT", "SchedulerHints", "2013-04-18T00:00:00+00:00",
     "Pass arbitrary key/value pairs to the scheduler."),
    ("os-availability-zone", "AvailabilityZones", "2013-06-27T00:00:00+00:00",
     "Describe Availability Zones."),
    ("os-quota-sets", "Quotas", "2011-08-08T00:00:00+00:00", "Quota management support."),
    ("os-used-limits", "UsedLimits", "2013-10-03T00:00:00+00:00",
     "Provide data on limited resources that are being used."),
    ("os-services", "Services", "2012-10-28T00:00:00-00:00", "Services support."),
    ("scheduler-stats", "Scheduler_stats", "2014-09-07T00:00:00+00:00", "Scheduler stats support."),
)  # fmt: skip


def _view(alias: str, name: str, updated: str, description: str) -> dict[str, object]:
    return {"alias": alias, "name": name, "description": description, "updated": updated, "links": []}


async def list_extensions(request: web.Request) -> web.Response:
    volumes.url_project(request)
    return json_response({"extensions": [_view(*extension) for extension in EXTENSIONS]})


async def show_extension(request: web.Request) -> web.Response:
    volumes.url_project(request)
    alias = request.match_info["alias"]
    for extension in EXTENSIONS:
        if extension[0] == alias:
            return json_response({"extension": _view(*extension)})
    raise NotFound("Extension could not be found.")


def setup(app: web.Application) -> None:
    app.router.add_get("/volume/v3/{project_id}/extensions", list_extensions)
    app.router.add_get("/volume/v3/{project_id}/extensions/{alias}", show_extension)
