"""The image service's parts that need no cloud: the file store's all-or-nothing streaming, the
upload's idle timeout, virtual sizes read from real qemu-img headers, and Glance's JSON-patch
semantics."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from api.errors import BadRequest, Conflict, Forbidden
from api.image import data, formats, patch, store


async def _chunks(parts: Iterable[bytes], *, fail: BaseException | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part
    if fail is not None:
        raise fail


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def test_receive_stores_every_byte_with_its_hashes(tmp_path: Path) -> None:
    data = os.urandom(3 * store.CHUNK + 12345)
    parts = [data[i : i + 70000] for i in range(0, len(data), 70000)]  # network-sized pieces
    dest = store.image_path(tmp_path, "img")
    received = await store.receive(_chunks(parts), dest, cap=len(data))
    assert dest.read_bytes() == data
    assert received.size == len(data)
    assert received.md5 == hashlib.md5(data).hexdigest()
    assert received.hash_value == hashlib.sha512(data).hexdigest()
    assert received.head == data[: formats.HEAD] and received.tail == data[-formats.TAIL :]
    assert _leftovers(dest.parent) == ["img"]  # no temporary file left beside it


async def test_receive_over_the_cap_keeps_nothing(tmp_path: Path) -> None:
    dest = store.image_path(tmp_path, "img")
    with pytest.raises(store.TooLarge):
        await store.receive(_chunks([b"x" * 600_000] * 4), dest, cap=2_000_000)
    assert _leftovers(dest.parent) == []


async def test_receive_of_a_broken_stream_keeps_nothing(tmp_path: Path) -> None:
    dest = store.image_path(tmp_path, "img")
    with pytest.raises(ConnectionResetError):
        await store.receive(
            _chunks([b"y" * store.CHUNK] * 3, fail=ConnectionResetError("gone")), dest, cap=1 << 40
        )
    assert _leftovers(dest.parent) == []


async def test_receive_cancelled_midway_keeps_nothing(tmp_path: Path) -> None:
    dest = store.image_path(tmp_path, "img")
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            started.set()
            await asyncio.sleep(0.001)
            yield b"z" * 300_000

    task = asyncio.create_task(store.receive(endless(), dest, cap=1 << 40))
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _leftovers(dest.parent) == []


class _Body:
    """A request body that delivers `parts`, then either ends or falls silent."""

    def __init__(self, parts: list[bytes], *, then_silent: bool) -> None:
        self.parts, self.then_silent = list(parts), then_silent

    async def readany(self) -> bytes:
        if self.parts:
            return self.parts.pop(0)
        if self.then_silent:
            await asyncio.sleep(3600)
        return b""


async def test_upload_body_ends_with_the_request() -> None:
    chunks = [c async for c in data.body_chunks(_Body([b"ab", b"cd"], then_silent=False), idle_timeout=1)]
    assert chunks == [b"ab", b"cd"]


async def test_a_silent_uploader_counts_as_gone() -> None:
    chunks = []
    with pytest.raises(ConnectionAbortedError):
        async for chunk in data.body_chunks(_Body([b"ab"], then_silent=True), idle_timeout=0.05):
            chunks.append(chunk)
    assert chunks == [b"ab"]


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk", "vdi", "vpc"])
def test_virtual_size_matches_qemu_img(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"disk.{fmt}"
    subprocess.run(["qemu-img", "create", "-f", fmt, str(path), "64M"], check=True, capture_output=True)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True, text=True
        ).stdout
    )
    data = path.read_bytes()
    disk_format = "vhd" if fmt == "vpc" else fmt
    got = formats.virtual_size(disk_format, data[: formats.HEAD], data[-formats.TAIL :], len(data))
    assert got == info["virtual-size"]


def test_virtual_size_of_raw_is_its_size_and_unknown_otherwise() -> None:
    assert formats.virtual_size("raw", b"abc", b"abc", 3) == 3
    assert formats.virtual_size("qcow2", b"not a qcow2 header at all, just text...", b"", 40) is None
    assert formats.virtual_size("iso", b"\0" * 100, b"", 100) is None
    assert formats.virtual_size(None, b"\0" * 100, b"", 100) is None


def _image(**overrides: Any) -> dict[str, Any]:
    image = {
        "name": "n",
        "visibility": "private",
        "protected": False,
        "os_hidden": False,
        "owner": "p1",
        "container_format": "bare",
        "disk_format": "raw",
        "tags": [],
        "min_ram": 0,
        "min_disk": 0,
        "status": "active",
        "properties": {"distro": "cirros"},
    }
    image.update(overrides)
    return image


def _patched(
    ops: list[dict[str, Any]], *, image: dict[str, Any] | None = None, draft: int = 10, is_admin: bool = False
) -> dict[str, Any]:
    return patch.apply(image or _image(), patch.parse(ops, draft), draft=draft, is_admin=is_admin)


def test_patch_add_replace_and_remove_follow_glance() -> None:
    image = _patched(
        [
            {"op": "replace", "path": "/name", "value": "renamed"},
            {"op": "add", "path": "/min_ram", "value": 128},
            {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
            {"op": "replace", "path": "/distro", "value": "debian"},
            {"op": "add", "path": "/tags", "value": ["a", "b", "a"]},
        ]
    )
    assert (image["name"], image["min_ram"], image["tags"]) == ("renamed", 128, ["a", "b"])
    assert image["properties"] == {"distro": "debian", "hw_disk_bus": "virtio"}
    assert _patched([{"op": "remove", "path": "/distro"}])["properties"] == {}
    # v2.0's dialect: {"<op>": "<path>"}; add refuses what is already there.
    assert _patched([{"replace": "/name", "value": "old-style"}], draft=4)["name"] == "old-style"
    with pytest.raises(Conflict):
        _patched([{"add": "/distro", "value": "x"}], draft=4)


@pytest.mark.parametrize(
    ("ops", "error"),
    [
        ([{"op": "replace", "path": "/status", "value": "active"}], Forbidden),
        ([{"op": "add", "path": "/size", "value": 1}], Forbidden),
        ([{"op": "add", "path": "/os_glance_import_task", "value": "x"}], Forbidden),
        ([{"op": "remove", "path": "/name"}], Forbidden),
        ([{"op": "replace", "path": "/visibility", "value": "public"}], Forbidden),
        ([{"op": "replace", "path": "/owner", "value": "p2"}], Forbidden),
        ([{"op": "replace", "path": "/disk_format", "value": "qcow2"}], Forbidden),  # not queued any more
        ([{"op": "replace", "path": "/missing", "value": "x"}], Conflict),
        ([{"op": "remove", "path": "/missing"}], Conflict),
        ([{"op": "test", "path": "/name", "value": "n"}], BadRequest),
        ([{"op": "add", "path": "/tags/0", "value": "t"}], BadRequest),
        ([{"op": "add", "path": "name", "value": "n"}], BadRequest),
        ([{"op": "add", "path": "/min_ram", "value": -1}], BadRequest),
        ([{"op": "add", "path": "/min_ram", "value": "128"}], BadRequest),
        ([{"op": "add", "path": "/disk_format", "value": "floppy"}], BadRequest),
        ([{"op": "add", "path": "/extra", "value": 5}], BadRequest),
        ([{"op": "add", "path": "/name"}], BadRequest),
        ({"op": "add", "path": "/name", "value": "n"}, BadRequest),
    ],
)
def test_patch_refusals(ops: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        _patched(ops)


def test_admin_may_publicize_and_change_owner_and_formats_of_queued_images() -> None:
    image = _patched(
        [
            {"op": "replace", "path": "/visibility", "value": "public"},
            {"op": "replace", "path": "/owner", "value": "p2"},
        ],
        is_admin=True,
    )
    assert (image["visibility"], image["owner"]) == ("public", "p2")
    queued = _patched(
        [{"op": "replace", "path": "/disk_format", "value": "qcow2"}], image=_image(status="queued")
    )
    assert queued["disk_format"] == "qcow2"
