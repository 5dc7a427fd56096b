"""libvirt domain XML for an instance, built with ElementTree.

Never by string formatting: a server's name is user input and may hold `<&'">` or characters
XML 1.0 cannot carry at all (control characters), which ElementTree would write unchanged. The
text of every element and attribute goes through `_text`, which replaces those characters.

The domain: name `instance-<uuid>`, `<uuid>` the server id, vCPUs and memory from the flavor,
file disks as virtio (vda = root, then ephemeral and swap; a volume at the device it names,
with its id as the disk's `<serial>`; vda is the volume itself when the server boots from
one), the serial console written to
`console.log`, a virtio NIC per interface on the tap the host's networking created (type
`ethernet`, `managed='no'`: libvirt opens the existing tap, which is already on its network's
bridge), and no graphics. The display name and flavor travel in `<metadata>`, as
Nova's `<nova:instance>` does, for operators reading `virsh dumpxml`.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from hostagent.virt.base import Disk, InstanceSpec, VirtError

NAME_PREFIX = "instance-"
METADATA_NS = "urn:actorstack:instance:1"
ET.register_namespace("actorstack", METADATA_NS)

# Characters outside XML 1.0's Char production.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DEVICE = re.compile(r"vd[a-z]{1,2}")


def domain_name(uuid: str) -> str:
    return f"{NAME_PREFIX}{uuid}"


def uuid_of(name: str) -> str | None:
    """The server id in a domain name of ours, or None for anybody else's domain."""
    if not name.startswith(NAME_PREFIX):
        return None
    rest = name[len(NAME_PREFIX) :]
    return rest if _UUID.fullmatch(rest) else None


def _text(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _sub(parent: ET.Element, tag: str, text: object | None = None, **attrs: object) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: _text(v) for k, v in attrs.items()})
    if text is not None:
        element.text = _text(text)
    return element


def build(spec: InstanceSpec, domain_type: str) -> str:
    """The persistent definition of the instance for a domain of `domain_type` (test, qemu, kvm)."""
    domain = ET.Element("domain", {"type": _text(domain_type)})
    _sub(domain, "name", domain_name(spec.uuid))
    _sub(domain, "uuid", spec.uuid)
    _sub(domain, "title", spec.name)

    metadata = _sub(domain, "metadata")
    instance = _sub(metadata, f"{{{METADATA_NS}}}instance")
    _sub(instance, f"{{{METADATA_NS}}}name", spec.name)
    _sub(instance, f"{{{METADATA_NS}}}flavor", spec.flavor_name, vcpus=spec.vcpus, memory_mb=spec.memory_mb)

    _sub(domain, "memory", spec.memory_mb, unit="MiB")
    _sub(domain, "vcpu", spec.vcpus, placement="static")
    os_ = _sub(domain, "os")
    _sub(os_, "type", "hvm")
    _sub(os_, "boot", dev="hd")
    features = _sub(domain, "features")
    _sub(features, "acpi")  # lets `stop` ask the guest to shut down cleanly first
    _sub(features, "apic")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    for disk in sorted(with_devices(spec.disks), key=_device_order):  # vda first: the BIOS boots it
        devices.append(disk_element(disk))
    for nic in spec.interfaces:
        element = _sub(devices, "interface", type="ethernet")
        _sub(element, "mac", address=nic.mac_address)
        _sub(element, "target", dev=nic.tap, managed="no")
        _sub(element, "model", type="virtio")
        _sub(element, "mtu", size=nic.mtu)
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=spec.console_log)
    _sub(serial, "target", port=0)
    _sub(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


# --- disks ----------------------------------------------------------------------------------------


def device_name(index: int) -> str:
    """The index-th virtio disk's name: vda … vdz, vdaa … (as the Linux kernel names them)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f"vd{letters}"


def _device_order(disk: Disk) -> tuple[int, str]:
    name = disk.device or ""
    return len(name), name


def with_devices(disks: Iterable[Disk]) -> list[Disk]:
    """The disks with a device each: those that name one keep it, the others take the free names
    in order. Two disks naming one device, or a name that is not a virtio disk's, is an error."""
    disks = list(disks)
    taken: set[str] = set()
    for disk in disks:
        if disk.device is None:
            continue
        if not _DEVICE.fullmatch(disk.device):
            raise VirtError(f"invalid disk device {disk.device!r}: expected vda, vdb, …")
        if disk.device in taken:
            raise VirtError(f"two disks want device {disk.device}")
        taken.add(disk.device)
    result = []
    index = 0
    for disk in disks:
        if disk.device is None:
            while device_name(index) in taken:
                index += 1
            disk = dataclasses.replace(disk, device=device_name(index))
            taken.add(disk.device)  # type: ignore[arg-type]
        result.append(disk)
    return result


def disk_element(disk: Disk) -> ET.Element:
    """`<disk type='file' device='disk'>` for a disk that has its device name."""
    if disk.device is None or not _DEVICE.fullmatch(disk.device):
        raise VirtError(f"invalid disk device {disk.device!r}: expected vda, vdb, …")
    element = ET.Element("disk", {"type": "file", "device": "disk"})
    _sub(element, "driver", name="qemu", type=disk.format)
    _sub(element, "source", file=disk.path)
    _sub(element, "target", dev=disk.device, bus="virtio")
    if disk.serial is not None:
        _sub(element, "serial", disk.serial)
    return element


def disk_xml(disk: Disk) -> str:
    return ET.tostring(disk_element(disk), encoding="unicode")


@dataclasses.dataclass(frozen=True)
class FoundDisk:
    """A disk in a domain's XML, as libvirt wrote it (`xml`: the element, to detach it by)."""

    device: str
    source: str | None
    serial: str | None
    xml: str


def disks_of(definition: str) -> list[FoundDisk]:
    """The file disks in a domain's XML (libvirt's, live or persistent, or ours)."""
    found = []
    for element in ET.fromstring(definition).findall("devices/disk"):
        target = element.find("target")
        if target is None or target.get("dev") is None:
            continue
        source = element.find("source")
        found.append(
            FoundDisk(
                device=str(target.get("dev")),
                source=None if source is None else source.get("file"),
                serial=element.findtext("serial"),
                xml=ET.tostring(element, encoding="unicode"),
            )
        )
    return found


def find_disk(definition: str, *, device: str | None = None, serial: str | None = None) -> FoundDisk | None:
    """The disk with this serial when one is given, else the disk at this device."""
    for disk in disks_of(definition):
        if (disk.serial == serial) if serial is not None else (disk.device == device):
            return disk
    return None


def with_disk(definition: str, disk: Disk) -> str:
    """The definition with the disk added to its devices (for a hypervisor that cannot hot-plug)."""
    root = ET.fromstring(definition)
    devices = root.find("devices")
    if devices is None:
        devices = _sub(root, "devices")
    devices.append(disk_element(disk))
    return ET.tostring(root, encoding="unicode")


def without_disk(definition: str, device: str) -> str:
    """The definition without the disk at `device`."""
    root = ET.fromstring(definition)
    devices = root.find("devices")
    for element in [] if devices is None else devices.findall("disk"):
        target = element.find("target")
        if target is not None and target.get("dev") == device:
            devices.remove(element)  # type: ignore[union-attr]
    return ET.tostring(root, encoding="unicode")
