"""The file volume backend: qcow2 files made, grown and removed with qemu-img, checked with
qemu-img itself; volumes from raw and qcow2 images; refusals that leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hostagent.qemu_img import QemuImgError
from hostagent.storage import GIB
from hostagent.volumes.backend import CannotShrink, ImageTooLarge, SourceImage, VolumeBackendError
from hostagent.volumes.file import FileBackend
from protocol.volume import VolumeConnection
from tests.hostagent.conftest import PREFIX, make_image, qemu_img_info


@pytest.fixture
async def backend(workdir: Path) -> AsyncIterator[FileBackend]:
    async with FileBackend.in_state_dir(workdir / f"{PREFIX}-storage") as opened:
        yield opened


def image(
    image_dir: Path, size: str, fmt: str, *, registered_as: str | None = None, pattern: int | None = None
) -> SourceImage:
    """An image in the store, optionally with a 64 KiB pattern written at offset 1 MiB."""
    image_id = make_image(image_dir, size, fmt)
    path = image_dir / image_id
    if pattern is not None:
        qemu_io(path, fmt, f"write -P {pattern:#x} 1M 64k")
    return SourceImage(image_id, path, registered_as or fmt)


def qemu_io(path: Path, fmt: str, command: str) -> bool:
    """One qemu-io command on an image read as `fmt`; whether it succeeded (a pattern read that
    finds other bytes fails)."""
    result = subprocess.run(
        ["qemu-io", "-f", fmt, "-c", command, str(path)], check=False, capture_output=True, text=True
    )
    return result.returncode == 0


def same_content(a: Path, a_format: str, b: Path, b_format: str) -> bool:
    """The guest sees the same bytes (beyond the smaller image's end, the larger reads zeros)."""
    result = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", a_format, "-F", b_format, str(a), str(b)],
        check=False,
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def leftovers(backend: FileBackend) -> list[str]:
    return sorted(os.listdir(backend.directory))


# --- create ---------------------------------------------------------------------------------------


async def test_an_empty_volume_is_a_qcow2_file_of_its_size(backend: FileBackend) -> None:
    volume_id = str(uuid.uuid4())
    location = await backend.create(volume_id, 2)
    path = backend.directory / f"volume-{volume_id}"
    assert location == str(path)
    info = qemu_img_info(path)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 2 * GIB)
    assert "backing-filename" not in info
    assert path.stat().st_mode & 0o777 == 0o644  # QEMU runs as another user
    assert leftovers(backend) == [path.name]  # no temporary file left

    inode = path.stat().st_ino
    assert await backend.create(volume_id, 2) == location  # a redelivery: reported, not made again
    assert path.stat().st_ino == inode


async def test_a_volume_from_a_raw_image_holds_its_bytes_at_the_volume_size(
    backend: FileBackend, image_dir: Path
) -> None:
    source = image(image_dir, "8M", "raw", pattern=0x5A)
    volume_id = str(uuid.uuid4())
    path = Path(await backend.create(volume_id, 1, source))
    info = qemu_img_info(path)
    assert (info["format"], info["virtual-size"]) == ("qcow2", GIB)
    assert qemu_io(path, "qcow2", "read -P 0x5a 1M 64k")
    assert same_content(source.path, "raw", path, "qcow2")


async def test_a_volume_from_a_qcow2_image_holds_its_bytes_at_the_volume_size(
    backend: FileBackend, image_dir: Path
) -> None:
    source = image(image_dir, "16M", "qcow2", pattern=0xA5)
    path = Path(await backend.create(str(uuid.uuid4()), 1, source))
    info = qemu_img_info(path)
    assert (info["format"], info["virtual-size"]) == ("qcow2", GIB)
    assert "backing-filename" not in info  # a copy, not an overlay: the image may go away
    assert qemu_io(path, "qcow2", "read -P 0xa5 1M 64k")
    assert same_content(source.path, "qcow2", path, "qcow2")


async def test_a_raw_image_is_copied_as_bytes_even_when_they_look_like_qcow2(
    backend: FileBackend, image_dir: Path
) -> None:
    """The format is the one the image was registered with, never probed."""
    source = image(image_dir, "16M", "qcow2", registered_as="raw")
    path = Path(await backend.create(str(uuid.uuid4()), 1, source))
    assert same_content(source.path, "raw", path, "qcow2")  # the qcow2 header is data in the volume
    assert qemu_img_info(path)["virtual-size"] == GIB


async def test_an_image_that_refers_to_another_file_is_refused(
    backend: FileBackend, image_dir: Path, workdir: Path
) -> None:
    secret = workdir / "host-secret"
    secret.write_bytes(b"not for guests" * 1000)
    image_id = make_image(image_dir, "16M", "qcow2", "-b", str(secret), "-F", "raw")
    source = SourceImage(image_id, image_dir / image_id, "qcow2")
    with pytest.raises(VolumeBackendError, match="refers to another file"):
        await backend.create(str(uuid.uuid4()), 1, source)
    assert leftovers(backend) == []


