"""Errors of the runtime's infrastructure that callers handle by kind."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """The URL without its password, fit for logs and error lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class ServiceUnreachable(Exception):
    """A backing service (PostgreSQL, RabbitMQ) could not be reached; says what and where."""

    def __init__(self, service: str, url: str, reason: str) -> None:
        self.service, self.url, self.reason = service, redact(url), reason
        super().__init__(f"cannot reach {service} at {self.url}: {reason}")
