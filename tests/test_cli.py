"""The command line as a newcomer meets it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from actorstack.scratch import ScratchServices, cli_argv, delete_vhost, free_port, spawn
from tests.conftest import ROOT, RUN_PREFIX, temporary_database


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_argv(*args),
        cwd=ROOT,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_db_init_twice_on_a_fresh_database() -> None:
    async with temporary_database(RUN_PREFIX) as url:
        first = run("db", "init", "--database-url", url)
        assert first.returncode == 0, first.stderr
        assert "initialised" in first.stdout
        second = run("db", "init", "--database-url", url)
        assert second.returncode == 0, second.stderr
        assert "nothing to do" in second.stdout


def test_unreachable_database_is_one_clear_line_and_a_non_zero_exit() -> None:
    result = run("up", "--database-url", "postgresql://postgres:secret@127.0.0.1:1/actorstack")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot reach PostgreSQL at postgresql://postgres:***@127.0.0.1:1/actorstack" in lines[0]
    assert "Traceback" not in result.stderr and "secret" not in result.stderr


def test_unreachable_broker_is_one_clear_line_and_a_non_zero_exit(services: ScratchServices) -> None:
    result = run("runtime", "--amqp-url", "amqp://guest:guest@127.0.0.1:1/", env=services.env())
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/" in lines[0], (
        result.stderr
    )


def test_runtime_on_an_uninitialised_database_says_so() -> None:
    result = run("runtime", "--database-url", "postgresql://postgres@127.0.0.1:5432/postgres")
    assert result.returncode == 2
    assert "has no actorstack schema: run `actorstack db init`" in result.stderr


async def test_up_initialises_runs_and_stops_cleanly_on_sigterm(
    services: ScratchServices, tmp_path: Path
) -> None:
    async with temporary_database(RUN_PREFIX) as url:
        env = services.env(ACTORSTACK_DATABASE_URL=url, ACTORSTACK_STATE_DIR=str(tmp_path))
        args = ["up", "--listen", f"127.0.0.1:{free_port()}", "--log-format", "json"]
        up = spawn("up", args, env, tmp_path / "up.log")
        try:
            await up.wait_for_event("runtime started", timeout=30)
            assert await up.stop() == 0, up.tail()
            assert "runtime stopped" in up.log() and "Traceback" not in up.log()
        finally:
            up.kill()


def test_a_refused_vhost_is_one_line_that_says_how_to_make_it(services: ScratchServices) -> None:
    missing = f"{RUN_PREFIX}_no_such_vhost"
    result = run("runtime", "--amqp-url", f"amqp://guest:guest@127.0.0.1:5672/{missing}", env=services.env())
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"refused the virtual host '{missing}'" in lines[0]
    assert f"rabbitmqctl add_vhost {missing} && rabbitmqctl set_permissions -p {missing} guest" in lines[0]


async def test_up_creates_its_missing_vhost_on_this_machine(tmp_path: Path) -> None:
    """`up` makes what it needs on a fresh machine: the database, and the RabbitMQ vhost."""
    async with ScratchServices(f"{RUN_PREFIX}_vh", vhost=False) as services:
        env = services.env(ACTORSTACK_STATE_DIR=str(tmp_path))
        args = ["up", "--listen", f"127.0.0.1:{free_port()}", "--log-format", "json", "--network", "none"]
        up = spawn("up", args, env, tmp_path / "up.log")
        try:
            await up.wait_for_event("created the RabbitMQ virtual host", timeout=30)
            await up.wait_for_event("runtime started", timeout=30)
            assert await up.stop() == 0, up.tail()
        finally:
            up.kill()
            await asyncio.to_thread(delete_vhost, services.name)
