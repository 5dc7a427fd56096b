"""Checks on request bodies shared by the API's services, in the words of OpenStack's JSON Schema
validation.

Nova and Cinder validate with JSON Schema through the same oslo machinery and report the first
failure as "Invalid input for field/attribute <field>. Value: <value>. <reason>"; clients show
that text, so we keep its shape. Each check either returns the value in the type the handler
wants or raises BadRequest. What only one service checks stays in that service (compute's query
strings: api/compute/query_params.py; Cinder's own: api/volume/validate.py).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web

from api.context import json_body
from api.errors import BadRequest, UnsupportedMediaType

MAX_INT = 0x7FFFFFFF  # Nova's db constant: the largest value an integer column holds


def _py(value: Any) -> str:
    """A value as Nova's messages print it (Python repr, as jsonschema does)."""
    return repr(value)


def invalid(field: str, value: Any, reason: str) -> BadRequest:
    return BadRequest(f"Invalid input for field/attribute {field}. Value: {value}. {reason}")


async def document(request: web.Request) -> Any:
    """The request's JSON body; 415 for a non-JSON content type, 400 when it does not parse."""
    content_type = request.content_type
    if (
        request.body_exists
        and content_type not in ("application/json", "application/octet-stream", "")
        and not content_type.endswith("+json")
    ):
        raise UnsupportedMediaType(f"Unsupported Content-Type {content_type}")
    return await json_body(request)


def member(data: Any, key: str) -> dict[str, Any]:
    """`data[key]` of a body that must be exactly {key: {...}}."""
    if not isinstance(data, dict):
        raise BadRequest(
            f"Invalid input for field/attribute . Value: {data}. {_py(data)} is not of type 'object'"
        )
    if key not in data:
        raise BadRequest(f"'{key}' is a required property")
    only(data, {key}, "")
    inner = data[key]
    if not isinstance(inner, dict):
        raise invalid(key, inner, f"{_py(inner)} is not of type 'object'")
    return inner


def only(obj: Mapping[str, Any], allowed: Collection[str], field: str) -> None:
    extra = sorted(set(obj) - set(allowed))
    if extra:
        listed = ", ".join(_py(k) for k in extra)
        verb = "were" if len(extra) > 1 else "was"
        reason = f"Additional properties are not allowed ({listed} {verb} unexpected)"
        raise invalid(field, dict(obj), reason) if field else BadRequest(reason)


def required(obj: Mapping[str, Any], keys: Collection[str], field: str) -> None:
    for key in keys:
        if key not in obj:
            raise invalid(field, dict(obj), f"'{key}' is a required property")


def integer(
    obj: Mapping[str, Any], key: str, *, minimum: int, maximum: int = MAX_INT, signed: bool = False
) -> int:
    """An integer given as a JSON number or a decimal string (Nova accepts both)."""
    value = obj[key]
    pattern = r"^-?[0-9]+$" if signed else r"^[0-9]*$"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise invalid(key, value, f"{_py(value)} is not of type 'integer', 'string'")
    if isinstance(value, str):
        if not re.match(pattern, value) or value in ("", "-"):
            raise invalid(key, value, f"{_py(value)} does not match {_py(pattern)}")
        number = int(value)
    else:
        number = value
    if number < minimum:
        raise invalid(key, value, f"{_py(value)} is less than the minimum of {minimum}")
    if number > maximum:
        raise invalid(key, value, f"{_py(value)} is greater than the maximum of {maximum}")
    return number


_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}


def boolean(obj: Mapping[str, Any], key: str) -> bool:
    """Nova's `parameter_types.boolean`: a JSON boolean or one of the usual spellings."""
    value = obj[key]
    if isinstance(value, bool):
        return value
    if (
        isinstance(value, str)
        and value.lower() in _TRUE | _FALSE
        and value in (value.lower(), value.upper(), value.capitalize())
    ):
        return value.lower() in _TRUE
    raise invalid(
        key,
        value,
        f"{_py(value)} is not one of [True, 'True', 'TRUE', 'true', '1', 'ON', 'On', "
        "'on', 'YES', 'Yes', 'yes', False, 'False', 'FALSE', 'false', '0', 'OFF', "
        "'Off', 'off', 'NO', 'No', 'no']",
    )


def _printable(char: str) -> bool:
    category = unicodedata.category(char)
    return not category.startswith("C") and (not category.startswith("Z") or category == "Zs")


def name(obj: Mapping[str, Any], key: str = "name") -> str:
    """Nova's `parameter_types.name`: 1-255 printable characters, no leading or trailing
    whitespace."""
    value = obj[key]
    if not isinstance(value, str):
        raise invalid(key, value, f"{_py(value)} is not of type 'string'")
    if len(value) < 1:
        raise invalid(key, value, f"{_py(value)} is too short")
    if len(value) > 255:
        raise invalid(key, value, f"{_py(value)} is too long")
    if not all(_printable(c) for c in value) or value[0].isspace() or value[-1].isspace():
        raise invalid(
            key,
            value,
            f"{_py(value)} does not match the pattern of valid names "
            "(printable characters, no leading or trailing whitespace)",
        )
    return value


def description(obj: Mapping[str, Any], key: str = "description") -> str | None:
    """Nova's `parameter_types.description`: null, or up to 65535 printable characters (line
    breaks and tabs allowed)."""
    value = obj[key]
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(key, value, f"{_py(value)} is not of type 'string', 'null'")
    if len(value) > 65535:
        raise invalid(key, value, f"{_py(value)} is too long")
    if not all(_printable(c) or c in "\n\r\t" for c in value):
        raise invalid(key, value, f"{_py(value)} does not match the pattern of valid descriptions")
    return value


def printable_or_none(value: str | None, key: str) -> str | None:
    """Nova's printable-only strings (a server's description): no control characters, which
    Nova's pattern refuses and PostgreSQL could not even store in the case of NUL."""
    if value is not None and not all(_printable(c) for c in value):
        raise invalid(
            key,
            value,
            f"{_py(value)} does not match the pattern of valid descriptions (printable characters)",
        )
    return value


def base64_or_none(value: str | None, key: str) -> str | None:
    """Nova's `format: base64` (a server's user_data): the guest gets the decoded bytes from the
    metadata service, so text that does not decode would be lost silently."""
    if value is None:
        return None
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(key, value[:255], f"{_py(value[:255])} is not a 'base64'") from None
    return value
