"""libvirt's event loop on asyncio (libvirtaio), made safe for libvirt calls from threads.

libvirt dispatches domain events, and the remote driver's socket I/O, through an event loop
implementation registered once per process before any connection opens. libvirtaio provides
one on asyncio, but its callbacks touch the asyncio loop directly (`add_reader`,
`ensure_future`, `Task.cancel`), and libvirt calls them from whichever thread is inside
libvirt at the time. Our drivers run every blocking libvirt call in worker threads, so those
callbacks arrive off the loop's thread, where asyncio is not thread-safe. Measured with the
test driver and plain libvirtaio: a domain started from a thread that does not itself wake the
loop produced a lifecycle event that was never dispatched (not within 2 s, three times out of
three); with `ThreadSafeImpl` it arrived in about a millisecond.

`ThreadSafeImpl` keeps libvirtaio's bookkeeping but applies every change to the asyncio loop
on the loop's own thread, in the order libvirt asked for them: a change requested off the loop
is queued and the loop woken with `call_soon_threadsafe`. The ids libvirt needs back are
handed out at once, under a lock.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any

import libvirt
import libvirtaio

_impl: ThreadSafeImpl | None = None
_register_lock = threading.Lock()


class ThreadSafeImpl(libvirtaio.virEventAsyncIOImpl):  # type: ignore[misc]
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._lock = threading.Lock()
        self._ops: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._thread_id = threading.get_ident()

    def rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move to a new event loop (the old one has closed; its connections are gone)."""
        self.loop = loop
        self._thread_id = threading.get_ident()

    # --- running changes on the loop's thread, in order ----------------------------------

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self._ops.append((fn, args))
        if threading.get_ident() == self._thread_id:
            self._run_ops()
        else:
            self.loop.call_soon_threadsafe(self._run_ops)

    def _run_ops(self) -> None:
        while True:
            with self._lock:
                if not self._ops:
                    return
                fn, args = self._ops.popleft()
            fn(*args)

    # --- libvirt's six callbacks ----------------------------------------------------------

    def _add_handle(self, fd: int, event: int, cb: Any, opaque: Any) -> int:
        with self._lock:
            callback = libvirtaio.FDCallback(self, cb, opaque, descriptor=None, event=event)
            self.callbacks[callback.iden] = callback
        self._submit(self._attach_handle, fd, callback)
        return int(callback.iden)

    def _attach_handle(self, fd: int, callback: Any) -> None:
        self._pending_inc()
        callback.descriptor = self.descriptors[fd]
        callback.descriptor.add_handle(callback)

    def _update_handle(self, watch: int, event: int) -> None:
        with self._lock:
            callback = self.callbacks.get(watch)
        if callback is not None:
            self._submit(callback.update, event)

    def _remove_handle(self, watch: int) -> int:
        with self._lock:
            callback = self.callbacks.pop(watch, None)
        if callback is None:
            return -1
        self._submit(self._detach_handle, callback)
        return 0

    def _detach_handle(self, callback: Any) -> None:
        fd = callback.descriptor.fd
        callback.descriptor.remove_handle(callback.iden)
        if not self.descriptors[fd].callbacks:
            del self.descriptors[fd]
        callback.close()

    def _add_timeout(self, timeout: int, cb: Any, opaque: Any) -> int:
        with self._lock:
            callback = libvirtaio.TimeoutCallback(self, cb, opaque)
            self.callbacks[callback.iden] = callback
        self._submit(self._attach_timeout, callback, timeout)
        return int(callback.iden)

    def _attach_timeout(self, callback: Any, timeout: int) -> None:
        self._pending_inc()
        callback.update(timeout=timeout)

    def _update_timeout(self, timer: int, timeout: int) -> None:
        with self._lock:
            callback = self.callbacks.get(timer)
        if callback is not None:
            self._submit(callback.update, timeout)

    def _remove_timeout(self, timer: int) -> int:
        with self._lock:
            callback = self.callbacks.pop(timer, None)
        if callback is None:
            return -1
        self._submit(callback.close)
        return 0


def register() -> ThreadSafeImpl:
    """Install the implementation on the running loop; call before opening a connection.

    libvirt accepts one implementation per process, for good. A later event loop in the same
    process (a second `asyncio.run`) takes it over once the first loop has closed."""
    global _impl
    loop = asyncio.get_running_loop()
    with _register_lock:
        if _impl is None:
            _impl = ThreadSafeImpl(loop)
            _impl.register()
            # Errors reach us as exceptions; libvirt's default handler would also print them.
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        elif _impl.loop is not loop:
            if not _impl.loop.is_closed():
                raise RuntimeError("libvirt events are bound to another running event loop")
            _impl.rebind(loop)
    return _impl
