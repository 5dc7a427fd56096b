"""`actorstack testimage build`: a tiny bootable test image, made from Debian packages only.

The image is one qcow2 disk, as a cloud image is: any flavor with a disk boots it, `openstack
image create --file` uploads it, and it would boot on any OpenStack too. (The alternative, a
kernel and an initramfs registered as separate images and named by the `kernel_id`/`ramdisk_id`
properties, needs three uploads and a direct-kernel-boot path in the host agent, and is gone
as soon as a user uploads the disk alone.) Inside, an MBR (SYSLINUX's boot code) and one FAT
partition holding SYSLINUX, Debian's cloud kernel and an initramfs: busybox-static, the virtio
and ACPI button modules from the kernel package, and `init.sh`, which takes a DHCP lease,
reads the metadata service, reports a marker round trip on every volume it is given and prints
it all to the serial console (see init.sh for the lines).

Inputs, all Debian packages: `linux-image-*-cloud-amd64` and `busybox-static` (their .debs are
taken from apt's cache when there, else fetched with `apt-get download` into the cache here)
for the guest; `syslinux`, `syslinux-common`, `mtools`, `dosfstools` and `qemu-utils` as
build tools on this machine (tools/setup installs them). No partition is mounted: mtools
writes the FAT file system and `syslinux --install` its boot sector, so no root is needed.

The result is cached in `<state dir>/testimage/`, named by a digest of everything that went
into it (the two packages' versions, this module and the guest's scripts): a second build is
a lookup, and a changed input builds a new image.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

NAME = "actorstack-test"
MIN_RAM_MB = 128  # the kernel and the unpacked initramfs fit; m1.micro has this much
KERNEL_PACKAGE = "linux-image-cloud-amd64"  # Debian's metapackage: depends on the current one
BUSYBOX_PACKAGE = "busybox-static"
APT_ARCHIVES = Path("/var/cache/apt/archives")
HERE = Path(__file__).parent
# Loaded in this order by init.sh, which names them again (no modprobe in the guest).
MODULES = (
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
    "drivers/acpi/button",
    "drivers/input/evdev",
)
SYSLINUX_CFG = """DEFAULT actorstack
PROMPT 0
TIMEOUT 0
LABEL actorstack
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0,115200 quiet panic=10
"""
PARTITION_START = 2048  # sectors: the partition starts at 1 MiB, as partitioning tools do
SECTOR = 512
BUILD_TOOLS = {
    "syslinux": "syslinux",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "qemu-img": "qemu-utils",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
}


class BuildError(Exception):
    """The image cannot be built here; the message says what is missing or what failed."""


@dataclasses.dataclass(frozen=True)
class TestImage:
    path: Path  # the qcow2
    digest: str  # of its inputs: the same digest, the same image
    kernel: str  # the kernel package's file name
    busybox: str

    @property
    def properties(self) -> dict[str, str]:
        """Glance properties for the image (what it is, and which build)."""
        return {
            "actorstack_testimage": self.digest,
            "os_distro": "actorstack-test",
            "os_type": "linux",
            "hw_disk_bus": "virtio",
            "hw_vif_model": "virtio",
            "kernel_package": self.kernel,
        }


def cache_dir(state_dir: Path) -> Path:
    return state_dir / "testimage"


def _run(argv: list[str], *, cwd: Path | None = None, timeout: float = 300) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BuildError(
            f"{argv[0]} is not installed (Debian: {BUILD_TOOLS.get(argv[0], argv[0])})"
        ) from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        raise BuildError(
            f"{' '.join(argv)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}"
        )
    return done.stdout


def _newest(pattern: str) -> Path | None:
    found = sorted(glob.glob(pattern))
    return Path(found[-1]) if found else None


def _resolve_kernel_package() -> str:
    """The versioned kernel package the metapackage depends on (linux-image-6.1.0-NN-cloud-amd64)."""
    out = _run(["apt-cache", "depends", "--important", KERNEL_PACKAGE])
    for line in out.splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-") and name != KERNEL_PACKAGE:
            return name
    raise BuildError(f"apt does not know {KERNEL_PACKAGE} (is the Debian archive in apt's sources?)")


def find_deb(package: str, pattern: str, downloads: Path) -> Path:
    """The package's .deb: from apt's cache or ours, else `apt-get download`ed into ours."""
    for where in (APT_ARCHIVES, downloads):
        found = _newest(str(where / pattern))
        if found is not None:
            return found
    downloads.mkdir(parents=True, exist_ok=True)
    real = _resolve_kernel_package() if package == KERNEL_PACKAGE else package
    _run(["apt-get", "download", "-q", real], cwd=downloads, timeout=600)
    found = _newest(str(downloads / pattern))
    if found is None:
        raise BuildError(f"apt-get download {real} left no {pattern} in {downloads}")
    return found


def kernel_deb(downloads: Path) -> Path:
    named = os.environ.get("ACTORSTACK_TESTIMAGE_KERNEL_DEB")
    if named:
        return Path(named)
    return find_deb(KERNEL_PACKAGE, "linux-image-[0-9]*-cloud-amd64_*.deb", downloads)


def busybox_deb(downloads: Path) -> Path:
    return find_deb(BUSYBOX_PACKAGE, "busybox-static_*.deb", downloads)


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the format the kernel unpacks as an initramfs: (name, mode, contents)."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + "".join(f"{f:08x}" for f in fields).encode() + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def module_bytes(tree: Path, name: str) -> bytes:
    """A module of an unpacked kernel package, by its path under kernel/ without .ko."""
    for suffix, unpack in ((".ko", None), (".ko.xz", "xz")):
        found = next(tree.glob(f"lib/modules/*/kernel/{name}{suffix}"), None)
        if found is None:
            continue
        if unpack is None:
            return found.read_bytes()
        import lzma

        return lzma.decompress(found.read_bytes())
    raise BuildError(f"the kernel package has no module {name}")


def initramfs(kernel_tree: Path, busybox: bytes) -> bytes:
    dirs = (
        "bin",
        "sbin",
        "etc",
        "lib",
        "lib/modules",
        "usr",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "mnt",
    )
    entries = [(d, 0o40755, b"") for d in dirs]
    entries += [
        ("bin/busybox", 0o100755, busybox),
        ("init", 0o100755, (HERE / "init.sh").read_bytes()),
        ("etc/udhcpc.script", 0o100755, (HERE / "udhcpc.script").read_bytes()),
    ]
    entries += [
        (f"lib/modules/{name.rsplit('/', 1)[1]}.ko", 0o100644, module_bytes(kernel_tree, name))
        for name in MODULES
    ]
    return gzip.compress(cpio_newc(entries), 6)


def _mbr(boot_code: bytes, partition_sectors: int) -> bytes:
    """A DOS partition table with one bootable FAT16 (LBA) partition, behind SYSLINUX's MBR code."""
    sector = bytearray(SECTOR)
    sector[: len(boot_code[:440])] = boot_code[:440]
    sector[440:444] = os.urandom(4)  # disk signature
    no_chs = b"\xfe\xff\xff"  # addressed by LBA only
    entry = b"\x80" + no_chs + b"\x0e" + no_chs + struct.pack("<II", PARTITION_START, partition_sectors)
    sector[446:462] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _syslinux_mbr() -> bytes:
    for candidate in ("/usr/lib/syslinux/mbr/mbr.bin", "/usr/lib/SYSLINUX/mbr.bin"):
        if os.path.isfile(candidate):
            return Path(candidate).read_bytes()
    raise BuildError("SYSLINUX's mbr.bin is missing (Debian: syslinux-common)")


