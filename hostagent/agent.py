"""The host agent: a compute host's hands. It carries out `agent.*` requests and reports.

A HostAgent consumes its own queue `agent.<name>` and replies to the server actors, with the
plumbing every agent shares (`hostagent.requests`): publisher confirms before the ack, reply ids
derived from the request's, one request per server at a time in delivery order. A redelivery
after a crash must change nothing, so every request is idempotent: a Spawn for a domain that
exists reports Spawned with its state, a Destroy of a missing domain reports Destroyed, a power
action already in effect reports ActionDone, attaching a volume that is attached or detaching
one that is not reports success. A spawn that fails replies SpawnFailed with the reason and
removes what it created.

Volumes: a Spawn's volumes become disks of the domain (with boot from volume, no image, the one
with boot_index 0 is vda); `agent.attach_volume` and `agent.detach_volume` hot-plug them
(`VirtDriver.attach_volume` / `detach_volume`), and the definition the agent keeps follows. The
agent never creates or deletes a volume's file: that is the storage agent's (`hostagent.volumes`).

Power-state sync, level-triggered: a libvirt lifecycle event makes the agent read that
server's state again, and every `sync_interval` it reads them all; it reports
`server.power_state` for each server whose state differs from what it last reported (all of
them after a start), NOSTATE for a server whose domain vanished (its instance directory is here,
or the control plane places it on this host). A server with an action in flight is skipped: the
action's reply carries its state. Each pass also reports what the host keeps (the `host`
service writes it to `host_domains`, which `actorstack doctor` compares with the database).

Networking: before it defines a domain the agent asks the host's networking (one
`HostNetworking` per kernel, shared by the agents of a process) to plug the server's ports —
bridge, tap, DHCP and metadata, converged from the desired state the internal API gives (where
the port actors recorded the binding) — and gives libvirt the taps; destroying a server unplugs
them.

The agent holds no database credentials (`hostagent/control.py`): it reads its placed servers,
the desired network state and images from the internal API with a token scoped to its host,
and reports its inventory, heartbeat and domains to the `host` service by the broker.

On start the agent adopts the domains that exist (it never starts, stops or redefines a
domain that is there: a guest keeps running across an agent's death and return, with the same
QEMU process); a volatile hypervisor (the test driver) has forgotten them, and the agent
defines them again from the definitions it kept and brings each back as its server was (running,
paused or shut off), so a warm restart of the process changes nothing for the user.
An instance whose server the control plane no longer places here (deleted while the agent was away,
moved, or unknown) is destroyed and its files removed, as Nova reaps running deleted instances;
a domain without an instance directory of this agent is never touched (another agent's, or
another cloud's, on a shared qemu:///system). It declares its queue before it reports its
inventory, so the scheduler never picks a host whose queue does not exist yet.
`stop()` finishes what was delivered, in the reverse order of `start()`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import msgspec
import structlog
from aio_pika.abc import AbstractRobustConnection

from actors.worker import BROKER_GONE
from hostagent import host
from hostagent.control import Control, ControlUnavailable
from hostagent.network import HostNetworking, NetworkingError, NullNetworking
from hostagent.qemu_img import QemuImgError
from hostagent.requests import Handler, RequestAgent
from hostagent.storage import InstanceStorage, StorageError, canonical_id
from hostagent.virt.base import (
    Disk,
    IllegalPowerAction,
    InstanceNotFound,
    InstanceSpec,
    Interface,
    VirtDriver,
    VirtError,
)
from protocol import Envelope, Message, ProtocolError, Target
from protocol import compute as m
from protocol import firewall as f
from protocol import volume as v
from protocol.hosts import ComputeHostReport, DomainsReport
from protocol.power import PowerAction
from protocol.states import PowerState, VmState

log = structlog.get_logger("hostagent")

# The power actions that bring a restored instance back to its server's vm_state.
_RESTORED_BY: dict[VmState, tuple[PowerAction, ...]] = {
    VmState.ACTIVE: (PowerAction.START,),
    VmState.PAUSED: (PowerAction.START, PowerAction.PAUSE),
}

# What ends one pass of the power-state sync without ending the sync.
SYNC_ERRORS: tuple[type[BaseException], ...] = (VirtError, OSError, *BROKER_GONE, ControlUnavailable)
VOLUME_FORMATS = frozenset({"qcow2", "raw"})
_DEVICE = re.compile(r"(?:/dev/)?(vd[a-z]{1,2})")


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    name: str
    state_dir: Path  # the agent's own: instances/, the test driver's node file
    availability_zone: str = "nova"
    host_ip: str = "127.0.0.1"
    tunnel_ip: str | None = None  # the underlay address VXLAN tunnels start from (None: none)
    heartbeat: float = 10.0
    sync_interval: float = 10.0
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    reserved_memory_mb: int | None = None  # None: 0 on a volatile (test) hypervisor, else Nova's 512
    prefetch: int = 32
    detach_timeout: float = 20.0  # how long a guest gets to release a volume (Nova: 20 s per attempt)


class VolumeRefused(Exception):
    """A volume connection this host cannot attach; `reason` is fit for the attachment's fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HostAgent(RequestAgent):
    role = "host"
    reply_kinds = ("server",)
    heartbeat_errors = (ControlUnavailable, *BROKER_GONE, VirtError)

    def __init__(
        self,
        settings: AgentSettings,
        control: Control,
        connection: AbstractRobustConnection,
        driver: VirtDriver,
        network: HostNetworking | NullNetworking | None = None,
    ) -> None:
        """The control plane, the connection and the networking are the caller's (it starts
        and stops them); the driver is opened by start() and closed by stop()."""
        super().__init__(
            settings.name, control, connection, prefetch=settings.prefetch, heartbeat=settings.heartbeat
        )
        self.settings = settings
        self.driver = driver
        self.network = network if network is not None else NullNetworking()
        self.storage = InstanceStorage(settings.state_dir, control)
        self._reported: dict[str, PowerState] = {}  # what the server actors last heard from us
        self._acted: dict[str, int] = {}  # per server: actions completed (tells a sync its read is stale)
        self.inventory: ComputeHostReport | None = None  # as last reported at start

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await super().start()
        log.info(
            "host agent started",
            host=self.name,
            queue=self.queue_name,
            virt_type=self.inventory.virt_type if self.inventory else None,
        )

    async def stop(self) -> None:
        """Graceful: no new requests, the delivered ones finished and replied, then closed."""
        await super().stop()
        log.info("host agent stopped", host=self.name)

    async def _start(self) -> None:
        await asyncio.to_thread(self.storage.instances_dir.mkdir, parents=True, exist_ok=True)
        await self._stack.enter_async_context(self.driver)
        await self._adopt()
        # Replies go to the server actors' shard queues: _open_queue makes sure they exist.
        await self._open_queue()
        await self._register()
        self._run_tasks(
            [
                ("heartbeat", self._heartbeat_loop()),
                ("power sync", self._sync_loop()),
                ("libvirt events", self._event_loop()),
            ]
        )
        await self._consume()

    # --- registration and heartbeat -------------------------------------------------------

    async def _register(self) -> None:
        info = await self.driver.host_info()
        disk_gb = await asyncio.to_thread(host.local_gb, self.storage.instances_dir)
        reserved = self.settings.reserved_memory_mb
        if reserved is None:
            reserved = 0 if self.driver.volatile else 512
        s = self.settings
        self.inventory = host.inventory(
            info,
            disk_gb,
            availability_zone=s.availability_zone,
            host_ip=s.host_ip,
            cpu_allocation_ratio=s.cpu_allocation_ratio,
            ram_allocation_ratio=s.ram_allocation_ratio,
            disk_allocation_ratio=s.disk_allocation_ratio,
            reserved_memory_mb=reserved,
            tunnel_ip=s.tunnel_ip,
        )
        await self.control.report(self.name, self.inventory)
        log.info(
            "compute host registered",
            host=self.name,
            vcpus=info.vcpus,
            memory_mb=info.memory_mb,
            local_gb=disk_gb,
            hypervisor=f"{info.hypervisor_type} {info.hypervisor_version}",
            hypervisor_hostname=info.hypervisor_hostname,
        )

    async def _beat(self) -> None:
        if self.inventory is None:
            await self._register()
        else:
            await self.control.report(self.name, msgspec.structs.replace(self.inventory, started=False))

    # --- adoption -------------------------------------------------------------------------

    async def _adopt(self) -> None:
        mine = await self.storage.existing()
        domains = await self.driver.instances()
        placed = await self.control.placed_servers(self.name) if mine else {}
        orphans = mine - set(placed)
        for server_id in sorted(orphans):
            await self._reap(server_id, existed=server_id in domains)
        mine -= orphans
        restored = 0
        if self.driver.volatile:
            for server_id in sorted(mine - set(domains)):
                if await self._restore(server_id, VmState(placed[server_id])):
                    restored += 1
        if mine or orphans:
            log.info(
                "instances adopted",
                host=self.name,
                adopted=len(mine & set(domains)),
                restored=restored,
                missing=len(mine - set(domains)) - restored,
                reaped=len(orphans),
            )

    async def _restore(self, server_id: str, vm_state: VmState) -> bool:
        """Define a volatile hypervisor's forgotten instance again from the definition kept here,
        and bring it back as its server was: running when active, paused when paused, shut off
        otherwise (a warm restart of the process changes nothing for the user)."""
        definition = await self.storage.definition(server_id)
        if definition is None:
            return False
        try:
            await self.driver.restore(definition)
            for action in _RESTORED_BY.get(vm_state, ()):
                await self.driver.power(server_id, action)
        except VirtError as exc:
            log.warning("could not restore an instance", server=server_id, error=exc.reason)
            return False
        return True

    async def _reap(self, server_id: str, *, existed: bool) -> None:
        """Destroy an orphan's domain, taps and files; a failure leaves it for the next start
        (and `actorstack doctor` lists it meanwhile)."""
        try:
            await self.driver.destroy(server_id)
            await self.network.unplug(server_id)
        except (VirtError, NetworkingError) as exc:
            log.warning("could not reap an orphaned instance", server=server_id, error=exc.reason)
            return
        await self.storage.remove(server_id)
        log.warning(
            "orphaned instance reaped: its server is deleted or unknown",
            server=server_id,
            domain_existed=existed,
        )

    # --- requests -------------------------------------------------------------------------

    def _handler_for(self, body: Message) -> Handler:
        if isinstance(body, m.Spawn):
            return self._spawn
        if isinstance(body, m.PowerActionOnHost):
            return self._power
        if isinstance(body, m.Destroy):
            return self._destroy
        if isinstance(body, v.AttachVolumeOnHost):
            return self._attach_volume
        if isinstance(body, v.DetachVolumeOnHost):
            return self._detach_volume
        if isinstance(body, m.ConsoleOutputOnHost):
            return self._console_output
        if isinstance(body, f.RefreshFirewall):
            return self._refresh_firewall
        raise ProtocolError(f"a host agent does not handle {body.TYPE!r}")

    def _subject(self, body: Message) -> Target:
        if isinstance(body, f.RefreshFirewall):
            return Target("security_group", body.security_group_id or "-")  # no reply goes to it
        return Target("server", str(body.server_id))  # type: ignore[attr-defined]

    async def _refresh_firewall(self, msg: f.RefreshFirewall) -> None:
        """A security group this host filters by changed: the firewall pass runs now (it
        coalesces with one in flight, and does not keep the request waiting)."""
        self.network.refresh_firewall()
        return None

    def _handled(self, key: str) -> None:
        self._acted[key] = self._acted.get(key, 0) + 1

    # --- the server's requests ---------------------------------------------------------------

    async def _spawn(self, msg: m.Spawn) -> Message:
        try:
            server_id = canonical_id(msg.server_id, "server id")
        except StorageError as exc:
            return m.SpawnFailed(host=self.name, reason=exc.reason)
        existing = await self.driver.power_state(server_id)
        if existing is not None:
            log.info("the domain exists already; reporting it", power_state=existing.name)
            self._reported[server_id] = existing
            return m.Spawned(host=self.name, power_state=existing)
        flavor = msg.flavor
        try:
            root, volumes = await self._volume_disks(msg)
            interfaces = await self._plug(server_id, msg.ports)
            local = await self.storage.create(
                server_id,
                msg.image_id,
                root_gb=flavor.disk,
                ephemeral_gb=flavor.ephemeral,
                swap_mb=flavor.swap,
            )
            spec = InstanceSpec(
                uuid=server_id,
                name=msg.name,
                vcpus=flavor.vcpus,
                memory_mb=flavor.ram,
                disks=(*root, *local, *volumes),
                console_log=self.storage.paths(server_id).console_log,
                flavor_name=flavor.name,
                interfaces=interfaces,
            )
            await self.storage.save_definition(server_id, self.driver.describe(spec))
            state = await self.driver.spawn(spec)
        except (StorageError, VirtError, QemuImgError, NetworkingError, OSError, VolumeRefused) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            log.warning("spawn failed; cleaning up", reason=reason)
            await self._clean_up(server_id)
            return m.SpawnFailed(host=self.name, reason=reason)
        # Only here is a domain really created (a redelivered Spawn reports the existing one):
        # the fault tests count these lines to prove no domain is ever created twice.
        log.info("domain created", power_state=state.name)
        self._reported[server_id] = state
        return m.Spawned(host=self.name, power_state=state)

    async def _volume_disks(self, msg: m.Spawn) -> tuple[tuple[Disk, ...], tuple[Disk, ...]]:
        """The spawn's volumes as disks: (the root volume, or nothing; the others). Without an
        image, the volume with boot_index 0 is the root disk, vda; with one, the image is vda."""
        root: list[Disk] = []
        others: list[Disk] = []
        for block in msg.volumes:
            disk = await self._volume_disk(block.device, block.connection)
            if msg.image_id is None and block.boot_index == 0 and not root:
                root.append(dataclasses.replace(disk, device="vda"))
            elif disk.device == "vda" and (
                msg.image_id is not None or any(b.boot_index == 0 for b in msg.volumes)
            ):
                raise VolumeRefused(
                    f"Volume {block.connection.volume_id} cannot be vda: that is the root disk."
                )
            else:
                others.append(disk)
        return tuple(root), tuple(others)

    async def _volume_disk(self, device: str, connection: v.VolumeConnection) -> Disk:
        """The disk for a volume connection, which must be one this host can attach: a file
        that exists here, as qcow2 or raw, at a virtio disk's device name."""
        try:
            volume_id = canonical_id(connection.volume_id, "volume id")
        except StorageError as exc:
            raise VolumeRefused(exc.reason) from None
        match = _DEVICE.fullmatch(device)
        if match is None:
            raise VolumeRefused(
                f"Invalid device {device!r} for volume {volume_id}: expected /dev/vdb, /dev/vdc, …"
            )
        if connection.driver != "file":
            raise VolumeRefused(
                f"Volume {volume_id} has driver {connection.driver!r}; this host attaches file volumes only."
            )
        if connection.format not in VOLUME_FORMATS:
            raise VolumeRefused(
                f"Volume {volume_id} is in format {connection.format!r}; only qcow2 and raw are attached."
            )
        path = Path(connection.path)
        if not path.is_absolute() or ".." in path.parts or not await asyncio.to_thread(path.is_file):
            raise VolumeRefused(
                f"Volume {volume_id} is not reachable from this host (no file {connection.path})."
            )
        return Disk(path, connection.format, device=match.group(1), serial=volume_id)

    async def _plug(self, server_id: str, ports: list[str]) -> tuple[Interface, ...]:
        """The server's NICs, plugged; every port the server actor named must be among them
        (when this host has networking at all)."""
        vifs = await self.network.plug(server_id)
        if isinstance(self.network, HostNetworking):
            missing = set(ports) - {vif.port_id for vif in vifs}
            if missing:
                raise NetworkingError(f"port {sorted(missing)[0]} is not bound to host {self.name}")
        return tuple(Interface(mac_address=vif.mac_address, tap=vif.tap, mtu=vif.mtu) for vif in vifs)

    async def _clean_up(self, server_id: str) -> None:
        """Remove what a failed spawn created (nothing existed when it began)."""
        try:
            await self.driver.destroy(server_id)
        except VirtError as exc:
            log.error("could not remove the domain of a failed spawn", reason=exc.reason)
        try:
            await self.network.unplug(server_id)
        except NetworkingError as exc:
            log.error("could not unplug the taps of a failed spawn", reason=exc.reason)
        await self.storage.remove(server_id)
        self._reported.pop(server_id, None)

    async def _power(self, msg: m.PowerActionOnHost) -> Message:
        action = msg.action  # a PowerAction: the protocol refuses any other value
        try:
            server_id = canonical_id(msg.server_id, "server id")
        except StorageError as exc:
            return m.ActionFailed(action=action, reason=exc.reason)
        try:
            state = await self.driver.power(server_id, action)
        except InstanceNotFound as exc:
            return m.ActionFailed(action=action, reason=exc.reason, power_state=PowerState.NOSTATE)
        except IllegalPowerAction as exc:
            return m.ActionFailed(action=action, reason=exc.reason, power_state=exc.state)
        except VirtError as exc:
            now = await self._state_or_none(server_id)
            return m.ActionFailed(action=action, reason=exc.reason, power_state=now)
        self._reported[server_id] = state
        return m.ActionDone(action=action, power_state=state)

    async def _state_or_none(self, server_id: str) -> PowerState | None:
        """The state now (NOSTATE when the domain is gone), or None if libvirt cannot tell."""
        try:
            state = await self.driver.power_state(server_id)
        except VirtError:
            return None
        return PowerState.NOSTATE if state is None else state

    async def _destroy(self, msg: m.Destroy) -> Message:
        try:
            server_id = canonical_id(msg.server_id, "server id")
        except StorageError:
            return m.Destroyed(host=self.name)  # nothing of ours can carry that name
        existed = await self.driver.destroy(server_id)  # VirtError: retried via the queue
        await self.network.unplug(server_id)  # NetworkingError: retried via the queue
        removed = await self.storage.remove(server_id)
        self._reported.pop(server_id, None)
        log.info("instance destroyed", domain_existed=existed, files_existed=removed)
        return m.Destroyed(host=self.name)

    async def _console_output(self, msg: m.ConsoleOutputOnHost) -> Message:
        """The last `max_bytes` of the server's console log (None: no such instance here)."""
        try:
            path = self.storage.paths(msg.server_id).console_log
        except StorageError:
            return m.ConsoleLog(output=None)
        return m.ConsoleLog(output=await asyncio.to_thread(_read_tail, path, max(0, msg.max_bytes)))

    # --- power-state sync -----------------------------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self.sync()
            except SYNC_ERRORS as exc:
                log.warning("power-state sync failed; will retry", host=self.name, error=repr(exc))
            await asyncio.sleep(self.settings.sync_interval)

    async def sync(self) -> int:
        """Report every server whose power state changed since it was last reported; how many."""
        acted = dict(self._acted)
        domains = await self.driver.instances()
        mine = await self.storage.existing()
        placed = set(await self.control.placed_servers(self.name))
        report = DomainsReport(
            domains={
                server_id: int(domains[server_id]) if server_id in domains else None for server_id in mine
            }
        )
        await self.control.report(self.name, report)
        reported = 0
        for server_id in sorted(mine | placed):
            async with self._locks.try_hold(server_id) as held:
                if not held or self._acted.get(server_id) != acted.get(server_id):
                    continue  # an action is (or was, since we read) in flight: its reply told the state
                if await self._report_if_changed(server_id, domains.get(server_id, PowerState.NOSTATE)):
                    reported += 1
        for server_id in (set(self._reported) | set(self._acted)) - mine - placed:  # destroyed: forget them
            if not self._locks.busy(server_id):
                self._reported.pop(server_id, None)
                self._acted.pop(server_id, None)
        return reported

    async def _event_loop(self) -> None:
        async for event in self.driver.events():
            try:
                await self._sync_one(event.uuid)
            except SYNC_ERRORS as exc:
                log.warning("could not report a lifecycle event", server=event.uuid, error=repr(exc))

    async def _sync_one(self, server_id: str) -> None:
        async with self._locks.try_hold(server_id) as held:
            if not held:
                return
            if not await asyncio.to_thread(self.storage.paths(server_id).directory.is_dir):
                return  # not an instance of this agent's (or already destroyed)
            state = await self.driver.power_state(server_id)
            await self._report_if_changed(server_id, PowerState.NOSTATE if state is None else state)

    async def _report_if_changed(self, server_id: str, state: PowerState) -> bool:
        if self._reported.get(server_id) == state:
            return False
        report = m.PowerStateReport(host=self.name, power_state=state)
        await self._publish(Envelope.new(Target("server", server_id), report))
        self._reported[server_id] = state
        log.info("power state reported", server=server_id, power_state=state.name)
        return True

    # --- volumes ----------------------------------------------------------------------------

    async def _attach_volume(self, msg: v.AttachVolumeOnHost) -> Message:
        def failed(reason: str) -> Message:
            log.warning("volume attach failed", volume=msg.connection.volume_id, reason=reason)
            return v.VolumeAttachToServerFailed(
                attachment_id=msg.attachment_id, volume_id=msg.connection.volume_id, reason=reason
            )

        try:
            server_id = canonical_id(msg.server_id, "server id")
            disk = await self._volume_disk(msg.device, msg.connection)
            await self.driver.attach_volume(server_id, disk)
        except (StorageError, VolumeRefused, VirtError) as exc:
            return failed(exc.reason)  # VirtError but InstanceNotFound: libvirt refused, nothing changed
        await self._save_definition(server_id)
        log.info("volume attached", volume=disk.serial, device=disk.device)
        return v.VolumeAttachedToServer(attachment_id=msg.attachment_id, volume_id=msg.connection.volume_id)

    async def _detach_volume(self, msg: v.DetachVolumeOnHost) -> Message:
        def failed(reason: str) -> Message:
            log.warning("volume detach failed", volume=msg.volume_id, reason=reason)
            return v.VolumeDetachFromServerFailed(
                attachment_id=msg.attachment_id, volume_id=msg.volume_id, reason=reason
            )

        detached = v.VolumeDetachedFromServer(attachment_id=msg.attachment_id, volume_id=msg.volume_id)
        try:
            server_id = canonical_id(msg.server_id, "server id")
            volume_id = canonical_id(msg.volume_id, "volume id")
        except StorageError:
            return detached  # nothing of ours can carry that name
        match = _DEVICE.fullmatch(msg.device)
        if match is None:
            return failed(f"Invalid device {msg.device!r}: expected /dev/vdb, /dev/vdc, …")
        try:
            existed = await self.driver.detach_volume(
                server_id, match.group(1), serial=volume_id, timeout=self.settings.detach_timeout
            )
        except InstanceNotFound:
            return detached  # no domain: the volume is attached to nothing here
        except VirtError as exc:
            return failed(exc.reason)
        await self._save_definition(server_id)
        log.info("volume detached", volume=volume_id, was_attached=existed)
        return detached

    async def _save_definition(self, server_id: str) -> None:
        """Keep the instance's saved definition in step with the hypervisor's (a volatile one is
        restored from it)."""
        if not await asyncio.to_thread(self.storage.paths(server_id).directory.is_dir):
            return  # a domain without an instance directory is not one of ours to keep
        definition = await self.driver.definition(server_id)
        if definition is not None:
            await self.storage.save_definition(server_id, definition)


def _read_tail(path: Path, limit: int) -> bytes | None:
    """The last `limit` bytes of the file; None if there is none."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - limit))
            return f.read(limit)
    except FileNotFoundError:
        return None
