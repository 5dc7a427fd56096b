"""Fresh qcow2 images written directly, without running `qemu-img create`.

`image_bytes` is a pure function returning the whole file; `write` puts it at a path. The result
is the file qemu-img 7.2 makes for `qemu-img create -f qcow2 [-b NAME -F FMT] PATH SIZE` with
its defaults, byte for byte (the tests compare the two): version 3 (compat 1.1), 64 KiB
clusters, 16-bit refcounts, zlib compression type, no encryption, no extended L2 entries, lazy
refcounts off, no snapshots, no preallocation.

How the file is laid out:

- Cluster 0 holds everything that describes the image. It starts with the 112-byte version 3
  header (big-endian fields, ending with the compression-type byte and padding). Optional
  header extensions follow it, each a (type, length) pair of 32-bit words and a payload padded
  to 8 bytes: the backing file's format when there is a backing file, then the table that gives
  the feature bits human-readable names (qemu-img always writes it, so we do), then a zero
  terminator of 8 bytes. An overlay's backing file name comes right after the terminator, as
  plain bytes whose offset and length the header records; the rest of the cluster is zeros.
- Cluster 1 is the refcount table: one cluster, whose first entry points at cluster 2.
- Cluster 2 is the only refcount block. Each 16-bit entry is the number of references to the
  cluster of the same index; the clusters in use (0, 1, 2 and the L1 table's) get 1.
- From cluster 3 on, the L1 table: one 64-bit entry per 512 MiB of guest disk (the span of
  one L2 table of 8192 entries), all zero because nothing is allocated yet. The file ends
  where the table's last entry ends, not at a cluster boundary, as with qemu-img. Reads of an
  unallocated guest block go to the backing file, or return zeros without one.

One refcount block covers 2 GiB of file, far more than the largest L1 table (32 MiB, which
QEMU refuses to exceed: that caps the guest size at 2 PiB with 64 KiB clusters).
"""

from __future__ import annotations

import os
import re
import struct