def _digest(kernel: Path, busybox: Path) -> str:
    h = hashlib.sha256()
    for part in (
        kernel.name,
        busybox.name,
        Path(__file__).read_bytes(),
        (HERE / "init.sh").read_bytes(),
        (HERE / "udhcpc.script").read_bytes(),
    ):
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def build(state_dir: Path, *, force: bool = False) -> TestImage:
    """The test image for this state directory: the cached one, or a new build (a few seconds)."""
    cache = cache_dir(state_dir)
    downloads = cache / "debs"
    kernel_pkg, busybox_pkg = kernel_deb(downloads), busybox_deb(downloads)
    digest = _digest(kernel_pkg, busybox_pkg)
    image = TestImage(cache / f"{NAME}-{digest}.qcow2", digest, kernel_pkg.name, busybox_pkg.name)
    if image.path.is_file() and not force:
        return image
    for tool in ("syslinux", "mkfs.fat", "mcopy", "qemu-img", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise BuildError(
                f"{tool} is not installed (Debian: {BUILD_TOOLS[tool]}); tools/setup installs it"
            )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=cache) as scratch:
        work = Path(scratch)
        _run(["dpkg-deb", "-x", str(kernel_pkg), str(work / "kernel")])
        _run(["dpkg-deb", "-x", str(busybox_pkg), str(work / "busybox")])
        vmlinuz = next((work / "kernel").glob("boot/vmlinuz-*"), None)
        busybox = next(
            (
                p
                for p in (work / "busybox" / "bin" / "busybox", work / "busybox" / "usr/bin/busybox")
                if p.is_file()
            ),
            None,
        )
        if vmlinuz is None or busybox is None:
            raise BuildError(f"{kernel_pkg.name} or {busybox_pkg.name} holds no vmlinuz / busybox")
        (work / "initrd.gz").write_bytes(initramfs(work / "kernel", busybox.read_bytes()))
        (work / "syslinux.cfg").write_text(SYSLINUX_CFG)

        payload = vmlinuz.stat().st_size + (work / "initrd.gz").stat().st_size
        fat_kib = ((payload * 5 // 4) // 1024 // 1024 + 8) * 1024  # a quarter spare, whole MiB
        fat = work / "fat.img"
        _run(
            [
                "mkfs.fat",
                "-F",
                "16",
                "-n",
                "ACTORSTACK",
                "-h",
                str(PARTITION_START),
                "-C",
                str(fat),
                str(fat_kib),
            ]
        )
        env_files = [
            (vmlinuz, "::vmlinuz"),
            (work / "initrd.gz", "::initrd.gz"),
            (work / "syslinux.cfg", "::syslinux.cfg"),
        ]
        for source, target in env_files:
            _run(["mcopy", "-i", str(fat), str(source), target])
        _run(["syslinux", "--install", str(fat)])  # keeps the hidden sectors mkfs.fat set (-h)

        raw = work / "disk.raw"
        with raw.open("wb") as out:
            out.write(_mbr(_syslinux_mbr(), fat_kib * 1024 // SECTOR))
            out.seek(PARTITION_START * SECTOR)
            with fat.open("rb") as source:
                shutil.copyfileobj(source, out, 1 << 20)
        partial = work / "image.qcow2"
        _run(["qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(partial)])
        os.chmod(partial, 0o644)
        os.replace(partial, image.path)
    (cache / f"{NAME}.json").write_text(
        json.dumps({"path": str(image.path), **image.properties}, indent=2) + "\n"
    )
    for old in cache.glob(f"{NAME}-*.qcow2"):
        if old != image.path:
            old.unlink(missing_ok=True)
    return image