async def test_an_image_larger_than_the_volume_is_refused_and_leaves_nothing(
    backend: FileBackend, image_dir: Path
) -> None:
    source = image(image_dir, "2G", "qcow2")  # sparse
    with pytest.raises(ImageTooLarge) as refused:
        await backend.create(str(uuid.uuid4()), 1, source)
    assert (refused.value.image_bytes, refused.value.size_gb) == (2 * GIB, 1)
    assert source.image_id in refused.value.reason and "larger than the volume" in refused.value.reason
    assert leftovers(backend) == []


async def test_a_failed_copy_removes_its_partial_file_and_a_stale_one_is_replaced(
    backend: FileBackend, image_dir: Path
) -> None:
    volume_id = str(uuid.uuid4())
    not_qcow2 = image(image_dir, "8M", "raw", registered_as="qcow2")  # the registered format is wrong
    with pytest.raises(QemuImgError):
        await backend.create(volume_id, 1, not_qcow2)
    assert leftovers(backend) == []

    stale = backend.directory / f".volume-{volume_id}.part"  # as an attempt killed mid-copy leaves it
    stale.write_bytes(b"half a volume")
    path = Path(await backend.create(volume_id, 1))
    assert qemu_img_info(path)["format"] == "qcow2"
    assert leftovers(backend) == [path.name]


async def test_a_missing_image_and_unsupported_formats_are_refused(
    backend: FileBackend, image_dir: Path
) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(VolumeBackendError, match="has no data"):
        await backend.create(str(uuid.uuid4()), 1, SourceImage(missing, image_dir / missing, "qcow2"))
    with pytest.raises(VolumeBackendError, match="only raw and qcow2"):
        await backend.create(str(uuid.uuid4()), 1, image(image_dir, "8M", "raw", registered_as="vmdk"))
    with pytest.raises(VolumeBackendError, match="stores volumes as qcow2"):
        await backend.create(str(uuid.uuid4()), 1, format="raw")
    with pytest.raises(VolumeBackendError, match="Invalid volume size"):
        await backend.create(str(uuid.uuid4()), 0)
    assert leftovers(backend) == []


async def test_ids_that_are_not_uuids_never_become_paths(backend: FileBackend) -> None:
    for bad in ("../../etc/passwd", "", "x/y", f"{uuid.uuid4()}/../x", str(uuid.uuid4()).upper()):
        with pytest.raises(VolumeBackendError, match="invalid volume id"):
            await backend.create(bad, 1)
        with pytest.raises(VolumeBackendError):
            await backend.delete(bad, None)
        with pytest.raises(VolumeBackendError):
            await backend.extend(bad, "/etc/passwd", 2)
    assert leftovers(backend) == []


# --- extend, delete, connection, capacity ---------------------------------------------------------------


async def test_extend_grows_the_volume_keeps_its_data_and_never_shrinks(
    backend: FileBackend, image_dir: Path
) -> None:
    source = image(image_dir, "8M", "raw", pattern=0x3C)
    volume_id = str(uuid.uuid4())
    location = await backend.create(volume_id, 1, source)
    await backend.extend(volume_id, location, 3)
    assert qemu_img_info(Path(location))["virtual-size"] == 3 * GIB
    assert qemu_io(Path(location), "qcow2", "read -P 0x3c 1M 64k")
    await backend.extend(volume_id, location, 3)  # a redelivery: the size holds already
    assert qemu_img_info(Path(location))["virtual-size"] == 3 * GIB
    with pytest.raises(CannotShrink):
        await backend.extend(volume_id, location, 2)
    assert qemu_img_info(Path(location))["virtual-size"] == 3 * GIB

    missing = str(uuid.uuid4())
    with pytest.raises(VolumeBackendError, match="does not exist"):
        await backend.extend(missing, str(backend.path(missing)), 2)


async def test_delete_removes_the_file_and_a_missing_one_is_no_error(backend: FileBackend) -> None:
    volume_id = str(uuid.uuid4())
    location = await backend.create(volume_id, 1)
    assert await backend.delete(volume_id, location) is True
    assert leftovers(backend) == []
    assert await backend.delete(volume_id, location) is False
    assert await backend.delete(volume_id, None) is False


async def test_a_location_outside_the_backend_is_never_touched(backend: FileBackend, workdir: Path) -> None:
    volume_id = str(uuid.uuid4())
    location = await backend.create(volume_id, 1)
    elsewhere = workdir / "precious"
    elsewhere.write_text("keep me")
    with pytest.raises(VolumeBackendError, match="not in this backend"):
        await backend.delete(volume_id, str(elsewhere))
    with pytest.raises(VolumeBackendError, match="not in this backend"):
        await backend.extend(volume_id, str(elsewhere), 2)
    assert elsewhere.read_text() == "keep me" and Path(location).exists()


async def test_the_connection_names_the_file_and_the_capacity_is_the_file_systems(
    backend: FileBackend,
) -> None:
    volume_id = str(uuid.uuid4())
    location = await backend.create(volume_id, 1)
    assert backend.connection(volume_id, location) == VolumeConnection(
        volume_id=volume_id, driver="file", path=location, format="qcow2"
    )
    statvfs = os.statvfs(backend.directory)
    assert await backend.capacity() == statvfs.f_blocks * statvfs.f_frsize // GIB > 0
