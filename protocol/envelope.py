"""The envelope every message travels in, and its JSON encoding.

On the wire a message is one JSON object:

    {"id": "…", "type": "server.stop", "version": 1,
     "target": {"kind": "server", "id": "…"},
     "correlation_id": "…", "causation_id": "…" | null, "reply_to": "…" | null,
     "sent_at": 1732182000.123, "body": {…}}

`correlation_id` is shared by every message caused (directly or not) by one API request or
command; `causation_id` is the id of the message whose handling produced this one. Together
they let logs and the event stream tell one request's story.
"""

from __future__ import annotations

import time
import uuid

import msgspec

from protocol.message import Message, lookup, registered_types


class ProtocolError(Exception):
    """A message that cannot be decoded; `reason` says why (it is logged and dead-lettered)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: str
    id: str


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    version: int
    target: Target
    correlation_id: str
    causation_id: str | None = None
    reply_to: str | None = None
    sent_at: float
    body: Message

    @classmethod
    def new(
        cls,
        target: Target,
        body: Message,
        *,
        cause: Envelope | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
    ) -> Envelope:
        """A fresh envelope; `cause` links it into the story of the message being handled."""
        message_id = str(uuid.uuid4())
        if correlation_id is None:
            correlation_id = cause.correlation_id if cause is not None else message_id
        return cls(
            id=message_id,
            type=body.TYPE,
            version=body.VERSION,
            target=target,
            correlation_id=correlation_id,
            causation_id=cause.id if cause is not None else None,
            reply_to=reply_to,
            sent_at=time.time(),
            body=body,
        )


class _Incoming(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    type: str
    version: int
    target: Target
    correlation_id: str
    causation_id: str | None = None
    reply_to: str | None = None
    sent_at: float
    body: msgspec.Raw


_encoder = msgspec.json.Encoder()
_incoming_decoder = msgspec.json.Decoder(_Incoming)

# What msgspec raises on input it cannot read besides DecodeError: bytes that are not UTF-8
# inside a string (UnicodeDecodeError) and nesting deeper than its recursion limit
# (RecursionError, raised before the stack is at risk). Both are the sender's defect, so they
# must become a ProtocolError like any other, or a consumer would crash instead of dead-lettering.
_UNREADABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode(data: bytes) -> Envelope:
    """Decode and validate one message; raises ProtocolError with a reason on any defect."""
    try:
        raw = _incoming_decoder.decode(data)
    except _UNREADABLE as exc:
        raise ProtocolError(f"malformed envelope: {exc}") from None
    try:
        uuid.UUID(raw.id)
    except ValueError:
        raise ProtocolError(f"malformed envelope: id {raw.id!r} is not a UUID") from None
    cls = lookup(raw.type, raw.version)
    if cls is None:
        if not any(type_ == raw.type for type_, _ in registered_types()):
            raise ProtocolError(f"unknown message type {raw.type!r}")
        raise ProtocolError(f"unsupported version {raw.version} of message type {raw.type!r}")
    try:
        body = msgspec.json.decode(raw.body, type=cls)
    except _UNREADABLE as exc:
        raise ProtocolError(f"malformed body of {raw.type!r} v{raw.version}: {exc}") from None
    return Envelope(
        id=raw.id,
        type=raw.type,
        version=raw.version,
        target=raw.target,
        correlation_id=raw.correlation_id,
        causation_id=raw.causation_id,
        reply_to=raw.reply_to,
        sent_at=raw.sent_at,
        body=body,
    )
