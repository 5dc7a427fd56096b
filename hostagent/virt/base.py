"""The virt driver interface: what a host agent asks of a hypervisor.

One abstract class and small concrete drivers beside it (aio-pika's `abc.py` style): the agent
speaks only this interface, so a driver for another hypervisor (or a fake for a unit test) is a
new module, not a change to the agent. Every method is a coroutine and must not block the event
loop: a driver over a blocking library runs its calls in threads of its own.

Power states and actions are the protocol's (protocol/states.py, protocol/power.py), not the
hypervisor's; each driver maps its own states onto them.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Self

from protocol import power
from protocol.power import PowerAction
from protocol.states import PowerState

# The power states and actions are the protocol's (Nova's numbers, the wire's strings); each
# driver maps its hypervisor's own states onto them. What an action needs of the instance's
# power state is its row's (protocol/power.py): `in_effect` (done without acting) and
# `power_from` (may act), checked by `check_power_action`.


def check_power_action(action: PowerAction, state: PowerState) -> bool:
    """True when the action is in effect already (report success without acting); raises
    IllegalPowerAction when it cannot start from `state`; False when the driver must act."""
    row = power.BY_ACTION[action]
    if state in row.in_effect:
        return True
    if state not in row.power_from:
        raise IllegalPowerAction(action, state)
    return False


# --- what the agent hands a driver, and what it gets back ---------------------------------------


@dataclasses.dataclass(frozen=True)
class Disk:
    """One file-backed disk of an instance. Local disks (root, ephemeral, swap) take the free
    device names in the order given (vda, vdb, …); a volume names its device and carries its
    id as the disk's serial (the guest sees it as /dev/disk/by-id/virtio-<serial>)."""

    path: Path
    format: str  # qcow2 or raw
    device: str | None = None  # the target, e.g. vdb; None: the next free one
    serial: str | None = None  # a volume's id


@dataclasses.dataclass(frozen=True)
class Interface:
    """One NIC: a tap the host's networking created (plugged into its network's bridge)."""

    mac_address: str
    tap: str
    mtu: int = 1500


@dataclasses.dataclass(frozen=True)
class InstanceSpec:
    """Everything a driver needs to create an instance; the files already exist."""

    uuid: str  # the server id; also the domain's UUID
    name: str  # the server's display name: metadata only, never trusted as markup
    vcpus: int
    memory_mb: int
    disks: tuple[Disk, ...]
    console_log: Path
    flavor_name: str = ""
    interfaces: tuple[Interface, ...] = ()


@dataclasses.dataclass(frozen=True)
class HostInfo:
    """The hypervisor's inventory and identity, for the host's `compute_hosts` row."""

    virt_type: str  # test, qemu or kvm: the domain type guests get
    vcpus: int
    memory_mb: int
    hypervisor_type: str  # as libvirt names it: TEST, QEMU
    hypervisor_version: int  # major * 1,000,000 + minor * 1,000 + release
    hypervisor_hostname: str


@dataclasses.dataclass(frozen=True)
class LifecycleEvent:
    """The hypervisor says something happened to an instance. The state is a hint: the agent
    reads the current state again before it reports anything (level, not edge, triggered)."""

    uuid: str
    power_state: PowerState


# --- errors that carry data ---------------------------------------------------------------------


class VirtError(Exception):
    """The hypervisor refused or failed; `reason` is fit for a server fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InstanceNotFound(VirtError):
    def __init__(self, uuid: str) -> None:
        super().__init__(f"Instance {uuid} could not be found on this host.")
        self.uuid = uuid


class DeviceInUse(VirtError):
    """The device name a volume should take is held by another disk."""

    def __init__(self, uuid: str, device: str, source: str | None) -> None:
        super().__init__(f"Device {device} of instance {uuid} is in use by another disk ({source}).")
        self.uuid, self.device, self.source = uuid, device, source


class DetachTimeout(VirtError):
    """The guest did not release the device in time: it is still attached."""

    def __init__(self, uuid: str, device: str, timeout: float) -> None:
        super().__init__(
            f"The guest of instance {uuid} did not release device {device} within {timeout:g} "
            "seconds; it is still attached."
        )
        self.uuid, self.device, self.timeout = uuid, device, timeout


class IllegalPowerAction(VirtError):
    """The action cannot start from the instance's current state (e.g. unpause a running one)."""

    def __init__(self, action: PowerAction, state: PowerState) -> None:
        super().__init__(f"Cannot {action.value} the instance while it is in power state {state.name}.")
        self.action, self.state = action, state


