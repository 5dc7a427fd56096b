"""Image data from a URL: the `web-download` import method and the `import` tasks of /v2/tasks.

Which URLs are fetched is Glance's import filtering ([import_filtering_opts]): an allowed
scheme (http, https), an allowed host (any by default) not refused, and a port, when the URL
names one, among the allowed ones (80 and 443 by default). An operator widens or narrows this
with ACTORSTACK_IMAGE_IMPORT_ALLOWED_SCHEMES, _ALLOWED_HOSTS, _DISALLOWED_HOSTS and
_ALLOWED_PORTS (comma-separated; `any` for every port). A redirect is followed only to a URL
that passes the same filter, at most MAX_REDIRECTS times, so a filtered host is never reached
through another.

The body streams into the store chunk by chunk (`store.receive`), bounded by the image size cap;
a server that does not connect within CONNECT_TIMEOUT seconds, falls silent for IDLE_TIMEOUT
seconds or takes longer than TOTAL_TIMEOUT overall fails the download, and nothing is kept.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

from api.image import store

CONNECT_TIMEOUT = 30.0
IDLE_TIMEOUT = 60.0
TOTAL_TIMEOUT = 6 * 3600.0
MAX_REDIRECTS = 5
_ENV = "ACTORSTACK_IMAGE_IMPORT_"


class DownloadFailed(Exception):
    """The data could not be fetched; the message says why, in words for the task's message."""


@dataclasses.dataclass(frozen=True)
class Filter:
    """Glance's import filtering options (allowed lists win over disallowed ones)."""

    allowed_schemes: frozenset[str] = frozenset({"http", "https"})
    allowed_hosts: frozenset[str] = frozenset()  # empty: any host
    disallowed_hosts: frozenset[str] = frozenset()
    allowed_ports: frozenset[int] | None = frozenset({80, 443})  # None: any port

    @classmethod
    def from_env(cls) -> Filter:
        def items(name: str) -> list[str] | None:
            raw = os.environ.get(_ENV + name)
            return None if raw is None else [item.strip() for item in raw.split(",") if item.strip()]

        default = cls()
        schemes, hosts, ports = items("ALLOWED_SCHEMES"), items("DISALLOWED_HOSTS"), items("ALLOWED_PORTS")
        allowed_hosts = items("ALLOWED_HOSTS")
        allowed_ports = default.allowed_ports
        if ports is not None:
            try:
                allowed_ports = None if ports == ["any"] else frozenset(int(p) for p in ports)
            except ValueError:
                raise ValueError(
                    f"{_ENV}ALLOWED_PORTS must list port numbers or say 'any', not {ports!r}"
                ) from None
        return cls(
            allowed_schemes=frozenset(schemes) if schemes is not None else default.allowed_schemes,
            allowed_hosts=frozenset(allowed_hosts) if allowed_hosts is not None else default.allowed_hosts,
            disallowed_hosts=frozenset(hosts) if hosts is not None else default.disallowed_hosts,
            allowed_ports=allowed_ports,
        )

    def passes(self, uri: object) -> bool:
        """Glance's validate_import_uri."""
        if not isinstance(uri, str) or not uri:
            return False
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError:
            return False
        if not parts.scheme or parts.scheme not in self.allowed_schemes:
            return False
        host = parts.hostname
        if not host or (
            host not in self.allowed_hosts if self.allowed_hosts else host in self.disallowed_hosts
        ):
            return False
        return not (port and self.allowed_ports is not None and port not in self.allowed_ports)


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in response.content.iter_chunked(store.CHUNK):
        yield chunk


async def fetch(uri: str, dest: Path, *, cap: int, rules: Filter) -> store.Received:
    """Download `uri` into the store at `dest`, all or nothing; DownloadFailed with the reason."""
    timeout = aiohttp.ClientTimeout(total=TOTAL_TIMEOUT, connect=CONNECT_TIMEOUT, sock_read=IDLE_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(MAX_REDIRECTS + 1):
                async with session.get(uri, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        target = urljoin(uri, response.headers["Location"])
                        if not rules.passes(target):
                            raise DownloadFailed(
                                f"{uri} redirects to {target}, which does not pass filtering"
                            )
                        uri = target
                        continue
                    if response.status != 200:
                        raise DownloadFailed(
                            f"{uri} answered HTTP {response.status} {response.reason or ''}".strip()
                        )
                    if response.content_length is not None and response.content_length > cap:
                        raise DownloadFailed(
                            f"The incoming image is too large: {response.content_length} bytes, "
                            f"the limit is {cap}."
                        )
                    return await store.receive(_chunks(response), dest, cap=cap)
            raise DownloadFailed(f"{uri}: more than {MAX_REDIRECTS} redirects")
    except store.TooLarge as exc:
        raise DownloadFailed(f"The incoming image is too large: {exc}.") from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise DownloadFailed(f"Could not download {uri}: {exc or type(exc).__name__}") from None
