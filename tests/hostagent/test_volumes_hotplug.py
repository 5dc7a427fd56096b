"""Volume hot-plug into real guests on qemu:///system (skipped when libvirtd is not reachable).

Unplugging a PCI disk needs the guest's cooperation (it must eject the device), so the main test
boots a real Linux guest: Debian's cloud kernel, with an initramfs of busybox-static and the
virtio modules, whose init prints the disks it sees (with their serials) to the serial console.
The kernel comes from the kernel package's .deb (ACTORSTACK_TEST_GUEST_KERNEL, or the one apt
keeps in /var/cache/apt/archives); without it that test is skipped. A guest that never
releases the device is a BIOS with nothing to boot, and needs no kernel.
"""

from __future__ import annotations

import asyncio
import gc
import glob
import gzip
import os
import shutil
import struct
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from actorstack import testimage
from hostagent.storage import InstanceStorage
from hostagent.virt import domain
from hostagent.virt.base import DetachTimeout, Disk, InstanceSpec
from hostagent.virt.libvirt import LibvirtDriver
from hostagent.volumes.file import FileBackend
from protocol.power import PowerAction
from protocol.states import PowerState
from tests.hostagent.conftest import PREFIX, make_image
from tests.hostagent.local_control import DirectoryImages
from tests.hostagent.test_libvirt_driver import qemu_system_unavailable

KERNEL_DEB_ENV = "ACTORSTACK_TEST_GUEST_KERNEL"
KERNEL_DEB_GLOB = "/var/cache/apt/archives/linux-image-[0-9]*-cloud-amd64_*.deb"
BUSYBOX = Path("/bin/busybox")
MODULES = (
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
)  # in order
READY = "guest ready"
# The guest's init: load virtio, then print "disks: vda=<serial> …" twice a second. virtio-blk
# gives the guest the first 20 bytes of a disk's serial (the volume id).
INIT = f"""#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in {" ".join(name.rsplit("/", 1)[1] for name in MODULES)}; do $B insmod /lib/$m.ko; done
echo "{READY}"
while true; do
  echo "disks:$(cd /sys/block && for d in vd*; do [ -e $d ] && echo -n " $d=$($B cat $d/serial)"; done)"
  $B sleep 0.5
done
"""


@pytest.fixture(autouse=True)
def qemu_system() -> None:
    reason = qemu_system_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
async def qemu_driver() -> AsyncIterator[LibvirtDriver]:
    driver = LibvirtDriver.for_qemu(domain_type="auto", shutdown_timeout=0)
    async with driver:
        yield driver
        # A caught exception's traceback (pytest.raises) keeps the test's frame, and with it
        # libvirt domain objects, in a reference cycle; each holds the connection open. Free them
        # now, so that the connection really closes while the event loop still runs.
        gc.collect()


# --- a guest that cooperates --------------------------------------------------------------------------


def _kernel_deb() -> Path | None:
    named = os.environ.get(KERNEL_DEB_ENV)
    if named:
        return Path(named)
    found = sorted(glob.glob(KERNEL_DEB_GLOB))
    return Path(found[-1]) if found else None


def _is_static(path: Path) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP): it runs in an initramfs."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit ELF only
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3 for i in range(phnum))


@pytest.fixture(scope="module")
def guest_boot() -> Iterator[tuple[Path, Path]]:
    """(kernel, initramfs) of a minimal Linux guest, built in a directory removed afterwards."""
    deb = _kernel_deb()
    if deb is None or not deb.is_file():
        pytest.skip(
            f"no guest kernel to hot-unplug from (a real guest must release the device): set "
            f"{KERNEL_DEB_ENV} to a linux-image-*-cloud-amd64 .deb, or `apt-get download` one into "
            "/var/cache/apt/archives"
        )
    if not BUSYBOX.is_file() or not _is_static(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing or not statically linked (Debian: busybox-static)")
    directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-guest-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        tree = directory / "kernel"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, capture_output=True, timeout=120)
        kernel = next(tree.glob("boot/vmlinuz-*"))
        entries = [
            ("bin", 0o40755, b""),
            ("lib", 0o40755, b""),
            ("bin/busybox", 0o100755, BUSYBOX.read_bytes()),
            ("init", 0o100755, INIT.encode()),
        ]
        entries += [
            (f"lib/{name.rsplit('/', 1)[1]}.ko", 0o100644, testimage.module_bytes(tree, name))
            for name in MODULES
        ]
        initrd = directory / "initrd.gz"
        initrd.write_bytes(gzip.compress(testimage.cpio_newc(entries), 1))
        yield kernel, initrd
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def booting_the_kernel(definition: str, kernel: Path, initrd: Path) -> str:
    """The definition, with the guest booting this kernel directly (a test's own change: the
    agent's domains boot from their disks)."""
    root = ET.fromstring(definition)
    os_ = root.find("os")
    assert os_ is not None
    for tag, text in (("kernel", str(kernel)), ("initrd", str(initrd)), ("cmdline", "console=ttyS0 quiet")):
        ET.SubElement(os_, tag).text = text
    return ET.tostring(root, encoding="unicode")


