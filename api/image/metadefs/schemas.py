"""The metadata-definition schemas: served at /v2/schemas/metadefs/<name> and enforced on the
request bodies, from the same definitions (Glance's shapes: a schema names its object, lists
its properties, forbids others, and says which are required; a collection schema wraps the
item schema with first/next/schema links and carries the definitions at its top)."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from api.context import json_response
from api.errors import Forbidden

JSON_TYPES = ["array", "boolean", "integer", "number", "object", "string", None]
NAME_LENGTH = 80


def _timestamp(what: str) -> dict[str, Any]:
    return {"type": "string", "readOnly": True, "description": what, "format": "date-time"}


def _definitions(*, string_array_min_items: int | None = None) -> dict[str, Any]:
    string_array: dict[str, Any] = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    if string_array_min_items is not None:
        string_array["minItems"] = string_array_min_items
    return {
        "positiveInteger": {"type": "integer", "minimum": 0},
        "positiveIntegerDefault0": {"allOf": [{"$ref": "#/definitions/positiveInteger"}, {"default": 0}]},
        "stringArray": string_array,
    }


# What one property definition may say (a namespace's or an object's properties, or one created
# on its own): a small JSON Schema of its own.
PROPERTY_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "maxLength": 255},
    "title": {"type": "string"},
    "description": {"type": "string"},
    "operators": {"type": "array", "items": {"type": "string"}},
    "type": {"type": "string", "enum": JSON_TYPES},
    "required": {"$ref": "#/definitions/stringArray"},
    "minimum": {"type": "number"},
    "maximum": {"type": "number"},
    "maxLength": {"$ref": "#/definitions/positiveInteger"},
    "minLength": {"$ref": "#/definitions/positiveIntegerDefault0"},
    "pattern": {"type": "string", "format": "regex"},
    "enum": {"type": "array"},
    "readonly": {"type": "boolean"},
    "default": {},
    "items": {
        "type": "object",
        "properties": {"type": {"type": "string", "enum": JSON_TYPES}, "enum": {"type": "array"}},
    },
    "maxItems": {"$ref": "#/definitions/positiveInteger"},
    "minItems": {"$ref": "#/definitions/positiveIntegerDefault0"},
    "uniqueItems": {"type": "boolean", "default": False},
    "additionalItems": {"type": "boolean"},
}
PROPERTY_REQUIRED = ["title", "type"]


def _namespace_definitions() -> dict[str, Any]:
    definitions = _definitions()
    definitions["property"] = {
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "required": PROPERTY_REQUIRED,
            "properties": PROPERTY_FIELDS,
        },
    }
    return definitions


_SELF_AND_SCHEMA = {
    "schema": {"readOnly": True, "type": "string"},
    "self": {"readOnly": True, "type": "string"},
}

NAMESPACE: dict[str, Any] = {
    "name": "namespace",
    "properties": {
        "namespace": {
            "type": "string",
            "description": "The unique namespace text.",
            "maxLength": NAME_LENGTH,
        },
        "display_name": {
            "type": "string",
            "description": "The user friendly name for the namespace. Used by UI if available.",
            "maxLength": NAME_LENGTH,
        },
        "description": {
            "type": "string",
            "description": "Provides a user friendly description of the namespace.",
            "maxLength": 500,
        },
        "visibility": {
            "type": "string",
            "description": "Scope of namespace accessibility.",
            "enum": ["public", "private"],
        },
        "protected": {"type": "boolean", "description": "If true, namespace will not be deletable."},
        "owner": {"type": "string", "description": "Owner of the namespace.", "maxLength": 255},
        "created_at": _timestamp("Date and time of namespace creation"),
        "updated_at": _timestamp("Date and time of the last namespace modification"),
        **_SELF_AND_SCHEMA,
        "resource_type_associations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "prefix": {"type": "string"},
                    "properties_target": {"type": "string"},
                },
            },
        },
        "properties": {"$ref": "#/definitions/property"},
        "objects": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "required": {"$ref": "#/definitions/stringArray"},
                    "properties": {"$ref": "#/definitions/property"},
                },
            },
        },
        "tags": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
    },
    "required": ["namespace"],
    "definitions": _namespace_definitions(),
}

OBJECT: dict[str, Any] = {
    "name": "object",
    "properties": {
        "name": {"type": "string", "maxLength": NAME_LENGTH},
        "description": {"type": "string"},
        "required": {"$ref": "#/definitions/stringArray"},
        "properties": {"$ref": "#/definitions/property"},
        **_SELF_AND_SCHEMA,
        "created_at": _timestamp("Date and time of object creation"),
        "updated_at": _timestamp("Date and time of the last object modification"),
    },
    "required": ["name"],
    "definitions": _namespace_definitions(),
}

PROPERTY: dict[str, Any] = {
    "name": "property",
    "properties": PROPERTY_FIELDS,
    "required": [*PROPERTY_REQUIRED, "name"],
    "definitions": _definitions(string_array_min_items=1),
}

TAG: dict[str, Any] = {
    "name": "tag",
    "properties": {
        "name": {"type": "string", "maxLength": 255},
        "created_at": _timestamp("Date and time of tag creation"),
        "updated_at": _timestamp("Date and time of the last tag modification"),
    },
    "required": ["name"],
}

RESOURCE_TYPE_ASSOCIATION: dict[str, Any] = {
    "name": "resource_type_association",
    "properties": {
        "name": {
            "type": "string",
            "description": "Resource type names should be aligned with Heat resource types whenever "
            "possible: https://docs.openstack.org/heat/latest/template_guide/openstack.html",
            "maxLength": NAME_LENGTH,
        },
        "prefix": {
            "type": "string",
            "description": "Specifies the prefix to use for the given resource type. Any properties in the "
            "namespace should be prefixed with this prefix when being applied to the specified resource "
            "type. Must include prefix separator (e.g. a colon :).",
            "maxLength": NAME_LENGTH,
        },
        "properties_target": {
            "type": "string",
            "description": "Some resource types allow more than one key / value pair per instance.  For "
            "example, Cinder allows user and image metadata on volumes. Only the image properties metadata "
            "is evaluated by Nova (scheduling or drivers). This property allows a namespace target to "
            "remove the ambiguity.",
            "maxLength": NAME_LENGTH,
        },
        "created_at": _timestamp("Date and time of resource type association"),
        "updated_at": _timestamp("Date and time of the last resource type association modification"),
    },
    "required": ["name"],
}

# Attributes a client may not send, per kind (Glance answers them 403 "... is read-only.").
READ_ONLY = {
    "namespace": ("self", "schema", "created_at", "updated_at"),
    "object": ("self", "schema", "created_at", "updated_at"),
    "property": ("created_at", "updated_at"),
    "resource_type_association": ("created_at", "updated_at"),
    "tag": ("created_at", "updated_at"),
}


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as served and enforced: no properties beyond those it lists."""
    raw = {key: value for key, value in schema.items() if key != "definitions"}
    raw["additionalProperties"] = False
    if "definitions" in schema:
        raw["definitions"] = schema["definitions"]
    return copy.deepcopy(raw)


