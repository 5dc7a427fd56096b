"""A watchdog for the test session: a test that runs past its limit ends the run at once, with
enough on the screen to see why, instead of hanging until CI's own limit kills it silently.

Most of the suite is asyncio on one session loop, so a thread dump alone would show only the
loop waiting in select(); what matters is which coroutine is waiting on what. On expiry the
watchdog (a daemon thread) prints: the test, every thread's stack, every asyncio task's stack,
the broker's alarms and queues of this run's vhost, and what PostgreSQL sessions of this run's
database are waiting on. Then it exits the process: after a hang the session loop's state is
unknown, and carrying on would turn one hang into many confusing failures. Before it exits it
kills the run's child processes and drops the run's vhost and database (teardown will not run).

The limit is per test (setup, call and teardown together), `ACTORSTACK_TEST_LIMIT` seconds,
300 by default: well above the slowest test (a real-guest boot, about 90 s)."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import shutil
import subprocess
import sys
import threading
from typing import Any

import pytest

LIMIT = float(os.environ.get("ACTORSTACK_TEST_LIMIT", "300"))
EXIT_CODE = 3


class Watchdog:
    def __init__(self, config: pytest.Config, prefix: str, pg_server: str) -> None:
        self.config, self.prefix, self.pg_server = config, prefix, pg_server
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: threading.Timer | None = None

    def arm(self, nodeid: str) -> None:
        self._timer = threading.Timer(LIMIT, self._expired, args=(nodeid,))
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, nodeid: str) -> None:
        capture = self.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            try:
                capture.suspend_global_capture(in_=True)
            except Exception:  # noqa: BLE001 - report what we can regardless
                pass
        out = sys.stderr
        bar = "+" * 20
        print(f"\n{bar} {nodeid} still running after {LIMIT:.0f} s: the run stops here {bar}", file=out)
        print("\n--- threads", file=out, flush=True)
        faulthandler.dump_traceback(file=out, all_threads=True)
        print("\n--- asyncio tasks", file=out)
        for task in self._tasks():
            print(f"{task!r}", file=out)
            try:
                task.print_stack(limit=12, file=out)
            except Exception as exc:  # noqa: BLE001
                print(f"  (stack unavailable: {exc!r})", file=out)
        print("\n--- RabbitMQ", file=out)
        print(self._command("rabbitmq-diagnostics", "-q", "alarms"), file=out)
        print(
            self._command(
                "rabbitmqctl", "-q", "list_queues", "-p", self.prefix, "name", "messages", "consumers"
            ),
            file=out,
        )
        print("\n--- PostgreSQL sessions of this run", file=out)
        print(
            self._command(
                "psql",
                f"{self.pg_server}/postgres",
                "-XAtc",
                "SELECT pid, datname, state, wait_event_type, wait_event, "
                "left(query, 120) FROM pg_stat_activity "
                f"WHERE datname LIKE '{self.prefix}%'",
            ),
            file=out,
        )
        print(f"\n--- cleaning up: this run's child processes, vhost and database ({self.prefix})", file=out)
        print(self._command("pkill", "-KILL", "-P", str(os.getpid())), file=out)
        print(self._command("rabbitmqctl", "-q", "delete_vhost", self.prefix), file=out)
        print(
            self._command(
                "psql",
                f"{self.pg_server}/postgres",
                "-XAtc",
                f'DROP DATABASE IF EXISTS "{self.prefix}" WITH (FORCE)',
            ),
            file=out,
        )
        out.flush()
        os._exit(EXIT_CODE)

    def _tasks(self) -> list[Any]:
        if self.loop is None:
            return []
        try:
            return list(asyncio.all_tasks(self.loop))
        except RuntimeError:  # the set changed under us too often; report none
            return []

    @staticmethod
    def _command(name: str, *args: str) -> str:
        exe = shutil.which(name) or f"/usr/sbin/{name}"
        try:
            done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{name}: {exc!r}"
        return (done.stdout + done.stderr).strip() or f"{name}: (nothing)"