async def console_line(
    console: Path, predicate: str | None = None, *, after: int = 0, timeout: float = 60.0
) -> tuple[str, int]:
    """The first console line (from byte `after`) that starts with `predicate` or equals READY;
    the line and where it ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = console.read_text(errors="replace") if console.exists() else ""
        position = after
        for line in text[after:].splitlines(keepends=True):
            position += len(line)
            if line.endswith("\n") and (
                line.strip() == READY if predicate is None else line.startswith(predicate)
            ):
                return line.strip(), position
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"the guest printed no {predicate or READY!r} line within {timeout}s:\n{text[-2000:]}"
    )


async def guest_disks(
    console: Path, *, after: int, having: str | None = None, without: str | None = None, timeout: float = 30.0
) -> tuple[str, int]:
    """The first "disks:" line from byte `after` on that shows a disk with the serial `having`
    and none with the serial `without` (guests name disks in the order they find them, not by
    libvirt's target: the serial is what tells a volume); the line and where it ends."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the guest never showed disks with {having!r} and without {without!r}")
        line, after = await console_line(console, "disks:", after=after, timeout=remaining)
        serials = {word.partition("=")[2] for word in line.split()[1:]}
        if (having is None or having[:20] in serials) and (without is None or without[:20] not in serials):
            return line, after


def live_and_persistent(driver: LibvirtDriver, server_id: str) -> tuple[str, str]:
    dom = driver.connection.lookupByUUIDString(server_id)
    return dom.XMLDesc(0), dom.XMLDesc(2)  # 2: VIR_DOMAIN_XML_INACTIVE


async def test_a_volume_is_hot_plugged_into_a_running_guest_and_released(
    qemu_driver: LibvirtDriver, guest_boot: tuple[Path, Path], workdir: Path, image_dir: Path
) -> None:
    driver = qemu_driver
    storage = InstanceStorage(workdir / f"{PREFIX}-qemu", DirectoryImages(image_dir))
    async with FileBackend.in_state_dir(workdir / f"{PREFIX}-storage") as backend:
        server_id = str(uuid.uuid4())
        spawned_id, volume_id = str(uuid.uuid4()), str(uuid.uuid4())
        try:
            spawned_with = Path(await backend.create(spawned_id, 1))
            await storage.create(server_id, None, root_gb=0)  # booted from a kernel: no local root disk
            paths = storage.paths(server_id)
            spec = InstanceSpec(
                uuid=server_id,
                name=f"{PREFIX} hotplug",
                vcpus=1,
                memory_mb=128,
                disks=(Disk(spawned_with, "qcow2", device="vdc", serial=spawned_id),),
                console_log=paths.console_log,
            )
            await driver.restore(booting_the_kernel(driver.describe(spec), *guest_boot))
            assert await driver.power(server_id, PowerAction.START) is PowerState.RUNNING
            _, seen = await console_line(paths.console_log)
            _, seen = await guest_disks(paths.console_log, after=seen, having=spawned_id)

            # attach: in the running guest and in the persistent definition
            location = Path(await backend.create(volume_id, 1))
            disk = Disk(location, "qcow2", device="vdb", serial=volume_id)
            await driver.attach_volume(server_id, disk)
            live, persistent = await asyncio.to_thread(live_and_persistent, driver, server_id)
            found = domain.find_disk(live, device="vdb")
            assert found is not None and (found.source, found.serial) == (str(location), volume_id)
            assert domain.find_disk(persistent, device="vdb").source == str(location)  # type: ignore[union-attr]
            _, seen = await guest_disks(paths.console_log, after=seen, having=volume_id)  # the guest has it

            await driver.attach_volume(server_id, disk)  # attached already: success, nothing added
            live, _ = await asyncio.to_thread(live_and_persistent, driver, server_id)
            assert [d.device for d in domain.disks_of(live)].count("vdb") == 1

            # detach: the guest releases it, and the call returns once libvirt confirmed that
            started = time.monotonic()
            assert await driver.detach_volume(server_id, "vdb", serial=volume_id, timeout=30) is True
            elapsed = time.monotonic() - started
            live, persistent = await asyncio.to_thread(live_and_persistent, driver, server_id)
            assert domain.find_disk(live, serial=volume_id) is None
            assert domain.find_disk(persistent, serial=volume_id) is None
            assert domain.find_disk(live, serial=spawned_id) is not None  # the other volume stays
            _, seen = await guest_disks(paths.console_log, after=seen, having=spawned_id, without=volume_id)
            assert elapsed < 15, (
                f"the guest released the device, yet the detach waited {elapsed:.1f}s"
            )  # not 30
            assert await driver.detach_volume(server_id, "vdb", serial=volume_id) is False

            # a guest that does not release it (paused: it cannot answer): a clear error, and the
            # volume stays attached in both; once the guest lets go, the detach asked again completes
            await driver.attach_volume(server_id, disk)
            _, seen = await guest_disks(paths.console_log, after=seen, having=volume_id)
            assert await driver.power(server_id, PowerAction.PAUSE) is PowerState.PAUSED
            with pytest.raises(DetachTimeout) as timed_out:
                await driver.detach_volume(server_id, "vdb", serial=volume_id, timeout=1)
            assert (timed_out.value.device, timed_out.value.timeout) == ("vdb", 1)
            assert "did not release device vdb" in timed_out.value.reason
            live, persistent = await asyncio.to_thread(live_and_persistent, driver, server_id)
            assert domain.find_disk(live, serial=volume_id) is not None
            assert domain.find_disk(persistent, serial=volume_id) is not None
            assert await driver.power(server_id, PowerAction.UNPAUSE) is PowerState.RUNNING
            assert await driver.detach_volume(server_id, "vdb", serial=volume_id, timeout=30) is True
            live, persistent = await asyncio.to_thread(live_and_persistent, driver, server_id)
            assert domain.find_disk(live, serial=volume_id) is None
            assert domain.find_disk(persistent, serial=volume_id) is None
            await guest_disks(paths.console_log, after=seen, having=spawned_id, without=volume_id)
            assert await driver.power_state(server_id) is PowerState.RUNNING
        finally:
            await driver.destroy(server_id)
            await storage.remove(server_id)
        assert await driver.power_state(server_id) is None


async def test_a_guest_that_never_releases_a_volume_fails_the_detach_and_keeps_it(
    qemu_driver: LibvirtDriver, workdir: Path, image_dir: Path
) -> None:
    """Without a guest kernel, the live attach and the detach's timeout are still checked, on a
    BIOS with nothing to boot (it never answers an unplug request). With one, the test above
    covers both, and one real guest is enough: each boot costs seconds."""
    deb = _kernel_deb()
    if deb is not None and deb.is_file():
        pytest.skip("covered by test_a_volume_is_hot_plugged_into_a_running_guest_and_released")
    driver = qemu_driver
    storage = InstanceStorage(workdir / f"{PREFIX}-qemu", DirectoryImages(image_dir))
    async with FileBackend.in_state_dir(workdir / f"{PREFIX}-storage") as backend:
        server_id, volume_id = str(uuid.uuid4()), str(uuid.uuid4())
        try:
            disks = await storage.create(server_id, make_image(image_dir, "16M"), root_gb=1)
            spec = InstanceSpec(
                uuid=server_id,
                name=f"{PREFIX} stubborn",
                vcpus=1,
                memory_mb=64,
                disks=disks,
                console_log=storage.paths(server_id).console_log,
            )
            assert await driver.spawn(spec) is PowerState.RUNNING
            location = Path(await backend.create(volume_id, 1))
            await driver.attach_volume(server_id, Disk(location, "qcow2", device="vdb", serial=volume_id))
            live, _ = await asyncio.to_thread(live_and_persistent, driver, server_id)
            assert domain.find_disk(live, serial=volume_id).source == str(location)  # type: ignore[union-attr]
            with pytest.raises(DetachTimeout, match="did not release device vdb"):
                await driver.detach_volume(server_id, "vdb", serial=volume_id, timeout=1)
            live, persistent = await asyncio.to_thread(live_and_persistent, driver, server_id)
            assert domain.find_disk(live, serial=volume_id) is not None  # still attached, in both
            assert domain.find_disk(persistent, serial=volume_id) is not None
        finally:
            await driver.destroy(server_id)
            await storage.remove(server_id)
        assert await driver.power_state(server_id) is None
