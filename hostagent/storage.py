"""Instance files on the host, in Nova's layout, all under the agent's state directory.

    <state dir>/instances/<uuid>/disk          qcow2 overlay on the cached image (vda)
    <state dir>/instances/<uuid>/disk.local    the flavor's ephemeral disk, blank qcow2 (vdb)
    <state dir>/instances/<uuid>/disk.swap     the flavor's swap disk, blank qcow2
    <state dir>/instances/<uuid>/disk.info     {"<path of each disk>": "<format>"}, as Nova's
    <state dir>/instances/<uuid>/libvirt.xml   the domain definition, as last written
    <state dir>/instances/<uuid>/console.log   the serial console
    <state dir>/instances/_base/<sha1(image id)>   the image cache, shared by the instances

The cache is filled over HTTP from the internal API (`hostagent/control.py`: the agent shares no
directory with the image store), once per image: concurrent spawns of one image wait on one
download, which is written to a temporary file, checked against the image's checksums and
renamed into place, so a reader (or another process) sees the whole, verified image or none.
Images are user data: only raw and qcow2 are accepted, and never one that names a backing file
or an external data file, which could make a guest read the host's files (the Spawn message
carries no disk_format, so the format is probed, and probing is what those images exploit).

Sizes follow Nova: the root disk grows to the flavor's `disk` GiB when that is larger than the
image; a flavor disk of 0 keeps the image's size; a flavor disk smaller than the image is an
error. A server without an image boots from a volume: it gets no local root disk (the volume,
attached from the storage agent's file, is its vda), only the ephemeral and swap disks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from hostagent import qemu_img
from hostagent.control import ImageSource, ImageUnavailable
from hostagent.virt.base import Disk

GIB = 1024**3
MIB = 1024**2
ACCEPTED_FORMATS = frozenset({"raw", "qcow2"})
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_IMAGE_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class StorageError(Exception):
    """The instance's files could not be made; `reason` is fit for a server fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical_id(value: str, what: str = "server id") -> str:
    """A server id, which must be a UUID in canonical (lower-case, hyphenated) form: it names a
    directory and a libvirt domain, and anything else (a path, `..`) is refused."""
    if not isinstance(value, str) or not _CANONICAL_UUID.fullmatch(value):
        raise StorageError(f"invalid {what} {value!r}: not a UUID in canonical form")
    return value


def image_file_id(value: str) -> str:
    """An image id as the Image API accepts it (a hyphenated UUID, either case) and stores its
    bytes under; anything else is refused before it becomes part of a path."""
    if not isinstance(value, str) or not _IMAGE_ID.fullmatch(value):
        raise StorageError(f"invalid image id {value!r}: not a UUID")
    return value


@dataclasses.dataclass(frozen=True)
class InstancePaths:
    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk"

    @property
    def ephemeral(self) -> Path:
        return self.directory / "disk.local"

    @property
    def swap(self) -> Path:
        return self.directory / "disk.swap"

    @property
    def disk_info(self) -> Path:
        return self.directory / "disk.info"

    @property
    def definition(self) -> Path:
        return self.directory / "libvirt.xml"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"


@dataclasses.dataclass(frozen=True)
class BaseImage:
    path: Path
    format: str
    virtual_size: int
    fetched: bool  # this call copied it into the cache (False: it was there already)


