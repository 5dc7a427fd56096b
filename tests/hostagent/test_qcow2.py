"""The qcow2 writer (hostagent.qcow2, behind qemu_img.create_blank/create_overlay), judged by
QEMU itself: `qemu-img create` writes the same bytes for the same parameters, `qemu-img check`
finds nothing wrong, `qemu-img info` reads back what was asked for, and data written with
`qemu-io` reads back, over the backing file's bytes where nothing was written."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from hostagent import qcow2, qemu_img
from hostagent.qemu_img import QemuImgError

KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4
SIZES = [
    pytest.param(1 * MIB, id="1MiB"),
    pytest.param(1000001, id="1000001B"),  # rounded up to 1000448, as qemu-img rounds it
    pytest.param(1 * GIB, id="1GiB"),
    pytest.param(20 * GIB, id="20GiB"),
    pytest.param(1 * TIB, id="1TiB"),
    pytest.param(4 * TIB + 512, id="4TiB+512B"),  # the L1 table just spills into a second cluster
    pytest.param(64 * TIB, id="64TiB"),  # an L1 table of 16 clusters
]
BACKING_SIZE = 768 * KIB  # smaller than every size above, so each can be an overlay on it


def rounded(size: int) -> int:
    return -(-size // 512) * 512


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=False, capture_output=True, text=True)


def qemu_img_create(
    path: Path, size: int, backing: Path | None = None, backing_format: str | None = None
) -> None:
    extra = ["-b", str(backing), "-F", str(backing_format)] if backing is not None else []
    result = run("qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), str(size))
    assert result.returncode == 0, result.stderr


def assert_clean(path: Path) -> None:
    """`qemu-img check` exits 0 and reports no error, leak or corruption of any kind."""
    result = run("qemu-img", "check", "-f", "qcow2", "--output=json", str(path))
    assert result.returncode == 0, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert report["check-errors"] == 0
    for key in ("corruptions", "leaks", "corruptions-fixed", "leaks-fixed"):
        assert report.get(key, 0) == 0, report


def info(path: Path) -> dict[str, object]:
    result = run("qemu-img", "info", "-f", "qcow2", "--output=json", str(path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_info(
    path: Path, size: int, backing: Path | None = None, backing_format: str | None = None
) -> None:
    found = info(path)
    assert found["format"] == "qcow2"
    assert found["virtual-size"] == rounded(size)
    assert found["cluster-size"] == 65536
    assert found.get("dirty-flag") is False
    assert found["format-specific"] == {
        "type": "qcow2",
        "data": {
            "compat": "1.1",
            "compression-type": "zlib",
            "lazy-refcounts": False,
            "refcount-bits": 16,
            "corrupt": False,
            "extended-l2": False,
        },
    }
    assert found.get("backing-filename") == (str(backing) if backing is not None else None)
    assert found.get("backing-filename-format") == backing_format


def qemu_io(path: Path, command: str) -> None:
    result = run("qemu-io", "-f", "qcow2", "-c", command, str(path))
    assert result.returncode == 0, (command, result.stdout, result.stderr)


@pytest.fixture
def backing_content() -> bytes:
    return random.Random(20240501).randbytes(BACKING_SIZE)


@pytest.fixture(params=["raw", "qcow2"])
def backing(request: pytest.FixtureRequest, tmp_path: Path, backing_content: bytes) -> tuple[Path, str]:
    """A backing file holding `backing_content`: a raw file, or a qcow2 image made by qemu-img."""
    raw = tmp_path / "backing.raw"
    raw.write_bytes(backing_content)
    if request.param == "raw":
        return raw, "raw"
    path = tmp_path / "backing.qcow2"
    result = run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path))
    assert result.returncode == 0, result.stderr
    raw.unlink()
    return path, "qcow2"


# --- blank images -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_a_blank_image_is_what_qemu_img_writes(tmp_path: Path, size: int) -> None:
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    await qemu_img.create_blank(ours, size)
    qemu_img_create(theirs, size)
    assert ours.read_bytes() == theirs.read_bytes()
    assert_clean(ours)
    assert_info(ours, size)


async def test_the_largest_image_qcow2_allows_with_64k_clusters(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    await qemu_img.create_blank(ours, qcow2.MAX_VIRTUAL_SIZE)  # 2 PiB: an L1 table of 32 MiB
    qemu_img_create(theirs, qcow2.MAX_VIRTUAL_SIZE)
    assert ours.read_bytes() == theirs.read_bytes()
    assert_clean(ours)
    assert_info(ours, qcow2.MAX_VIRTUAL_SIZE)
    # One more sector is too large for qemu-img too.
    too_large = str(qcow2.MAX_VIRTUAL_SIZE + 1)
    assert run("qemu-img", "create", "-q", "-f", "qcow2", str(theirs), too_large).returncode != 0
    with pytest.raises(QemuImgError, match="larger than a qcow2 image can be"):
        await qemu_img.create_blank(ours, qcow2.MAX_VIRTUAL_SIZE + 1)


async def test_a_blank_image_reads_zeros_and_keeps_what_is_written(tmp_path: Path) -> None:
    path = tmp_path / "blank.qcow2"
    await qemu_img.create_blank(path, 1 * GIB)
    qemu_io(path, "write -P 0xab 1M 64k")
    qemu_io(path, "write -P 0xcd 700M 10k")  # past the first L2 table's 512 MiB
    assert_clean(path)
    qemu_io(path, "read -P 0xab 1M 64k")
    qemu_io(path, "read -P 0xcd 700M 10k")
    qemu_io(path, "read -P 0 0 1M")
    qemu_io(path, "read -P 0 1088k 715712k")  # up to 700M
    qemu_io(path, "read -P 0 716810k 331766k")  # from 700M + 10k to the end
    with pytest.raises(AssertionError):  # the check can fail
        qemu_io(path, "read -P 0xab 2M 64k")


async def test_an_existing_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "disk"
    path.write_bytes(b"\xff" * (4 * MIB))
    await qemu_img.create_blank(path, 1 * GIB)
    assert path.read_bytes() == qcow2.image_bytes(1 * GIB)
    assert path.stat().st_size == 3 * 65536 + 2 * 8  # header, refcount table and block, L1 of 2
    assert_clean(path)


# --- overlays -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_an_overlay_is_what_qemu_img_writes_and_reads_through(
    tmp_path: Path, size: int, backing: tuple[Path, str], backing_content: bytes
) -> None:
    backing_path, backing_format = backing
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    await qemu_img.create_overlay(ours, backing_path, backing_format, size)
    qemu_img_create(theirs, size, backing_path, backing_format)
    assert ours.read_bytes() == theirs.read_bytes()
    assert_clean(ours)
    assert_info(ours, size, backing_path, backing_format)

    # Unwritten, it reads the backing file's bytes, then zeros up to its own size.
    expected = bytearray(backing_content)
    # A whole cluster past the backing file's end where the image is big enough, else one
    # inside it; and a partial cluster inside it, which QEMU fills from the backing file.
    whole = 1 * MIB if rounded(size) >= 1 * MIB + 64 * KIB else 256 * KIB
    writes = [(whole, 64 * KIB, 0xAB), (300 * KIB + 123 * 512, 10 * KIB, 0xCD)]
    for offset, length, byte in writes:
        qemu_io(ours, f"write -P {byte:#x} {offset} {length}")
        expected[len(expected) :] = bytes(max(0, offset + length - len(expected)))
        expected[offset : offset + length] = bytes([byte]) * length
    assert_clean(ours)
    for offset, length, byte in writes:
        qemu_io(ours, f"read -P {byte:#x} {offset} {length}")
    # Every byte: the overlay equals the expected raw file (and reads zeros beyond it).
    want = tmp_path / "expected.raw"
    want.write_bytes(expected)
    result = run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(ours), str(want))
    assert result.returncode == 0, (result.stdout, result.stderr)
    # The backing file is untouched, and a wrong expectation is noticed.
    want.write_bytes(backing_content)
    untouched = run("qemu-img", "compare", "-f", backing_format, "-F", "raw", str(backing_path), str(want))
    assert untouched.returncode == 0
    assert run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(ours), str(want)).returncode == 1


async def test_a_backing_name_of_1023_bytes(tmp_path: Path) -> None:
    """The longest name QEMU accepts; the header, extensions and name still fit cluster 0."""
    directory = tmp_path
    while len(bytes(directory)) < 1023 - 250:
        directory = directory / ("d" * 200)
    directory.mkdir(parents=True)
    name = directory / ("b" * (1023 - len(bytes(directory)) - 1))
    assert len(bytes(name)) == 1023
    run("qemu-img", "create", "-q", "-f", "raw", str(name), "1M").check_returncode()
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    await qemu_img.create_overlay(ours, name, "raw", 1 * GIB)
    qemu_img_create(theirs, 1 * GIB, name, "raw")
    assert ours.read_bytes() == theirs.read_bytes()
    assert_clean(ours)
    assert_info(ours, 1 * GIB, name, "raw")
    with pytest.raises(QemuImgError, match="1024 bytes long"):
        await qemu_img.create_overlay(ours, name.with_name(name.name + "x"), "raw", 1 * GIB)


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -512, 1.5, True, "1G", None, qcow2.MAX_VIRTUAL_SIZE + 1])
async def test_sizes_no_image_can_have_are_refused(tmp_path: Path, size: object) -> None:
    with pytest.raises(ValueError):
        qcow2.image_bytes(size)  # type: ignore[arg-type]
    path = tmp_path / "disk"
    with pytest.raises(QemuImgError):
        await qemu_img.create_blank(path, size)  # type: ignore[arg-type]
    assert not path.exists()


@pytest.mark.parametrize(
    ("backing", "backing_format"),
    [
        ("/images/base", None),
        (None, "raw"),
        ("", "raw"),
        ("/images/ba\0se", "raw"),
        ("/images/base", ""),
        ("/images/base", "RAW"),
        ("/images/base", "ra w"),
        ("/images/base", "a" * 16),
        ("/" + "x" * 1023, "raw"),
    ],
)
def test_bad_backing_names_and_formats_are_refused(backing: str | None, backing_format: str | None) -> None:
    with pytest.raises(ValueError):
        qcow2.image_bytes(1 * GIB, backing, backing_format)


def test_sizes_are_rounded_up_to_a_sector() -> None:
    assert qcow2.rounded_size(1) == 512
    assert qcow2.rounded_size(512) == 512
    assert qcow2.rounded_size(1000001) == 1000448
    assert qcow2.rounded_size(qcow2.MAX_VIRTUAL_SIZE) == 2**51
