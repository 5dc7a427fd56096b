"""Typed message bodies and the registry that maps (type, version) on the wire to a class.

A message body is a frozen msgspec Struct that names its wire type and schema version:

    class Stop(Message, frozen=True):
        TYPE = "server.stop"
        VERSION = 1
        reason: str = ""

Defining the class registers it. Decoding is strict (unknown fields, wrong types and missing
fields are errors) so that a malformed body is caught at the edge, never inside a handler.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

_REGISTRY: dict[tuple[str, int], type[Message]] = {}


class Message(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every message body. Subclasses set TYPE (dotted, `<kind>.<verb>`) and VERSION."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("TYPE"):
            return  # an abstract intermediate class
        key = (cls.TYPE, cls.VERSION)
        existing = _REGISTRY.get(key)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise TypeError(f"message {key} is already defined by {existing.__qualname__}")
        _REGISTRY[key] = cls


def lookup(type_: str, version: int) -> type[Message] | None:
    """The class registered for this wire type and version, or None."""
    return _REGISTRY.get((type_, version))


def registered_types() -> dict[tuple[str, int], type[Message]]:
    return dict(_REGISTRY)
