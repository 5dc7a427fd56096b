"""The volume backend interface: what a storage agent asks of the storage that holds volumes.

One abstract class (aio-pika's `abc.py` style) and concrete backends beside it: `file.py` keeps
qcow2 files in a directory; LVM logical volumes or Ceph RBD images would be modules of their own
with the same five operations, and the storage agent would not change. A backend names each
volume by a `provider_location` of its choosing (the file backend: the file's path), which the
volume actor stores and hands back on delete and extend, and which `connection` turns into what
a compute host needs to attach the volume.

Every operation is a coroutine and must not block the event loop. Every operation is idempotent,
because a request is redelivered after a crash: a create that finds its volume complete reports
it, a delete of a missing volume succeeds, an extend to the size the volume has succeeds.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from protocol.volume import VolumeConnection


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """An image to copy into a new volume: its bytes in the image store, and the disk format
    the Image API recorded for it (the bytes are read as that format, never probed)."""

    image_id: str
    path: Path
    disk_format: str


class VolumeBackendError(Exception):
    """The backend could not do what was asked; `reason` is fit for a volume's fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImageTooLarge(VolumeBackendError):
    def __init__(self, image_id: str, image_bytes: int, size_gb: int) -> None:
        super().__init__(
            f"Image {image_id} has a virtual size of {image_bytes} bytes, larger than the "
            f"volume's {size_gb} GiB."
        )
        self.image_id, self.image_bytes, self.size_gb = image_id, image_bytes, size_gb


class CannotShrink(VolumeBackendError):
    def __init__(self, volume_id: str, current_bytes: int, new_size_gb: int) -> None:
        super().__init__(
            f"Volume {volume_id} is {current_bytes} bytes; it cannot shrink to {new_size_gb} GiB."
        )
        self.volume_id, self.current_bytes, self.new_size_gb = volume_id, current_bytes, new_size_gb


class VolumeBackend(abc.ABC):
    """A storage backend. Use as an async context manager (or open/close)."""

    #: The `volume_backends.driver` value, and VolumeConnection.driver: how hosts attach it.
    driver: ClassVar[str]

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:  # noqa: B027 - an optional hook
        """Prepare the backend (make its directory, connect to its cluster). Default: nothing."""

    async def close(self) -> None:  # noqa: B027 - an optional hook
        """Release what open() took. Idempotent. Default: nothing."""

    @abc.abstractmethod
    async def create(
        self, volume_id: str, size_gb: int, image: SourceImage | None = None, format: str = "qcow2"
    ) -> str:
        """Make the volume, empty or holding the image's bytes (grown to `size_gb`); its
        provider_location. Complete or not at all: a failure leaves nothing behind. Raises
        VolumeBackendError (ImageTooLarge), or QemuImgError for a backend that uses qemu-img."""

    @abc.abstractmethod
    async def delete(self, volume_id: str, provider_location: str | None) -> bool:
        """Remove the volume; False if it did not exist."""

    @abc.abstractmethod
    async def extend(self, volume_id: str, provider_location: str, new_size_gb: int) -> None:
        """Grow the volume to `new_size_gb` (CannotShrink if it is larger already)."""

    @abc.abstractmethod
    def connection(self, volume_id: str, provider_location: str) -> VolumeConnection:
        """How a compute host reaches the volume."""

    @abc.abstractmethod
    async def capacity(self) -> int:
        """The backend's total size in GiB (`volume_backends.total_gb`)."""
