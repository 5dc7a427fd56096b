"""The virt driver on libvirt-python: `test:///<node file>` and `qemu:///system`.

Every blocking libvirt call runs in this driver's own thread pool (one per connection), never
on the event loop; lifecycle events arrive on the loop through `hostagent.virt.events`.

The test driver is libvirt's in-memory hypervisor, embedded in the process. `test:///default`
is one hypervisor shared by the whole process, so several agents in one process (`actorstack
up --hosts 3`) would see each other's domains; instead each test driver opens
`test:///<state dir>/libvirt-test-node.xml`, a node description it writes itself (the custom
configuration format of libvirt's test driver: `<node><cpu>…</cpu><memory>KiB</memory></node>`),
and every such connection is a hypervisor of its own, even for the same file (checked: two
connections to one file do not see each other's domains). It forgets its domains when the
connection closes (`volatile`).

`qemu:///system` runs real guests. The domain type is `kvm` only when that is known to work:
`domain_type="kvm"` asks for it explicitly (and fails to open if libvirt does not offer KVM),
`"qemu"` forces TCG, and the default `"auto"` chooses `kvm` only when the host is not itself a
virtual machine (no `hypervisor` CPU flag), /dev/kvm is usable and libvirt offers KVM.
Verifying KVM for real would mean booting a guest at start; on a nested host we measured `kvm`
offered by libvirt and a guest that hung after the BIOS, while TCG booted reliably, so on a VM
we choose TCG unless told otherwise.

Power actions, as Nova's libvirt driver does them: stop is a clean ACPI shutdown that falls
back to destroy after `shutdown_timeout` seconds; reboot asks the guest (ACPI); a hard reboot
destroys and starts the domain; pause and unpause are libvirt's suspend and resume; suspend is
a managed save (libvirt writes the guest's memory to its own directory,
/var/lib/libvirt/qemu/save, the one file of an instance outside the agent's state directory,
and the domain stops), and resume restores it. A shut-off domain with a managed save image is
reported SUSPENDED: Nova would say SHUTDOWN, but our server actor would then take a suspended
server for stopped.

Volumes on qemu:///system are hot-plugged: `attachDeviceFlags` with AFFECT_LIVE|AFFECT_CONFIG
into a running (or paused) guest, AFFECT_CONFIG alone into a stopped one. A detach asks the
running guest to release the device (AFFECT_LIVE) and waits until libvirt confirms it is gone —
woken by libvirt's DEVICE_REMOVED event, checking the live XML every 100 ms — and only then
removes it from the persistent definition, so a guest that never lets go (DetachTimeout) leaves
the volume attached in both, as the server actor then records it. libvirt itself waits up to
5 s inside the detach call before it returns. The test driver cannot hot-plug at all
(attachDeviceFlags is "not supported by the connection driver"): there the stand-in
`_redefine_with_disk` / `_redefine_without_disk` records the change in the persistent
definition only (defineXML), which a running test domain takes as its next boot's definition.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import libvirt
import structlog

from hostagent.virt import domain, events
from hostagent.virt.base import (
    DetachTimeout,
    DeviceInUse,
    Disk,
    HostInfo,
    InstanceNotFound,
    InstanceSpec,
    LifecycleEvent,
    VirtDriver,
    VirtError,
    check_power_action,
)
from protocol.power import PowerAction
from protocol.states import PowerState

log = structlog.get_logger("hostagent.virt")
T = TypeVar("T")

TEST_NODE_FILE = "libvirt-test-node.xml"
QEMU_URI = "qemu:///system"

# libvirt's domain states -> Nova's power states (nova/virt/libvirt/guest.py).
_POWER_STATE = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.RUNNING,  # shutting down: still running
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
}

# Lifecycle events -> the state they suggest (None: not a change of power state).
_EVENT_STATE = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: PowerState.NOSTATE,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: PowerState.SUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: PowerState.CRASHED,
}

_UNDEFINE_FLAGS = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
_LIVE, _CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG
DETACH_POLL = 0.1  # seconds between looks at the live XML while a guest releases a device


def _not_found(exc: libvirt.libvirtError) -> bool:
    return bool(exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)


def _reason(exc: libvirt.libvirtError) -> str:
    return exc.get_error_message() or str(exc)


def _state_of(dom: libvirt.virDomain) -> PowerState:
    """Blocking: the domain's power state, SUSPENDED for a shut-off domain with a saved image."""
    state, _reason_code = dom.state()
    power = _POWER_STATE.get(state, PowerState.NOSTATE)
    if power is PowerState.SHUTDOWN and dom.hasManagedSaveImage(0):
        return PowerState.SUSPENDED
    return power


