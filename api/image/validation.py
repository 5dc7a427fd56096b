"""The part of JSON Schema that Glance's own schemas use, checked with jsonschema's wording.

Glance validates request bodies against the same documents it serves at /v2/schemas/... and
answers a mismatch with 400 "Provided object does not match schema '<name>': <reason>", the
reason being jsonschema's message. The metadata-definition and task schemas use these keywords:
$ref (to #/definitions/...), allOf, type, enum, required, properties, additionalProperties,
items, minItems, maxItems, uniqueItems, minLength, maxLength, minimum, maximum and pattern;
`problem` returns the first one a value breaks, or None.
"""

from __future__ import annotations

import re
from typing import Any

from api.errors import BadRequest

_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "string": (str,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "integer": (int,),
    "number": (int, float),
}


def is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def check(schema_name: str, schema: dict[str, Any], value: Any) -> None:
    """400 in Glance's words when `value` (a request body: an object) does not match `schema`."""
    reason = _type_problem({"type": "object"}, value) or problem(schema, value, schema)
    if reason is not None:
        raise BadRequest(f"Provided object does not match schema '{schema_name}': {reason}")


def problem(schema: dict[str, Any], value: Any, root: dict[str, Any]) -> str | None:
    if "$ref" in schema:
        return problem(_resolve(root, schema["$ref"]), value, root)
    for part in schema.get("allOf", ()):
        found = problem(part, value, root)
        if found:
            return found
    return _type_problem(schema, value) or _value_problem(schema, value, root)


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _type_problem(schema: dict[str, Any], value: Any) -> str | None:
    types = schema.get("type")
    if types is None:
        return None
    names = [types] if isinstance(types, str) else list(types)
    if any(is_type(value, t) for t in names):
        return None
    return f"{value!r} is not of type {', '.join(repr(t) for t in names)}"


def _value_problem(schema: dict[str, Any], value: Any, root: dict[str, Any]) -> str | None:
    if "enum" in schema and value not in schema["enum"]:
        return f"{value!r} is not one of {schema['enum']!r}"
    if isinstance(value, str):
        return _string_problem(schema, value)
    if is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{value!r} is less than the minimum of {schema['minimum']!r}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{value!r} is greater than the maximum of {schema['maximum']!r}"
    if isinstance(value, list):
        return _array_problem(schema, value, root)
    if isinstance(value, dict):
        return _object_problem(schema, value, root)
    return None


def _string_problem(schema: dict[str, Any], value: str) -> str | None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return f"{value!r} is too long"
    if "minLength" in schema and len(value) < schema["minLength"]:
        return f"{value!r} is too short"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{value!r} does not match {schema['pattern']!r}"
    return None


def _array_problem(schema: dict[str, Any], value: list[Any], root: dict[str, Any]) -> str | None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        return f"{value!r} is too short"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return f"{value!r} is too long"
    if schema.get("uniqueItems") and any(value[i] in value[:i] for i in range(len(value))):
        return f"{value!r} has non-unique elements"
    items = schema.get("items")
    if isinstance(items, dict):
        for item in value:
            found = problem(items, item, root)
            if found:
                return found
    return None


def _object_problem(schema: dict[str, Any], value: dict[str, Any], root: dict[str, Any]) -> str | None:
    for name in schema.get("required", ()):
        if name not in value:
            return f"{name!r} is a required property"
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    unexpected = [key for key in value if key not in properties]
    if extra is False and unexpected:
        verb = "was" if len(unexpected) == 1 else "were"
        listed = ", ".join(repr(key) for key in unexpected)
        return f"Additional properties are not allowed ({listed} {verb} unexpected)"
    for key, item in value.items():
        sub = properties.get(key, extra if isinstance(extra, dict) else None)
        if sub is not None:
            found = problem(sub, item, root)
            if found:
                return found
    return None
