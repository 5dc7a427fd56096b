"""Where messages go: exchange and queue names, and the stable shard function.

Actors of one kind are spread over `shards` quorum queues; a message for actor (kind, id) is
routed to queue `actor.<kind>.<shard>` with shard = crc32(id) mod shards. A host agent has a
queue of its own, `agent.<host>`, reached through the default exchange. The shard count is a
cluster setting kept in PostgreSQL (`cluster_settings.shards`) so every process agrees on it.
"""

from __future__ import annotations

import zlib

ACTOR_EXCHANGE = "actorstack.actors"  # direct; routing key = queue name
DEAD_LETTER_EXCHANGE = "actorstack.dead"  # fanout
DEAD_LETTER_QUEUE = "actorstack.dead-letters"
# Commands for integrations (api/commands.py, protocol/README.md): a topic exchange whose routing
# key is the operation, and the one queue every API process consumes.
COMMANDS_EXCHANGE = "actorstack.commands"
COMMANDS_QUEUE = "actorstack.commands"
COMMANDS_QUEUE_ARGUMENTS = {"x-queue-type": "quorum"}

# Headers set on a message we dead-letter ourselves (the broker adds x-death on its own).
REASON_HEADER = "x-actorstack-reason"
ORIGIN_QUEUE_HEADER = "x-actorstack-queue"


def shard_of(actor_id: str, shards: int) -> int:
    """Stable across processes and Python runs (unlike hash())."""
    return zlib.crc32(actor_id.encode()) % shards


def queue_name(kind: str, shard: int) -> str:
    return f"actor.{kind}.{shard}"


# Kinds with one queue per id instead of shards: a host agent consumes its own queue.
UNSHARDED = frozenset({"agent"})


def agent_queue(host: str) -> str:
    return f"agent.{host}"


def exchange_of(kind: str) -> str:
    """The exchange that carries messages for actors of this kind. A host agent's queue takes
    its requests from the default exchange (routing key = its queue's name, no binding): an
    agent's broker user may read no exchange, so it cannot bind its queue to others' messages."""
    return "" if kind in UNSHARDED else ACTOR_EXCHANGE


def route(kind: str, actor_id: str, shards: int) -> str:
    """The routing key (and queue name) that carries messages for this actor."""
    if kind == "agent":
        return agent_queue(actor_id)
    return queue_name(kind, shard_of(actor_id, shards))
