"""Messages of the block storage capability: the volume actor, storage agents, and the volume
side of the server actor.

A volume's life: the API inserts it `creating` and sends `volume.create`; the actor asks its
backend's storage agent (`agent.create_volume`), whose report (`volume.created`) makes it
`available`. Attaching: the API reserves the volume itself (a guarded available -> reserved,
so two racing attaches cannot both win), tells the volume (`volume.reserved`, which starts its
timer) and the server (`server.attach_volume`); the server actor asks its host to hot-plug the
disk (`agent.attach_volume`) and, when the host confirms, tells the volume (`volume.attached`:
in-use). Detaching mirrors it (`volume.detaching`, `server.detach_volume`,
`agent.detach_volume`, `volume.detached`: available). A server deleted with volumes attached
detaches them (`volume.detached`), deleting those marked delete_on_termination.
"""

from __future__ import annotations

import msgspec

from protocol.message import Message
from protocol.states import AttachStatus, VolumeStatus

# --- to a volume actor, from the API ----------------------------------------------------------


class CreateVolume(Message, frozen=True):
    """The API inserted the row (`creating`, its backend chosen) and asks for the volume."""

    TYPE = "volume.create"


class DeleteVolume(Message, frozen=True):
    """From the API (or a server actor, for delete_on_termination)."""

    TYPE = "volume.delete"


class ExtendVolume(Message, frozen=True):
    TYPE = "volume.extend"
    new_size: int  # GiB


class ResetVolumeState(Message, frozen=True):
    """Cinder's os-reset_status (admin): set the status (and attach status) as given."""

    TYPE = "volume.reset_state"
    status: VolumeStatus
    attach_status: AttachStatus | None = None


class VolumeReserved(Message, frozen=True):
    """The API reserved the volume for an attachment (its row already says `reserved`); the
    actor starts the reservation's timer. From the API, in the reserving transaction."""

    TYPE = "volume.reserved"
    attachment_id: str
    server_id: str


class VolumeAttaching(Message, frozen=True):
    """The API moved the volume available -> attaching for a client's os-reserve (a client that
    attaches the volume itself, as Nova does with Cinder); the actor starts the reservation's
    timer. From the API, in the reserving transaction."""

    TYPE = "volume.attaching"


class VolumeDetaching(Message, frozen=True):
    """The API moved the volume in-use -> detaching; the actor starts the detach's timer."""

    TYPE = "volume.detaching"
    attachment_id: str
    server_id: str


# --- to a volume actor, from a storage agent ----------------------------------------------------


class VolumeCreated(Message, frozen=True):
    TYPE = "volume.created"
    backend: str
    provider_location: str
    bootable: bool = False


class VolumeCreateFailed(Message, frozen=True):
    TYPE = "volume.create_failed"
    reason: str


class VolumeDeleted(Message, frozen=True):
    TYPE = "volume.deleted"


class VolumeDeleteFailed(Message, frozen=True):
    TYPE = "volume.delete_failed"
    reason: str


class VolumeExtended(Message, frozen=True):
    TYPE = "volume.extended"
    size: int


class VolumeExtendFailed(Message, frozen=True):
    TYPE = "volume.extend_failed"
    reason: str


# --- to a volume actor, from a server actor -------------------------------------------------------


class VolumeAttached(Message, frozen=True):
    TYPE = "volume.attached"
    attachment_id: str
    server_id: str
    host: str
    device: str


class VolumeAttachFailed(Message, frozen=True):
    TYPE = "volume.attach_failed"
    attachment_id: str
    reason: str


class VolumeDetached(Message, frozen=True):
    """The volume is no longer attached to the server; `delete`: it goes too
    (delete_on_termination of a deleted server)."""

    TYPE = "volume.detached"
    attachment_id: str
    delete: bool = False


# --- to a storage agent, from a volume actor -------------------------------------------------------


class CreateVolumeOnBackend(Message, frozen=True):
    TYPE = "agent.create_volume"
    volume_id: str
    size: int  # GiB
    image_id: str | None = None  # copy this image's bytes in
    format: str = "qcow2"


class DeleteVolumeOnBackend(Message, frozen=True):
    TYPE = "agent.delete_volume"
    volume_id: str
    provider_location: str | None = None


class ExtendVolumeOnBackend(Message, frozen=True):
    TYPE = "agent.extend_volume"
    volume_id: str
    new_size: int
    provider_location: str


# --- the server side ----------------------------------------------------------------------------


class VolumeConnection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a host reaches a volume (Cinder's connection info): a file for the file backend."""

    volume_id: str
    driver: str  # "file"
    path: str
    format: str  # qcow2 or raw


class AttachVolume(Message, frozen=True):
    """From the API, to a server actor: hot-plug this reserved volume as `device`."""

    TYPE = "server.attach_volume"
    attachment_id: str
    device: str  # /dev/vdX
    connection: VolumeConnection
    delete_on_termination: bool = False


class DetachVolume(Message, frozen=True):
    TYPE = "server.detach_volume"
    attachment_id: str
    volume_id: str


class VolumeReady(Message, frozen=True):
    """From a volume actor, to the server it is reserved for at boot: created and ready."""

    TYPE = "server.volume_ready"
    attachment_id: str
    connection: VolumeConnection


class VolumeFailed(Message, frozen=True):
    """From a volume actor, to the server it is reserved for at boot: it could not be made."""

    TYPE = "server.volume_failed"
    attachment_id: str
    volume_id: str
    reason: str


# from a host agent, to a server actor


class VolumeAttachedToServer(Message, frozen=True):
    TYPE = "server.volume_attached"
    attachment_id: str
    volume_id: str


class VolumeAttachToServerFailed(Message, frozen=True):
    TYPE = "server.volume_attach_failed"
    attachment_id: str
    volume_id: str
    reason: str


class VolumeDetachedFromServer(Message, frozen=True):
    TYPE = "server.volume_detached"
    attachment_id: str
    volume_id: str


class VolumeDetachFromServerFailed(Message, frozen=True):
    TYPE = "server.volume_detach_failed"
    attachment_id: str
    volume_id: str
    reason: str


# from a server actor, to its host agent


class AttachVolumeOnHost(Message, frozen=True):
    """Hot-plug the volume as `device` (live and in the persistent definition; only the
    definition when the domain is not running)."""

    TYPE = "agent.attach_volume"
    server_id: str
    attachment_id: str
    device: str
    connection: VolumeConnection


class DetachVolumeOnHost(Message, frozen=True):
    """Unplug the volume; the reply comes once libvirt confirmed the device is gone."""

    TYPE = "agent.detach_volume"
    server_id: str
    attachment_id: str
    volume_id: str
    device: str
