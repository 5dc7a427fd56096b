"""`qemu-img`, run as an asyncio subprocess (never blocking the event loop).

Images are user data, and `qemu-img info` parses them: as Nova does (QEMU_IMG_LIMITS), it runs
under `prlimit` with 1 GiB of address space and 30 s of CPU, so a crafted image cannot make the
agent's host swap or spin; every call also has a wall-clock timeout.

Creating an image no longer spawns qemu-img: `hostagent.qcow2` writes the file itself, because
one qemu-img process per boot cost ~15 ms of CPU on a 2-core machine (bench/boot_storm.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from hostagent import qcow2

LIMITS = ("prlimit", f"--as={1024**3}", "--cpu=30")
TIMEOUT = 120.0  # seconds, wall clock, for any one call


class QemuImgError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int  # bytes
    backing_file: str | None
    data_file: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageInfo:
        specific = (data.get("format-specific") or {}).get("data") or {}
        return cls(
            format=str(data["format"]),
            virtual_size=int(data["virtual-size"]),
            backing_file=data.get("backing-filename") or data.get("full-backing-filename"),
            data_file=specific.get("data-file"),
        )


async def run(*args: str, limited: bool = False) -> str:
    """Run qemu-img with `args`; its stdout, or QemuImgError with its stderr."""
    argv = [*(LIMITS if limited else ()), "qemu-img", *args]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise QemuImgError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise QemuImgError(f"qemu-img {args[0]} took longer than {TIMEOUT:.0f}s") from None
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise QemuImgError(f"qemu-img {args[0]} failed: {message}")
    return out.decode()


async def info(path: Path, fmt: str | None = None) -> ImageInfo:
    """What the file is (`-U`: read it even while a guest holds its lock): probed by qemu-img,
    or read as `fmt` when the caller knows the format (a raw file must never be probed: its
    bytes are the guest's, and may look like a qcow2 header naming a host file)."""
    args = ["info", "-U", "--output=json", *(("-f", fmt) if fmt else ()), str(path)]
    text = await run(*args, limited=True)
    try:
        return ImageInfo.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise QemuImgError(f"qemu-img info printed something unexpected: {exc}") from None


async def create_overlay(path: Path, backing: Path, backing_format: str, size: int) -> None:
    """A qcow2 file of `size` bytes (rounded up to 512) whose unwritten blocks read from
    `backing`, named as given, in `backing_format`; the caller passes the backing image's
    virtual size or more. Written directly (no qemu-img), off the event loop."""
    await _create(path, size, backing, backing_format)


async def create_blank(path: Path, size: int) -> None:
    """An empty qcow2 file of `size` bytes (rounded up to 512). Written directly (no qemu-img)."""
    await _create(path, size, None, None)


async def _create(path: Path, size: int, backing: Path | None, backing_format: str | None) -> None:
    try:
        await asyncio.to_thread(qcow2.write, path, size, backing, backing_format)
    except ValueError as exc:  # a size or name no image can have: the error callers expect
        raise QemuImgError(f"cannot create {path.name}: {exc}") from None


async def convert(source: Path, source_format: str, dest: Path, dest_format: str) -> None:
    """Copy `source`, read as `source_format` (explicit: never probed), into a new `dest`."""
    await run("convert", "-q", "-f", source_format, "-O", dest_format, str(source), str(dest))


async def resize(path: Path, fmt: str, size: int) -> None:
    """Grow the image to `size` bytes (qemu-img refuses to shrink without --shrink)."""
    await run("resize", "-q", "-f", fmt, str(path), str(size))
