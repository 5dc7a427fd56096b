"""`actorstack db init`: schema on an empty database, a no-op after, migrations upgrade."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from actors import db
from protocol import Target, decode
from protocol.actor import STATE_TIMER, StateTimeout
from protocol.routing import ACTOR_EXCHANGE
from tests.conftest import RUN_PREFIX, temporary_database


async def test_init_creates_then_is_a_no_op() -> None:
    async with temporary_database(RUN_PREFIX) as url:
        assert await db.ensure_database(url) is True
        conn = await db.connect(url)
        try:
            assert await db.init_schema(conn) == (None, db.schema_version_of())
            assert await db.init_schema(conn) == (db.schema_version_of(), db.schema_version_of())
            assert await conn.fetchval("SELECT value FROM cluster_settings WHERE key = 'shards'") == 16
        finally:
            await conn.close()


async def test_numbered_migrations_upgrade_an_older_database(tmp_path: Path) -> None:
    old_schema = tmp_path / "schema.sql"
    old_schema.write_text(
        "-- schema-version: 1\nCREATE TABLE schema_version (version integer PRIMARY KEY, "
        "applied_at timestamptz NOT NULL DEFAULT now());\nINSERT INTO schema_version VALUES (1);\n"
        "CREATE TABLE things (id integer PRIMARY KEY);\n"
    )
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0002_add_name.sql").write_text("ALTER TABLE things ADD COLUMN name text;")
    (migrations / "0003_add_index.sql").write_text("CREATE INDEX things_name ON things (name);")
    async with temporary_database(RUN_PREFIX) as url:
        await db.ensure_database(url)
        conn = await db.connect(url)
        try:
            empty = tmp_path / "none"
            empty.mkdir()
            assert await db.init_schema(conn, old_schema, empty) == (None, 1)
            assert await db.init_schema(conn, old_schema, migrations) == (1, 3)
            assert await db.init_schema(conn, old_schema, migrations) == (3, 3)
            await conn.execute("INSERT INTO things (id, name) VALUES (1, 'x')")
            versions = [
                r["version"] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY 1")
            ]
            assert versions == [1, 2, 3]
        finally:
            await conn.close()


async def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    schema = tmp_path / "schema.sql"
    schema.write_text(
        "-- schema-version: 1\nCREATE TABLE schema_version (version integer PRIMARY KEY, "
        "applied_at timestamptz NOT NULL DEFAULT now());\nINSERT INTO schema_version VALUES (1);\n"
    )
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0002_good.sql").write_text("CREATE TABLE a (id int);")
    (migrations / "0003_bad.sql").write_text("CREATE TABLE b (id nosuchtype);")
    async with temporary_database(RUN_PREFIX) as url:
        await db.ensure_database(url)
        conn = await db.connect(url)
        try:
            await db.init_schema(conn, schema, tmp_path / "missing")
            try:
                await db.init_schema(conn, schema, migrations)
            except Exception:
                pass
            else:
                raise AssertionError("the bad migration should fail")
            assert await conn.fetchval("SELECT max(version) FROM schema_version") == 1
            assert await conn.fetchval("SELECT to_regclass('a')") is None
        finally:
            await conn.close()


def test_schema_sql_is_at_the_newest_migration() -> None:
    numbers = [n for n, _ in db.migrations_in()]
    assert db.schema_version_of() == max([1, *numbers])


async def test_the_state_timeout_migration_rewrites_pending_timers_of_the_old_messages() -> None:
    """0009: timers (and fired ones in the outbox) of server.task_timeout, volume.timeout and
    port.build_timeout become actor.state_timeout for the state they were set for."""
    old = {
        ("server", "task"): ("server.task_timeout", {"vm_state": "active", "task_state": "powering-off"}),
        ("volume", "task"): ("volume.timeout", {"status": "creating"}),
        ("port", "build"): ("port.build_timeout", {"server_id": "s1", "host": "h1"}),
    }
    expected = {"server": "active:powering-off", "volume": "creating", "port": "BUILD"}

    def envelope(kind: str, type_: str, body: dict[str, str]) -> bytes:
        return json.dumps(
            {
                "id": str(uuid.uuid4()),
                "type": type_,
                "version": 1,
                "target": {"kind": kind, "id": f"{kind}-1"},
                "correlation_id": str(uuid.uuid4()),
                "causation_id": None,
                "reply_to": None,
                "sent_at": 1.0,
                "body": body,
            }
        ).encode()

    async with temporary_database(RUN_PREFIX) as url:
        await db.ensure_database(url)
        conn = await db.connect(url)
        try:
            await db.init_schema(conn)
            for (kind, name), (type_, body) in old.items():
                await conn.execute(
                    "INSERT INTO timers (kind, actor_id, name, fire_at, message_id, routing_key, body) "
                    "VALUES ($1, $2, $3, now(), $4, 'q', $5)",
                    kind,
                    f"{kind}-1",
                    name,
                    uuid.uuid4(),
                    envelope(kind, type_, body),
                )
            await conn.execute(
                "INSERT INTO outbox (message_id, exchange, routing_key, body) VALUES ($1, $2, 'q', $3)",
                uuid.uuid4(),
                ACTOR_EXCHANGE,
                envelope("volume", "volume.timeout", {"status": "deleting"}),
            )
            async with conn.transaction():
                await conn.execute((db.MIGRATIONS / "0009_state_timeouts.sql").read_text())
            rows = await conn.fetch("SELECT kind, name, body FROM timers ORDER BY kind")
            assert {r["kind"]: (r["name"], decode(r["body"]).body) for r in rows} == {
                kind: (STATE_TIMER, StateTimeout(state=state)) for kind, state in expected.items()
            }
            fired = decode(await conn.fetchval("SELECT body FROM outbox"))
            assert fired.body == StateTimeout(state="deleting") and fired.target == Target(
                "volume", "volume-1"
            )
        finally:
            await conn.close()
