"""The storage agent: a volume backend's hands. It carries out `agent.*_volume` requests.

A StorageAgent serves one backend under a name such as `<hostname>@file`: it consumes
`agent.<name>` with the plumbing every agent shares (`hostagent.requests`: the same queue
arguments and topology as a host agent's, publisher confirms before the ack, reply ids derived
from the request's, one request per volume at a time) and replies to the volume actor. Every
request is idempotent, as the backends' operations are: a redelivered create finds its volume
complete and reports it created, a delete of a missing volume reports it deleted, an extend to
the size the volume has reports it extended. A create that fails leaves nothing behind.

Its row in `volume_backends` is written at start (after its queue exists, so the API never
places a volume on a backend nobody listens for) and heartbeated: the name, the driver, the
availability zone and `total_gb` (the size of the backend's storage). `allocated_gb` is the
API's, and `enabled` the operator's: the agent sets neither after the row's first insert.

Creating a volume from an image reads the image's bytes from the image store
(`<images dir>/<image id>`, written by the Image API) and its disk format from the `images` row,
so the bytes are read as the format the image was registered with.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import asyncpg
import structlog
from aio_pika.abc import AbstractRobustConnection

from hostagent.qemu_img import QemuImgError
from hostagent.requests import Handler, RequestAgent
from hostagent.storage import StorageError, canonical_id, image_file_id
from hostagent.volumes.backend import SourceImage, VolumeBackend, VolumeBackendError
from protocol import Message, ProtocolError, Target
from protocol import volume as v
from protocol.states import ImageStatus

log = structlog.get_logger("hostagent.volumes")

# What a backend raises when it cannot do what was asked (the request's failure, not the agent's).
BACKEND_ERRORS = (VolumeBackendError, QemuImgError, OSError)


def backend_name(driver: str, hostname: str | None = None) -> str:
    """A storage agent's name, as Cinder names a volume service: `<host>@<backend>`."""
    host = hostname or socket.gethostname().split(".")[0] or "host"
    return f"{host}@{driver}"


@dataclasses.dataclass(frozen=True)
class StorageAgentSettings:
    name: str  # <hostname>@<backend>, e.g. node1@file
    image_dir: Path  # where the Image API keeps image bytes (<images>/<image id>)
    availability_zone: str = "nova"
    heartbeat: float = 10.0
    prefetch: int = 8  # volume copies are heavy: fewer at a time than a host agent's requests


class StorageAgent(RequestAgent):
    role = "backend"
    reply_kinds = ("volume",)

    def __init__(
        self,
        settings: StorageAgentSettings,
        pool: asyncpg.Pool,
        connection: AbstractRobustConnection,
        backend: VolumeBackend,
    ) -> None:
        """The pool and the connection are the caller's; the backend is opened by start() and
        closed by stop()."""
        super().__init__(
            settings.name, pool, connection, prefetch=settings.prefetch, heartbeat=settings.heartbeat
        )
        self.settings = settings
        self.backend = backend
        self.total_gb: int | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await super().start()
        log.info(
            "storage agent started", backend=self.name, driver=self.backend.driver, queue=self.queue_name
        )

    async def stop(self) -> None:
        await super().stop()
        log.info("storage agent stopped", backend=self.name)

    async def _start(self) -> None:
        await self._stack.enter_async_context(self.backend)
        await self._open_queue()
        await self._register()
        self._run_tasks([("heartbeat", self._heartbeat_loop())])
        await self._consume()

    # --- registration and heartbeat -------------------------------------------------------

    async def _register(self) -> None:
        self.total_gb = await self.backend.capacity()
        await self.pool.execute(
            _UPSERT, self.name, self.backend.driver, self.settings.availability_zone, self.total_gb
        )
        log.info(
            "volume backend registered",
            backend=self.name,
            driver=self.backend.driver,
            total_gb=self.total_gb,
            availability_zone=self.settings.availability_zone,
        )

    async def _beat(self) -> bool:
        status = await self.pool.execute(
            "UPDATE volume_backends SET heartbeat_at = now() WHERE name = $1", self.name
        )
        return status != "UPDATE 0"

    # --- requests -------------------------------------------------------------------------

    def _handler_for(self, body: Message) -> Handler:
        if isinstance(body, v.CreateVolumeOnBackend):
            return self._create
        if isinstance(body, v.DeleteVolumeOnBackend):
            return self._delete
        if isinstance(body, v.ExtendVolumeOnBackend):
            return self._extend
        raise ProtocolError(f"a storage agent does not handle {body.TYPE!r}")

    def _subject(self, body: Message) -> Target:
        return Target("volume", str(body.volume_id))  # type: ignore[attr-defined]

    async def _create(self, msg: v.CreateVolumeOnBackend) -> Message:
        try:
            image = None if msg.image_id is None else await self._source_image(msg.image_id)
            location = await self.backend.create(msg.volume_id, msg.size, image, msg.format)
        except (StorageError, *BACKEND_ERRORS) as exc:
            reason = _reason(exc)
            log.warning("volume create failed", reason=reason)
            return v.VolumeCreateFailed(reason=reason)
        log.info("volume created", size_gb=msg.size, image=msg.image_id, provider_location=location)
        return v.VolumeCreated(
            backend=self.name, provider_location=location, bootable=msg.image_id is not None
        )

    async def _source_image(self, image_id: str) -> SourceImage:
        """The image to copy: its bytes' path and the disk format the Image API recorded.
        Database errors are not the request's: they propagate, and it is retried."""
        image_id = image_file_id(image_id)
        row = await self.pool.fetchrow("SELECT status, disk_format FROM images WHERE id = $1", image_id)
        if row is None:
            raise VolumeBackendError(f"Image {image_id} could not be found.")
        if row["status"] != ImageStatus.ACTIVE:
            raise VolumeBackendError(f"Image {image_id} is not active (its status is {row['status']}).")
        return SourceImage(image_id, self.settings.image_dir / image_id, str(row["disk_format"]))

    async def _delete(self, msg: v.DeleteVolumeOnBackend) -> Message:
        try:
            canonical_id(msg.volume_id, "volume id")
        except StorageError:
            return v.VolumeDeleted()  # nothing of ours can carry that name
        try:
            existed = await self.backend.delete(msg.volume_id, msg.provider_location)
        except BACKEND_ERRORS as exc:
            reason = _reason(exc)
            log.warning("volume delete failed", reason=reason)
            return v.VolumeDeleteFailed(reason=reason)
        log.info("volume deleted", existed=existed)
        return v.VolumeDeleted()

    async def _extend(self, msg: v.ExtendVolumeOnBackend) -> Message:
        try:
            await self.backend.extend(msg.volume_id, msg.provider_location, msg.new_size)
        except BACKEND_ERRORS as exc:
            reason = _reason(exc)
            log.warning("volume extend failed", reason=reason)
            return v.VolumeExtendFailed(reason=reason)
        log.info("volume extended", size_gb=msg.new_size)
        return v.VolumeExtended(size=msg.new_size)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc)


_UPSERT = """
INSERT INTO volume_backends (name, driver, availability_zone, total_gb, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4, now(), now())
ON CONFLICT (name) DO UPDATE SET
    driver = EXCLUDED.driver, availability_zone = EXCLUDED.availability_zone, total_gb = EXCLUDED.total_gb,
    started_at = now(), heartbeat_at = now()
"""
