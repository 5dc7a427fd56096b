"""Image bytes on the local file system: `<state dir>/images/<image id>` (the store), and data
staged for a glance-direct import in `<state dir>/staging/<image id>` (moved into the store by
`place`).

An upload is written to a hidden temporary file beside its destination and renamed into place
only once complete and flushed to disk, so a reader sees a whole image or none, and a failed or
interrupted upload leaves nothing behind. Bytes pass through in chunks of about CHUNK: an image
is never held in memory. The blocking half of the work — writing and hashing (hashlib releases
the GIL on large buffers) — runs in a worker thread through asyncio.to_thread, one hop per
chunk, so a slow disk never stalls the event loop. Downloads are served by aiohttp's
FileResponse (see `api/image/data.py`), which also keeps the loop free.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import tempfile
import threading
from collections.abc import AsyncIterable
from pathlib import Path

from api.image.formats import HEAD, TAIL

CHUNK = 1024 * 1024
HASH_ALGO = "sha512"  # Glance's default hashing_algorithm, reported as os_hash_algo


class TooLarge(Exception):
    """The stream passed the size cap; nothing was kept."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"the image is larger than the limit of {cap} bytes")
        self.cap = cap


@dataclasses.dataclass(frozen=True)
class Received:
    size: int
    md5: str
    hash_value: str  # HASH_ALGO hexdigest
    head: bytes  # the first HEAD bytes and the last TAIL bytes, for format headers
    tail: bytes


def image_dir(state_dir: Path) -> Path:
    return state_dir / "images"


def image_path(state_dir: Path, image_id: str) -> Path:
    return image_dir(state_dir) / image_id


def staging_path(state_dir: Path, image_id: str) -> Path:
    """Where `PUT /images/<id>/stage` keeps data until a glance-direct import takes it (on the
    same file system as the store, so the import moves it into place without a copy)."""
    return state_dir / "staging" / image_id


class _Writer:
    """The synchronous half of an upload, run in worker threads one chunk at a time. The lock
    keeps an abort from racing a write still running in a thread whose awaiter was cancelled."""

    def __init__(self, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        # mkstemp makes 0600; hypervisors read images from here (a backing file, a copy made by
        # another user), so use the mode a plain open() gives under the usual umask. Access is
        # restricted at the state directory, not per file.
        os.fchmod(fd, 0o644)
        self._file = os.fdopen(fd, "wb")
        self._lock = threading.Lock()
        self.temp, self.dest = Path(name), dest
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.hash = hashlib.new(HASH_ALGO)
        self.size = 0
        self.head = bytearray()
        self.tail = b""

    def write(self, data: bytearray) -> None:
        with self._lock:
            self._file.write(data)
            self.md5.update(data)
            self.hash.update(data)
            self.size += len(data)
            if len(self.head) < HEAD:
                self.head += data[: HEAD - len(self.head)]
            self.tail = (self.tail + bytes(data[-TAIL:]))[-TAIL:]

    def commit(self) -> None:
        with self._lock:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temp, self.dest)
            directory = os.open(self.dest.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a crash
            finally:
                os.close(directory)

    def abort(self) -> None:
        with self._lock:
            self._file.close()
            self.temp.unlink(missing_ok=True)


async def receive(chunks: AsyncIterable[bytes], dest: Path, *, cap: int) -> Received:
    """Store the stream at `dest`, all or nothing; TooLarge once it passes `cap` bytes.

    Small network chunks are gathered up to CHUNK bytes before each thread hop."""
    writer = await asyncio.to_thread(_Writer, dest)
    try:
        pending = bytearray()
        async for chunk in chunks:
            if writer.size + len(pending) + len(chunk) > cap:
                raise TooLarge(cap)
            pending += chunk
            if len(pending) >= CHUNK:
                data, pending = pending, bytearray()
                await asyncio.to_thread(writer.write, data)
        if pending:
            await asyncio.to_thread(writer.write, pending)
        await asyncio.to_thread(writer.commit)
    except BaseException:
        # Shielded: a second cancellation must not leave the temporary file behind.
        await asyncio.shield(asyncio.to_thread(writer.abort))
        raise
    return Received(
        writer.size, writer.md5.hexdigest(), writer.hash.hexdigest(), bytes(writer.head), writer.tail
    )


def _hash_and_place(staged: Path, dest: Path) -> Received:
    """Read the staged file once for its hashes and header, then rename it into the store."""
    md5 = hashlib.md5(usedforsecurity=False)
    digest = hashlib.new(HASH_ALGO)
    size, head, tail = 0, bytearray(), b""
    with staged.open("rb") as source:
        while data := source.read(CHUNK):
            md5.update(data)
            digest.update(data)
            size += len(data)
            if len(head) < HEAD:
                head += data[: HEAD - len(head)]
            tail = (tail + data[-TAIL:])[-TAIL:]
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, dest)
    directory = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return Received(size, md5.hexdigest(), digest.hexdigest(), bytes(head), tail)


async def place(staged: Path, dest: Path) -> Received:
    """Move staged data into the store at `dest` (same file system: a rename), with what an
    upload reports of it; FileNotFoundError when nothing is staged."""
    return await asyncio.to_thread(_hash_and_place, staged, dest)


async def remove(path: Path) -> None:
    """Delete an image's file (a large unlink can take a while: off the loop)."""
    await asyncio.to_thread(path.unlink, missing_ok=True)