# --- the interface ------------------------------------------------------------------------------


class VirtDriver(abc.ABC):
    """A hypervisor connection. Use as an async context manager (or open/close)."""

    #: The driver forgets its instances when the process ends (an in-memory hypervisor).
    #: The agent then restores the definitions it kept, shut off, as a host reboot leaves them.
    volatile: bool = False

    def __init__(self) -> None:
        self._events: asyncio.Queue[LifecycleEvent] = asyncio.Queue()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and start delivering lifecycle events."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop events and disconnect. Idempotent."""

    @abc.abstractmethod
    async def host_info(self) -> HostInfo: ...

    @abc.abstractmethod
    def describe(self, spec: InstanceSpec) -> str:
        """The hypervisor's definition of the instance (libvirt XML), as `spawn` would create it;
        pure, so the agent can keep a copy in the instance directory first."""

    @abc.abstractmethod
    async def spawn(self, spec: InstanceSpec) -> PowerState:
        """Define the instance persistently and start it; its power state afterwards."""

    @abc.abstractmethod
    async def restore(self, definition: str) -> None:
        """Define (not start) an instance from a definition `describe` produced earlier."""

    @abc.abstractmethod
    async def power_state(self, uuid: str) -> PowerState | None:
        """The instance's power state, or None when the hypervisor has no such instance."""

    @abc.abstractmethod
    async def instances(self) -> dict[str, PowerState]:
        """Every instance this driver manages (by UUID) with its power state."""

    @abc.abstractmethod
    async def power(self, uuid: str, action: PowerAction) -> PowerState:
        """Perform a power action; the power state afterwards. Raises InstanceNotFound, or
        IllegalPowerAction; an action already in effect (its row's `in_effect`) succeeds without
        acting (check_power_action)."""

    @abc.abstractmethod
    async def destroy(self, uuid: str) -> bool:
        """Stop and undefine the instance (and any saved state); False if it did not exist."""

    @abc.abstractmethod
    async def definition(self, uuid: str) -> str | None:
        """The instance's persistent definition as the hypervisor has it now (after volumes
        came and went), for `restore`; None when there is no such instance."""

    @abc.abstractmethod
    async def attach_volume(self, uuid: str, disk: Disk) -> None:
        """Give the instance a volume as `disk.device` (serial: the volume id): hot-plugged into
        a running guest and recorded in the persistent definition (only recorded when the
        instance is not running). Attached already (same device, same file): success. Raises
        InstanceNotFound, DeviceInUse, or VirtError."""

    @abc.abstractmethod
    async def detach_volume(
        self, uuid: str, device: str, *, serial: str | None = None, timeout: float = 20.0
    ) -> bool:
        """Take the volume away: the disk whose serial is `serial` (when given; else the disk
        at `device`). Returns once the hypervisor confirmed the device is gone from the running
        guest (who must release it: DetachTimeout after `timeout` seconds) and from the
        persistent definition; False when it was not attached. Raises InstanceNotFound."""

    async def events(self) -> AsyncIterator[LifecycleEvent]:
        """Lifecycle events as the hypervisor reports them, for one consumer, until cancelled."""
        while True:
            yield await self._events.get()

    def _emit(self, event: LifecycleEvent) -> None:
        """For implementations: queue an event (call on the event loop's thread)."""
        self._events.put_nowait(event)
