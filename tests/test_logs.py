"""`--log-format json`: every line a process writes to its log is one JSON object, whoever logs
it (our structlog loggers, the libraries' standard-library loggers, warnings, an exception no
one caught in the main thread or another), tracebacks included."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

PROGRAM = """
import logging, threading, warnings, structlog
from actorstack import logs
logs.configure("json", "info")
structlog.get_logger("actorstack").info("ours", answer=42)
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("aiormq.connection").exception("a library's error")
logging.getLogger("asyncio").warning("Task exception was never retrieved")
warnings.warn("a deprecation", DeprecationWarning, stacklevel=1)
thread = threading.Thread(target=lambda: {}["missing"], name="worker")
thread.start()
thread.join()
raise RuntimeError("nobody caught me")
"""


def test_every_line_of_a_json_log_is_json_tracebacks_included() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    records = [json.loads(line) for line in lines]  # each line parses, or this fails
    events = {r["event"]: r for r in records}
    assert events["ours"]["answer"] == 42 and events["ours"]["level"] == "info"
    library = events["a library's error"]
    assert library["logger"] == "aiormq.connection" and "ZeroDivisionError" in library["exception"]
    assert events["Task exception was never retrieved"]["level"] == "warning"
    assert any("a deprecation" in r["event"] for r in records)
    assert "KeyError" in events["uncaught exception in a thread"]["exception"]
    assert events["uncaught exception in a thread"]["thread"] == "worker"
    assert "nobody caught me" in events["uncaught exception"]["exception"]
