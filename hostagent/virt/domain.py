"""libvirt domain XML for an instance, built with ElementTree.

Never by string formatting: a server's name is user input and may hold `<&'">` or characters
XML 1.0 cannot carry at all (control characters), which ElementTree would write unchanged. The
text of every element and attribute goes through `_text`, which replaces those characters.

The domain: name `instance-<uuid>`, `<uuid>` the server id, vCPUs and memory from the flavor,
file disks as virtio (vda = root, then ephemeral and swap), the serial console written to
`console.log`, a virtio NIC per interface on the tap the host's networking created (type
`ethernet`, `managed='no'`: libvirt opens the existing tap, which is already on its network's
bridge), and no graphics. The display name and flavor travel in `<metadata>`, as
Nova's `<nova:instance>` does, for operators reading `virsh dumpxml`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from hostagent.virt.base import InstanceSpec

NAME_PREFIX = "instance-"
METADATA_NS = "urn:actorstack:instance:1"
ET.register_namespace("actorstack", METADATA_NS)

# Characters outside XML 1.0's Char production.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def domain_name(uuid: str) -> str:
    return f"{NAME_PREFIX}{uuid}"


def uuid_of(name: str) -> str | None:
    """The server id in a domain name of ours, or None for anybody else's domain."""
    if not name.startswith(NAME_PREFIX):
        return None
    rest = name[len(NAME_PREFIX):]
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
    for index, disk in enumerate(spec.disks):
        element = _sub(devices, "disk", type="file", device="disk")
        _sub(element, "driver", name="qemu", type=disk.format)
        _sub(element, "source", file=disk.path)
        _sub(element, "target", dev=f"vd{chr(ord('a') + index)}", bus="virtio")
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
