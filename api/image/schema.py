"""Glance's image and member schemas: the documents served at /v2/schemas/*, and the checks
that requests are held to, taken from the same definitions so the two cannot drift apart.

Only the JSON Schema keywords these definitions use are checked (type, enum, pattern,
maxLength, minimum, maximum, items). Attribute classes follow Glance: read-only attributes
and reserved names are refused with 403, values that break the schema with 400.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from api.context import json_response
from api.errors import BadRequest, Forbidden
from protocol.states import ImageStatus

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("public", "private", "shared", "community")
STATUSES = tuple(str(status) for status in ImageStatus)
MEMBER_STATUSES = ("pending", "accepted", "rejected")
UUID_PATTERN = r"^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
INT32_MAX = 2**31 - 1

# Glance's per-image limits (image_property_quota, image_tag_quota, image_member_quota).
PROPERTY_QUOTA = TAG_QUOTA = MEMBER_QUOTA = 128

IMAGE_PROPERTIES: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "description": "An identifier for the image", "pattern": UUID_PATTERN},
    "name": {"type": ["null", "string"], "description": "Descriptive name for the image", "maxLength": 255},
    "status": {
        "type": "string",
        "readOnly": True,
        "description": "Status of the image",
        "enum": list(STATUSES),
    },
    "visibility": {
        "type": "string",
        "description": "Scope of image accessibility",
        "enum": list(VISIBILITIES),
    },
    "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
    "os_hidden": {
        "type": "boolean",
        "description": "If true, image will not appear in default image list response.",
    },
    "checksum": {
        "type": ["null", "string"],
        "readOnly": True,
        "description": "md5 hash of image contents.",
        "maxLength": 32,
    },
    "os_hash_algo": {
        "type": ["null", "string"],
        "readOnly": True,
        "description": "Algorithm to calculate the os_hash_value",
        "maxLength": 64,
    },
    "os_hash_value": {
        "type": ["null", "string"],
        "readOnly": True,
        "description": "Hexdigest of the image contents using the algorithm specified by the os_hash_algo",
        "maxLength": 128,
    },
    "owner": {"type": ["null", "string"], "description": "Owner of the image", "maxLength": 255},
    "size": {"type": ["null", "integer"], "readOnly": True, "description": "Size of image file in bytes"},
    "virtual_size": {
        "type": ["null", "integer"],
        "readOnly": True,
        "description": "Virtual size of image in bytes",
    },
    "container_format": {
        "type": ["null", "string"],
        "description": "Format of the container",
        "enum": [None, *CONTAINER_FORMATS],
    },
    "disk_format": {
        "type": ["null", "string"],
        "description": "Format of the disk",
        "enum": [None, *DISK_FORMATS],
    },
    "created_at": {"type": "string", "readOnly": True, "description": "Date and time of image registration"},
    "updated_at": {
        "type": "string",
        "readOnly": True,
        "description": "Date and time of the last image modification",
    },
    "tags": {
        "type": "array",
        "description": "List of strings related to the image",
        "items": {"type": "string", "maxLength": 255},
    },
    "direct_url": {
        "type": "string",
        "readOnly": True,
        "description": "URL to access the image file kept in external store",
    },
    "min_ram": {
        "type": "integer",
        "description": "Amount of ram (in MB) required to boot image.",
        "minimum": 0,
        "maximum": INT32_MAX,
    },
    "min_disk": {
        "type": "integer",
        "description": "Amount of disk space (in GB) required to boot image.",
        "minimum": 0,
        "maximum": INT32_MAX,
    },
    "self": {"type": "string", "readOnly": True, "description": "An image self url"},
    "file": {"type": "string", "readOnly": True, "description": "An image file url"},
    "stores": {
        "type": "string",
        "readOnly": True,
        "description": "Store in which image data resides.  Only present when the operator has enabled "
        "multiple stores.  May be a comma-separated list of store identifiers.",
    },
    "schema": {"type": "string", "readOnly": True, "description": "An image schema url"},
}
# Extra properties: any other name, with a string value (Glance's PermissiveSchema).
EXTRA_PROPERTY = {"type": "string"}

MEMBER_PROPERTIES: dict[str, dict[str, Any]] = {
    "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
    "image_id": {"type": "string", "description": "An identifier for the image", "pattern": UUID_PATTERN},
    "created_at": {"type": "string", "description": "Date and time of image member creation"},
    "updated_at": {"type": "string", "description": "Date and time of last modification of image member"},
    "status": {
        "type": "string",
        "description": "The status of this image member",
        "enum": list(MEMBER_STATUSES),
    },
    "schema": {"type": "string", "readOnly": True},
}

# What a client may not write, and how Glance refuses it (all 403).
READ_ONLY = frozenset(
    {
        "created_at",
        "updated_at",
        "status",
        "checksum",
        "size",
        "virtual_size",
        "direct_url",
        "self",
        "file",
        "schema",
        "id",
        "os_hash_algo",
        "os_hash_value",
        "stores",
        "locations",
    }
)
RESERVED = frozenset({"location", "deleted", "deleted_at"})
RESERVED_PREFIX = "os_glance"
# Attributes that are columns of an image, not extra properties.
BASE = frozenset(
    {
        "id",
        "name",
        "status",
        "visibility",
        "protected",
        "os_hidden",
        "checksum",
        "os_hash_algo",
        "os_hash_value",
        "owner",
        "size",
        "virtual_size",
        "container_format",
        "disk_format",
        "created_at",
        "updated_at",
        "tags",
        "min_ram",
        "min_disk",
    }
)
MUTABLE = frozenset(
    {
        "name",
        "visibility",
        "protected",
        "os_hidden",
        "owner",
        "container_format",
        "disk_format",
        "tags",
        "min_ram",
        "min_disk",
    }
)

_JSON_TYPES = {"null": type(None), "string": str, "boolean": bool, "array": list, "object": dict}


def check_writable(key: str) -> None:
    """Refuse (403) an attribute no client may set; Glance's wording."""
    if key in READ_ONLY:
        raise Forbidden(f"Attribute '{key}' is read-only.")
    if key in RESERVED or key.startswith(RESERVED_PREFIX):
        raise Forbidden(f"Attribute '{key}' is reserved.")