def node_xml(*, vcpus: int, memory_mb: int) -> str:
    """A node description for libvirt's test driver: a host with this many CPUs and this much
    RAM, and no domains."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (
        ("nodes", 1),
        ("sockets", 1),
        ("cores", vcpus),
        ("threads", 1),
        ("active", vcpus),
        ("mhz", 2000),
        ("model", "x86_64"),
    ):
        ET.SubElement(cpu, tag).text = str(value)
    ET.SubElement(node, "memory").text = str(memory_mb * 1024)  # KiB
    return ET.tostring(node, encoding="unicode")


def choose_domain_type(
    requested: str, cpu_flags: set[str], kvm_usable: bool, kvm_offered: Callable[[], bool]
) -> str:
    """kvm or qemu (TCG), from the request (auto, kvm, qemu) and what the host offers.
    `kvm_offered` asks libvirt (slow: it may probe QEMU), so only when the answer matters."""
    if requested not in ("auto", "kvm", "qemu"):
        raise VirtError(f"unknown domain type {requested!r}: choose auto, kvm or qemu")
    if requested == "qemu":
        return "qemu"
    if requested == "kvm":
        if not kvm_offered():
            raise VirtError("domain type kvm was requested, but libvirt does not offer KVM on this host")
        return "kvm"
    if "hypervisor" in cpu_flags or not kvm_usable:
        return "qemu"  # a virtual machine (nested KVM) or no usable /dev/kvm
    return "kvm" if kvm_offered() else "qemu"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


class LibvirtDriver(VirtDriver):
    def __init__(
        self,
        uri: str,
        *,
        domain_type: str,
        hostname: str | None = None,
        shutdown_timeout: float = 60.0,
        workers: int = 4,
    ) -> None:
        """`domain_type`: test for the test driver; auto, kvm or qemu for qemu:///system.
        `hostname`: the hypervisor hostname to report (default: libvirt's)."""
        super().__init__()
        self.uri = uri
        self.volatile = uri.startswith("test:")
        self._requested_type = domain_type
        self.domain_type = domain_type if self.volatile else ""
        self._hostname = hostname
        self.shutdown_timeout = shutdown_timeout
        self._workers = workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: list[int] = []
        self._broken = False
        self._device_removed: dict[str, list[asyncio.Event]] = {}  # domain uuid -> detaches waiting

    @classmethod
    def for_test(
        cls, state_dir: Path, hostname: str, *, vcpus: int = 64, memory_mb: int = 262144, **kwargs: Any
    ) -> LibvirtDriver:
        """A test-driver hypervisor of its own, described by a node file in `state_dir`. The
        default size is roomy (64 vCPUs, 256 GiB) so that a simulated cloud is limited by the
        control plane under test, not by made-up capacity."""
        state_dir.mkdir(parents=True, exist_ok=True)
        node_file = (state_dir / TEST_NODE_FILE).resolve()
        node_file.write_text(node_xml(vcpus=vcpus, memory_mb=memory_mb))
        return cls(f"test://{quote(str(node_file))}", domain_type="test", hostname=hostname, **kwargs)

    @classmethod
    def for_qemu(cls, *, domain_type: str = "auto", **kwargs: Any) -> LibvirtDriver:
        return cls(QEMU_URI, domain_type=domain_type, **kwargs)

    # --- the connection -------------------------------------------------------------------

    @property
    def connection(self) -> libvirt.virConnect:
        """The libvirt connection, for tools and tests that must reach libvirt directly (the
        test driver's domains are visible through this connection only). Blocking: call it
        from a thread."""
        if self._conn is None:
            raise VirtError("the libvirt connection is not open")
        return self._conn

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise VirtError("the libvirt driver is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def open(self) -> None:
        events.register()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self._workers, thread_name_prefix=f"libvirt {self.uri}"[:60]
        )
        try:
            await self._connect()
            if not self.volatile:
                flags = await asyncio.to_thread(_cpu_flags)
                usable = await asyncio.to_thread(os.access, "/dev/kvm", os.R_OK | os.W_OK)
                self.domain_type = await self._call(
                    choose_domain_type, self._requested_type, flags, usable, self._kvm_offered
                )
        except BaseException:
            await self.close()
            raise
        log.info("libvirt connected", uri=self.uri, domain_type=self.domain_type)

    async def _connect(self) -> None:
        try:
            conn = await self._call(libvirt.open, self.uri)
        except libvirt.libvirtError as exc:
            raise VirtError(f"cannot connect to libvirt at {self.uri}: {_reason(exc)}") from None
        self._conn, self._broken = conn, False
        self._callback_ids = [
            await self._call(
                conn.domainEventRegisterAny,
                None,
                libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                self._on_lifecycle,
                None,
            )
        ]
        if not self.volatile:
            self._callback_ids.append(
                await self._call(
                    conn.domainEventRegisterAny,
                    None,
                    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                    self._on_device_removed,
                    None,
                )
            )
            await self._call(conn.registerCloseCallback, self._on_close, None)

    def _kvm_offered(self) -> bool:
        """Blocking: libvirt offers domain type kvm for the host's default emulator."""
        try:
            self.connection.getDomainCapabilities(None, None, None, "kvm")
        except libvirt.libvirtError:
            return False
        return True

    def _on_close(self, conn: libvirt.virConnect, reason: int, opaque: object) -> None:
        """libvirtd went away (restart, crash): reconnect before the next call."""
        log.warning("libvirt connection closed; will reconnect", uri=self.uri, reason=reason)
        self._broken = True

    async def _connection(self) -> libvirt.virConnect:
        if self._broken:
            old, self._conn = self._conn, None
            if old is not None:
                await self._call(self._discard, old)
            await self._connect()
            log.info("libvirt reconnected", uri=self.uri)
        return self.connection

    @staticmethod
    def _discard(conn: libvirt.virConnect) -> None:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._executor is not None:
            await self._call(self._close_connection, conn, self._callback_ids)
        self._callback_ids = []
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown)
        # Let the event implementation run the free-callbacks libvirt scheduled while closing.
        for _ in range(3):
            await asyncio.sleep(0)

    def _close_connection(self, conn: libvirt.virConnect, callback_ids: list[int]) -> None:
        try:
            for callback_id in callback_ids:
                conn.domainEventDeregisterAny(callback_id)
            if not self.volatile:
                conn.unregisterCloseCallback()
        except libvirt.libvirtError as exc:
            log.warning("could not deregister libvirt callbacks", error=_reason(exc))
        self._discard(conn)

    def _on_lifecycle(
        self, conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int, opaque: object
    ) -> None:
        uuid = domain.uuid_of(dom.name())
        state = _EVENT_STATE.get(event)
        if uuid is None or state is None:
            return
        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED and detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED:
            state = PowerState.SUSPENDED
        self._emit(LifecycleEvent(uuid, state))

    def _on_device_removed(
        self, conn: libvirt.virConnect, dom: libvirt.virDomain, alias: str, opaque: object
    ) -> None:
        """A guest released a device: wake the detaches waiting on that domain (they look)."""
        uuid = domain.uuid_of(dom.name())
        for waiter in self._device_removed.get(uuid or "", ()):
            waiter.set()

    @contextlib.contextmanager
    def _removals(self, uuid: str) -> Iterator[asyncio.Event]:
        """An event set whenever libvirt reports a device of the domain removed."""
        event = asyncio.Event()
        self._device_removed.setdefault(uuid, []).append(event)
        try:
            yield event
        finally:
            waiters = self._device_removed[uuid]
            waiters.remove(event)
            if not waiters:
                del self._device_removed[uuid]

    # --- inventory ------------------------------------------------------------------------

    async def host_info(self) -> HostInfo:
        conn = await self._connection()

        def read() -> HostInfo:
            info = conn.getInfo()
            return HostInfo(
                virt_type=self.domain_type,
                vcpus=int(info[2]),
                memory_mb=int(info[1]),
                hypervisor_type=conn.getType(),
                hypervisor_version=int(conn.getVersion()),
                hypervisor_hostname=self._hostname or conn.getHostname(),
            )

        return await self._call(read)

    # --- instances ------------------------------------------------------------------------

    def describe(self, spec: InstanceSpec) -> str:
        if not self.domain_type:
            raise VirtError("the libvirt driver is not open")
        return domain.build(spec, self.domain_type)

    async def spawn(self, spec: InstanceSpec) -> PowerState:
        conn = await self._connection()
        definition = self.describe(spec)

        def define_and_start() -> PowerState:
            dom = conn.defineXML(definition)
            try:
                dom.create()
            except libvirt.libvirtError:
                try:
                    dom.undefineFlags(_UNDEFINE_FLAGS)
                except libvirt.libvirtError:
                    pass
                raise
            return _state_of(dom)

        try:
            return await self._call(define_and_start)
        except libvirt.libvirtError as exc:
            raise VirtError(f"libvirt could not start the instance: {_reason(exc)}") from None

    async def restore(self, definition: str) -> None:
        conn = await self._connection()
        try:
            await self._call(conn.defineXML, definition)
        except libvirt.libvirtError as exc:
            raise VirtError(f"libvirt could not define the instance: {_reason(exc)}") from None

    async def _lookup(self, uuid: str) -> libvirt.virDomain | None:
        conn = await self._connection()
        try:
            return await self._call(conn.lookupByUUIDString, uuid)
        except libvirt.libvirtError as exc:
            if _not_found(exc):
                return None
            raise VirtError(_reason(exc)) from None

    async def power_state(self, uuid: str) -> PowerState | None:
        dom = await self._lookup(uuid)
        if dom is None:
            return None
        try:
            return await self._call(_state_of, dom)
        except libvirt.libvirtError as exc:
            if _not_found(exc):
                return None
            raise VirtError(_reason(exc)) from None

    async def instances(self) -> dict[str, PowerState]:
        conn = await self._connection()

        def read() -> dict[str, PowerState]:
            found = {}
            for dom in conn.listAllDomains(0):
                uuid = domain.uuid_of(dom.name())
                if uuid is None:
                    continue  # not ours: never touched
                try:
                    found[uuid] = _state_of(dom)
                except libvirt.libvirtError as exc:
                    if not _not_found(exc):  # gone between listing and asking
                        raise
            return found

        try:
            return await self._call(read)
        except libvirt.libvirtError as exc:
            raise VirtError(_reason(exc)) from None

    async def power(self, uuid: str, action: PowerAction) -> PowerState:
        dom = await self._lookup(uuid)
        if dom is None:
            raise InstanceNotFound(uuid)
        try:
            state = await self._call(_state_of, dom)
            if check_power_action(action, state):
                return state
            if action is PowerAction.STOP:
                await self._stop(dom, state)
            else:
                await self._call(_ACTIONS[action], dom)
            return await self._call(_state_of, dom)
        except libvirt.libvirtError as exc:
            if _not_found(exc):
                raise InstanceNotFound(uuid) from None
            raise VirtError(f"libvirt could not {action.value} the instance: {_reason(exc)}") from None

    async def _stop(self, dom: libvirt.virDomain, state: PowerState) -> None:
        """Clean shutdown (ACPI), then destroy after shutdown_timeout; paused or crashed
        guests cannot shut down by themselves and are destroyed at once."""
        if state is PowerState.SUSPENDED:
            await self._call(dom.managedSaveRemove, 0)
            return
        if state is PowerState.RUNNING and self.shutdown_timeout > 0:
            await self._call(dom.shutdown)
            deadline = time.monotonic() + self.shutdown_timeout
            while time.monotonic() < deadline:
                if not await self._call(dom.isActive):
                    return
                await asyncio.sleep(0.25)
            log.info(
                "guest did not shut down in time; destroying",
                domain=dom.name(),
                timeout=self.shutdown_timeout,
            )
        if await self._call(dom.isActive):
            await self._call(dom.destroy)

    async def definition(self, uuid: str) -> str | None:
        dom = await self._lookup(uuid)
        if dom is None:
            return None
        try:
            return await self._call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
        except libvirt.libvirtError as exc:
            if _not_found(exc):
                return None
            raise VirtError(_reason(exc)) from None

    # --- volumes ----------------------------------------------------------------------------

    @property
    def hotplug(self) -> bool:
        """libvirt can hot-plug devices here (not the test driver)."""
        return not self.volatile

    async def attach_volume(self, uuid: str, disk: Disk) -> None:
        dom = await self._lookup(uuid)
        if dom is None:
            raise InstanceNotFound(uuid)
        attach = self._hotplug_disk if self.hotplug else self._redefine_with_disk
        try:
            await self._call(attach, dom, uuid, disk)
        except libvirt.libvirtError as exc:
            if _not_found(exc):
                raise InstanceNotFound(uuid) from None
            raise VirtError(f"libvirt could not attach the volume: {_reason(exc)}") from None

    def _hotplug_disk(self, dom: libvirt.virDomain, uuid: str, disk: Disk) -> None:
        """Blocking: attach into the running guest and the persistent definition, each unless
        the disk is there already."""
        flags = 0
        if dom.isActive() and not _has_disk(dom.XMLDesc(0), uuid, disk):
            flags |= _LIVE
        if not _has_disk(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), uuid, disk):
            flags |= _CONFIG
        if flags:
            dom.attachDeviceFlags(domain.disk_xml(disk), flags)
            log.info("volume attached", domain=dom.name(), device=disk.device, live=bool(flags & _LIVE))

    def _redefine_with_disk(self, dom: libvirt.virDomain, uuid: str, disk: Disk) -> None:
        """Blocking. The test driver's stand-in for hot-plug, which it does not support: the disk
        is added to the persistent definition only (defineXML). A running test domain keeps its
        live devices; the definition is what its next boot, and `restore`, will have."""
        definition = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        if not _has_disk(definition, uuid, disk):
            self.connection.defineXML(domain.with_disk(definition, disk))
            log.info(
                "volume recorded in the definition (the test driver cannot hot-plug)",
                domain=dom.name(),
                device=disk.device,
            )

    async def detach_volume(
        self, uuid: str, device: str, *, serial: str | None = None, timeout: float = 20.0
    ) -> bool:
        dom = await self._lookup(uuid)
        if dom is None:
            raise InstanceNotFound(uuid)
        try:
            if not self.hotplug:
                return await self._call(self._redefine_without_disk, dom, device, serial)
            with self._removals(uuid) as removed:
                was_live = await self._detach_live(dom, uuid, device, serial, timeout, removed)
            was_defined = await self._call(self._detach_from_config, dom, device, serial)
        except libvirt.libvirtError as exc:
            if _not_found(exc):
                raise InstanceNotFound(uuid) from None
            raise VirtError(f"libvirt could not detach the volume: {_reason(exc)}") from None
        if was_live or was_defined:
            log.info("volume detached", domain=dom.name(), device=device, live=was_live)
        return was_live or was_defined

    async def _detach_live(
        self,
        dom: libvirt.virDomain,
        uuid: str,
        device: str,
        serial: str | None,
        timeout: float,
        removed: asyncio.Event,
    ) -> bool:
        """Ask the running guest to release the disk; wait until libvirt says it is gone."""
        deadline = time.monotonic() + timeout

        def live_disk() -> domain.FoundDisk | None:
            if not dom.isActive():
                return None
            return domain.find_disk(dom.XMLDesc(0), device=device, serial=serial)

        found = await self._call(live_disk)
        if found is None:
            return False
        await self._call(dom.detachDeviceFlags, found.xml, _LIVE)  # returns once asked (or after 5 s)
        while await self._call(live_disk) is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DetachTimeout(uuid, found.device, timeout)
            removed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(removed.wait(), min(DETACH_POLL, remaining))
        return True

    @staticmethod
    def _detach_from_config(dom: libvirt.virDomain, device: str, serial: str | None) -> bool:
        """Blocking: remove the disk from the persistent definition; False if it is not there."""
        found = domain.find_disk(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), device=device, serial=serial)
        if found is None:
            return False
        dom.detachDeviceFlags(found.xml, _CONFIG)
        return True

    def _redefine_without_disk(self, dom: libvirt.virDomain, device: str, serial: str | None) -> bool:
        """Blocking. The test driver's stand-in for hot-unplug: the disk is removed from the
        persistent definition only (defineXML); nothing to wait for."""
        definition = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        found = domain.find_disk(definition, device=device, serial=serial)
        if found is None:
            return False
        self.connection.defineXML(domain.without_disk(definition, found.device))
        log.info(
            "volume removed from the definition (the test driver cannot hot-unplug)",
            domain=dom.name(),
            device=found.device,
        )
        return True

    async def destroy(self, uuid: str) -> bool:
        dom = await self._lookup(uuid)
        if dom is None:
            return False

        def remove() -> None:
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(_UNDEFINE_FLAGS)
            except libvirt.libvirtError as exc:
                if not _not_found(exc):
                    raise

        try:
            await self._call(remove)
        except libvirt.libvirtError as exc:
            raise VirtError(f"libvirt could not destroy the instance: {_reason(exc)}") from None
        return True


