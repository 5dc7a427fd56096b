"""Metadata definitions (Glance's metadefs) under /image/v2/metadefs: namespaces (`namespaces`)
and what they hold, property definitions (`properties`), objects (`objects`), tags (`tags`) and
their resource types (`resource_types`); who may see and change them (`access`), their shapes
(`views`) and the schemas served at /image/v2/schemas/metadefs/... (`schemas`)."""

from typing import Any

from aiohttp import web

from api.image.metadefs import namespaces, objects, properties, resource_types, schemas, tags

_NS = "/image/v2/metadefs/namespaces"
# The request bodies /openapi.json describes (api/openapi.py), from the schemas enforced.
REQUEST_BODIES: dict[tuple[str, str], Any] = {
    ("post", _NS): schemas.inlined(namespaces.NAMESPACE_DOCUMENT),
    ("put", f"{_NS}/{{namespace}}"): schemas.inlined(namespaces.NAMESPACE_DOCUMENT),
    ("post", f"{_NS}/{{namespace}}/objects"): schemas.inlined(objects.OBJECT_DOCUMENT),
    ("put", f"{_NS}/{{namespace}}/objects/{{object_name}}"): schemas.inlined(objects.OBJECT_DOCUMENT),
    ("post", f"{_NS}/{{namespace}}/properties"): schemas.inlined(properties.PROPERTY_DOCUMENT),
    ("put", f"{_NS}/{{namespace}}/properties/{{property_name}}"): schemas.inlined(
        properties.PROPERTY_DOCUMENT
    ),
    ("post", f"{_NS}/{{namespace}}/tags"): tags.TAGS_DOCUMENT,
    ("put", f"{_NS}/{{namespace}}/tags/{{tag_name}}"): tags.TAG_DOCUMENT,
    ("post", f"{_NS}/{{namespace}}/resource_types"): resource_types.ASSOCIATION_DOCUMENT,
}


def setup(app: web.Application) -> None:
    namespaces.setup(app)
    objects.setup(app)
    properties.setup(app)
    tags.setup(app)
    resource_types.setup(app)
    schemas.setup(app)
