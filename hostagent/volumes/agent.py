"""The storage agent: a volume backend's hands. It carries out `agent.*_volume` requests.

A StorageAgent serves one backend under a name such as `<hostname>@file`: it consumes
`agent.<name>` with the plumbing every agent shares (`hostagent.requests`: the same queue
arguments and topology as a host agent's, publisher confirms before the ack, reply ids derived
from the request's, one request per volume at a time) and replies to the volume actor. Every
request is idempotent, as the backends' operations are: a redelivered create finds its volume
complete and reports it created, a delete of a missing volume reports it deleted, an extend to
the size the volume has reports it extended. A create that fails leaves nothing behind.

It reports itself to the `host` service (actors/hosts.py), which writes its row in
`volume_backends`, at start (after its queue exists, so the API never places a volume on a
backend nobody listens for) and with every heartbeat: the driver, the availability zone and
`total_gb` (the size of the backend's storage). `allocated_gb` is the API's, and `enabled` the
operator's. The agent holds no database credentials.

Creating a volume from an image downloads the image from the internal API (checked against its
checksums) into `scratch_dir`, with the disk format the Image API recorded, so the bytes are read
as the format the image was registered with; the download is removed after the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aio_pika.abc import AbstractRobustConnection

from hostagent.control import Control, ImageUnavailable
from hostagent.qemu_img import QemuImgError
from hostagent.requests import Handler, RequestAgent
from hostagent.storage import StorageError, canonical_id, image_file_id
from hostagent.volumes.backend import SourceImage, VolumeBackend, VolumeBackendError
from protocol import Message, ProtocolError, Target
from protocol import volume as v
from protocol.hosts import BackendReport

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
    scratch_dir: Path  # where an image waits while it is copied into a volume
    availability_zone: str = "nova"
    heartbeat: float = 10.0
    prefetch: int = 8  # volume copies are heavy: fewer at a time than a host agent's requests


class StorageAgent(RequestAgent):
    role = "backend"
    reply_kinds = ("volume",)

    def __init__(
        self,
        settings: StorageAgentSettings,
        control: Control,
        connection: AbstractRobustConnection,
        backend: VolumeBackend,
    ) -> None:
        """The control plane and the connection are the caller's; the backend is opened by
        start() and closed by stop()."""
        super().__init__(
            settings.name, control, connection, prefetch=settings.prefetch, heartbeat=settings.heartbeat
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
        await self.control.report(self.name, self._report(started=True))
        log.info(
            "volume backend registered",
            backend=self.name,
            driver=self.backend.driver,
            total_gb=self.total_gb,
            availability_zone=self.settings.availability_zone,
        )

    def _report(self, *, started: bool) -> BackendReport:
        return BackendReport(
            started=started,
            driver=self.backend.driver,
            availability_zone=self.settings.availability_zone,
            total_gb=self.total_gb or 0,
        )

    async def _beat(self) -> None:
        await self.control.report(self.name, self._report(started=False))

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
            async with self._source_image(msg.image_id) as image:
                location = await self.backend.create(msg.volume_id, msg.size, image, msg.format)
        except (StorageError, ImageUnavailable, *BACKEND_ERRORS) as exc:
            reason = _reason(exc)
            log.warning("volume create failed", reason=reason)
            return v.VolumeCreateFailed(reason=reason)
        log.info("volume created", size_gb=msg.size, image=msg.image_id, provider_location=location)
        return v.VolumeCreated(
            backend=self.name, provider_location=location, bootable=msg.image_id is not None
        )

    @contextlib.asynccontextmanager
    async def _source_image(self, image_id: str | None) -> AsyncIterator[SourceImage | None]:
        """The image to copy (None: a blank volume), downloaded for the copy and removed after:
        its bytes' path and the disk format the Image API recorded. A control plane that does not
        answer is not the request's failure: ControlUnavailable propagates, and it is retried."""
        if image_id is None:
            yield None
            return
        image_id = image_file_id(image_id)
        await asyncio.to_thread(self.settings.scratch_dir.mkdir, parents=True, exist_ok=True)
        path = self.settings.scratch_dir / f".{image_id}.{uuid.uuid4().hex}.part"
        try:
            found = await self.control.download_image(image_id, path)
            yield SourceImage(image_id, path, str(found["disk_format"]))
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

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
