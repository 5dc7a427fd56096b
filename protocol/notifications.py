"""Notifications for integrations: Nova's versioned envelope on a topic exchange.

Every lifecycle step of a server, volume, network, subnet or port is published to the topic
exchange `actorstack.notifications` as one JSON object, the envelope OpenStack services emit:

    {"priority": "INFO", "event_type": "instance.create.end",
     "publisher_id": "nova-compute:host-1", "message_id": "<uuid>",
     "timestamp": "2026-11-21 10:00:00.123456",
     "payload": {"nova_object.name": "InstanceCreatePayload", "nova_object.namespace": "nova",
                 "nova_object.version": "1.12", "nova_object.data": {...}}}

with routing key `notifications.info` (priority INFO) or `notifications.error` (ERROR). Server
payloads are Nova's versioned objects; volume, network, subnet and port payloads are the flat
dictionaries Cinder and Neutron send, so a consumer written for OpenStack reads them unchanged.

Notifications leave through the transactional outbox, written in the same transaction as the
change they describe: a crash never loses one and never produces one for a change that did not
commit. A crash between the broker's confirm and the outbox delete publishes a row again with
the same `message_id` (the AMQP message id too), so a consumer that must not count twice dedupes
on it.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

EXCHANGE = "actorstack.notifications"  # topic
INFO, ERROR = "INFO", "ERROR"
PRIORITIES = (INFO, ERROR)


def routing_key(priority: str) -> str:
    """`notifications.info` or `notifications.error`: what an integration binds to."""
    return f"notifications.{priority.lower()}"


def timestamp(at: float) -> str:
    """Nova's format: UTC, space-separated, microseconds (`str(datetime)` without the zone)."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC).replace(tzinfo=None)
    return moment.isoformat(sep=" ", timespec="microseconds")


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    event_type: str
    payload: Mapping[str, Any]
    publisher_id: str
    priority: str = INFO
    message_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ValueError(f"unknown notification priority {self.priority!r}")

    @property
    def routing_key(self) -> str:
        return routing_key(self.priority)

    def encode(self, at: float) -> bytes:
        return msgspec.json.encode(
            {
                "priority": self.priority,
                "event_type": self.event_type,
                "publisher_id": self.publisher_id,
                "message_id": self.message_id,
                "timestamp": timestamp(at),
                "payload": self.payload,
            }
        )


def versioned(name: str, version: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A Nova versioned object as it appears in a payload."""
    return {
        "nova_object.name": name,
        "nova_object.namespace": "nova",
        "nova_object.version": version,
        "nova_object.data": dict(data),
    }
