"""One asyncio lock per key (a server id), created on demand and dropped when unused.

The agent works on many servers at once but on each one at a time: a power action never
overlaps a spawn or a destroy of the same server, and the power-state sync never reports a
server while an action on it is in flight (the action's reply carries the state).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    def busy(self, key: str) -> bool:
        """Someone holds the key's lock or waits for it."""
        return key in self._locks

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Wait for the key's lock. Waiters get it in the order they asked (asyncio.Lock is fair)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._release(key)

    @contextlib.asynccontextmanager
    async def try_hold(self, key: str) -> AsyncIterator[bool]:
        """Take the key's lock only if nobody holds or wants it; yields whether it was taken."""
        if self.busy(key):
            yield False
            return
        async with self.hold(key):
            yield True

    def _release(self, key: str) -> None:
        self._users[key] -= 1
        if not self._users[key]:
            del self._users[key]
            del self._locks[key]
