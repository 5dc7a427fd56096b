"""The host agent: a compute host's hands. It carries out `agent.*` requests and reports.

A HostAgent consumes its own durable quorum queue `agent.<name>` (single-active-consumer: a
second agent started with the same name waits as a standby). For each request it does the work
on the host (image cache, disks, domain) and replies to the server actor, publishing with
publisher confirms, and only then acknowledges the request. A crash in between means a
redelivery, so every request is idempotent: a Spawn for a domain that exists reports Spawned
with its state, a Destroy of a missing domain reports Destroyed, a power action already in
effect reports ActionDone. A reply's message id is derived from the request's, so the server
actor's inbox recognises the reply to a redelivered request as a duplicate.

Requests for different servers run concurrently (up to `prefetch`); those for one server run
one at a time, in delivery order (a lock per server id, taken before the handler's first
await). A spawn that fails replies SpawnFailed with the reason and removes what it created.

Power-state sync, level-triggered: a libvirt lifecycle event makes the agent read that
server's state again, and every `sync_interval` it reads them all; it reports
`server.power_state` for each server whose state differs from what it last reported (all of
them after a start), NOSTATE for an instance directory whose domain vanished. A server with an
action in flight is skipped: the action's reply carries its state.

Networking: before it defines a domain the agent asks the host's networking (one
`HostNetworking` per kernel, shared by the agents of a process) to plug the server's ports —
bridge, tap, DHCP and metadata, converged from the database where the port actors recorded the
binding — and gives libvirt the taps; destroying a server unplugs them.

On start the agent adopts the domains that exist (it never starts, stops or redefines a
domain that is there); a volatile hypervisor (the test driver) has forgotten them, and the
agent defines them again, shut off, from the definitions it kept, as a host reboot would
leave them. It declares its queue before it registers its `compute_hosts` row, so the
scheduler never picks a host whose queue does not exist yet. `stop()` finishes what was
delivered, in the reverse order of `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Self

import aio_pika
import asyncpg
import msgspec
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from actors import amqp, db
from actors.outbox import OutboxRow
from actors.turn import record_fault
from actors.worker import BROKER_GONE
from hostagent import host
from hostagent.locks import KeyedLocks
from hostagent.network import HostNetworking, NetworkingError, NullNetworking
from hostagent.qemu_img import QemuImgError
from hostagent.storage import InstanceStorage, StorageError, canonical_id
from hostagent.virt.base import (
    Action,
    IllegalPowerAction,
    InstanceNotFound,
    InstanceSpec,
    Interface,
    PowerState,
    VirtDriver,
    VirtError,
)
from protocol import Envelope, Message, ProtocolError, Target, decode, encode
from protocol import compute as m
from protocol.routing import (
    ACTOR_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    ORIGIN_QUEUE_HEADER,
    REASON_HEADER,
    agent_queue,
    route,
)

log = structlog.get_logger("hostagent")

# Replies get uuid5(this, request id): the same request always gets the same reply id.
REPLY_NAMESPACE = uuidlib.UUID("6d1f3c1e-9a57-4f0b-8f3e-5b0a8f1c2d7e")
RETRY_DELAY = 1.0  # before a request whose handling raised unexpectedly goes back to the queue
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
# What ends one pass of the power-state sync without ending the sync.
SYNC_ERRORS: tuple[type[BaseException], ...] = (VirtError, OSError, *BROKER_GONE)


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    name: str
    state_dir: Path  # the agent's own: instances/, the test driver's node file
    image_dir: Path  # where the Image API keeps image bytes (<images>/<image id>)
    availability_zone: str = "nova"
    host_ip: str = "127.0.0.1"
    heartbeat: float = 10.0
    sync_interval: float = 10.0
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    reserved_memory_mb: int | None = None  # None: 0 on a volatile (test) hypervisor, else Nova's 512
    prefetch: int = 32


class HostAgent:
    def __init__(self, settings: AgentSettings, pool: asyncpg.Pool, connection: AbstractRobustConnection,
                 driver: VirtDriver, network: HostNetworking | NullNetworking | None = None) -> None:
        """The pool, the connection and the networking are the caller's (it starts and stops
        them); the driver is opened by start() and closed by stop()."""
        self.settings = settings
        self.name = settings.name
        self.pool = pool
        self.connection = connection
        self.driver = driver
        self.network = network if network is not None else NullNetworking()
        self.storage = InstanceStorage(settings.state_dir, settings.image_dir)
        self.queue_name = agent_queue(settings.name)
        self._locks = KeyedLocks()
        self._reported: dict[str, PowerState] = {}  # what the server actors last heard from us
        self._acted: dict[str, int] = {}  # per server: actions completed (tells a sync its read is stale)
        self._handlers: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()
        self._stopping = False
        self._shards = 0
        self._exchange: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self.inventory: host.Inventory | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        log.info("host agent started", host=self.name, queue=self.queue_name,
                 virt_type=self.inventory.virt_type if self.inventory else None)

    async def stop(self) -> None:
        """Graceful: no new requests, the delivered ones finished and replied, then closed."""
        await self._stack.aclose()
        log.info("host agent stopped", host=self.name)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _start(self) -> None:
        stack = self._stack
        self._shards = int(await db.cluster_setting(self.pool, "shards"))  # type: ignore[call-overload]
        await asyncio.to_thread(self.storage.instances_dir.mkdir, parents=True, exist_ok=True)
        await stack.enter_async_context(self.driver)
        await self._adopt()

        publisher = await self.connection.channel(publisher_confirms=True)
        stack.push_async_callback(_close_channel, publisher)
        # Replies go to the server actors' shard queues: make sure they exist (idempotent, and
        # the same declaration every runtime process makes).
        await amqp.declare_topology(publisher, ["server"], self._shards)
        self._exchange = await publisher.get_exchange(ACTOR_EXCHANGE, ensure=False)

        consumer = await self.connection.channel()
        stack.push_async_callback(_close_channel, consumer)
        await consumer.set_qos(prefetch_count=self.settings.prefetch)
        self._queue = await consumer.declare_queue(
            self.queue_name, durable=True, arguments=amqp.shard_queue_arguments())
        await self._queue.bind(ACTOR_EXCHANGE, routing_key=self.queue_name)

        await self._register()
        stack.push_async_callback(self._cancel_tasks)
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat {self.name}"),
            asyncio.create_task(self._sync_loop(), name=f"power sync {self.name}"),
            asyncio.create_task(self._event_loop(), name=f"libvirt events {self.name}"),
        ]
        stack.push_async_callback(self._drain)
        self._consumer_tag = await self._queue.consume(self._on_message)

    async def _drain(self) -> None:
        self._stopping = True
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(*BROKER_GONE):
                await self._queue.cancel(self._consumer_tag)
        while self._handlers:
            await asyncio.gather(*list(self._handlers), return_exceptions=True)

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- registration and heartbeat -------------------------------------------------------

    async def _register(self) -> None:
        info = await self.driver.host_info()
        disk_gb = await asyncio.to_thread(host.local_gb, self.storage.instances_dir)
        reserved = self.settings.reserved_memory_mb
        if reserved is None:
            reserved = 0 if self.driver.volatile else 512
        s = self.settings
        self.inventory = host.inventory(
            self.name, info, disk_gb, availability_zone=s.availability_zone, host_ip=s.host_ip,
            cpu_allocation_ratio=s.cpu_allocation_ratio, ram_allocation_ratio=s.ram_allocation_ratio,
            disk_allocation_ratio=s.disk_allocation_ratio, reserved_memory_mb=reserved,
        )
        await host.register(self.pool, self.inventory)
        log.info("compute host registered", host=self.name, vcpus=info.vcpus, memory_mb=info.memory_mb,
                 local_gb=disk_gb, hypervisor=f"{info.hypervisor_type} {info.hypervisor_version}",
                 hypervisor_hostname=info.hypervisor_hostname)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                if not await host.heartbeat(self.pool, self.name):
                    log.warning("compute host row is gone; registering again", host=self.name)
                    await self._register()
            except (*DB_ERRORS, VirtError) as exc:
                log.warning("heartbeat failed; will retry", host=self.name, error=repr(exc))

    # --- adoption -------------------------------------------------------------------------

    async def _adopt(self) -> None:
        mine = await self.storage.existing()
        domains = await self.driver.instances()
        restored = 0
        if self.driver.volatile:
            for server_id in sorted(mine - set(domains)):
                definition = await self.storage.definition(server_id)
                if definition is None:
                    continue
                try:
                    await self.driver.restore(definition)
                    restored += 1
                except VirtError as exc:
                    log.warning("could not restore an instance's definition", server=server_id, error=exc.reason)
        if mine:
            log.info("instances adopted", host=self.name, running=len(mine & set(domains)), restored=restored,
                     missing=len(mine - set(domains)) - restored)

    # --- requests -------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            return  # not acked: the broker gives it back when the channel closes
        task = asyncio.create_task(self._dispatch(message), name=f"request on {self.queue_name}")
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _dispatch(self, message: AbstractIncomingMessage) -> None:
        envelope: Envelope | None = None
        try:
            envelope = decode(message.body)
            if envelope.target != Target("agent", self.name):
                raise ProtocolError(f"message for {envelope.target.kind}/{envelope.target.id} "
                                    f"arrived on {self.queue_name}")
            handler = self._handler_for(envelope.body)
        except ProtocolError as exc:
            await self._settle(message, self._dead_letter(message, envelope, exc.reason))
            return
        server_id = str(envelope.body.server_id)  # type: ignore[attr-defined]
        with structlog.contextvars.bound_contextvars(
            correlation_id=envelope.correlation_id, message_id=envelope.id, server=server_id,
            message_type=envelope.type, host=self.name,
        ):
            await self._settle(message, self._handle(message, envelope, server_id, handler))

    def _handler_for(self, body: Message) -> Callable[[Any], Awaitable[Message]]:
        if isinstance(body, m.Spawn):
            return self._spawn
        if isinstance(body, m.PowerAction):
            return self._power
        if isinstance(body, m.Destroy):
            return self._destroy
        raise ProtocolError(f"a host agent does not handle {body.TYPE!r}")

    async def _settle(self, message: AbstractIncomingMessage, work: Awaitable[None]) -> None:
        """Run the work that ends in the delivery's ack, with one failure policy for all."""
        try:
            await work
        except BROKER_GONE as exc:
            # Unacknowledged: the broker redelivers it, and every handler is idempotent.
            log.warning("broker went away while handling a request", error=repr(exc))
        except Exception:
            # A bug, or a failure that is not the request's (libvirt cannot destroy a domain, the
            # database is away): back to the queue after a pause; the queue's delivery limit
            # dead-letters it to the runtime's intake if it never passes.
            log.exception("request failed; returning it to the queue")
            await asyncio.sleep(RETRY_DELAY)
            with contextlib.suppress(*BROKER_GONE):
                await message.nack(requeue=True)

    async def _handle(self, message: AbstractIncomingMessage, envelope: Envelope, server_id: str,
                      handler: Callable[[Any], Awaitable[Message]]) -> None:
        async with self._locks.hold(server_id):
            reply = await handler(envelope.body)
            await self._publish(self._reply(envelope, server_id, reply))
            self._acted[server_id] = self._acted.get(server_id, 0) + 1
            log.info("request handled", reply=reply.TYPE)
        await message.ack()

    def _reply(self, request: Envelope, server_id: str, body: Message) -> Envelope:
        envelope = Envelope.new(Target("server", server_id), body, cause=request)
        return msgspec.structs.replace(envelope, id=str(uuidlib.uuid5(REPLY_NAMESPACE, request.id)))

    async def _publish(self, envelope: Envelope) -> None:
        assert self._exchange is not None
        await self._exchange.publish(
            aio_pika.Message(encode(envelope), message_id=envelope.id, content_type="application/json",
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            route(envelope.target.kind, envelope.target.id, self._shards),
        )

    async def _dead_letter(self, message: AbstractIncomingMessage, envelope: Envelope | None, reason: str) -> None:
        """An undecodable or misdirected request ends as the runtime's dead letters do: recorded
        in `dead_letters` and queued (through the outbox, in the same transaction) for the
        dead-letter queue; then acked."""
        log.warning("dead-lettering a request the agent cannot handle", queue=self.queue_name, reason=reason)
        copy = OutboxRow(
            envelope.id if envelope is not None else str(uuidlib.uuid4()), DEAD_LETTER_EXCHANGE, "",
            message.body, headers={REASON_HEADER: reason[:1000], ORIGIN_QUEUE_HEADER: self.queue_name},
        )
        async with self.pool.acquire() as conn:
            await record_fault(conn, None, envelope, queue=self.queue_name, raw=message.body, reason=reason,
                               details="", member_id=f"agent:{self.name}", dead_letter=copy)
        await message.ack()

    # --- the three requests ---------------------------------------------------------------

    async def _spawn(self, msg: m.Spawn) -> Message:
        try:
            server_id = canonical_id(msg.server_id, "server id")
        except StorageError as exc:
            return m.SpawnFailed(host=self.name, reason=exc.reason)
        existing = await self.driver.power_state(server_id)
        if existing is not None:
            log.info("the domain exists already; reporting it", power_state=existing.name)
            self._reported[server_id] = existing
            return m.Spawned(host=self.name, power_state=int(existing))
        flavor = msg.flavor
        try:
            interfaces = await self._plug(server_id, msg.ports)
            disks = await self.storage.create(server_id, msg.image_id, root_gb=flavor.disk,
                                              ephemeral_gb=flavor.ephemeral, swap_mb=flavor.swap)
            spec = InstanceSpec(uuid=server_id, name=msg.name, vcpus=flavor.vcpus, memory_mb=flavor.ram,
                                disks=disks, console_log=self.storage.paths(server_id).console_log,
                                flavor_name=flavor.name, interfaces=interfaces)
            await self.storage.save_definition(server_id, self.driver.describe(spec))
            state = await self.driver.spawn(spec)
        except (StorageError, VirtError, QemuImgError, NetworkingError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            log.warning("spawn failed; cleaning up", reason=reason)
            await self._clean_up(server_id)
            return m.SpawnFailed(host=self.name, reason=reason)
        self._reported[server_id] = state
        return m.Spawned(host=self.name, power_state=int(state))

    async def _plug(self, server_id: str, ports: list[str]) -> tuple[Interface, ...]:
        """The server's NICs, plugged; every port the server actor named must be among them
        (when this host has networking at all)."""
        vifs = await self.network.plug(server_id)
        if isinstance(self.network, HostNetworking):
            missing = set(ports) - {vif.port_id for vif in vifs}
            if missing:
                raise NetworkingError(f"port {sorted(missing)[0]} is not bound to host {self.name}")
        return tuple(Interface(mac_address=v.mac_address, tap=v.tap, mtu=v.mtu) for v in vifs)

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

    async def _power(self, msg: m.PowerAction) -> Message:
        try:
            action = Action(msg.action)
            server_id = canonical_id(msg.server_id, "server id")
        except ValueError:
            return m.ActionFailed(action=msg.action, reason=f"Unknown power action {msg.action!r}.")
        except StorageError as exc:
            return m.ActionFailed(action=msg.action, reason=exc.reason)
        try:
            state = await self.driver.power(server_id, action)
        except InstanceNotFound as exc:
            return m.ActionFailed(action=action.value, reason=exc.reason, power_state=int(PowerState.NOSTATE))
        except IllegalPowerAction as exc:
            return m.ActionFailed(action=action.value, reason=exc.reason, power_state=int(exc.state))
        except VirtError as exc:
            now = await self._state_or_none(server_id)
            return m.ActionFailed(action=action.value, reason=exc.reason,
                                  power_state=None if now is None else int(now))
        self._reported[server_id] = state
        return m.ActionDone(action=action.value, power_state=int(state))

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
        reported = 0
        for server_id in sorted(mine):
            async with self._locks.try_hold(server_id) as held:
                if not held or self._acted.get(server_id) != acted.get(server_id):
                    continue  # an action is (or was, since we read) in flight: its reply told the state
                if await self._report_if_changed(server_id, domains.get(server_id, PowerState.NOSTATE)):
                    reported += 1
        for server_id in (set(self._reported) | set(self._acted)) - mine:  # destroyed: forget them
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
        report = m.PowerStateReport(host=self.name, power_state=int(state))
        await self._publish(Envelope.new(Target("server", server_id), report))
        self._reported[server_id] = state
        log.info("power state reported", server=server_id, power_state=state.name)
        return True


async def _close_channel(channel: AbstractChannel) -> None:
    with contextlib.suppress(*BROKER_GONE):
        await channel.close()
