"""`actorstack testimage build`: the image's layout (MBR, a bootable FAT partition with SYSLINUX,
the kernel and an initramfs holding init, busybox and the modules), its cache, and its
registration as a public image. Booting it is the end-to-end test's job (tests/e2e)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from actorstack import testimage
from api.image import seed, store
from tests.conftest import ROOT, RUN_PREFIX

pytestmark = pytest.mark.skipif(
    shutil.which("syslinux") is None or shutil.which("mcopy") is None or not Path("/bin/busybox").exists(),
    reason="the test image's build tools are missing (tools/setup installs syslinux, mtools, dosfstools)",
)


def _cpio_names(archive: bytes) -> dict[str, int]:
    """name -> mode of each entry of a newc cpio archive."""
    names, offset = {}, 0
    while True:
        assert archive[offset : offset + 6] == b"070701", f"bad cpio header at {offset}"
        fields = [int(archive[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = archive[offset + 110 : offset + 110 + namesize - 1].decode()
        if name == "TRAILER!!!":
            return names
        names[name] = mode
        offset += 110 + namesize
        offset += -offset % 4
        offset += size + (-size % 4)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> testimage.TestImage:
    try:
        return testimage.build(tmp_path_factory.mktemp(f"{RUN_PREFIX}-testimage"))
    except testimage.BuildError as exc:
        pytest.skip(f"cannot build the test image here: {exc}")


def test_the_image_is_a_bootable_disk_with_syslinux_the_kernel_and_the_initramfs(
    built: testimage.TestImage, tmp_path: Path
) -> None:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(built.path)], capture_output=True, text=True, check=True
    ).stdout
    assert '"format": "qcow2"' in info
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(built.path), str(raw)], check=True)
    data = raw.read_bytes()
    mbr = data[:512]
    assert mbr[510:512] == b"\x55\xaa"
    entry = mbr[446:462]
    assert entry[0] == 0x80 and entry[4] == 0x0E  # bootable, FAT16 (LBA)
    start = int.from_bytes(entry[8:12], "little")
    assert start == testimage.PARTITION_START
    fat = data[start * 512 :]
    assert fat[510:512] == b"\x55\xaa" and b"SYSLINUX" in fat[:512]  # SYSLINUX's boot sector
    listing = subprocess.run(
        ["mdir", "-a", "-b", "-i", f"{raw}@@{start * 512}", "::"], capture_output=True, text=True, check=True
    ).stdout
    names = {line.rsplit("/", 1)[-1].lower() for line in listing.split()}
    assert {"vmlinuz", "initrd.gz", "syslinux.cfg", "ldlinux.sys"} <= names
    initrd = subprocess.run(
        ["mtype", "-i", f"{raw}@@{start * 512}", "::initrd.gz"], capture_output=True, check=True
    ).stdout
    entries = _cpio_names(gzip.decompress(initrd))
    assert entries["init"] & 0o111 and entries["bin/busybox"] & 0o111
    assert {f"lib/modules/{m.rsplit('/', 1)[1]}.ko" for m in testimage.MODULES} <= set(entries)
    assert "etc/udhcpc.script" in entries


def test_a_second_build_is_the_cached_image(built: testimage.TestImage) -> None:
    before = built.path.stat().st_mtime_ns
    again = testimage.build(built.path.parent.parent)
    assert again == built and again.path.stat().st_mtime_ns == before
    assert built.properties["actorstack_testimage"] == built.digest


def test_the_cli_prints_the_image_path(built: testimage.TestImage) -> None:
    state_dir = built.path.parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "actorstack.cli", "testimage", "build", "--state-dir", str(state_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(built.path)
    assert "openstack image create" in result.stderr


def test_a_missing_kernel_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORSTACK_TESTIMAGE_KERNEL_DEB", str(tmp_path / "nothing.deb"))
    with pytest.raises(testimage.BuildError, match="nothing.deb"):
        testimage.build(tmp_path)
    assert not list((tmp_path / "testimage").glob("*.qcow2"))


async def test_registering_is_idempotent_and_replaces_an_earlier_build(
    pool: asyncpg.Pool, built: testimage.TestImage, tmp_path: Path
) -> None:
    owner, name = uuid.uuid4().hex, f"{RUN_PREFIX}-seed-{uuid.uuid4().hex[:6]}"

    async def register(build: str) -> tuple[str, bool]:
        return await seed.register(
            pool,
            tmp_path,
            built.path,
            name=name,
            owner=owner,
            disk_format="qcow2",
            build_property="actorstack_testimage",
            properties={**built.properties, "actorstack_testimage": build},
            min_ram=testimage.MIN_RAM_MB,
        )

    try:
        first, new = await register("one")
        assert new
        row = await pool.fetchrow("SELECT * FROM images WHERE id = $1", first)
        assert (row["status"], row["visibility"], row["owner"], row["min_ram"]) == (
            "active",
            "public",
            owner,
            128,
        )
        assert row["size"] == built.path.stat().st_size and row["virtual_size"] > row["size"]
        assert store.image_path(tmp_path, first).read_bytes() == built.path.read_bytes()
        assert await register("one") == (first, False)

        second, new = await register("two")
        assert new and second != first
        ids = [r["id"] for r in await pool.fetch("SELECT id FROM images WHERE name = $1", name)]
        assert ids == [second]
        assert not store.image_path(tmp_path, first).exists()
    finally:
        await pool.execute("DELETE FROM images WHERE name = $1", name)
