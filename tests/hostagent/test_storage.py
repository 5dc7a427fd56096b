"""Instance files: the image cache (filled once, atomically, even under concurrency), qcow2
overlays checked with qemu-img itself, disk.info, sizes as Nova sizes them, refusals, removal."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from hostagent.storage import GIB, InstanceStorage, StorageError
from tests.hostagent.conftest import PREFIX, make_image, qemu_img_info
from tests.hostagent.local_control import DirectoryImages


@pytest.fixture
def storage(workdir: Path, image_dir: Path) -> InstanceStorage:
    return InstanceStorage(workdir / f"{PREFIX}-host", DirectoryImages(image_dir))


async def test_the_base_image_is_cached_once_under_concurrency(
    storage: InstanceStorage, image_dir: Path
) -> None:
    image_id = make_image(image_dir, "16M")
    bases = await asyncio.gather(*(storage.cached_base(image_id) for _ in range(8)))
    assert sum(b.fetched for b in bases) == 1
    expected = storage.base_dir / hashlib.sha1(image_id.encode()).hexdigest()
    assert {b.path for b in bases} == {expected}
    assert {(b.format, b.virtual_size) for b in bases} == {("qcow2", 16 * 1024**2)}
    assert sorted(os.listdir(storage.base_dir)) == [expected.name]  # no temporary file left
    inode = expected.stat().st_ino
    again = await storage.cached_base(image_id)
    assert not again.fetched and expected.stat().st_ino == inode


async def test_concurrent_spawns_share_one_base_and_get_overlays_on_it(
    storage: InstanceStorage, image_dir: Path
) -> None:
    image_id = make_image(image_dir, "16M")
    servers = [str(uuid.uuid4()) for _ in range(4)]
    results = await asyncio.gather(*(storage.create(s, image_id, root_gb=1) for s in servers))
    base = storage.base_path(image_id)
    assert os.listdir(storage.base_dir) == [base.name]
    for server_id, disks in zip(servers, results, strict=True):
        paths = storage.paths(server_id)
        assert [(d.path, d.format) for d in disks] == [(paths.disk, "qcow2")]
        info = qemu_img_info(paths.disk)
        assert info["format"] == "qcow2"
        assert info["backing-filename"] == str(base)
        assert info["backing-filename-format"] == "qcow2"
        assert info["virtual-size"] == 1 * GIB  # grown to the flavor's root disk
        assert json.loads(paths.disk_info.read_text()) == {str(paths.disk): "qcow2"}
        assert paths.console_log.exists()
    # The overlays are independent: a write to one leaves the base and the others untouched.
    assert qemu_io(storage.paths(servers[0]).disk, "write -P 0x5a 0 64k")
    assert qemu_io(storage.paths(servers[0]).disk, "read -P 0x5a 0 64k")
    assert not qemu_io(storage.paths(servers[1]).disk, "read -P 0x5a 0 64k")
    assert not qemu_io(base, "read -P 0x5a 0 64k")


def qemu_io(path: Path, command: str) -> bool:
    """Run one qemu-io command on an image; whether it succeeded (a pattern read that finds
    other bytes fails)."""
    result = subprocess.run(
        ["qemu-io", "-c", command, str(path)], check=False, capture_output=True, text=True
    )
    return result.returncode == 0


async def test_a_raw_image_backs_an_overlay_with_its_format(
    storage: InstanceStorage, image_dir: Path
) -> None:
    image_id = make_image(image_dir, "8M", "raw")
    server_id = str(uuid.uuid4())
    await storage.create(server_id, image_id, root_gb=1)
    info = qemu_img_info(storage.paths(server_id).disk)
    assert (info["format"], info["backing-filename-format"]) == ("qcow2", "raw")


async def test_a_flavor_disk_of_zero_keeps_the_image_size(storage: InstanceStorage, image_dir: Path) -> None:
    image_id = make_image(image_dir, "16M")
    server_id = str(uuid.uuid4())
    await storage.create(server_id, image_id, root_gb=0)
    assert qemu_img_info(storage.paths(server_id).disk)["virtual-size"] == 16 * 1024**2


async def test_a_flavor_disk_smaller_than_the_image_is_refused(
    storage: InstanceStorage, image_dir: Path
) -> None:
    image_id = make_image(image_dir, "2G")  # sparse: a few hundred KiB on disk
    with pytest.raises(StorageError, match="too small"):
        await storage.create(str(uuid.uuid4()), image_id, root_gb=1)


async def test_ephemeral_and_swap_disks_follow_the_root_disk(
    storage: InstanceStorage, image_dir: Path
) -> None:
    image_id = make_image(image_dir, "16M")
    server_id = str(uuid.uuid4())
    disks = await storage.create(server_id, image_id, root_gb=1, ephemeral_gb=2, swap_mb=512)
    paths = storage.paths(server_id)
    assert [d.path for d in disks] == [paths.disk, paths.ephemeral, paths.swap]
    assert qemu_img_info(paths.ephemeral)["virtual-size"] == 2 * GIB
    assert qemu_img_info(paths.swap)["virtual-size"] == 512 * 1024**2
    assert "backing-filename" not in qemu_img_info(paths.swap)
    assert json.loads(paths.disk_info.read_text()) == {str(d.path): "qcow2" for d in disks}


async def test_a_server_without_an_image_gets_no_local_root_disk(storage: InstanceStorage) -> None:
    server_id = str(uuid.uuid4())
    assert await storage.create(server_id, None, root_gb=1) == ()
    paths = storage.paths(server_id)
    assert not paths.disk.exists()
    assert json.loads(paths.disk_info.read_text()) == {}
    assert paths.console_log.exists()


async def test_a_missing_image_is_reported_and_nothing_is_cached(storage: InstanceStorage) -> None:
    image_id = str(uuid.uuid4())
    with pytest.raises(StorageError, match="could not be found"):
        await storage.create(str(uuid.uuid4()), image_id, root_gb=1)
    assert not storage.base_path(image_id).exists()
    assert not storage.base_dir.exists() or os.listdir(storage.base_dir) == []


async def test_images_that_refer_to_other_files_are_refused(
    storage: InstanceStorage, image_dir: Path, workdir: Path
) -> None:
    secret = workdir / "host-secret"
    secret.write_bytes(b"not for guests" * 1000)
    image_id = make_image(image_dir, "16M", "qcow2", "-b", str(secret), "-F", "raw")
    with pytest.raises(StorageError, match="refers to another file"):
        await storage.create(str(uuid.uuid4()), image_id, root_gb=1)
    assert not storage.base_path(image_id).exists()


async def test_ids_that_are_not_uuids_never_become_paths(storage: InstanceStorage) -> None:
    for bad in (
        "../../etc",
        "",
        "x/y",
        f"{{{uuid.uuid4()}}}",
        f"{uuid.uuid4()}/../x",
        "urn:uuid:" + str(uuid.uuid4()),
    ):
        with pytest.raises(StorageError):
            storage.paths(bad)
        with pytest.raises(StorageError):
            storage.base_path(bad)
    with pytest.raises(StorageError):
        storage.paths(str(uuid.uuid4()).upper())  # a server id is a directory and a domain UUID: one spelling
    upper = str(uuid.uuid4()).upper()  # the Image API accepts either case; the file has the id as given
    assert storage.base_path(upper).name == hashlib.sha1(upper.encode()).hexdigest()


async def test_removal_deletes_the_instance_directory(storage: InstanceStorage, image_dir: Path) -> None:
    image_id = make_image(image_dir, "16M")
    keep, drop = str(uuid.uuid4()), str(uuid.uuid4())
    await storage.create(keep, image_id, root_gb=1)
    await storage.create(drop, image_id, root_gb=1)
    await storage.save_definition(drop, "<domain/>")
    assert await storage.existing() == {keep, drop}
    assert await storage.remove(drop) is True
    assert not storage.paths(drop).directory.exists()
    assert await storage.remove(drop) is False
    assert await storage.existing() == {keep}
    assert storage.base_path(image_id).exists()  # the cache stays for the next spawn