MAGIC = b"QFI\xfb"
VERSION = 3
CLUSTER_BITS = 16
CLUSTER_SIZE = 1 << CLUSTER_BITS
REFCOUNT_ORDER = 4  # refcounts of 2**4 = 16 bits
HEADER_LENGTH = 112  # the version 3 header with the compression-type field, padded to 8
SECTOR = 512  # qemu-img rounds a size up to this
L1_ENTRY = 8
L2_SPAN = CLUSTER_SIZE * (CLUSTER_SIZE // 8)  # guest bytes mapped by one L1 entry: 512 MiB
MAX_L1_BYTES = 32 * 1024 * 1024  # QEMU's limit on an L1 table (QCOW_MAX_L1_SIZE)
MAX_VIRTUAL_SIZE = (MAX_L1_BYTES // L1_ENTRY) * L2_SPAN  # 2 PiB
MAX_BACKING_NAME = 1023  # bytes; QEMU refuses to open an image naming a longer one
MAX_BACKING_FORMAT = 15  # bytes; QEMU keeps the format name in a 16-byte buffer

EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_NAMES = 0x6803F857

_FEATURE_NAME_LEN = 46
# (kind, bit, name): kind 0 incompatible, 1 compatible, 2 autoclear. The entries and their
# order are those qemu-img 7.2 writes; nothing in the image sets any of these bits.
_FEATURE_NAMES = (
    (0, 0, b"dirty bit"),
    (0, 1, b"corrupt bit"),
    (0, 2, b"external data file"),
    (0, 3, b"compression type"),
    (0, 4, b"extended L2 entries"),
    (1, 0, b"lazy refcounts"),
    (2, 0, b"bitmaps"),
    (2, 1, b"raw external data"),
)
_FORMAT_NAME = re.compile(r"[a-z0-9_-]+")

# magic, version, backing_file_offset, backing_file_size, cluster_bits, size, crypt_method,
# l1_size, l1_table_offset, refcount_table_offset, refcount_table_clusters, nb_snapshots,
# snapshots_offset, incompatible, compatible, autoclear, refcount_order, header_length,
# compression_type, 7 bytes of padding.
_HEADER = struct.Struct(">4sIQIIQIIQQIIQQQQIIB7x")
assert _HEADER.size == HEADER_LENGTH


def rounded_size(size: int) -> int:
    """`size` in bytes as the image will have it (rounded up to 512 bytes, as qemu-img does),
    or ValueError when it is not a size a qcow2 image with 64 KiB clusters can have."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"image size must be an integer number of bytes, not {size!r}")
    if size <= 0:
        raise ValueError(f"image size must be positive, not {size}")
    rounded = -(-size // SECTOR) * SECTOR
    if rounded > MAX_VIRTUAL_SIZE:
        raise ValueError(f"image size {size} is larger than a qcow2 image can be ({MAX_VIRTUAL_SIZE} bytes)")
    return rounded


def _extension(kind: int, payload: bytes) -> bytes:
    return struct.pack(">II", kind, len(payload)) + payload + bytes(-len(payload) % 8)


def _feature_table() -> bytes:
    return b"".join(
        struct.pack(f">BB{_FEATURE_NAME_LEN}s", kind, bit, name) for kind, bit, name in _FEATURE_NAMES
    )


def _backing(
    backing_file: str | bytes | os.PathLike[str] | None, backing_format: str | None
) -> tuple[bytes, bytes] | None:
    if backing_file is None and backing_format is None:
        return None
    if backing_file is None or backing_format is None:
        raise ValueError("a backing file needs its format, and a format needs a backing file")
    name = os.fsencode(backing_file)
    if not name:
        raise ValueError("the backing file name is empty")
    if b"\0" in name:
        raise ValueError("the backing file name contains a NUL byte")
    if len(name) > MAX_BACKING_NAME:
        raise ValueError(
            f"the backing file name is {len(name)} bytes long; at most {MAX_BACKING_NAME} are allowed"
        )
    if not isinstance(backing_format, str) or not _FORMAT_NAME.fullmatch(backing_format):
        raise ValueError(f"invalid backing format {backing_format!r}")
    fmt = backing_format.encode()
    if len(fmt) > MAX_BACKING_FORMAT:
        raise ValueError(f"the backing format name {backing_format!r} is too long")
    return name, fmt


def image_bytes(
    size: int, backing_file: str | bytes | os.PathLike[str] | None = None, backing_format: str | None = None
) -> bytes:
    """The complete file of a new, empty qcow2 image of `size` bytes (rounded up to 512),
    reading unwritten blocks from `backing_file` (as named, in `backing_format`) if given."""
    virtual_size = rounded_size(size)
    backing = _backing(backing_file, backing_format)

    l1_size = -(-virtual_size // L2_SPAN)
    l1_offset = 3 * CLUSTER_SIZE
    l1_clusters = -(-(l1_size * L1_ENTRY) // CLUSTER_SIZE)
    used_clusters = 3 + l1_clusters
    length = l1_offset + l1_size * L1_ENTRY

    extensions = b""
    if backing is not None:
        extensions += _extension(EXT_BACKING_FORMAT, backing[1])
    extensions += _extension(EXT_FEATURE_NAMES, _feature_table())
    extensions += _extension(EXT_END, b"")
    backing_offset = HEADER_LENGTH + len(extensions) if backing is not None else 0
    backing_name = backing[0] if backing is not None else b""
    assert backing_offset + len(backing_name) <= CLUSTER_SIZE

    header = _HEADER.pack(
        MAGIC,
        VERSION,
        backing_offset,
        len(backing_name),
        CLUSTER_BITS,
        virtual_size,
        0,  # no encryption
        l1_size,
        l1_offset,
        1 * CLUSTER_SIZE,
        1,  # the refcount table: cluster 1, one cluster long
        0,
        0,  # no snapshots
        0,
        0,
        0,  # no feature bits (incompatible, compatible, autoclear)
        REFCOUNT_ORDER,
        HEADER_LENGTH,
        0,  # compression type zlib
    )

    image = bytearray(length)
    first = header + extensions + backing_name
    image[: len(first)] = first
    struct.pack_into(">Q", image, 1 * CLUSTER_SIZE, 2 * CLUSTER_SIZE)
    struct.pack_into(f">{used_clusters}H", image, 2 * CLUSTER_SIZE, *([1] * used_clusters))
    return bytes(image)


def write(
    path: str | os.PathLike[str],
    size: int,
    backing_file: str | bytes | os.PathLike[str] | None = None,
    backing_format: str | None = None,
) -> None:
    """Write a new, empty qcow2 image to `path`, replacing any file there (as qemu-img does),
    with permissions 0644 less the umask. Blocking (call it from a thread); not synced to disk,
    like the other files of an instance: QEMU's first flush of the image makes it durable."""
    data = image_bytes(size, backing_file, backing_format)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