def collection(
    name: str, schema: dict[str, Any], *, item_required: list[str] | None = None
) -> dict[str, Any]:
    """The list document: the item schema under `name`, the definitions at the top."""
    item = {key: value for key, value in schema.items() if key != "definitions"}
    if item_required is not None:
        item["required"] = item_required
    item["additionalProperties"] = False
    raw: dict[str, Any] = {
        "name": name,
        "properties": {
            name: {"type": "array", "items": item},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }
    if "definitions" in schema:
        raw["definitions"] = schema["definitions"]
    return copy.deepcopy(raw)


def inlined(schema: Any, root: dict[str, Any] | None = None) -> Any:
    """The schema with its `#/definitions/...` references replaced by what they name, and no
    definitions (for /openapi.json, where those references would not resolve)."""
    root = schema if root is None else root
    if isinstance(schema, list):
        return [inlined(item, root) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return inlined(target, root)
    return {key: inlined(value, root) for key, value in schema.items() if key != "definitions"}


def refuse_read_only(kind: str, body: dict[str, Any]) -> None:
    for key in READ_ONLY[kind]:
        if key in body:
            raise Forbidden(f"Attribute '{key}' is read-only.")


SERVED: dict[str, dict[str, Any]] = {
    "namespace": document(NAMESPACE),
    "namespaces": collection("namespaces", NAMESPACE),
    "object": document(OBJECT),
    "objects": collection("objects", OBJECT),
    "property": document(PROPERTY),
    "properties": collection("properties", PROPERTY, item_required=PROPERTY_REQUIRED),
    "tag": document(TAG),
    "tags": collection("tags", TAG),
    "resource_type": document(RESOURCE_TYPE_ASSOCIATION),
    "resource_types": collection("resource_type_associations", RESOURCE_TYPE_ASSOCIATION),
}


def _serve(document: dict[str, Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def get_schema(request: web.Request) -> web.Response:
        return json_response(document)

    return get_schema


def setup(app: web.Application) -> None:
    for name, served in SERVED.items():
        app.router.add_get(f"/image/v2/schemas/metadefs/{name}", _serve(served))
