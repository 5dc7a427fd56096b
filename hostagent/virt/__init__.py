"""Hypervisor drivers: the interface (`base`) and the libvirt driver that implements it."""

from __future__ import annotations

from pathlib import Path

from hostagent.virt.base import VirtDriver, VirtError
from hostagent.virt.libvirt import LibvirtDriver

VIRT_TYPES = ("test", "qemu")


def make_driver(
    virt: str, *, state_dir: Path, hostname: str, domain_type: str = "auto", shutdown_timeout: float = 60.0
) -> VirtDriver:
    """The driver for `--virt`: `test` (libvirt's test driver, a hypervisor of its own per
    agent, described by a node file in `state_dir`) or `qemu` (qemu:///system)."""
    if virt == "test":
        return LibvirtDriver.for_test(state_dir, hostname, shutdown_timeout=shutdown_timeout)
    if virt == "qemu":
        return LibvirtDriver.for_qemu(domain_type=domain_type, shutdown_timeout=shutdown_timeout)
    raise VirtError(f"unknown virt type {virt!r}: choose one of {', '.join(VIRT_TYPES)}")
