"""Credentials for host agents on other machines: a host token and a broker user of their own.

`actorstack host credentials NAME…` (run where the database is) prints what an agent's machine
needs, as an environment file:

    ACTORSTACK_HOST_TOKEN=host1.…      the internal API's credential, scoped to NAME…
    ACTORSTACK_AMQP_URL=amqp://…       with --broker-user: a RabbitMQ user of the hosts' own
    ACTORSTACK_CONTROL_URL=http://…    with --control-url: where the cloud's API listens

and never a database URL: agents hold no database credentials. The broker user (named
`<vhost>.host.<first NAME>`, made with `rabbitmqctl` on the broker's machine, as `up` makes its
vhost) may declare and consume only its agents' queues `agent.<NAME>` (which take their requests
from the default exchange, unbound) and publish only to the actor exchange (its replies and
reports), the default exchange (answers to the API's questions) and the dead-letter intake its
queue names. It may read no exchange, so it cannot bind its queue to another host's or an
actor's messages, and it cannot read any other queue. `actorstack host revoke NAME` deletes it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from actors import db
from actors.amqp import DEAD_INTAKE_EXCHANGE
from actorstack.config import Settings
from protocol.routing import ACTOR_EXCHANGE, agent_queue


class CredentialsError(Exception):
    pass


def broker_user(vhost: str, names: list[str]) -> str:
    return f"{vhost}.host.{names[0]}"


def permissions(names: list[str]) -> tuple[str, str, str]:
    """(configure, write, read) regular expressions for the agents of these names."""
    queues = [re.escape(agent_queue(name)) for name in names]
    own = "|".join(queues)
    configure = f"^({own})$"
    write = (
        "^("
        + "|".join([*queues, re.escape(ACTOR_EXCHANGE), re.escape(DEAD_INTAKE_EXCHANGE), r"amq\.default"])
        + ")$"
    )
    read = f"^({own})$"  # no exchange: binding its queue to others' messages needs read on one
    return configure, write, read


def _vhost(amqp_url: str) -> str:
    return unquote(urlsplit(amqp_url).path[1:]) or "/"


def _rabbitmqctl(*args: str) -> str:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise CredentialsError("rabbitmqctl is not installed here: run this on the broker's machine")
    done = subprocess.run([exe, "-q", *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise CredentialsError(f"rabbitmqctl {args[0]} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _make_broker_user(amqp_url: str, names: list[str]) -> str:
    """Create (or reset) the hosts' broker user; the AMQP URL it signs in with."""
    vhost = _vhost(amqp_url)
    user = broker_user(vhost, names)
    password = secrets.token_hex(24)  # never starts with "-" (rabbitmqctl would read an option)
    existing = _rabbitmqctl("list_users", "--no-table-headers").split()
    if user in existing:
        _rabbitmqctl("change_password", user, password)
    else:
        _rabbitmqctl("add_user", user, password)
    _rabbitmqctl("set_permissions", "-p", vhost, user, *permissions(names))
    parts = urlsplit(amqp_url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname or '127.0.0.1'}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


async def issue(
    settings: Settings, names: list[str], *, make_broker_user: bool, control_url: str | None
) -> dict[str, str]:
    """The environment an agent of these names runs with (see the module's doc)."""
    from api.internal import credentials

    conn = await db.connect(settings.database_url)
    try:
        key = str(await db.cluster_setting(conn, "host_key"))
    finally:
        await conn.close()
    env = {"ACTORSTACK_HOST_TOKEN": credentials.mint(key, names)}
    if make_broker_user:
        env["ACTORSTACK_AMQP_URL"] = await asyncio.to_thread(_make_broker_user, settings.amqp_url, names)
    if control_url:
        env["ACTORSTACK_CONTROL_URL"] = control_url
    return env


def revoke(settings: Settings, names: list[str]) -> bool:
    """Delete the hosts' broker user; False if there was none."""
    user = broker_user(_vhost(settings.amqp_url), names)
    if user not in _rabbitmqctl("list_users", "--no-table-headers").split():
        return False
    _rabbitmqctl("delete_user", user)
    return True
