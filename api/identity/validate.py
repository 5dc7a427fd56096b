"""Checks on identity request bodies (Keystone's messages where it has one)."""

from __future__ import annotations

from typing import Any

from api.errors import BadRequest


def member(data: Any, key: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise BadRequest(f"Expecting to find {key} in request body.")
    return data[key]


def text(obj: dict[str, Any], key: str, *, required: bool = False, max_len: int = 255) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise BadRequest(f"'{key}' is a required property")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"Invalid input for field '{key}': {value!r} is not of type 'string'")
    if required and not value.strip():
        raise BadRequest(f"Invalid input for field '{key}': it may not be empty")
    if len(value) > max_len:
        raise BadRequest(f"Invalid input for field '{key}': longer than {max_len} characters")
    return value


def flag(obj: dict[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise BadRequest(f"Invalid input for field '{key}': {value!r} is not of type 'boolean'")
    return value


def tags(obj: dict[str, Any]) -> list[str] | None:
    """A list of tags (at most 80, each a `tag`), duplicates dropped; None when absent."""
    value = obj.get("tags")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 80:
        raise BadRequest("Invalid input for field 'tags': a list of at most 80 tags was expected")
    return list(dict.fromkeys(tag(t) for t in value))


def only(obj: dict[str, Any], allowed: set[str], what: str) -> None:
    extra = set(obj) - allowed
    if extra:
        raise BadRequest(
            f"Additional properties are not allowed in {what} ({', '.join(sorted(extra))} unexpected)"
        )


def extra(obj: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """The attributes beside the known ones, which Keystone keeps and returns as given (its
    schemas allow additional properties for users, projects, domains, groups and roles)."""
    return {k: v for k, v in obj.items() if k not in known}


def tag(value: Any, field: str = "tags") -> str:
    """One project or domain tag: 1 to 255 characters, no '/' and no ',' (Keystone's rule)."""
    if not isinstance(value, str) or not 0 < len(value) <= 255 or "/" in value or "," in value:
        raise BadRequest(
            f"Invalid input for field '{field}': {value!r} is not a valid tag "
            "(1 to 255 characters, without '/' or ',')"
        )
    return value
