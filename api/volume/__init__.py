"""Block Storage v3 (Cinder's API) under /volume/v3/{project_id}: volumes (with their metadata and
actions, their summary and attachments), the default volume type, availability zones, volume
services and pools, quotas and limits, and the extensions list. Snapshots, backups, transfers and
groups list empty, as a Cinder with none of them (absent.py). What is not here at all answers as
Cinder answers a resource it does not have: 404 in its error shape.

Every request there is first given its microversion (microversion.py: a middleware this setup
adds to the app, innermost), which handlers read with `microversion.requested(request)`.
"""

from aiohttp import web

from api.errors import NotFound
from api.volume import (
    absent,
    actions,
    attachments,
    backends,
    extensions,
    limits,
    metadata,
    microversion,
    quotas,
    types,
    volumes,
)


async def unknown(request: web.Request) -> web.Response:
    raise NotFound("The resource could not be found.")


def setup(app: web.Application) -> None:
    microversion.setup(app)
    # aiohttp tries routes in the order they were added: the catch-all must come last.
    quotas.setup(app)
    limits.setup(app)
    volumes.setup(app)
    actions.setup(app)
    metadata.setup(app)
    types.setup(app)
    backends.setup(app)
    attachments.setup(app)
    absent.setup(app)
    extensions.setup(app)
    app.router.add_route("*", "/volume/v3/{project_id}/{tail:.*}", unknown)
