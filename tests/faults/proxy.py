"""A TCP proxy on loopback that a fault test can cut, as aio-pika's own tests cut connections.

One process is pointed at the proxy instead of the service; `cut()` aborts every connection
through it at once (a reset, as a failed switch or a NAT timeout leaves it) and refuses new
ones for a while, then listens again on the same port so the process can reconnect by itself.
The service itself (the machine's RabbitMQ, shared with other tests) is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

CHUNK = 65536


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listen_host = listen_host
        self.port = 0
        self.accepted = 0  # connections accepted since start (a reconnect shows here)
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def start(self) -> None:
        """Listen (on a free port the first time, on the same port after a cut)."""
        self._server = await asyncio.start_server(
            self._accept, self.listen_host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        link = (writer, up_writer)
        self._links.add(link)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # One side ended: end the other too, as a direct connection would.
            self._links.discard(link)
            writer.transport.abort()
            up_writer.transport.abort()
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._pumps.difference_update(pumps)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _abort_all(self) -> int:
        links = list(self._links)
        for client, upstream in links:
            client.transport.abort()
            upstream.transport.abort()
        return len(links)

    async def cut(self, refuse_for: float = 2.0) -> int:
        """Abort every proxied connection at once and refuse new ones for `refuse_for` seconds;
        returns how many connections were cut."""
        await self._stop_listening()
        count = self._abort_all()
        self.cuts += 1
        await asyncio.sleep(refuse_for)
        await self.start()
        return count

    async def close(self) -> None:
        await self._stop_listening()
        self._abort_all()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