class InstanceStorage:
    def __init__(self, state_dir: Path, images: ImageSource) -> None:
        self.instances_dir = state_dir / "instances"
        self.base_dir = self.instances_dir / "_base"
        self.images = images
        self._fetching: dict[str, asyncio.Future[None]] = {}
        # What `qemu-img info` said of each cached base file, keyed by the file's identity: a
        # base file is written once (atomically) and never changed, so probing it again at every
        # boot (two processes, qemu-img under prlimit) would only cost CPU.
        self._probed: dict[Path, tuple[tuple[int, int, int], qemu_img.ImageInfo]] = {}

    def paths(self, uuid: str) -> InstancePaths:
        return InstancePaths(self.instances_dir / canonical_id(uuid, "server id"))

    def instance_ids(self) -> set[str]:
        """The servers that have a directory here (blocking: call from a thread)."""
        try:
            names = os.listdir(self.instances_dir)
        except FileNotFoundError:
            return set()
        return {name for name in names if _CANONICAL_UUID.fullmatch(name)}

    async def existing(self) -> set[str]:
        return await asyncio.to_thread(self.instance_ids)

    # --- the image cache ------------------------------------------------------------------

    def base_path(self, image_id: str) -> Path:
        return self.base_dir / hashlib.sha1(image_file_id(image_id).encode()).hexdigest()

    async def cached_base(self, image_id: str) -> BaseImage:
        """The image, in the cache: downloaded on first use, by one caller while concurrent
        callers for the same image wait for it."""
        path = self.base_path(image_id)
        fetched = False
        while not await asyncio.to_thread(path.exists):
            pending = self._fetching.get(image_id)
            if pending is not None:
                await asyncio.wait([pending])
                if not pending.cancelled() and pending.exception() is not None:
                    raise pending.exception()  # type: ignore[misc]
                continue  # fetched, or its fetcher was cancelled: look again
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._fetching[image_id] = future
            try:
                await self._fetch(image_id, path)
            except asyncio.CancelledError:
                future.cancel()
                raise
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved here; waiters raise it themselves
                raise
            else:
                fetched = True
                future.set_result(None)
            finally:
                del self._fetching[image_id]
        found = await self._probe(path)
        self._check_image(image_id, found)
        return BaseImage(path, found.format, found.virtual_size, fetched)

    async def _probe(self, path: Path) -> qemu_img.ImageInfo:
        st = await asyncio.to_thread(path.stat)
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        known = self._probed.get(path)
        if known is not None and known[0] == identity:
            return known[1]
        found = await qemu_img.info(path)
        self._probed[path] = (identity, found)
        return found

    async def _fetch(self, image_id: str, dest: Path) -> None:
        image_file_id(image_id)
        temp = await asyncio.to_thread(_temporary, dest)
        try:
            try:
                await self.images.download_image(image_id, temp)
            except ImageUnavailable as exc:
                raise StorageError(exc.reason) from None
            probed = await qemu_img.info(temp)
            self._check_image(image_id, probed)
            await asyncio.to_thread(_publish, temp, dest)
        except BaseException:
            await asyncio.to_thread(temp.unlink, missing_ok=True)
            raise

    @staticmethod
    def _check_image(image_id: str, found: qemu_img.ImageInfo) -> None:
        if found.format not in ACCEPTED_FORMATS:
            raise StorageError(
                f"Image {image_id} is in format {found.format!r}; only raw and qcow2 are accepted."
            )
        if found.backing_file or found.data_file:
            raise StorageError(f"Image {image_id} refers to another file; such images are refused.")

    # --- one instance's files -------------------------------------------------------------

    async def create(
        self, uuid: str, image_id: str | None, *, root_gb: int, ephemeral_gb: int = 0, swap_mb: int = 0
    ) -> tuple[Disk, ...]:
        """Make the instance's directory, disks, disk.info and (empty) console.log, replacing
        whatever an interrupted earlier attempt left there. Returns the disks in guest order."""
        paths = self.paths(uuid)
        await asyncio.to_thread(_fresh_directory, paths.directory)
        disks: list[Disk] = []
        if image_id is not None:
            base = await self.cached_base(image_id)
            wanted = root_gb * GIB
            if wanted and wanted < base.virtual_size:
                raise StorageError(
                    f"Flavor's disk is too small for requested image. Flavor disk is {wanted} bytes, "
                    f"image is {base.virtual_size} bytes."
                )
            size = wanted if wanted > base.virtual_size else None
            await qemu_img.create_overlay(
                paths.disk, base.path, base.format, size if size is not None else base.virtual_size
            )
            disks.append(Disk(paths.disk, "qcow2"))
        if ephemeral_gb > 0:
            await qemu_img.create_blank(paths.ephemeral, ephemeral_gb * GIB)
            disks.append(Disk(paths.ephemeral, "qcow2"))
        if swap_mb > 0:
            await qemu_img.create_blank(paths.swap, swap_mb * MIB)
            disks.append(Disk(paths.swap, "qcow2"))
        info = {str(d.path): d.format for d in disks}
        await asyncio.to_thread(_write_files, paths, json.dumps(info))
        return tuple(disks)

    async def save_definition(self, uuid: str, definition: str) -> None:
        await asyncio.to_thread(_write_atomically, self.paths(uuid).definition, definition)

    async def definition(self, uuid: str) -> str | None:
        path = self.paths(uuid).definition
        try:
            return await asyncio.to_thread(path.read_text)
        except FileNotFoundError:
            return None

    async def remove(self, uuid: str) -> bool:
        """Delete the instance's directory; False if there was none."""
        directory = self.paths(uuid).directory
        return await asyncio.to_thread(_remove_tree, directory)


# --- blocking helpers, run in threads ---------------------------------------------------------


def _temporary(dest: Path) -> Path:
    """A path beside `dest` for its bytes to arrive in (no file there yet)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    os.unlink(name)
    return Path(name)


def _publish(temp: Path, dest: Path) -> None:
    """Put a downloaded file in place, whole: synced, readable by QEMU, renamed."""
    with temp.open("rb") as f:
        os.fsync(f.fileno())
    os.chmod(temp, 0o644)  # a guest's QEMU (another user) reads it as a backing file
    os.replace(temp, dest)


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.part")
    temp.write_text(text)
    os.replace(temp, path)


def _fresh_directory(directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def _write_files(paths: InstancePaths, disk_info: str) -> None:
    _write_atomically(paths.disk_info, disk_info)
    paths.console_log.touch()


def _remove_tree(directory: Path) -> bool:
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        return False
    return True
