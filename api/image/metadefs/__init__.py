"""Metadata definitions (Glance's metadefs) under /image/v2/metadefs: namespaces (`namespaces`)
and what they hold, property definitions (`properties`), objects (`objects`), tags (`tags`) and
their resource types (`resource_types`); who may see and change them (`access`), their shapes
(`views`) and the schemas served at /image/v2/schemas/metadefs/... (`schemas`)."""

from aiohttp import web

from api.image.metadefs import namespaces, objects, properties, resource_types, schemas, tags


def setup(app: web.Application) -> None:
    namespaces.setup(app)
    objects.setup(app)
    properties.setup(app)
    tags.setup(app)
    resource_types.setup(app)
    schemas.setup(app)
