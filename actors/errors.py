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


class VhostRefused(ServiceUnreachable):
    """RabbitMQ answers but will not open the URL's virtual host: it does not exist, or the user
    may not use it."""

    def __init__(self, url: str, vhost: str, user: str) -> None:
        self.vhost, self.user = vhost, user
        how = f"rabbitmqctl add_vhost {vhost} && rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*'"
        reason = f"it refused the virtual host {vhost!r} (missing, or {user!r} may not use it): {how}"
        super().__init__("RabbitMQ", url, reason)
