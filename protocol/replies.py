"""The reply an actor sends to a message that asked for one (`reply_to` set).

A rejected message (illegal in the actor's state, or for an actor that does not exist) is
answered with ok=false, an error code and a human reason; nothing changed.
"""

from __future__ import annotations

from typing import Any

from protocol.message import Message


class Reply(Message, frozen=True):
    TYPE = "reply"
    VERSION = 1
    ok: bool
    in_reply_to: str
    state: str | None = None
    error: str | None = None  # "conflict", "not_found", "failed"
    reason: str | None = None
    result: dict[str, Any] | None = None
