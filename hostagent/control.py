"""The control plane as a host agent sees it: what it reads, and where its reports go.

An agent holds no database credentials (Nova's conductor rule). It reads what it needs (its
placed servers, the desired network state of its hosts, instance data for the metadata service,
images) from the internal API (`api/internal`), showing a host token that covers only its own
hosts, and sends what it knows about itself (registration, heartbeat, domain inventory, the
requests it could not handle) as messages to the `host` service (protocol/hosts.py), which owns
those rows. `Control` is that interface; `HttpControl` is the real one. The test suite has one
that reads the database directly, to test an agent without an API in front of it.

A read that cannot reach the API raises ControlUnavailable: for a request, as a database error
used to, a failure that is not the request's (it goes back to the queue and is retried); for a
periodic pass, one failed pass.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Protocol, Self

import aio_pika
import aiohttp
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from actors.worker import BROKER_GONE
from protocol import Envelope, Message, Target, encode
from protocol.routing import ACTOR_EXCHANGE, route

TOKEN_HEADER = "X-Host-Token"
CHUNK = 1024 * 1024


class ControlUnavailable(Exception):
    """The internal API did not answer as it should (unreachable, 5xx, a refused token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImageUnavailable(Exception):
    """The image cannot be had: unknown to the API (or not this host's to read), not active,
    or its bytes do not match its checksum. `reason` is fit for a server fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ControlConfig:
    shards: int  # the actor kinds' shard count (where replies are routed)
    cloud_id: str
    owner: str  # the tag on every kernel object the hosts create
    hosts: frozenset[str]  # what the token covers


Row = dict[str, Any]


class ImageSource(Protocol):
    async def download_image(self, image_id: str, dest: Path) -> Row:
        """Write the image's bytes to `dest` (a new file), verified against its checksums;
        ImageUnavailable if it cannot be had. Returns what `Control.image` returns."""


class Control(abc.ABC):
    """What an agent reads from the control plane and sends to it."""

    async def start(self) -> None:  # noqa: B027 - an optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - an optional hook
        pass

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def config(self) -> ControlConfig: ...

    @abc.abstractmethod
    async def report(self, agent: str, message: Message) -> None:
        """Send one of the agent's reports to the `host` service (publisher-confirmed)."""

    @abc.abstractmethod
    async def placed_servers(self, host: str) -> dict[str, str]:
        """{server id: vm_state} of the servers the cloud places on this host."""

    @abc.abstractmethod
    async def desired_network(self, hosts: list[str]) -> dict[str, list[Row]]:
        """The rows of a converge pass (taps, subnets, addresses), from one snapshot."""

    @abc.abstractmethod
    async def desired_firewall(self, hosts: list[str]) -> dict[str, list[Row]]:
        """The rows of a firewall pass (ports, rules, remote group members), from one snapshot."""

    @abc.abstractmethod
    async def server_ports(self, server_id: str, hosts: list[str]) -> list[Row]:
        """The server's ports bound to these hosts, in the order of its nics."""

    @abc.abstractmethod
    async def bound_ports(self, server_id: str, hosts: list[str]) -> list[Row]:
        """The ids and networks of the server's ports bound to these hosts."""

    @abc.abstractmethod
    async def metadata_instance(self, network_id: str, ip: str) -> Row | None:
        """The server of these hosts that owns the address on the network, if any."""

    @abc.abstractmethod
    async def metadata_interfaces(self, server_id: str) -> list[Row]: ...

    @abc.abstractmethod
    async def image(self, image_id: str) -> Row | None:
        """The image's status, disk format, size and checksums; None if the hosts may not see it."""

    @abc.abstractmethod
    async def download_image(self, image_id: str, dest: Path) -> Row:
        """Write the image's bytes to `dest` (a new file), verified against its checksums;
        ImageUnavailable if it cannot be had. Returns what `image` returns."""


class HttpControl(Control):
    """The internal API over HTTP, and reports published to the broker."""

    def __init__(
        self, url: str, token: str, connection: AbstractRobustConnection, *, timeout: float = 30.0
    ) -> None:
        self.url = url.rstrip("/") + "/internal/v1"
        self._token = token
        self._connection = connection
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._config: ControlConfig | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={TOKEN_HEADER: self._token},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=self._timeout),
        )
        try:
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._exchange = await self._channel.get_exchange(ACTOR_EXCHANGE, ensure=False)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(*BROKER_GONE):
                await self._channel.close()
            self._channel = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(
        self, path: str, params: list[tuple[str, str]] | None = None, *, missing_ok: bool = False
    ) -> Any:
        assert self._session is not None, "HttpControl used before start()"
        try:
            async with self._session.get(self.url + path, params=params) as response:
                if response.status == 404 and missing_ok:
                    return None
                if response.status != 200:
                    text = (await response.text())[:500]
                    raise ControlUnavailable(f"GET {path}: {response.status} {text}")
                return await response.json()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ControlUnavailable(f"GET {path}: {exc!r}") from None

    async def config(self) -> ControlConfig:
        if self._config is None:
            body = await self._get("/config")
            self._config = ControlConfig(
                int(body["shards"]), str(body["cloud_id"]), str(body["owner"]), frozenset(body["hosts"])
            )
        return self._config

    async def report(self, agent: str, message: Message) -> None:
        assert self._exchange is not None, "HttpControl used before start()"
        shards = (await self.config()).shards
        envelope = Envelope.new(Target("host", agent), message)
        await self._exchange.publish(
            aio_pika.Message(
                encode(envelope),
                message_id=envelope.id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            route("host", agent, shards),
        )

    async def placed_servers(self, host: str) -> dict[str, str]:
        return dict((await self._get(f"/hosts/{host}/servers"))["servers"])

    async def desired_network(self, hosts: list[str]) -> dict[str, list[Row]]:
        return dict(await self._get("/network/desired", [("host", h) for h in hosts]))

    async def desired_firewall(self, hosts: list[str]) -> dict[str, list[Row]]:
        return dict(await self._get("/network/firewall", [("host", h) for h in hosts]))

    async def server_ports(self, server_id: str, hosts: list[str]) -> list[Row]:
        body = await self._get(f"/network/servers/{server_id}/ports", [("host", h) for h in hosts])
        return list(body["ports"])

    async def bound_ports(self, server_id: str, hosts: list[str]) -> list[Row]:
        body = await self._get(f"/network/servers/{server_id}/bound", [("host", h) for h in hosts])
        return list(body["ports"])

    async def metadata_instance(self, network_id: str, ip: str) -> Row | None:
        body = await self._get("/metadata/instance", [("network", network_id), ("ip", ip)], missing_ok=True)
        return None if body is None else dict(body["instance"])

    async def metadata_interfaces(self, server_id: str) -> list[Row]:
        return list((await self._get(f"/metadata/servers/{server_id}/interfaces"))["interfaces"])

    async def image(self, image_id: str) -> Row | None:
        body = await self._get(f"/images/{image_id}", missing_ok=True)
        return None if body is None else dict(body["image"])

    async def download_image(self, image_id: str, dest: Path) -> Row:
        assert self._session is not None, "HttpControl used before start()"
        found = await self.image(image_id)
        if found is None:
            raise ImageUnavailable(f"Image {image_id} could not be found.")
        if found["status"] != "active":
            raise ImageUnavailable(f"Image {image_id} is not active (its status is {found['status']}).")
        check = Checksums(found)
        path = f"/images/{image_id}/file"
        try:
            async with self._session.get(self.url + path) as response:
                if response.status == 404:
                    raise ImageUnavailable(f"Image {image_id} has no data.")
                if response.status != 200:
                    raise ControlUnavailable(f"GET {path}: {response.status}")
                out = await asyncio.to_thread(dest.open, "xb")
                try:
                    async for chunk in response.content.iter_chunked(CHUNK):
                        check.update(chunk)
                        await asyncio.to_thread(out.write, chunk)
                    await asyncio.to_thread(out.flush)
                finally:
                    await asyncio.to_thread(out.close)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ControlUnavailable(f"GET {path}: {exc!r}") from None
        check.verify(image_id)
        return found


class Checksums:
    """The digests an image's bytes must match: Glance's md5 `checksum`, and its multihash
    (`os_hash_algo`, `os_hash_value`) when the algorithm is one hashlib has; and its size."""

    def __init__(self, image: Row) -> None:
        self._expected: list[tuple[str, Any, str]] = []
        if image.get("checksum"):
            self._expected.append(("checksum", hashlib.md5(usedforsecurity=False), str(image["checksum"])))
        algo = image.get("os_hash_algo")
        if algo and image.get("os_hash_value") and algo in hashlib.algorithms_available:
            self._expected.append((str(algo), hashlib.new(str(algo)), str(image["os_hash_value"])))
        self._size = image.get("size")
        self._seen = 0

    def update(self, chunk: bytes) -> None:
        self._seen += len(chunk)
        for _, digest, _ in self._expected:
            digest.update(chunk)

    def verify(self, image_id: str) -> None:
        if self._size is not None and self._seen != self._size:
            raise ImageUnavailable(
                f"Image {image_id} arrived with {self._seen} bytes; its size is {self._size}."
            )
        for name, digest, expected in self._expected:
            if digest.hexdigest() != expected.lower():
                raise ImageUnavailable(f"Image {image_id} does not match its {name}: refused.")
