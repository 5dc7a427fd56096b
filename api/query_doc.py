"""The query parameters a handler takes, as `/openapi.json` lists them (api/openapi.py reads a
handler's `query_parameters`): so that clients and the fuzzer (tests/fuzz) know every filter,
paging and sorting parameter of every list.
"""

from __future__ import annotations

from typing import Any, TypeVar

H = TypeVar("H")

_SCHEMAS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer", "minimum": 0},
    "boolean": {"type": "string", "enum": ["true", "false", "True", "False", "1", "0"]},
    "date-time": {"type": "string", "format": "date-time"},
}


def param(
    name: str, kind: str = "string", description: str = "", *, enum: list[str] | None = None
) -> dict[str, Any]:
    schema = {"type": "string", "enum": enum} if enum else dict(_SCHEMAS[kind])
    found = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        found["description"] = description
    return found


def strings(*names: str) -> list[dict[str, Any]]:
    return [param(name) for name in names]


def documented(*handlers: H, parameters: list[dict[str, Any]]) -> None:
    """Give each handler the list of query parameters it takes."""
    for handler in handlers:
        handler.query_parameters = parameters  # type: ignore[attr-defined]
