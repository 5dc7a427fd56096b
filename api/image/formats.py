"""The virtual size of an uploaded disk image, read from its format's header, as Glance's
format inspector reports it (`virtual_size`; null when the format is not one we read).

Only headers are parsed, never the whole file: the upload keeps the first HEAD bytes and the
last TAIL bytes of the stream. This is a measurement, not a safety check: whoever boots an
image must still inspect it (backing files, data files) before handing it to QEMU.
"""

from __future__ import annotations

import struct

HEAD = 64 * 1024
TAIL = 512


def virtual_size(disk_format: str | None, head: bytes, tail: bytes, size: int) -> int | None:
    reader = _READERS.get(disk_format or "")
    return reader(head, tail, size) if reader else None


def _raw(head: bytes, tail: bytes, size: int) -> int | None:
    return size


def _qcow2(head: bytes, tail: bytes, size: int) -> int | None:
    # magic "QFI\xfb", version (2 or 3), then the virtual size at byte 24 (big-endian).
    if len(head) < 32 or head[:4] != b"QFI\xfb":
        return None
    (version,) = struct.unpack_from(">I", head, 4)
    if version not in (2, 3):
        return None
    (virtual,) = struct.unpack_from(">Q", head, 24)
    return virtual


def _vmdk(head: bytes, tail: bytes, size: int) -> int | None:
    # A sparse extent: magic "KDMV", capacity in 512-byte sectors at byte 12 (little-endian).
    if len(head) < 20 or head[:4] != b"KDMV":
        return None
    (sectors,) = struct.unpack_from("<Q", head, 12)
    return sectors * 512


def _vdi(head: bytes, tail: bytes, size: int) -> int | None:
    # Signature 0xbeda107f at byte 0x40; the disk size at byte 0x170 (little-endian).
    if len(head) < 0x178 or struct.unpack_from("<I", head, 0x40)[0] != 0xBEDA107F:
        return None
    (virtual,) = struct.unpack_from("<Q", head, 0x170)
    return virtual


def _vhd(head: bytes, tail: bytes, size: int) -> int | None:
    # The footer ("conectix", current size at byte 48, big-endian) ends every VHD; a dynamic
    # disk also carries a copy at its start.
    for footer in (tail[-512:], head[:512]):
        if len(footer) == 512 and footer[:8] == b"conectix":
            (virtual,) = struct.unpack_from(">Q", footer, 48)
            return virtual
    return None


_READERS = {"raw": _raw, "qcow2": _qcow2, "vmdk": _vmdk, "vdi": _vdi, "vhd": _vhd}
