"""The actor runtime: owns shard queues and runs one transactional turn per message.

A Runtime hosts a set of actor kinds. For each (kind, shard) it has a QueueWorker, subscribed
while this process holds the shard's lease; the balancer spreads the leases over the live
runtime processes and takes over the shards of a process that died. Beside the workers the
runtime owns the outbox relay, the timer wheel, the membership heartbeat, the dead-letter
intake and the passivation sweep; `stop()` ends them in reverse order after the turns in
progress (and every message already delivered) are finished.

Failure policy for a delivery:
- undecodable (malformed, unknown type or version, wrong queue): dead-lettered with the reason;
- the database or broker is away: the turn is retried with capped back-off, without limit
  (nothing half-written: a turn is one transaction);
- the handler raises: retried `handler_attempts` times with back-off, then the message is
  dead-lettered and the actor put in its error state with a recorded fault;
- the process dies mid-turn: the broker redelivers; after `x-delivery-limit` deliveries it
  dead-letters to the intake, which records the fault the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from actors import amqp, db
from actors.activations import Activations
from actors.crashpoints import crashpoint
from actors.kind import ActorKind
from actors.leases import LeaseSessionLost, ShardLeases, lease_key
from actors.membership import Membership, new_member_id, preferred_owner
from actors.outbox import OutboxRow, Relay
from actors.service import ServiceKind
from actors.timers import TimerWheel
from actors.turn import HandlerError, TurnResult, fault_details, record_fault, run_service_turn, run_turn
from actors.worker import BROKER_GONE, QueueWorker
from protocol import Envelope, ProtocolError, decode
from protocol.routing import DEAD_LETTER_EXCHANGE, ORIGIN_QUEUE_HEADER, REASON_HEADER, queue_name, shard_of

log = structlog.get_logger("actors.runtime")

# Errors that mean "the infrastructure is away for now", not "this message is bad".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    db.PROTOCOL_LOST,  # a connection the database closed in a shutdown (actors/db.py)
)
# What a shard-balancing pass survives: the database or the broker away, or a refused query.
_BALANCE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError, *BROKER_GONE)


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    prefetch: int = 32
    handler_attempts: int = 5
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    passivate_after: float = 300.0
    max_activations: int = 100_000
    heartbeat: float = 1.0
    member_timeout: float = 5.0
    lease_poll: float = 0.25  # how often shard ownership is balanced (s)
    takeover_grace: int = (
        4  # polls a shard stays free before a member that is not its preferred owner takes it
    )
    inbox_retention_days: int = 7


class Runtime:
    def __init__(
        self,
        pool: asyncpg.Pool,
        connection: AbstractRobustConnection,
        kinds: Iterable[ActorKind | ServiceKind],
        *,
        shards: int,
        settings: RuntimeSettings | None = None,
        member_id: str | None = None,
    ) -> None:
        self.pool = pool
        self.connection = connection
        self.kinds = {k.name: k for k in kinds}
        self.shards = shards
        self.settings = settings or RuntimeSettings()
        self.member_id = member_id or new_member_id()
        self.activations = Activations(
            idle_after=self.settings.passivate_after, capacity=self.settings.max_activations
        )
        self.relay = Relay(pool, connection)
        self.timers = TimerWheel(pool, self.relay.wake)
        self.relay.on_notify.append(self.timers.wake)  # a timer armed by the API (actors/firewall.py)
        self.leases = ShardLeases(pool)
        self.membership = Membership(
            pool,
            self.member_id,
            sorted(self.kinds),
            heartbeat=self.settings.heartbeat,
            timeout=self.settings.member_timeout,
        )
        self.workers: dict[str, QueueWorker] = {}
        self._intake: QueueWorker | None = None
        self._free_polls: dict[str, int] = {}
        # Shards taken over for a member that left them free (queue -> loop time until which
        # they are kept even though that member is still listed as preferred; see _balance).
        self._standing_in: dict[str, float] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self.counters = {"applied": 0, "duplicate": 0, "rejected": 0, "dead_lettered": 0}

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        channel = await self.connection.channel()
        await amqp.declare_topology(channel, self.kinds, self.shards)
        await channel.close()
        self._tasks = [
            asyncio.create_task(self.relay.run(), name="outbox relay"),
            asyncio.create_task(self.timers.run(), name="timer wheel"),
            asyncio.create_task(self._sweep(), name="passivation sweep"),
        ]
        prefetch = self.settings.prefetch
        for kind in self.kinds.values():
            for shard in range(self.shards):
                name = queue_name(kind.name, shard)
                worker = QueueWorker(
                    name,
                    kind.name,
                    functools.partial(self.handle, kind, name),
                    prefetch=prefetch,
                    on_release=functools.partial(self._forget_shard, kind.name, shard),
                )
                await worker.start(self.connection)
                self.workers[name] = worker
        self._intake = QueueWorker(
            amqp.DEAD_INTAKE_QUEUE, "", self._handle_broker_dead_letter, prefetch=prefetch
        )
        await self._intake.start(self.connection)
        await self._intake.subscribe()
        self.membership.members = await self.membership.beat()
        await self._balance()
        self._tasks.append(asyncio.create_task(self.membership.run(), name="membership"))
        self._tasks.append(asyncio.create_task(self._balance_loop(), name="shard balancer"))
        log.info(
            "runtime started",
            member=self.member_id,
            kinds=sorted(self.kinds),
            shards=self.shards,
            owned=len(self.leases.held),
        )

    async def stop(self) -> None:
        """Graceful: no new deliveries, every delivered message handled, the outbox flushed."""
        self._stopping = True
        for task in self._tasks[3:]:  # membership and balancer first: no more shard moves
            task.cancel()
        await asyncio.gather(*self._tasks[3:], return_exceptions=True)
        workers = [*self.workers.values(), *([self._intake] if self._intake else [])]
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        await self.leases.close()
        for task in self._tasks[:3]:
            task.cancel()
        await asyncio.gather(*self._tasks[:3], return_exceptions=True)
        with contextlib.suppress(*TRANSIENT_ERRORS, *BROKER_GONE):
            await asyncio.wait_for(self.relay.drain(), timeout=10)
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await self.membership.leave()
        log.info("runtime stopped", member=self.member_id, **self.counters)

    # --- shard ownership ------------------------------------------------------------------

    async def _balance_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_poll)
            try:
                await self._balance()
            except asyncio.CancelledError:
                raise
            except _BALANCE_ERRORS as exc:
                log.warning("shard balancing failed; will retry", error=repr(exc))

    async def _balance(self) -> None:
        """Give up the shards another live member prefers; take the free ones we prefer, and
        free ones nobody took for `takeover_grace` polls (their preferred owner is gone)."""
        try:
            taken = await self.leases.held_anywhere()
        except LeaseSessionLost:
            log.warning("lost the shard leases with the database session; unsubscribing")
            await asyncio.gather(*(w.unsubscribe() for w in self.workers.values() if w.subscribed))
            return
        members = self.membership.members

        def preferred_here(queue: str) -> bool:
            return preferred_owner(queue, members[self.workers[queue].kind]) == self.member_id

        now = asyncio.get_running_loop().time()
        leaving = [
            q for q in self.leases.held if not preferred_here(q) and self._standing_in.get(q, 0.0) <= now
        ]
        await asyncio.gather(*(self._give_up(self.workers[q]) for q in leaving))

        wanted = []
        standing_in: set[str] = set()
        for queue in self.workers:
            if queue in self.leases.held:
                if preferred_here(queue):
                    self._standing_in.pop(queue, None)
                continue
            if lease_key(queue) in taken:
                self._free_polls.pop(queue, None)
            elif preferred_here(queue):
                wanted.append(queue)
            else:
                self._free_polls[queue] = self._free_polls.get(queue, 0) + 1
                if self._free_polls[queue] >= self.settings.takeover_grace:
                    wanted.append(queue)
                    standing_in.add(queue)
        got = await self.leases.try_acquire(wanted)
        for queue in got:
            self._free_polls.pop(queue, None)
            if queue in standing_in:
                # Its preferred owner left it free for the grace polls: most likely it died and
                # is still listed until its heartbeat times out. Giving the shard back at the
                # next poll would leave it unconsumed again for the grace polls, over and over
                # until then; keep it that long instead (a slow but live owner gets it after).
                self._standing_in[queue] = now + self.settings.member_timeout
            await self.workers[queue].subscribe()
        if leaving or got:
            log.info("shards balanced", owned=len(self.leases.held), gave_up=len(leaving), took=len(got))

    async def _give_up(self, worker: QueueWorker) -> None:
        self._standing_in.pop(worker.queue_name, None)
        await worker.unsubscribe()
        await self.leases.release(worker.queue_name)

    def _forget_shard(self, kind: str, shard: int) -> None:
        """Another process may own these actors next: their cached records may go stale."""
        self.activations.evict_where(lambda key: key[0] == kind and shard_of(key[1], self.shards) == shard)

    async def _sweep(self) -> None:
        period = max(0.1, min(self.settings.passivate_after / 2, 30.0))
        ticks = 0
        while True:
            await asyncio.sleep(period)
            dropped = self.activations.passivate_idle()
            if dropped:
                log.debug("passivated idle actors", count=dropped)
            ticks += 1
            if ticks % max(1, int(600 / period)) == 0:
                with contextlib.suppress(*TRANSIENT_ERRORS, asyncpg.PostgresError):
                    await self.pool.execute(
                        "DELETE FROM inbox WHERE processed_at < now() - make_interval(days => $1)",
                        self.settings.inbox_retention_days,
                    )

    # --- one delivery ---------------------------------------------------------------------

    async def handle(
        self, kind: ActorKind | ServiceKind, queue: str, message: AbstractIncomingMessage
    ) -> None:
        try:
            envelope = decode(message.body)
            if envelope.target.kind != kind.name:
                raise ProtocolError(f"message for kind {envelope.target.kind!r} arrived on {queue}")
        except ProtocolError as exc:
            log.warning("dead-lettering undecodable message", queue=queue, reason=exc.reason)
            if await self._dead_letter(None, None, queue, message.body, exc.reason, ""):
                await self._ack(message)
            return

        with structlog.contextvars.bound_contextvars(
            correlation_id=envelope.correlation_id,
            message_id=envelope.id,
            actor=f"{kind.name}/{envelope.target.id}",
            message_type=envelope.type,
        ):
            result = await self._turn_with_retries(kind, queue, message, envelope)
            if result is None:
                return  # stopping with the database away: leave it unacked for redelivery
            crashpoint("turn.after_commit")
            await self._ack(message)

    async def _turn_with_retries(
        self, kind: ActorKind | ServiceKind, queue: str, message: AbstractIncomingMessage, envelope: Envelope
    ) -> TurnResult | str | None:
        key = (kind.name, envelope.target.id)
        backoff = self.settings.backoff_initial
        failures = 0
        while True:
            try:
                result = await self._turn(kind, key, envelope)
            except TRANSIENT_ERRORS as exc:
                self.activations.evict(key)
                if self._stopping:
                    return None
                log.warning("turn interrupted by infrastructure; retrying", error=repr(exc), retry_in=backoff)
            except (HandlerError, asyncpg.PostgresError) as exc:
                # The handler raised, or the database refused its result (a constraint the new
                # state violates): retried a few times, then this message is poison.
                self.activations.evict(key)
                failures += 1
                where = "handler" if isinstance(exc, HandlerError) else "turn in the database"
                log.warning(f"{where} failed", attempt=failures, error=str(exc))
                if failures >= self.settings.handler_attempts:
                    reason = f"{where} failed {failures} times: {exc}"
                    dead = await self._dead_letter(
                        kind, envelope, queue, message.body, reason, fault_details(exc)
                    )
                    return "dead-lettered" if dead else None
            else:
                self._after_turn(kind, key, result)
                return result
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.backoff_max)

    async def _turn(
        self, kind: ActorKind | ServiceKind, key: tuple[str, str], envelope: Envelope
    ) -> TurnResult:
        async with self.pool.acquire() as conn:
            if isinstance(kind, ServiceKind):
                return await run_service_turn(
                    conn, kind, envelope, shards=self.shards, member_id=self.member_id
                )
            cached = self.activations.get(key)
            return await run_turn(conn, kind, envelope, cached, shards=self.shards, member_id=self.member_id)

    def _after_turn(self, kind: ActorKind | ServiceKind, key: tuple[str, str], result: TurnResult) -> None:
        """Count the turn, keep the actor's record warm, wake the outbox relay and the timers."""
        self.counters[result.status] += 1
        if result.status == "duplicate":
            log.info("duplicate message skipped")
        elif result.status == "rejected":
            log.info("message rejected", reason=result.rejection.reason if result.rejection else "")
        if result.status != "duplicate" and isinstance(kind, ActorKind):
            self.activations.put(key, result.record)
        if result.sent:
            self.relay.wake()
        if result.timers_set:
            self.timers.wake()

    async def _dead_letter(
        self,
        kind: ActorKind | ServiceKind | None,
        envelope: Envelope | None,
        queue: str,
        raw: bytes,
        reason: str,
        details: str,
    ) -> bool:
        """Record the fault and queue the dead letter in one transaction; False if stopping
        before the database could be reached (the delivery then stays unacked)."""
        copy = OutboxRow(
            envelope.id if envelope is not None else str(uuid.uuid4()),
            DEAD_LETTER_EXCHANGE,
            "",
            raw,
            headers={REASON_HEADER: reason[:1000], ORIGIN_QUEUE_HEADER: queue},
        )
        backoff = self.settings.backoff_initial
        while True:
            try:
                async with self.pool.acquire() as conn:
                    await record_fault(
                        conn,
                        kind,
                        envelope,
                        queue=queue,
                        raw=raw,
                        reason=reason,
                        details=details,
                        member_id=self.member_id,
                        dead_letter=copy,
                    )
                break
            except TRANSIENT_ERRORS as exc:
                if self._stopping:
                    return False
                log.warning("could not record dead letter yet", error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.backoff_max)
        if envelope is not None and kind is not None:
            self.activations.evict((kind.name, envelope.target.id))
        self.counters["dead_lettered"] += 1
        log.error("message dead-lettered", queue=queue, reason=reason)
        self.relay.wake()
        return True

    async def _handle_broker_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """The broker dead-lettered this (its delivery limit was hit: the message kept killing
        or stalling its consumer); record it as the runtime records its own dead letters."""
        death = (message.headers or {}).get("x-death")
        first = death[0] if isinstance(death, list) and death and isinstance(death[0], dict) else {}
        origin = str(first.get("queue", "unknown"))
        why = str(first.get("reason", "unknown"))
        if why == "rejected":
            reason = f"rejected by its consumer on {origin} after an unexpected error in the runtime"
        elif why == "delivery_limit":
            reason = f"delivered {amqp.DELIVERY_LIMIT} times from {origin} without being handled"
        else:
            reason = f"the broker dead-lettered it from {origin} ({why})"
        envelope: Envelope | None = None
        kind: ActorKind | ServiceKind | None = None
        with contextlib.suppress(ProtocolError):
            envelope = decode(message.body)
            kind = self.kinds.get(envelope.target.kind)
        if await self._dead_letter(kind, envelope, origin, message.body, reason, ""):
            await self._ack(message)

    async def _ack(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.ack()
        except BROKER_GONE as exc:
            # The channel went away after the commit: the broker will redeliver and the inbox
            # will recognise the message as a duplicate.
            log.warning("ack failed after commit; redelivery will be deduplicated", error=repr(exc))
