"""Activations: the in-memory copies of recently used actors (Orleans' virtual actors).

An actor is activated by its first message (its row is loaded) and passivated — dropped from
memory — after `idle_after` seconds without a message, or when the cache is full (least
recently used first). A cached record only saves a read: every write is still checked against
the row's version, so a stale activation costs a reload, never a wrong state.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any


class Activations:
    def __init__(self, *, idle_after: float = 300.0, capacity: int = 100_000) -> None:
        self._idle_after = idle_after
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str], tuple[Any, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._entries

    def get(self, key: tuple[str, str]) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries[key] = (entry[0], time.monotonic())
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: tuple[str, str], record: Any) -> None:
        if record is None:
            self._entries.pop(key, None)
            return
        self._entries[key] = (record, time.monotonic())
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def evict(self, key: tuple[str, str]) -> None:
        self._entries.pop(key, None)

    def evict_where(self, predicate: Any) -> None:
        for key in [k for k in self._entries if predicate(k)]:
            del self._entries[key]

    def passivate_idle(self) -> int:
        """Drop activations idle longer than `idle_after`; returns how many."""
        cutoff = time.monotonic() - self._idle_after
        dropped = 0
        while self._entries:
            key, (_, last_used) = next(iter(self._entries.items()))
            if last_used > cutoff:
                break
            del self._entries[key]
            dropped += 1
        return dropped