def check_value(key: str, value: Any) -> None:
    """Refuse (400) a value that the image schema does not allow for `key`."""
    if len(key) > 255:
        raise BadRequest("Custom property should not be greater than 255 characters.")
    problem = _problem(IMAGE_PROPERTIES.get(key, EXTRA_PROPERTY), value)
    if problem:
        raise BadRequest(f"Provided object does not match schema 'image': {problem}")


def check_member_status(value: Any) -> str:
    problem = _problem(MEMBER_PROPERTIES["status"], value)
    if problem:
        raise BadRequest(f"Provided object does not match schema 'member': {problem}")
    return value


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, _JSON_TYPES[name])


def _problem(definition: dict[str, Any], value: Any) -> str | None:
    types = definition.get("type", [])
    types = [types] if isinstance(types, str) else types
    if types and not any(_is_type(value, t) for t in types):
        return f"{value!r} is not of type {' or '.join(repr(t) for t in types)}"
    if "enum" in definition and value not in definition["enum"]:
        return f"{value!r} is not one of {definition['enum']!r}"
    if isinstance(value, str):
        if len(value) > definition.get("maxLength", len(value)):
            return f"{value!r} is too long (at most {definition['maxLength']} characters)"
        if "pattern" in definition and not re.match(definition["pattern"], value):
            return f"{value!r} does not match {definition['pattern']!r}"
    if _is_type(value, "integer"):
        if value < definition.get("minimum", value):
            return f"{value!r} is less than the minimum of {definition['minimum']}"
        if value > definition.get("maximum", value):
            return f"{value!r} is greater than the maximum of {definition['maximum']}"
    if isinstance(value, list) and "items" in definition:
        for item in value:
            problem = _problem(definition["items"], item)
            if problem:
                return problem
    return None


def image_schema() -> dict[str, Any]:
    return {
        "name": "image",
        "properties": IMAGE_PROPERTIES,
        "additionalProperties": EXTRA_PROPERTY,
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def member_schema() -> dict[str, Any]:
    return {"name": "member", "properties": MEMBER_PROPERTIES}


def _collection(name: str, item: dict[str, Any], *, paged: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {name: {"type": "array", "items": item}, "schema": {"type": "string"}}
    links = [{"rel": "describedby", "href": "{schema}"}]
    if paged:
        properties.update(first={"type": "string"}, next={"type": "string"})
        links = [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"}, *links]
    return {"name": name, "properties": properties, "links": links}


async def get_image_schema(request: web.Request) -> web.Response:
    return json_response(image_schema())


async def get_images_schema(request: web.Request) -> web.Response:
    return json_response(_collection("images", image_schema(), paged=True))


async def get_member_schema(request: web.Request) -> web.Response:
    return json_response(member_schema())


async def get_members_schema(request: web.Request) -> web.Response:
    return json_response(_collection("members", member_schema(), paged=False))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/image/v2/schemas/image", get_image_schema)
    r.add_get("/image/v2/schemas/images", get_images_schema)
    r.add_get("/image/v2/schemas/member", get_member_schema)
    r.add_get("/image/v2/schemas/members", get_members_schema)
