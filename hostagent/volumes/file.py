"""The file backend: each volume a qcow2 file `<state dir>/volumes/volume-<id>`.

Made with qemu-img (`hostagent.qemu_img`, an argument list, never a shell): an empty volume is
`qemu-img create -f qcow2`; a volume from an image is `qemu-img convert -f <the image's disk
format> -O qcow2`, then grown to the volume's size. The image's format is the one the Image API
recorded, passed explicitly: a raw image is the user's bytes, and probing could take them for a
qcow2 header that names a host file as its backing file. A qcow2 image that does name another
file is refused for the same reason (converting it would copy that file into the volume).

A volume is written under a temporary name and renamed into place when complete, so a file
called `volume-<id>` is always a whole volume: a redelivered create that finds it reports it, and
a create that fails (or is interrupted) leaves no `volume-<id>` behind. Volumes are always
qcow2 here, so extend never has to probe a file a guest has written to.

Volume ids become file names only after `canonical_id` accepted them (a UUID, no `/`, no `..`).
Files are world-readable: QEMU runs as another user (libvirt also relabels them when it attaches).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hostagent import qemu_img
from hostagent.host import local_gb
from hostagent.storage import ACCEPTED_FORMATS, GIB, StorageError, canonical_id
from hostagent.volumes.backend import (
    CannotShrink,
    ImageTooLarge,
    SourceImage,
    VolumeBackend,
    VolumeBackendError,
)
from protocol.volume import VolumeConnection

FORMAT = "qcow2"
PREFIX = "volume-"


class FileBackend(VolumeBackend):
    driver = "file"

    def __init__(self, directory: Path) -> None:
        """`directory`: where the volume files live."""
        self.directory = directory

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> FileBackend:
        """The backend whose volumes live in `<state dir>/volumes`."""
        return cls(state_dir / "volumes")

    async def open(self) -> None:
        await asyncio.to_thread(_make_directory, self.directory)

    def path(self, volume_id: str) -> Path:
        """The volume's file; VolumeBackendError for an id that is not a canonical UUID."""
        try:
            return self.directory / f"{PREFIX}{canonical_id(volume_id, 'volume id')}"
        except StorageError as exc:
            raise VolumeBackendError(exc.reason) from None

    def _partial(self, volume_id: str) -> Path:
        return self.directory / f".{PREFIX}{volume_id}.part"

    def _located(self, volume_id: str, provider_location: str | None) -> Path:
        """The volume's file, which must be what the backend reported as its location."""
        path = self.path(volume_id)
        if provider_location is not None and provider_location != str(path):
            raise VolumeBackendError(
                f"Volume {volume_id} is at {provider_location!r}, "
                f"not in this backend's directory {self.directory}."
            )
        return path

    # --- the operations ---------------------------------------------------------------------

    async def create(
        self, volume_id: str, size_gb: int, image: SourceImage | None = None, format: str = FORMAT
    ) -> str:
        path = self.path(volume_id)
        if format != FORMAT:
            raise VolumeBackendError(f"The file backend stores volumes as {FORMAT}, not {format!r}.")
        if size_gb <= 0:
            raise VolumeBackendError(f"Invalid volume size {size_gb} GiB.")
        if await asyncio.to_thread(path.is_file):
            return str(path)  # made by an earlier delivery of this request
        size = size_gb * GIB
        partial = self._partial(volume_id)
        await asyncio.to_thread(partial.unlink, missing_ok=True)  # an interrupted attempt's
        try:
            if image is None:
                await qemu_img.create_blank(partial, size)
            else:
                await self._copy_image(image, partial, size, size_gb)
            await asyncio.to_thread(_publish, partial, path)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(partial.unlink, missing_ok=True))
            raise
        return str(path)

    async def _copy_image(self, image: SourceImage, dest: Path, size: int, size_gb: int) -> None:
        if image.disk_format not in ACCEPTED_FORMATS:
            raise VolumeBackendError(
                f"Image {image.image_id} is in format {image.disk_format!r}; only raw and qcow2 are accepted."
            )
        if not await asyncio.to_thread(image.path.is_file):
            raise VolumeBackendError(f"Image {image.image_id} has no data on this host.")
        found = await qemu_img.info(image.path, image.disk_format)
        if found.backing_file or found.data_file:
            raise VolumeBackendError(
                f"Image {image.image_id} refers to another file; such images are refused."
            )
        if found.virtual_size > size:
            raise ImageTooLarge(image.image_id, found.virtual_size, size_gb)
        await qemu_img.convert(image.path, image.disk_format, dest, FORMAT)
        if found.virtual_size < size:
            await qemu_img.resize(dest, FORMAT, size)

    async def delete(self, volume_id: str, provider_location: str | None) -> bool:
        path = self._located(volume_id, provider_location)
        await asyncio.to_thread(self._partial(volume_id).unlink, missing_ok=True)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True

    async def extend(self, volume_id: str, provider_location: str, new_size_gb: int) -> None:
        path = self._located(volume_id, provider_location)
        if not await asyncio.to_thread(path.is_file):
            raise VolumeBackendError(f"Volume {volume_id} does not exist on this backend.")
        current = (await qemu_img.info(path, FORMAT)).virtual_size
        wanted = new_size_gb * GIB
        if current > wanted:
            raise CannotShrink(volume_id, current, new_size_gb)
        if current < wanted:  # equal: done by an earlier delivery of this request
            await qemu_img.resize(path, FORMAT, wanted)

    def connection(self, volume_id: str, provider_location: str) -> VolumeConnection:
        path = self._located(volume_id, provider_location)
        return VolumeConnection(volume_id=volume_id, driver=self.driver, path=str(path), format=FORMAT)

    async def capacity(self) -> int:
        return await asyncio.to_thread(local_gb, self.directory)


# --- blocking helpers, run in threads ---------------------------------------------------------


def _make_directory(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # QEMU (another user) opens the files in it


def _publish(partial: Path, path: Path) -> None:
    """Make the finished file the volume, atomically (and readable by QEMU)."""
    os.chmod(partial, 0o644)
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, path)
