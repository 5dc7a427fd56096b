"""PostgreSQL: the connection pool, and `db init` (schema.sql, then numbered migrations)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from actors.errors import ServiceUnreachable

# What the runtime's code is handed: a connection of its own, or one borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schema.sql"
MIGRATIONS = ROOT / "migrations"
_INIT_LOCK = 0x61637473  # advisory lock key: concurrent `db init`s run one after the other

# What asyncpg raises when the server is not there or refuses us.
CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)

# A server shutting down sends its FATAL to idle connections too; asyncpg takes that message for a
# protocol error and, until it sees the socket close, fails the next query on the connection with
# an InternalClientError ("cannot switch to state …; another operation (2) is in progress"). It
# is the database going away, like a refused connection: retry with a fresh connection.
PROTOCOL_LOST = asyncpg.exceptions.InternalClientError

# What a loop's database work may meet when the database is away or a statement fails (TimeoutError
# is an OSError): the loops log it, wait and try again.
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, PROTOCOL_LOST)


def _json_encode(value: object) -> str:
    return _ENCODER.encode(value).decode()


_ENCODER = msgspec.json.Encoder()


async def _setup_connection(conn: asyncpg.Connection) -> None:
    # msgspec's JSON codec: several times faster than the json module's on the rows a turn
    # writes and reads (flavors, faults, block devices, event payloads).
    for type_ in ("json", "jsonb"):
        await conn.set_type_codec(
            type_, encoder=_json_encode, decoder=msgspec.json.decode, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release, after asyncpg has rolled back any open transaction: nothing.

    asyncpg's default runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on
    every release: one more round trip and one more transaction per use of the pool, which was
    about a third of the database's transactions in a boot storm (bench/boot_storm.py). Our code
    leaves no session state on a pooled connection: it uses transaction-scoped advisory locks, no
    SET, no cursors outside transactions; the two holders of session state undo it themselves
    (the shard leases unlock theirs, or terminate the connection when unsure; the outbox
    listener UNLISTENs)."""


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_setup_connection,
            reset=_keep_session,
            timeout=10,
        )
    except CONNECT_ERRORS as exc:
        raise ServiceUnreachable("PostgreSQL", url, _describe(exc)) from None


async def connect(url: str) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except CONNECT_ERRORS as exc:
        raise ServiceUnreachable("PostgreSQL", url, _describe(exc)) from None
    await _setup_connection(conn)
    return conn


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


async def ensure_database(url: str) -> bool:
    """Create the database named in `url` when the server is reachable but it is missing."""
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        pass
    except CONNECT_ERRORS as exc:
        raise ServiceUnreachable("PostgreSQL", url, _describe(exc)) from None
    else:
        await conn.close()
        return False
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    admin = await connect(maintenance)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await admin.close()
    return True


def schema_version_of(schema: Path = SCHEMA) -> int:
    match = re.search(r"^-- schema-version: (\d+)$", schema.read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f"{schema} has no '-- schema-version: N' line")
    return int(match.group(1))


def migrations_in(directory: Path = MIGRATIONS) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob("*.sql"):
        match = re.match(r"^(\d+)_", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


async def init_schema(
    conn: asyncpg.Connection, schema: Path = SCHEMA, migrations: Path = MIGRATIONS
) -> tuple[int | None, int]:
    """Bring the database to the newest schema: (version before or None if empty, version after)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _INIT_LOCK)
        exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
        if not exists:
            await conn.execute(await asyncio.to_thread(schema.read_text))
            return None, await _current_version(conn)
        before = await _current_version(conn)
        for number, path in migrations_in(migrations):
            if number > before:
                await conn.execute(await asyncio.to_thread(path.read_text))
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number)
        return before, await _current_version(conn)


async def _current_version(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT max(version) FROM schema_version"))


async def cluster_setting(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> object:
    value = await conn.fetchval("SELECT value FROM cluster_settings WHERE key = $1", key)
    if value is None:
        raise LookupError(f"cluster setting {key!r} is missing: run `actorstack db init`")
    return value
