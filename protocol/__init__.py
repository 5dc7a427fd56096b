"""The wire protocol: every message that crosses RabbitMQ, defined in one place.

This package imports nothing else of actorstack; `actors`, `api` and `hostagent` all speak
through it.
"""

from protocol.envelope import Envelope, ProtocolError, Target, decode, encode
from protocol.message import Message, lookup, registered_types

__all__ = [
    "Envelope",
    "Message",
    "ProtocolError",
    "Target",
    "decode",
    "encode",
    "lookup",
    "registered_types",
]
