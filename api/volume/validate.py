"""Checks on Block Storage request bodies and query strings, with Cinder's messages.

Cinder validates with JSON Schema through the same oslo machinery as Nova, so its 400s read
"Invalid input for field/attribute <field>. Value: <value>. <reason>" (api/validate.py's helpers
build that text); the checks it makes in code say "Invalid input received: <reason>" (InvalidInput).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from api.errors import BadRequest
from api.validate import integer, invalid

# parameter_types.metadata_allows_null: keys of these characters, values strings of <= 255
_METADATA_KEY = re.compile(r"^[a-zA-Z0-9-_:. /]{1,255}$")


def invalid_input(reason: str) -> BadRequest:
    """Cinder's InvalidInput."""
    return BadRequest(f"Invalid input received: {reason}")


def only(name: str, args: Mapping[str, Any], allowed: set[str]) -> None:
    """additionalProperties: false, in jsonschema's words."""
    extra = sorted(set(args) - allowed)
    if extra:
        listed = ", ".join(map(repr, extra))
        verb = "were" if len(extra) > 1 else "was"
        raise invalid(name, args, f"Additional properties are not allowed ({listed} {verb} unexpected)")


def text(obj: Mapping[str, Any], key: str, *, max_len: int = 255) -> str | None:
    """An optional string of at most `max_len` characters, stripped as Cinder strips names and
    descriptions; None when absent or null."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(key, value, f"{value!r} is not of type 'string', 'null'")
    if len(value) > max_len:
        raise invalid(key, value, f"{value!r} is too long")
    return value.strip()


def optional_uuid(obj: Mapping[str, Any], key: str) -> str | None:
    """parameter_types.optional_uuid: a UUID (with or without hyphens, as oslo takes it) or null."""
    value = obj.get(key)
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        uuid.UUID(value)
    except ValueError:
        raise invalid(key, value, f"{value!r} is not a 'uuid'") from None
    return value


def size(obj: Mapping[str, Any], key: str = "size") -> int:
    """parameter_types.volume_size: an integer >= 1, as a JSON number or a decimal string; Cinder's
    own message when it is missing or null."""
    if obj.get(key) is None:
        raise invalid_input(f"Volume size '{obj.get(key)}' must be an integer and greater than 0")
    return integer(obj, key, minimum=1)


def metadata(value: Any, field: str = "metadata") -> dict[str, str]:
    """A metadata object: string keys of 1-255 of Cinder's key characters, string values of at
    most 255 characters."""
    if not isinstance(value, dict):
        raise invalid(field, value, f"{value!r} is not of type 'object'")
    bad_keys = [k for k in value if not _METADATA_KEY.match(k)]
    if bad_keys:
        listed = ", ".join(repr(k) for k in bad_keys)
        verb = "were" if len(bad_keys) > 1 else "was"
        raise invalid(
            field,
            value,
            f"Additional properties are not allowed ({listed} {verb} unexpected): "
            "keys are 1 to 255 letters, digits and '-_:. /'",
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise invalid(key, item, f"{item!r} is not of type 'string'")
        if len(item) > 255:
            raise invalid(key, item, f"{item!r} is too long")
    return dict(value)


def query_int(query: Mapping[str, str], key: str, *, minimum: int = 0) -> int | None:
    raw = query.get(key)
    if raw is None:
        return None
    try:
        number = int(raw)
    except ValueError:
        raise invalid_input(f"{key} param must be an integer") from None
    if number < minimum:
        raise invalid_input(f"{key} param must be positive")
    return number


_TRUE = ("1", "t", "true", "on", "y", "yes")
_FALSE = ("0", "f", "false", "off", "n", "no")


def query_bool(query: Mapping[str, str], key: str) -> bool | None:
    """oslo's strict bool_from_string on a query parameter; None when absent."""
    raw = query.get(key)
    if raw is None:
        return None
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise invalid_input(f"Invalid value '{raw}' for {key}: it must be a boolean")