def _has_disk(definition: str, uuid: str, disk: Disk) -> bool:
    """The definition has this volume already (by its serial, or at its device with its file);
    DeviceInUse when another disk holds the device."""
    if disk.serial is not None and domain.find_disk(definition, serial=disk.serial) is not None:
        return True
    assert disk.device is not None
    at_device = domain.find_disk(definition, device=disk.device)
    if at_device is None:
        return False
    if at_device.source == str(disk.path):
        return True
    raise DeviceInUse(uuid, disk.device, at_device.source)


def _hard_reboot(dom: libvirt.virDomain) -> None:
    if dom.hasManagedSaveImage(0):
        dom.managedSaveRemove(0)
    if dom.isActive():
        dom.destroy()
    dom.create()


def _start(dom: libvirt.virDomain) -> None:
    dom.create()


# Blocking implementations of every action but stop (which waits on the event loop).
_ACTIONS: dict[PowerAction, Callable[[libvirt.virDomain], Any]] = {
    PowerAction.START: _start,
    PowerAction.REBOOT: lambda dom: dom.reboot(0),
    PowerAction.REBOOT_HARD: _hard_reboot,
    PowerAction.PAUSE: lambda dom: dom.suspend(),
    PowerAction.UNPAUSE: lambda dom: dom.resume(),
    PowerAction.SUSPEND: lambda dom: dom.managedSave(libvirt.VIR_DOMAIN_SAVE_RUNNING),
    PowerAction.RESUME: _start,  # create() restores the managed save image
}
