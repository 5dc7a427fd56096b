"""PATCH /v2/images/<id>: Glance's JSON-patch dialects, parsed and applied to an image held as
plain data (no I/O here).

Two media types, as Glance: `application/openstack-images-v2.1-json-patch` (RFC 6902 operation
objects, `{"op": "replace", "path": "/name", "value": …}`) and the older
`application/openstack-images-v2.0-json-patch` (`{"replace": "/name", "value": …}`). A path
names one attribute — `/name`, `/min_ram`, `/tags`, or an extra property `/<key>` — and the
semantics are Glance's: `add` sets (in v2.0 only when absent), `replace` needs the attribute to
exist (409 otherwise), `remove` works on extra properties only (403 for the image's own
attributes). Read-only and reserved attributes are refused with 403, bad values with 400.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from api.errors import BadRequest, Conflict, Forbidden, PayloadTooLarge
from api.image import schema
from protocol.states import ImageStatus

MEDIA_TYPES = {
    "application/openstack-images-v2.0-json-patch": 4,
    "application/openstack-images-v2.1-json-patch": 10,
}
OPERATIONS = ("add", "remove", "replace")


@dataclasses.dataclass(frozen=True)
class Change:
    op: str
    key: str  # the attribute the path points at
    value: Any = None


def parse(body: Any, draft: int) -> list[Change]:
    """The operations of a patch document; 400/403 for what Glance refuses before applying."""
    if not isinstance(body, list):
        raise BadRequest("Request body must be a JSON array of operation objects.")
    changes = []
    for raw in body:
        if not isinstance(raw, dict):
            raise BadRequest("Operations must be JSON objects.")
        op, pointer = _op_and_path(raw, draft)
        key = _decode_pointer(pointer)
        schema.check_writable(key)
        if op == "remove":
            changes.append(Change(op, key))
            continue
        if "value" not in raw:
            raise BadRequest(f'Operation "{op}" requires a member named "value".')
        schema.check_value(key, raw["value"])
        changes.append(Change(op, key, raw["value"]))
    return changes


def _op_and_path(raw: dict[str, Any], draft: int) -> tuple[str, Any]:
    if draft == 4:
        present = [op for op in OPERATIONS if op in raw]
        if len(present) != 1:
            raise BadRequest(
                'Operation objects must contain exactly one member named "add", "remove", or "replace".'
            )
        op = present[0]
        pointer = raw[op]
    else:
        op = raw.get("op")
        if op not in OPERATIONS:
            if op is None:
                raise BadRequest(
                    "Unable to find `op` in JSON Schema change. "
                    f"It must be one of the following: {', '.join(OPERATIONS)}."
                )
            raise BadRequest(
                f"Invalid operation: `{op}`. It must be one of the following: {', '.join(OPERATIONS)}."
            )
        if "path" not in raw:
            raise BadRequest("Unable to find 'path' in JSON Schema change")
        pointer = raw["path"]
    if not isinstance(pointer, str):
        raise BadRequest(f'Pointer `{pointer}` does not start with "/".')
    return op, pointer


def _decode_pointer(pointer: str) -> str:
    """The one attribute a JSON pointer names (Glance's checks and messages)."""
    if not pointer.startswith("/"):
        raise BadRequest(f'Pointer `{pointer}` does not start with "/".')
    if re.search(r"/\s*?/", pointer[1:]):
        raise BadRequest(f'Pointer `{pointer}` contains adjacent "/".')
    if len(pointer) > 1 and pointer.endswith("/"):
        raise BadRequest(f'Pointer `{pointer}` end with "/".')
    if re.search("~[^01]", pointer) or pointer.endswith("~"):
        raise BadRequest(f'Pointer `{pointer}` contains "~" not part of a recognized escape sequence.')
    parts = [p.replace("~1", "/").replace("~0", "~").strip() for p in pointer.lstrip("/").split("/")]
    if len(parts) != 1 or not parts[0]:
        raise BadRequest(f"Invalid JSON pointer for this resource: '{pointer}'")
    return parts[0]


def apply(image: dict[str, Any], changes: list[Change], *, draft: int, is_admin: bool) -> dict[str, Any]:
    """The image after the changes. `image` holds the mutable attributes, `status` and a
    `properties` dict; it is not modified."""
    result = dict(image, properties=dict(image["properties"]))
    props: dict[str, Any] = result["properties"]
    for change in changes:
        key = change.key
        if change.op == "remove":
            if key in schema.BASE:
                raise Forbidden(f"Property {key} may not be removed.")
            if key not in props:
                raise Conflict(f"Property {key} does not exist.")
            del props[key]
            continue
        if key in schema.BASE:
            if change.op == "add" and draft == 4:
                raise Conflict(f"Property {key} already present.")
            _check_base_change(result, key, change.value, is_admin=is_admin)
            result[key] = _dedupe(change.value) if key == "tags" else change.value
        elif change.op == "replace" and key not in props:
            raise Conflict(f"Property {key} does not exist.")
        elif change.op == "add" and draft == 4 and key in props:
            raise Conflict(f"Property {key} already present.")
        else:
            props[key] = change.value
    if len(props) > schema.PROPERTY_QUOTA:
        raise PayloadTooLarge(
            f"Maximum number of image properties exceeded: {len(props)} of {schema.PROPERTY_QUOTA} allowed."
        )
    if len(result["tags"]) > schema.TAG_QUOTA:
        raise PayloadTooLarge(
            f"Maximum number of image tags exceeded: {len(result['tags'])} of {schema.TAG_QUOTA} allowed."
        )
    return result


def _check_base_change(image: dict[str, Any], key: str, value: Any, *, is_admin: bool) -> None:
    if key == "owner" and not is_admin:
        raise Forbidden("Owner can't be updated by non admin.")
    if key == "visibility" and value == "public" and not is_admin:
        raise Forbidden("You are not authorized to complete publicize_image action.")
    if key in ("disk_format", "container_format") and image["status"] != ImageStatus.QUEUED:
        raise Forbidden(f"Attribute {key} can be only replaced for a queued image.")


def _dedupe(tags: list[str]) -> list[str]:
    """Glance keeps tags as a set; keep the first occurrence's order."""
    return list(dict.fromkeys(tags))
