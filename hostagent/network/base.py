"""The host networking interface: what a host agent asks of the kernel's networking.

The agent speaks only `Networking`: `plug` before it defines a domain (it gets the taps that
libvirt opens), `unplug` when the domain is gone. `HostNetworking` (`linuxbridge.py`) is the
real thing; `NullNetworking` here is what a process gets when it is not root or networking is
off: servers still get ports and addresses in the database, but no taps, DHCP or metadata.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from pathlib import Path
from types import TracebackType
from typing import Self


@dataclasses.dataclass(frozen=True)
class NetworkSettings:
    owner: str  # IFLA_IFALIAS of every link we create, e.g. "actorstack:<cloud id>": what is ours
    state_dir: Path  # <state_dir>/<network id>/{host, opts, leases, pid, netns}
    hosts: frozenset[str]  # the compute hosts (ports.binding_host_id) whose ports this kernel serves
    interval: float = 10.0  # seconds between periodic converge passes
    metadata_port: int = 80
    remove_on_stop: bool = False  # stop() removes everything owned (volatile setups and tests)
    # The underlay address this kernel's VXLAN tunnels start from; None: no tunnels (the hosts of
    # one kernel, as `up --hosts N` runs them, share its bridges and need none).
    tunnel_ip: str | None = None
    # What the DHCP namespaces' names begin with (Neutron's `qdhcp-`): namespace names are one
    # machine's, so hosts simulated side by side on it (the multi-node test rig) need their own.
    namespace_prefix: str = "qdhcp-"

    def __post_init__(self) -> None:
        # The tag is what makes a link ours: it must be there, and fit IFLA_IFALIAS (255 bytes).
        if not self.owner or len(self.owner.encode()) > 255 or not self.owner.isprintable():
            raise ValueError(f"the owner tag must be 1-255 bytes of printable text, not {self.owner!r}")
        if self.interval <= 0:
            raise ValueError("the converge interval must be positive")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", self.namespace_prefix):
            raise ValueError(
                "a DHCP namespace prefix is 1-40 letters, digits, '_', '.' or '-', "
                f"not {self.namespace_prefix!r}"
            )


@dataclasses.dataclass(frozen=True)
class Vif:
    """What libvirt needs for one NIC: an existing tap on its network's bridge
    (`<interface type='ethernet'><target dev='{tap}' managed='no'/>`)."""

    port_id: str
    network_id: str
    mac_address: str
    tap: str
    bridge: str
    mtu: int


class NetworkingError(Exception):
    """The host's networking could not be made as the database asks; `reason` is fit for a
    server fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Networking(abc.ABC):
    """One per kernel, shared by the agents of a process; started and stopped by its owner."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def plug(self, server_id: str) -> list[Vif]:
        """The server's NICs, created now (idempotent), in the order of the server's nics."""

    @abc.abstractmethod
    async def unplug(self, server_id: str) -> None:
        """Remove the server's taps now (idempotent), and what its networks no longer need."""

    @abc.abstractmethod
    async def converge(self) -> dict[str, int]:
        """One full level-triggered pass; counts of what was created, updated and removed."""

    @abc.abstractmethod
    def refresh_firewall(self) -> None:
        """Ask for a firewall pass soon (a security group of this host's ports changed); returns
        at once, and requests made while a pass runs share the next one."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class NullNetworking(Networking):
    """No networking in this kernel: nothing to plug, nothing to remove."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def plug(self, server_id: str) -> list[Vif]:
        return []

    async def unplug(self, server_id: str) -> None:
        pass

    async def converge(self) -> dict[str, int]:
        return {}

    def refresh_firewall(self) -> None:
        pass
